"""`giftgraph points grant`: an operator credits (or, with a negative amount, corrects) a user's points.

Writes straight to the points ledger in the gateway's database, audited as a transaction with the
reason and the operator's login; only for providers whose points live in that ledger.
"""

from __future__ import annotations

import asyncio
import getpass

import click

from giftgraph.settings import ConfigurationError, Settings, load_settings

LEDGER_PROVIDERS = ("tremendous", "tango")


@click.group("points")
def points() -> None:
    """The points ledger (GIFTGRAPH_PROVIDER=tremendous or tango)."""


@points.command(context_settings={"ignore_unknown_options": True})  # so that -500 is an AMOUNT
@click.argument("user_id")
@click.argument("amount", type=int)
@click.option("--reason", required=True, help="Why: kept with the transaction for the audit trail.")
def grant(user_id: str, amount: int, reason: str) -> None:
    """Credit AMOUNT points to USER_ID (a negative AMOUNT corrects a balance, never below zero)."""
    if amount == 0:
        raise click.UsageError("AMOUNT must not be 0")
    if not reason.strip():
        raise click.UsageError("--reason must say why")
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        raise click.ClickException(f"invalid configuration:\n{exc}") from exc
    if settings.provider not in LEDGER_PROVIDERS:
        raise click.ClickException(
            f"GIFTGRAPH_PROVIDER={settings.provider} keeps the points itself "
            "(for the sandbox service: `giftgraph sandbox grant`)"
        )
    balance = asyncio.run(_grant(settings, user_id, amount, reason.strip()))
    click.echo(
        f"granted {amount} points to {user_id}: balance {balance.available} available, {balance.pending} pending"
    )


async def _grant(settings: Settings, user_id: str, amount: int, reason: str):  # type: ignore[no-untyped-def]
    from giftgraph.fulfilment import open_ledger
    from providers.errors import InsufficientPoints

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ledger, engine = open_ledger(settings)
    try:
        await ledger.start()
        result = await ledger.grant(user_id, amount, reason=reason, source=f"cli:{_operator()}")
    except InsufficientPoints:
        raise click.ClickException(f"{user_id} does not have {-amount} points to take") from None
    finally:
        await engine.dispose()
    assert result is not None  # no event id: never a duplicate
    return result.balance


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container's numeric user)
        return "unknown"
