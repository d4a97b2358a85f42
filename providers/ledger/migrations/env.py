"""Alembic environment of the ledger: runs on the connection `upgrade()` hands over (no alembic.ini, no URL)."""

from __future__ import annotations

from alembic import context

from providers.ledger.migrate import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the ledger's migrations through providers.ledger.upgrade(engine)")

# A version table of its own, so the ledger's history never collides with another one in the same database.
context.configure(connection=connection, version_table=VERSION_TABLE, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
