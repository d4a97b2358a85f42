"""The ledger's first tables: accounts, transactions, redemptions and grant events.

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

# Frozen here on purpose (not imported from tables.py): a revision must create what it created the day it was written.
_POSITION = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ledger_accounts",
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("available", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("available >= 0", name="ck_ledger_accounts_available_not_negative"),
    )
    op.create_table(
        "ledger_transactions",
        sa.Column("position", _POSITION, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("balance_after", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("redemption_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("id", name="uq_ledger_transactions_id"),
        sqlite_autoincrement=True,  # a dialect option: ignored elsewhere, where a sequence never reuses values
    )
    op.create_index("ix_ledger_transactions_user_position", "ledger_transactions", ["user_id", "position"])
    op.create_table(
        "ledger_redemptions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("reward_id", sa.String(255), nullable=False),
        sa.Column("face_value", sa.Text(), nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("request_fingerprint", sa.String(64), nullable=False),
        sa.Column("order_reference", sa.String(100), nullable=False),
        sa.Column("order_id", sa.String(255), nullable=True),
        sa.Column("card_ciphertext", sa.Text(), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("reward_snapshot", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_check_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("idempotency_key", name="uq_ledger_redemptions_idempotency_key"),
        sa.UniqueConstraint("order_reference", name="uq_ledger_redemptions_order_reference"),
    )
    op.create_index("ix_ledger_redemptions_user_status", "ledger_redemptions", ["user_id", "status"])
    op.create_index("ix_ledger_redemptions_status_next_check", "ledger_redemptions", ["status", "next_check_at"])
    op.create_table(
        "ledger_grant_events",
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("transaction_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("source", "event_id", name="pk_ledger_grant_events"),
    )


def downgrade() -> None:
    op.drop_table("ledger_grant_events")
    op.drop_index("ix_ledger_redemptions_status_next_check", table_name="ledger_redemptions")
    op.drop_index("ix_ledger_redemptions_user_status", table_name="ledger_redemptions")
    op.drop_table("ledger_redemptions")
    op.drop_index("ix_ledger_transactions_user_position", table_name="ledger_transactions")
    op.drop_table("ledger_transactions")
    op.drop_table("ledger_accounts")
