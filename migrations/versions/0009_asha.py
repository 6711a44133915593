"""asha: a trial's pause epoch, and the rungs its trials reached (metric, promotion)

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

from core.tables import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("pause_at_epoch", sa.Integer(), nullable=True))
    op.create_table(
        "sweep_rungs",
        sa.Column("sweep_id", sa.String(32), sa.ForeignKey("sweeps.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("trial", sa.Integer(), primary_key=True),
        sa.Column("rung", sa.Integer(), primary_key=True),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("reached_at", UTCDateTime(), nullable=False),
        sa.Column("promoted_at", UTCDateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("sweep_rungs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("pause_at_epoch")
