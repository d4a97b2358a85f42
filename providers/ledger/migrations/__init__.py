"""Alembic environment and revisions of the ledger's tables; run by providers.ledger.migrate.upgrade."""
