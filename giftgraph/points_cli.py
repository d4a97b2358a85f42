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


# The ledger, its database driver and the webhook's rules are imported when a grant runs, not for `--help`.


def _user_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from giftgraph.auth import user_id_error  # the tokens' rule: one rule for every way in

    error = user_id_error(value)
    if error is not None:
        raise click.BadParameter(error, ctx=ctx, param=param)
    return value


def _amount(ctx: click.Context, param: click.Parameter, value: int) -> int:
    from providers.ledger.store import MAX_POINTS

    if value == 0:
        raise click.BadParameter("must not be 0", ctx=ctx, param=param)
    if not -MAX_POINTS <= value <= MAX_POINTS:
        raise click.BadParameter(f"{value} is not between -{MAX_POINTS} and {MAX_POINTS}", ctx=ctx, param=param)
    return value


@points.command(context_settings={"ignore_unknown_options": True})  # so that -500 is an AMOUNT
@click.argument("user_id", callback=_user_id)
@click.argument("amount", type=int, callback=_amount)
@click.option("--reason", required=True, help="Why: kept with the transaction for the audit trail.")
def grant(user_id: str, amount: int, reason: str) -> None:
    """Credit AMOUNT points to USER_ID (a negative AMOUNT corrects a balance, never below zero)."""
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
    from providers.errors import InsufficientPoints, PointsLimitExceeded
    from providers.ledger.store import MAX_POINTS

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ledger, engine = open_ledger(settings)
    try:
        await ledger.start()
        result = await ledger.grant(user_id, amount, reason=reason, source=f"cli:{_operator()}")
    except InsufficientPoints:
        raise click.ClickException(f"{user_id} does not have {-amount} points to take") from None
    except PointsLimitExceeded:
        raise click.ClickException(
            f"{user_id} cannot take {amount} more points: an account holds at most {MAX_POINTS} "
            "(available and reserved together)"
        ) from None
    except ValueError as exc:  # the ledger's own checks (a grant, its configuration): nothing was written
        raise click.ClickException(f"nothing was written: {exc}") from None
    finally:
        await engine.dispose()
    assert result is not None  # no event id: never a duplicate
    return result.balance


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container's numeric user)
        return "unknown"
