"""Tables of the sandbox ledger (users, transactions, redemptions) as SQLAlchemy Core metadata."""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, MetaData, String, Table, Text, UniqueConstraint

from providers.sql import UtcDateTime

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("user_id", String(255), primary_key=True),
    Column("available", Integer, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

transactions = Table(
    "transactions",
    metadata,
    # AUTOINCREMENT stops SQLite from ever reusing a position, which keyset pagination relies on.
    Column("position", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("user_id", String(255), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("points", Integer, nullable=False),
    Column("balance_after", Integer, nullable=False),
    Column("description", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("redemption_id", String(64), nullable=True),
    Index("ix_transactions_user_position", "user_id", "position"),
    sqlite_autoincrement=True,
)

redemptions = Table(
    "redemptions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(255), nullable=False),
    Column("reward_id", String(64), nullable=False),
    Column("face_value", Text, nullable=False),  # a decimal string: SQLite has no exact decimal type
    Column("currency_code", String(3), nullable=False),
    Column("points", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("code", Text, nullable=True),
    Column("pin", Text, nullable=True),
    Column("claim_url", Text, nullable=True),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("failure_reason", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    Column("request_fingerprint", String(64), nullable=False),
    UniqueConstraint("idempotency_key", name="uq_redemptions_idempotency_key"),
    # Pending sums per user and the restart scan both filter on status.
    Index("ix_redemptions_user_status", "user_id", "status"),
    Index("ix_redemptions_status", "status"),
)
