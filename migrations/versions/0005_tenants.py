"""tenants: users, API keys, web sessions, rate counts; idempotency keys per owner

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

from core.tables import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("key_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    op.create_table(
        "web_sessions",
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), sa.ForeignKey("api_keys.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_web_sessions_key_id", "web_sessions", ["key_id"])
    op.create_table(
        "rate_counts",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("action", sa.String(32), primary_key=True),
        sa.Column("window", sa.BigInteger(), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
    )
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("stored_bytes", sa.BigInteger(), nullable=False,
                                   server_default="0"))
    op.drop_index("ix_jobs_idempotency_key", table_name="jobs")
    op.create_index("ix_jobs_owner_idempotency_key", "jobs",
                    [sa.func.coalesce(sa.text("owner"), ""), "idempotency_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_idempotency_key", table_name="jobs")
    op.create_index("ix_jobs_idempotency_key", "jobs", ["idempotency_key"], unique=True)
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("stored_bytes")
    for table in ("rate_counts", "web_sessions", "api_keys", "users"):
        op.drop_table(table)
