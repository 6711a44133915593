"""programs: a tenant's own architectures (torch.export programs checked at upload)

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

from core.tables import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "programs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("source_filename", sa.String(255), nullable=True),
        sa.Column("eval_source_filename", sa.String(255), nullable=True),
        sa.Column("train_key", sa.String(512), nullable=False),
        sa.Column("eval_key", sa.String(512), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("input_shape", sa.JSON(), nullable=False),
        sa.Column("num_classes", sa.Integer(), nullable=False),
        sa.Column("parameter_count", sa.BigInteger(), nullable=False),
        sa.Column("ops", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_programs_owner", "programs", ["owner"])
    op.create_index("ix_programs_created_at", "programs", ["created_at"])


def downgrade() -> None:
    op.drop_table("programs")
