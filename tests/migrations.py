"""The head revision of each Alembic history, so tests need no edit when a migration is added."""

from __future__ import annotations

from alembic.config import Config
from alembic.script import ScriptDirectory

from providers.ledger.migrate import MIGRATIONS as LEDGER_MIGRATIONS
from resolvers.migrate import MIGRATIONS as GATEWAY_MIGRATIONS


def head(migrations: object) -> str:
    config = Config()
    config.set_main_option("script_location", str(migrations))
    revision = ScriptDirectory.from_config(config).get_current_head()
    assert revision is not None
    return revision


LEDGER_HEAD = head(LEDGER_MIGRATIONS)
GATEWAY_HEAD = head(GATEWAY_MIGRATIONS)
