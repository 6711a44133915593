"""job recovery: attempt bookkeeping, resume point, enqueue record, idempotency keys

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

from core.tables import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("graceful_stops", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("resumed_from", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("enqueued_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("idempotency_key", sa.String(200), nullable=True))
        batch.add_column(sa.Column("request_hash", sa.String(64), nullable=True))
        batch.create_index("ix_jobs_idempotency_key", ["idempotency_key"], unique=True)
        batch.create_index("ix_jobs_status_lease", ["status", "lease_expires_at"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_status_lease")
        batch.drop_index("ix_jobs_idempotency_key")
        for column in ("request_hash", "idempotency_key", "enqueued_at", "resumed_from",
                       "graceful_stops"):
            batch.drop_column(column)
