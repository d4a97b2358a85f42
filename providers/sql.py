"""Async SQLAlchemy engines for giftgraph's databases: the one place SQLite is tuned.

SQLite connections use WAL and a busy timeout, and BEGIN is issued by us, not the
driver, so `writer(engine)` can start transactions with BEGIN IMMEDIATE: the
write lock is then held from the first statement, and a read-then-write cannot
be overtaken by another writer, in this process or another sharing the file.
Statement parameters are hidden from logs and errors: they can be secrets.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from collections.abc import Callable
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, DateTime, Dialect, Row, Table, TypeDecorator, event, func, make_url, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from providers.base import Transaction, TransactionKind, TransactionPage

BUSY_TIMEOUT_MS = 10_000
# DEBUG output of these loggers carries statement parameters (aiosqlite's trace) and result
# rows (SQLAlchemy's), so gift card codes, pins and claim URLs; INFO and above carry neither.
_TRACE_LOGGERS = ("aiosqlite", "sqlalchemy.engine.Engine")


class _DropDebugRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


def _silence_traces(logging_name: str) -> None:
    for name in (*_TRACE_LOGGERS, f"sqlalchemy.engine.Engine.{logging_name}"):
        trace_logger = logging.getLogger(name)
        if not any(isinstance(existing, _DropDebugRecords) for existing in trace_logger.filters):
            trace_logger.addFilter(_DropDebugRecords())


def _ensure_directory(database: str | None) -> None:
    # SQLite creates the file but not its directory (e.g. a fresh data/ dir); creating it here
    # also spares aiosqlite a failed connect, which can leave its worker thread racing loop shutdown.
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def create_engine(database_url: str, *, logging_name: str) -> AsyncEngine:
    url = make_url(database_url)
    _silence_traces(logging_name)
    if not url.drivername.startswith("sqlite"):
        return create_async_engine(url, hide_parameters=True, logging_name=logging_name, pool_pre_ping=True)
    _ensure_directory(url.database)
    engine = create_async_engine(url, hide_parameters=True, logging_name=logging_name)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 driver (it would only BEGIN lazily, before the first
        # write, too late to hold the lock across a read-then-write); `_on_begin` emits it instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")  # readers carry on while one writer holds the lock
            # With WAL, NORMAL still survives an application crash; only an OS crash may lose the
            # last commits.
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def writer(engine: AsyncEngine) -> AsyncEngine:
    """The same engine, with transactions that take SQLite's write lock when they begin."""
    return engine.execution_options(sqlite_begin="IMMEDIATE")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes in, the same out: SQLite itself keeps no zone."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass a timezone-aware one")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


async def upgrade(engine: AsyncEngine, *, migrations: Path, version_table: str, lock_id: int) -> None:
    """Alembic's `upgrade head` of the history in `migrations`, configured in code (no alembic.ini).

    A no-op when the tables are current, and safe from many processes: BEGIN IMMEDIATE on SQLite (an
    advisory lock on PostgreSQL) makes processes starting together migrate in turn. Each history keeps
    its own version table, so several live in one database.
    """
    async with writer(engine).begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
        await conn.run_sync(_upgrade_head, migrations, version_table)


def _upgrade_head(connection: Connection, migrations: Path, version_table: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(migrations))
    config.attributes["connection"] = connection
    config.attributes["version_table"] = version_table
    command.upgrade(config, "head")


def run_env() -> None:
    """The body of every migrations/env.py here: run on the connection and version table upgrade() hands over."""
    from alembic import context

    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run these migrations through providers.sql.upgrade(engine, ...)")
    # A version table per history, so several histories share one database without colliding.
    context.configure(
        connection=connection, version_table=context.config.attributes["version_table"], target_metadata=None
    )
    with context.begin_transaction():
        context.run_migrations()


async def transaction_page(
    conn: AsyncConnection,
    table: Table,
    to_domain: Callable[[Row[Any]], Transaction],
    user_id: str,
    *,
    kinds: frozenset[TransactionKind] | None,
    older_than: int | None,
    newer_than: int | None,
    limit: int,
    from_oldest: bool,
) -> TransactionPage:
    """One keyset page of a points log (`user_id`, `kind`, `position` columns), as the port's list_transactions
    defines it: strictly between the positions, newest first, `from_oldest` taking those nearest `newer_than`."""
    matching = [table.c.user_id == user_id]
    if kinds is not None:
        matching.append(table.c.kind.in_(sorted(kind.value for kind in kinds)))
    window = list(matching)
    if older_than is not None:
        window.append(table.c.position < older_than)
    if newer_than is not None:
        window.append(table.c.position > newer_than)
    order = table.c.position.asc() if from_oldest else table.c.position.desc()
    # One row past the limit tells whether more exist in the direction read.
    rows = list(await conn.execute(select(table).where(*window).order_by(order).limit(limit + 1)))
    total = await conn.scalar(select(func.count()).select_from(table).where(*matching))
    page = rows[:limit]
    if from_oldest:
        page.reverse()
    return TransactionPage(
        items=tuple(to_domain(row) for row in page), total_count=int(total or 0), has_more=len(rows) > limit
    )
