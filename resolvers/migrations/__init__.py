"""Alembic environment and revisions of the gateway's own tables; run by resolvers.migrate.upgrade."""
