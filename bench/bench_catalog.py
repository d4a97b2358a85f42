"""Benchmark: the Catalog operation through the full app versus a bare Starlette route.

Run with `.venv/bin/python bench/bench_catalog.py` (add `--profile` for a cProfile of
the GraphQL side). Everything runs in this one process: both apps are driven by raw
ASGI calls (no sockets), so the figures differ only by what each app does per request.
The only number worth comparing across machines is the ratio (a)/(b). A third side,
(a'), is the same app on Strawberry's own execution context, for reference: it shows
what the schema's short path for plain leaf fields is worth in the same run.

Also counts provider calls per History query for pages of 10, 50 and 100 transactions
whose redemptions point at 60 different rewards: one call per loader level is the goal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime
import json
import platform
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable from a checkout even when not installed
    sys.path.insert(0, str(ROOT))

from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from giftgraph.app import create_app  # noqa: E402
from giftgraph.auth import issue_token  # noqa: E402
from giftgraph.settings import Settings  # noqa: E402
from providers import RedeemRequest, RewardAvailability  # noqa: E402
from providers.sandbox import failing_reward_ids  # noqa: E402
from resolvers.catalog import CatalogFilter, page_catalog  # noqa: E402
from resolvers.ids import encode_global_id  # noqa: E402

OPERATIONS = ROOT / "graphql" / "operations"
CATALOG_QUERY = (OPERATIONS / "Catalog.graphql").read_text()
HISTORY_QUERY = (OPERATIONS / "History.graphql").read_text()
PAGE_SIZE = 50
HISTORY_PAGES = (10, 50, 100)
HISTORY_REDEMPTIONS, HISTORY_REWARDS = 100, 60
BENCH_SECRET = "bench-secret-not-for-production-0123456789abcdef"
GRAPHQL, BARE, REFERENCE = "graphql", "bare", "reference"  # the sides measured

Body = bytes
Asgi = Callable[..., Awaitable[None]]


# Driving an ASGI app in-process


async def asgi_post(app: Asgi, path: str, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()) -> tuple[int, Body]:
    """One POST through the app's ASGI interface; returns (status, body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench.invalid"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("bench.invalid", 80),
    }
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


@contextlib.asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[Starlette]:
    """The app with its lifespan started (provider, database, catalog cache)."""
    async with app.router.lifespan_context(app):
        yield app


# (b): the bare route


def bare_app(full_app: Starlette) -> Starlette:
    """A plain Starlette route answering the Catalog operation's JSON by hand from the same snapshot.

    It does the work any hand-written endpoint must: parse the body, take the page from the
    cached catalog, build the dicts and serialise them. No GraphQL.
    """

    async def catalog(request: Request) -> Response:
        payload = await request.json()
        first = payload.get("variables", {}).get("first", PAGE_SIZE)
        snapshot = await full_app.state.services.catalog.get()
        page = page_catalog(snapshot, first=first, after=None, last=None, before=None, filter=CatalogFilter(), sort="NAME")
        costs = snapshot.point_costs
        edges = []
        for reward, cursor in zip(page.items, page.cursors, strict=True):
            d = reward.denomination
            currency = reward.currency_code
            edges.append(
                {
                    "cursor": cursor,
                    "node": {
                        "id": encode_global_id("Reward", reward.id),
                        "name": reward.name,
                        "brand": reward.brand,
                        "category": reward.category,
                        "imageUrl": reward.image_url,
                        "currencyCode": currency,
                        "countries": list(reward.countries),
                        "pointCost": costs[reward.id],
                        "availability": reward.availability.value,
                        "denomination": {
                            "kind": d.kind.value,
                            "faceValues": [{"amount": str(v), "currencyCode": currency} for v in d.face_values],
                            "minValue": {"amount": str(d.min_value), "currencyCode": currency},
                            "maxValue": {"amount": str(d.max_value), "currencyCode": currency},
                        },
                    },
                }
            )
        data = {
            "data": {
                "catalog": {
                    "totalCount": page.total_count,
                    "pageInfo": {
                        "hasNextPage": page.has_next_page,
                        "hasPreviousPage": page.has_previous_page,
                        "startCursor": page.cursors[0] if page.cursors else None,
                        "endCursor": page.cursors[-1] if page.cursors else None,
                    },
                    "edges": edges,
                }
            }
        }
        return Response(json.dumps(data, separators=(",", ":")), media_type="application/json")

    return Starlette(routes=[Route("/catalog", catalog, methods=["POST"])])


# Timing


Call = Callable[[], Awaitable[Any]]


async def rate(call: Call, seconds: float) -> float:
    """Requests per second of `call` run back to back for about `seconds`."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    now = start
    while now < deadline:
        for _ in range(10):
            await call()
        count += 10
        now = time.perf_counter()
    return count / (now - start)


async def measure(sides: dict[str, Call], *, rounds: int, seconds: float) -> dict[str, list[float]]:
    """Interleaved rounds, rotating which side goes first, so drift and neighbours hit every side alike."""
    rates: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            rates[name].append(await rate(sides[name], seconds))
    return rates


# History: provider calls per loader level


async def seed_history(app: Starlette, user_id: str) -> None:
    """100 REDEEM transactions whose redemptions point at 60 different available rewards."""
    services = app.state.services
    provider = services.provider
    failing = failing_reward_ids(provider.catalog)
    rewards = [
        r for r in provider.catalog if r.availability is RewardAvailability.AVAILABLE and r.id not in failing
    ][:HISTORY_REWARDS]
    assert len(rewards) == HISTORY_REWARDS
    for index in range(HISTORY_REDEMPTIONS):
        reward = rewards[index % HISTORY_REWARDS]
        face_value = reward.denomination.min_value
        points = services.pricing.point_cost_for(reward, face_value)
        await provider.redeem(
            RedeemRequest(
                user_id=user_id,
                reward_id=reward.id,
                face_value=face_value,
                points=points,
                idempotency_key=f"bench-history-{index}",
            )
        )


async def history_calls(app: Starlette, token: str, first: int) -> dict[str, int]:
    provider = app.state.services.provider
    body = json.dumps({"query": HISTORY_QUERY, "variables": {"first": first}}).encode()
    provider.calls.reset()
    status, raw = await asgi_post(app, "/graphql", body, ((b"authorization", f"Bearer {token}".encode()),))
    result = json.loads(raw)
    assert status == 200 and "errors" not in result, raw[:500]
    edges = result["data"]["viewer"]["history"]["edges"]
    assert len(edges) == first
    rewards = {e["node"]["redemption"]["reward"]["id"] for e in edges if e["node"]["redemption"]}
    return {
        "list_transactions": provider.calls.get("list_transactions"),
        "get_redemptions": provider.calls.get("get_redemptions"),
        "get_rewards": provider.calls.get("get_rewards"),
        "distinct_rewards": len(rewards),
    }


# Main


def settings_for(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        jwt_secret=BENCH_SECRET,
        sandbox_starting_balance=10_000_000,
        sandbox_fulfilment_delay=3600.0,  # redemptions stay PENDING: nothing runs in the background
        # The cost limits add `extensions.cost` to each response, which a bare route cannot produce
        # byte for byte; bench_protection.py measures what they cost on top of this.
        protections_enabled=False,
    )


@contextlib.contextmanager
def strawberrys_own_executor() -> Iterator[None]:
    """Apps created inside use Strawberry's execution context instead of the schema's short path.

    For reference only: shows what the short path for plain leaf fields is worth, same run.
    """
    import schema

    chosen = schema.execution_context_class
    schema.execution_context_class = lambda: None
    try:
        yield
    finally:
        schema.execution_context_class = chosen


def poster(app: Asgi, path: str, body: bytes) -> Call:
    async def call() -> Body:
        status, raw = await asgi_post(app, path, body)
        assert status == 200, raw[:300]
        return raw

    return call


async def main(args: argparse.Namespace) -> int:
    body = json.dumps({"query": CATALOG_QUERY, "variables": {"first": PAGE_SIZE}}).encode()
    with tempfile.TemporaryDirectory(prefix="giftgraph-bench-") as tmp:
        settings = settings_for(Path(tmp) / "app")
        app = create_app(settings)
        with strawberrys_own_executor():
            reference = create_app(settings_for(Path(tmp) / "reference"))
        async with running(app), running(reference):
            sides = {
                GRAPHQL: poster(app, "/graphql", body),
                BARE: poster(bare_app(app), "/catalog", body),
                REFERENCE: poster(reference, "/graphql", body),
            }
            bodies = {name: await call() for name, call in sides.items()}
            if len(set(bodies.values())) != 1:
                for name, raw in bodies.items():
                    print(f"{name}: {raw[:300]!r}", file=sys.stderr)
                print("the responses differ: nothing to compare", file=sys.stderr)
                return 1
            edges = json.loads(bodies[GRAPHQL])["data"]["catalog"]["edges"]
            assert len(edges) == PAGE_SIZE, len(edges)

            # Warm up every side: catalog snapshot, parser and validation caches, code paths.
            for call in sides.values():
                await rate(call, args.warmup)

            if args.profile:
                profiler = cProfile.Profile()
                profiler.enable()
                await rate(sides[GRAPHQL], args.seconds * 3)
                profiler.disable()
                pstats.Stats(profiler).sort_stats("tottime").print_stats(35)
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(50)
                return 0

            rates = await measure(sides, rounds=args.rounds, seconds=args.seconds)

            user_id = "bench-history"
            await seed_history(app, user_id)
            token = issue_token(settings, user_id)
            history = {first: await history_calls(app, token, first) for first in HISTORY_PAGES}

    report = render(rates, history, body_bytes=len(bodies[GRAPHQL]), args=args)
    print(report)
    if args.results is not None:
        args.results.write_text(results_file(report))
        print(f"wrote {args.results}")
    return 0


def render(
    rates: dict[str, list[float]], history: dict[int, dict[str, int]], *, body_bytes: int, args: argparse.Namespace
) -> str:
    def ratios(name: str) -> list[float]:
        return [x / y for x, y in zip(rates[name], rates[BARE], strict=True)]

    def row(label: str, name: str) -> str:
        r = rates[name]
        return f"| {label} | {statistics.median(r):,.0f} | {min(r):,.0f} | {max(r):,.0f} |"

    def ratio_row(label: str, name: str) -> str:
        r = ratios(name)
        return f"| {label} | {statistics.median(r):.1%} | {min(r):.1%} | {max(r):.1%} |"

    ratio = statistics.median(ratios(GRAPHQL))
    one_call = all(
        c["list_transactions"] == 1 and c["get_redemptions"] == 1 and c["get_rewards"] == 1 for c in history.values()
    )
    lines = [
        f"Catalog operation (graphql/operations/Catalog.graphql), first: {PAGE_SIZE}, {body_bytes:,} bytes per response,",
        "the same bytes from every side; raw ASGI calls in one process;",
        f"{args.rounds} interleaved rounds of {args.seconds:g} s per side after {args.warmup:g} s of warm-up;",
        f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.machine()}.",
        "",
        "| side | req/s (median) | slowest round | fastest round |",
        "|---|---:|---:|---:|",
        row("(a) GraphQL: the full ASGI app (middleware, view, Strawberry)", GRAPHQL),
        row("(b) bare Starlette route, byte-identical JSON", BARE),
        row("(a') for reference: (a) on Strawberry's own execution context", REFERENCE),
        "",
        "| ratio, median of the per-round ratios | median | worst round | best round |",
        "|---|---:|---:|---:|",
        ratio_row("**(a)/(b)**", GRAPHQL),
        ratio_row("(a')/(b)", REFERENCE),
        "",
        f"History operation: provider calls per query ({HISTORY_REDEMPTIONS} REDEEM transactions over "
        f"{HISTORY_REWARDS} rewards)",
        "",
        "| page size | list_transactions | get_redemptions (loader) | get_rewards (loader) | distinct rewards on the page |",
        "|---:|---:|---:|---:|---:|",
    ]
    for first, calls in history.items():
        lines.append(
            f"| {first} | {calls['list_transactions']} | {calls['get_redemptions']} | {calls['get_rewards']} "
            f"| {calls['distinct_rewards']} |"
        )
    lines += [
        "",
        f"Target (a)/(b) >= 10%: {'met' if ratio >= 0.10 else 'NOT met'}. "
        f"One provider call per loader level: {'yes' if one_call else 'NO'}.",
    ]
    return "\n".join(lines)


def results_file(report: str) -> str:
    return (
        "# Benchmark results\n\n"
        f"Measured {datetime.date.today().isoformat()} with `.venv/bin/python bench/bench_catalog.py --results bench/RESULTS.md`.\n\n"
        "Machine: 2 CPU cores shared with other work, so absolute req/s move between runs; the figures to\n"
        "read are the ratios, each taken against the bare-route baseline of the same run and round.\n\n"
        f"{report}\n"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds per side (median reported)")
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one timed run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per side")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the GraphQL side and exit")
    parser.add_argument("--results", type=Path, help="also write the table, dated, to this Markdown file")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
