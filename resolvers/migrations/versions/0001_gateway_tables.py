"""The gateway's tables: idempotency keys, processed webhook events, redemption states.

Databases made before migrations existed (by `create_all`) are brought to the same shape: missing
tables are created and the idempotency keys gain the columns added since (`claim_token`, then
`request` and `attempts`), with their rows kept.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    tables = set(inspector.get_table_names())
    if "idempotency_keys" not in tables:
        op.create_table(
            "idempotency_keys",
            sa.Column("user_id", sa.String(255), primary_key=True),
            sa.Column("key", sa.String(255), primary_key=True),
            sa.Column("fingerprint", sa.String(64), nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("claim_token", sa.String(32), nullable=False),
            sa.Column("payload", sa.Text(), nullable=True),
            sa.Column("request", sa.Text(), nullable=True),
            sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
            sa.Column("lease_until", sa.Float(), nullable=False),
            sa.Column("expires_at", sa.Float(), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
        )
        op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])
    else:
        columns = {column["name"] for column in inspector.get_columns("idempotency_keys")}
        if "claim_token" not in columns:
            op.add_column(
                "idempotency_keys", sa.Column("claim_token", sa.String(32), nullable=False, server_default="")
            )
        if "request" not in columns:
            op.add_column("idempotency_keys", sa.Column("request", sa.Text(), nullable=True))
        if "attempts" not in columns:
            op.add_column("idempotency_keys", sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    if "webhook_events" not in tables:
        op.create_table(
            "webhook_events",
            sa.Column("provider", sa.String(64), primary_key=True),
            sa.Column("event_id", sa.String(255), primary_key=True),
            sa.Column("type", sa.String(64), nullable=False),
            sa.Column("processed_at", sa.Float(), nullable=False),
        )
        op.create_index("ix_webhook_events_processed_at", "webhook_events", ["processed_at"])
    if "redemption_states" not in tables:
        op.create_table(
            "redemption_states",
            sa.Column("redemption_id", sa.String(255), primary_key=True),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("updated_at", sa.Float(), nullable=False),
        )


def downgrade() -> None:
    op.drop_table("redemption_states")
    op.drop_table("webhook_events")
    op.drop_index("ix_idempotency_keys_expires_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
