"""The ledger never drives a balance negative under concurrent redemptions: one engine, two engines, two processes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from providers.errors import InsufficientPoints
from providers.ledger import ReserveResult
from tests.test_ledger import open_ledger, reserve, rows

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parent.parent
POINTS = 100
COVERED = 5  # the balance covers this many reserves

# A second process racing this one on the same file: it opens its ledger, says "ready", waits for the go file,
# then fires its reserves at once and prints how they went.
WORKER = """
import asyncio, json, sys, time
from pathlib import Path
from providers.errors import InsufficientPoints
from tests.test_ledger import open_ledger, reserve

async def main(path: str, go: str, prefix: str, count: int) -> None:
    async with open_ledger(Path(path)) as ledger:
        print("ready", flush=True)
        while not Path(go).exists():
            await asyncio.sleep(0.005)
        results = await asyncio.gather(
            *(reserve(ledger, key=f"{prefix}{i}", points=100) for i in range(count)), return_exceptions=True
        )
    print(json.dumps({
        "ok": sum(not isinstance(r, BaseException) for r in results),
        "insufficient": sum(isinstance(r, InsufficientPoints) for r in results),
        "errors": [
            type(r).__name__ for r in results if isinstance(r, BaseException) and not isinstance(r, InsufficientPoints)
        ],
    }), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""


def assert_never_negative(path: Path, succeeded: int) -> None:
    debits = rows(path, "SELECT balance_after FROM ledger_transactions WHERE kind = 'REDEEM' ORDER BY position")
    assert succeeded == COVERED == len(debits)
    assert [after for (after,) in debits] == [POINTS * (COVERED - n) for n in range(1, COVERED + 1)]
    assert rows(path, "SELECT available FROM ledger_accounts WHERE user_id = 'alice'") == [(0,)]
    assert rows(path, "SELECT count(*), sum(points) FROM ledger_redemptions") == [(COVERED, POINTS * COVERED)]


def outcomes(results: list[object]) -> tuple[int, int]:
    unexpected = [r for r in results if isinstance(r, BaseException) and not isinstance(r, InsufficientPoints)]
    assert not unexpected, unexpected
    return sum(isinstance(r, ReserveResult) for r in results), sum(isinstance(r, InsufficientPoints) for r in results)


async def test_given_20_concurrent_reserves_covering_5_then_exactly_5_succeed(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with open_ledger(path) as ledger:
        await ledger.grant("alice", POINTS * COVERED, reason="start", source="cli:test")
        results = await asyncio.gather(
            *(reserve(ledger, key=f"k{i}", points=POINTS) for i in range(20)),
            *(ledger.balances(["alice"]) for _ in range(5)),
            return_exceptions=True,
        )

    succeeded, refused = outcomes(results[:20])
    assert (succeeded, refused) == (COVERED, 20 - COVERED)
    assert all(balance.available >= 0 for [balance] in results[20:])  # type: ignore[misc]
    assert_never_negative(path, succeeded)


async def test_given_two_ledgers_on_two_engines_sharing_a_file_when_racing_then_exactly_5_succeed(
    tmp_path: Path,
) -> None:
    # Two engines, two in-process locks: only SQLite's write lock stands between them, as between two processes.
    path = tmp_path / "ledger.db"
    async with open_ledger(path) as one, open_ledger(path) as two:
        await one.grant("alice", POINTS * COVERED, reason="start", source="cli:test")
        results = await asyncio.gather(
            *(reserve(one if i % 2 else two, key=f"k{i}", points=POINTS) for i in range(20)),
            return_exceptions=True,
        )
        won = next(i for i, result in enumerate(results) if isinstance(result, ReserveResult))
        replays = await asyncio.gather(
            *(reserve(one if i % 2 else two, key=f"k{won}", points=POINTS) for i in range(4))
        )

    succeeded, refused = outcomes(list(results))
    assert (succeeded, refused) == (COVERED, 20 - COVERED)
    assert_never_negative(path, succeeded)
    assert {(replay.redemption.id, replay.replayed) for replay in replays} == {
        (results[won].redemption.id, True)  # type: ignore[union-attr]
    }


@pytest.mark.slow  # two Python interpreters start up
async def test_given_two_processes_and_this_one_racing_on_a_file_then_exactly_5_succeed(tmp_path: Path) -> None:
    path, go = tmp_path / "ledger.db", tmp_path / "go"
    async with open_ledger(path) as ledger:
        await ledger.grant("alice", POINTS * COVERED, reason="start", source="cli:test")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        workers = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", WORKER, str(path), str(go), prefix, "8",
                cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE,
            )
            for prefix in ("p1-", "p2-")
        ]
        for worker in workers:
            assert worker.stdout is not None
            assert (await asyncio.wait_for(worker.stdout.readline(), 30)).strip() == b"ready"
        go.touch()
        results = await asyncio.gather(
            *(reserve(ledger, key=f"main-{i}", points=POINTS) for i in range(8)), return_exceptions=True
        )
        reports = [json.loads((await asyncio.wait_for(worker.communicate(), 60))[0]) for worker in workers]

    assert [worker.returncode for worker in workers] == [0, 0]
    assert all(report["errors"] == [] for report in reports)
    succeeded, refused = outcomes(list(results))
    total_ok = succeeded + sum(report["ok"] for report in reports)
    total_refused = refused + sum(report["insufficient"] for report in reports)
    assert (total_ok, total_refused) == (COVERED, 24 - COVERED)
    assert_never_negative(path, total_ok)
