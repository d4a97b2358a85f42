"""Alembic environment: see providers.sql.upgrade (no alembic.ini, no URL: the caller's connection)."""

from providers.sql import run_env

run_env()
