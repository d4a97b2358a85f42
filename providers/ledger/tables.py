"""The points ledger's tables as SQLAlchemy Core metadata, for queries (migrations/ creates them)."""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Column, Index, Integer, MetaData, String, Table, Text

from providers.sql import UtcDateTime

# SQLite only autoincrements an INTEGER PRIMARY KEY (a BIGINT one is not the rowid); PostgreSQL gets a BIGINT.
Position = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

accounts = Table(
    "ledger_accounts",
    metadata,
    Column("user_id", String(255), primary_key=True),
    Column("available", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("available >= 0", name="ck_ledger_accounts_available_not_negative"),
)

transactions = Table(
    "ledger_transactions",
    metadata,
    # Append-only. AUTOINCREMENT (a sequence on PostgreSQL) never reuses a position: keyset pagination relies on it.
    Column("position", Position, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("user_id", String(255), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("points", Integer, nullable=False),
    Column("balance_after", Integer, nullable=False),
    Column("description", Text, nullable=False),
    Column("source", String(255), nullable=False),  # who moved the points: "webhook:loyalty", "cli:<user>", ...
    Column("reason", Text, nullable=True),
    Column("redemption_id", String(64), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_ledger_transactions_user_position", "user_id", "position"),
    sqlite_autoincrement=True,
)

redemptions = Table(
    "ledger_redemptions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(255), nullable=False),
    Column("reward_id", String(255), nullable=False),
    Column("face_value", Text, nullable=False),  # a decimal string: exact on every database
    Column("currency_code", String(3), nullable=False),
    Column("points", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("idempotency_key", String(255), nullable=False, unique=True),
    Column("request_fingerprint", String(64), nullable=False),
    Column("order_reference", String(100), nullable=False, unique=True),
    Column("order_id", String(255), nullable=True),
    Column("card_ciphertext", Text, nullable=True),  # Fernet token: never the card in clear
    Column("failure_reason", Text, nullable=True),
    Column("reward_snapshot", Text, nullable=False),  # JSON of the reward as it was at reserve
    Column("attempts", Integer, nullable=False),
    Column("next_check_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_ledger_redemptions_user_status", "user_id", "status"),
    Index("ix_ledger_redemptions_status_next_check", "status", "next_check_at"),
)

grant_events = Table(
    "ledger_grant_events",
    metadata,
    Column("source", String(255), primary_key=True),
    Column("event_id", String(255), primary_key=True),
    Column("transaction_id", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

provider_tokens = Table(
    "ledger_provider_tokens",
    metadata,
    # One row per seller client (e.g. "tango:<digest of token URL, client id, audience>"), shared by every process.
    Column("name", String(255), primary_key=True),
    Column("token_ciphertext", Text, nullable=True),  # Fernet token: never the bearer token in clear
    Column("issued_at", UtcDateTime, nullable=True),
    Column("expires_at", UtcDateTime, nullable=True),
    # The refresh lease: the one process asking the token endpoint until lease_until; the others wait.
    Column("lease_holder", String(64), nullable=True),
    Column("lease_until", UtcDateTime, nullable=True),
)
