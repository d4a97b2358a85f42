"""`giftgraph points grant` as an operator runs it: a real process writing the ledger in the gateway's database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy

from providers.ledger import CardCipher, PointsLedger
from providers.ledger.store import MAX_POINTS
from providers.sql import create_engine


def run(data_dir: Path, *args: str, provider: str = "tango") -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIFTGRAPH_")}
    env |= {"GIFTGRAPH_DATA_DIR": str(data_dir), "GIFTGRAPH_PROVIDER": provider}
    return subprocess.run(
        [sys.executable, "-m", "giftgraph", "points", *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ledger_rows(data_dir: Path) -> list[tuple[str, int, int, str, str]]:
    async def read() -> list[tuple[str, int, int, str, str]]:
        engine = create_engine(f"sqlite+aiosqlite:///{data_dir / 'giftgraph.db'}", logging_name="test")
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    sqlalchemy.text(
                        "SELECT kind, points, balance_after, source, reason FROM ledger_transactions ORDER BY position"
                    )
                )
                return [tuple(row) for row in rows]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_given_a_grant_then_the_points_are_credited_and_audited_with_the_reason_and_the_operator(
    tmp_path: Path,
) -> None:
    granted = run(tmp_path, "grant", "alice", "1500", "--reason", "Goodwill for ticket 42")
    corrected = run(tmp_path, "grant", "alice", "-500", "--reason", "Duplicate credit")

    assert granted.returncode == 0, granted.stderr
    assert "granted 1500 points to alice: balance 1500 available" in granted.stdout
    assert corrected.returncode == 0, corrected.stderr
    rows = ledger_rows(tmp_path)
    assert [(kind, points, after) for kind, points, after, _, _ in rows] == [
        ("EARN", 1500, 1500),
        ("ADJUSTMENT", -500, 1000),
    ]
    assert all(source.startswith("cli:") for _, _, _, source, _ in rows)
    assert [reason for *_, reason in rows] == ["Goodwill for ticket 42", "Duplicate credit"]


def test_given_a_correction_larger_than_the_balance_then_exit_1_and_nothing_written(tmp_path: Path) -> None:
    assert run(tmp_path, "grant", "bob", "100", "--reason", "start").returncode == 0

    refused = run(tmp_path, "grant", "bob", "-101", "--reason", "too much")

    assert refused.returncode == 1
    assert "does not have 101 points" in refused.stderr
    assert [points for _, points, *_ in ledger_rows(tmp_path)] == [100]


def test_given_the_sandbox_provider_then_the_ledger_is_not_where_points_live(tmp_path: Path) -> None:
    refused = run(tmp_path, "grant", "carol", "10", "--reason", "x", provider="sandbox")

    assert refused.returncode == 1
    assert "giftgraph sandbox grant" in refused.stderr


def test_given_no_reason_then_a_usage_error(tmp_path: Path) -> None:
    assert run(tmp_path, "grant", "dave", "10").returncode == 2
    assert run(tmp_path, "grant", "dave", "0", "--reason", "nothing").returncode == 2


def test_given_a_grant_then_the_gateways_ledger_reads_it(tmp_path: Path) -> None:
    assert run(tmp_path, "grant", "erin", "250", "--reason", "welcome").returncode == 0

    async def read() -> int:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'giftgraph.db'}", logging_name="test")
        try:
            ledger = PointsLedger(engine, CardCipher([CardCipher.generate_key()]))
            await ledger.start()
            (balance,) = await ledger.balances(["erin"])
            return balance.available
        finally:
            await engine.dispose()

    assert asyncio.run(read()) == 250


def test_given_an_amount_past_what_an_account_holds_then_a_usage_error_naming_the_bounds_and_no_traceback(
    tmp_path: Path,
) -> None:
    too_much = run(tmp_path, "grant", "bob", "100000000000000000000", "--reason", "typo")
    too_little = run(tmp_path, "grant", "bob", "-100000000000000000000", "--reason", "typo")

    for refused in (too_much, too_little):
        assert refused.returncode == 2
        assert "Invalid value for 'AMOUNT'" in refused.stderr and str(MAX_POINTS) in refused.stderr
        assert "Traceback" not in refused.stderr
    assert not (tmp_path / "giftgraph.db").exists()


@pytest.mark.parametrize("user_id", ["", "   ", "u" * 256], ids=["empty", "blank", "over 255 characters"])
def test_given_a_user_id_no_user_can_have_then_a_usage_error_and_nothing_written(tmp_path: Path, user_id: str) -> None:
    refused = run(tmp_path, "grant", user_id, "5", "--reason", "x")

    assert refused.returncode == 2
    assert "Invalid value for 'USER_ID'" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "giftgraph.db").exists()


def test_given_a_grant_past_the_points_limit_then_exit_1_with_the_limit_and_nothing_written(tmp_path: Path) -> None:
    assert run(tmp_path, "grant", "frank", str(MAX_POINTS - 10), "--reason", "big").returncode == 0

    refused = run(tmp_path, "grant", "frank", "11", "--reason", "one too many")
    fits = run(tmp_path, "grant", "frank", "10", "--reason", "to the brim")

    assert refused.returncode == 1
    assert f"frank cannot take 11 more points: an account holds at most {MAX_POINTS}" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert fits.returncode == 0, fits.stderr
    assert [(points, after) for _, points, after, *_ in ledger_rows(tmp_path)] == [
        (MAX_POINTS - 10, MAX_POINTS - 10),
        (10, MAX_POINTS),
    ]
