"""sweeps: hyperparameter searches whose trials are jobs (a job's sweep, trial number, values)

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

from core.tables import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("strategy", sa.String(16), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("max_trials", sa.Integer(), nullable=False),
        sa.Column("max_concurrent", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("waiting", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_sweeps_owner", "sweeps", ["owner"])
    op.create_index("ix_sweeps_status", "sweeps", ["status"])
    op.create_index("ix_sweeps_created_at", "sweeps", ["created_at"])
    op.add_column("jobs", sa.Column("sweep_id", sa.String(32), nullable=True))
    op.add_column("jobs", sa.Column("trial", sa.Integer(), nullable=True))
    op.add_column("jobs", sa.Column("trial_values", sa.JSON(), nullable=True))
    op.create_index("ix_jobs_sweep_trial", "jobs", ["sweep_id", "trial"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_jobs_sweep_trial", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("trial_values")
        batch.drop_column("trial")
        batch.drop_column("sweep_id")
    op.drop_table("sweeps")
