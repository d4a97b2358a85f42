"""Benchmark: what the protections cost: the Catalog operation with every protection on versus off.

Run with `.venv/bin/python bench/bench_protection.py` (`--results bench/RESULTS.md` also appends the
table, dated, to that file, replacing an earlier protection section and keeping the rest).
Everything runs in this one process through the full ASGI app, driven by raw ASGI calls (no
sockets), with bench/bench_catalog.py's helpers.

(p) has every protection as a production deployment runs it, on the default settings: the static
limits and the query cost checked before execution, the cost charged to the caller's budget, the
operation deadline, automatic persisted queries, CSRF checks, introspection and field suggestions
off. (u) has all of that off that the settings can turn off (`protections_enabled=false`,
`persisted_queries=off`, introspection and suggestions on). Each request comes from a client
address of its own, as from many clients: every request is costed and charged, no budget runs
out, and no client's window grows past what the default budget allows.

The figure to read is the overhead: how much more CPU time a request takes with the protections,
the median of the per-round ratios of many short interleaved rounds. CPU time of this process
rather than wall-clock time, because the machine is shared: being descheduled stretches a round's
wall-clock time but not the CPU time its requests used. Requests per wall-clock second are shown
beside it. Target: under 10%.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):  # runnable from a checkout even when not installed
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_catalog import CATALOG_QUERY, PAGE_SIZE, Asgi, Call, poster, rate, running, settings_for  # noqa: E402

from giftgraph.app import create_app  # noqa: E402
from giftgraph.settings import Settings  # noqa: E402

ON, OFF = "on", "off"
TARGET = 0.10
SECTION = "## Protection overhead"

PROTECTED: dict[str, Any] = {"protections_enabled": True, "introspection": False, "field_suggestions": False}
UNPROTECTED: dict[str, Any] = {
    "protections_enabled": False,
    "persisted_queries": "off",
    "introspection": True,
    "field_suggestions": True,
}


def side_settings(data_dir: Path, overrides: dict[str, Any]) -> Settings:
    return Settings(**{**settings_for(data_dir).model_dump(), **overrides})


def from_many_clients(app: Asgi) -> Asgi:
    """The app, called with a new client address on every request (10.0.0.1, 10.0.0.2, ...)."""
    numbers = itertools.count(1)

    async def call(scope: dict[str, Any], receive: Any, send: Any) -> None:
        n = next(numbers)
        address = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        await app({**scope, "client": (address, 50000)}, receive, send)

    return call


async def main(args: argparse.Namespace) -> int:
    body = json.dumps({"query": CATALOG_QUERY, "variables": {"first": PAGE_SIZE}}).encode()
    with tempfile.TemporaryDirectory(prefix="giftgraph-bench-") as tmp:
        protected = create_app(side_settings(Path(tmp) / ON, PROTECTED))
        unprotected = create_app(side_settings(Path(tmp) / OFF, UNPROTECTED))
        async with running(protected), running(unprotected):
            sides = {
                ON: poster(from_many_clients(protected), "/graphql", body),
                OFF: poster(from_many_clients(unprotected), "/graphql", body),
            }
            raw = {name: await call() for name, call in sides.items()}
            responses = {name: json.loads(text) for name, text in raw.items()}
            problem = compare(responses)
            if problem:
                print(problem, file=sys.stderr)
                return 1
            for call in sides.values():
                await rate(call, args.warmup)
            runs = await measure_both(sides, rounds=args.rounds, seconds=args.seconds)

    report = render(runs, responses[ON], sizes={name: len(text) for name, text in raw.items()}, args=args)
    print(report)
    if args.results is not None:
        append_section(args.results, report)
        print(f"wrote {args.results}")
    return 0


Run = tuple[float, float]  # (requests per wall-clock second, CPU seconds per request)


async def timed(call: Call, seconds: float) -> Run:
    """`call` back to back for about `seconds`: its rate by the wall clock, and its CPU time per call."""
    count = 0
    wall, cpu = time.perf_counter(), time.process_time()
    deadline = wall + seconds
    while time.perf_counter() < deadline:
        for _ in range(10):
            await call()
        count += 10
    return count / (time.perf_counter() - wall), (time.process_time() - cpu) / count


async def measure_both(sides: dict[str, Call], *, rounds: int, seconds: float) -> dict[str, list[Run]]:
    """bench_catalog.measure's interleaved rounds (rotating which side goes first), timing CPU as well."""
    runs: dict[str, list[Run]] = {name: [] for name in sides}
    names = list(sides)
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            runs[name].append(await timed(sides[name], seconds))
    return runs


def compare(responses: dict[str, dict[str, Any]]) -> str | None:
    """Why the two sides cannot be compared (different data, or protections not on/off), or None."""
    if responses[ON].get("data") != responses[OFF].get("data") or "errors" in responses[ON]:
        return f"the responses differ: {str(responses[ON])[:300]} / {str(responses[OFF])[:300]}"
    if len(responses[ON]["data"]["catalog"]["edges"]) != PAGE_SIZE:
        return "the page is not full"
    if "cost" not in responses[ON].get("extensions", {}):
        return "the protected side reports no extensions.cost: are the protections on?"
    if "cost" in responses[OFF].get("extensions", {}):
        return "the unprotected side reports extensions.cost: are the protections off?"
    return None


def render(
    runs: dict[str, list[Run]], protected: dict[str, Any], *, sizes: dict[str, int], args: argparse.Namespace
) -> str:
    def rates(name: str) -> list[float]:
        return [rate for rate, _ in runs[name]]

    def cpu_ms(name: str) -> list[float]:
        return [cpu * 1000 for _, cpu in runs[name]]

    def quartiles(values: list[float]) -> tuple[float, float, float]:
        low, median, high = statistics.quantiles(values, n=4)
        return low, median, high

    def row(label: str, name: str) -> str:
        low, median, high = quartiles(cpu_ms(name))
        return f"| {label} | {median:.2f} | {low:.2f} – {high:.2f} | {statistics.median(rates(name)):,.0f} |"

    def ratio_row(label: str, values: list[float], *, bold: bool = False) -> str:
        low, median, high = quartiles(values)
        figure = f"**{median:.1%}**" if bold else f"{median:.1%}"
        return f"| {label} | {figure} | {low:.1%} – {high:.1%} |"

    # Overhead per request: CPU time with / CPU time without - 1, per round; the same from wall-clock rates.
    overheads = [on / off - 1 for on, off in zip(cpu_ms(ON), cpu_ms(OFF), strict=True)]
    wall_overheads = [off / on - 1 for on, off in zip(rates(ON), rates(OFF), strict=True)]
    overhead = quartiles(overheads)[1]
    cost = json.dumps(protected["extensions"]["cost"], separators=(", ", ": "))
    lines = [
        f"Catalog operation (graphql/operations/Catalog.graphql), first: {PAGE_SIZE}: the same data from both sides,",
        f"{sizes[ON]:,} bytes per response with protections (`extensions.cost` added), {sizes[OFF]:,} without;",
        "the full ASGI app, raw ASGI calls in one process, each request from a client address of its own;",
        f"{args.rounds} interleaved rounds of {args.seconds:g} s per side after {args.warmup:g} s of warm-up;",
        f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.machine()}.",
        f"The protected side's `extensions.cost`: `{cost}`.",
        "",
        "Rounds are short, so a garbage collection or a catalog refresh can swing one: the tables give the",
        "median and the middle half of the rounds (25th to 75th percentile).",
        "",
        "| side | CPU ms per request (median) | middle half of rounds | req/s, wall clock (median) |",
        "|---|---:|---:|---:|",
        row("(p) every protection on, as in production", ON),
        row("(u) every protection off that the settings turn off", OFF),
        "",
        "| overhead per request, per round | median | middle half of rounds |",
        "|---|---:|---:|",
        ratio_row("**CPU time: (p)/(u) - 1**", overheads, bold=True),
        ratio_row("wall clock: (u)/(p) req/s - 1", wall_overheads),
        "",
        f"Target overhead < {TARGET:.0%}: {'met' if overhead < TARGET else 'NOT met'}.",
    ]
    return "\n".join(lines)


def append_section(results: Path, report: str) -> None:
    """Adds the dated section to the results file, in place of an earlier one; the rest stays."""
    existing = results.read_text() if results.exists() else "# Benchmark results\n"
    kept = re.sub(rf"\n{re.escape(SECTION)}\n.*?(?=\n## |\Z)", "", existing, flags=re.DOTALL).rstrip("\n")
    section = (
        f"{SECTION}\n\n"
        f"Measured {datetime.date.today().isoformat()} with "
        "`.venv/bin/python bench/bench_protection.py --results bench/RESULTS.md`.\n\n"
        f"{report}\n"
    )
    results.write_text(f"{kept}\n\n{section}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100, help="interleaved rounds per side (median reported)")
    parser.add_argument("--seconds", type=float, default=0.1, help="length of one timed run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per side")
    parser.add_argument("--results", type=Path, help="also append the table, dated, to this Markdown file")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
