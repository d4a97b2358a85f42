"""Benchmark: the gateway over a real network, against the sandbox REST service on loopback with 20 ms latency.

Run with `.venv/bin/python bench/bench_network.py` (`--quick` for a short run, `--results
bench/RESULTS-network.md` to also write the dated table there). One run starts, as separate
processes, `giftgraph sandbox serve` (20 ms added to every port call) and three `giftgraph serve`
gateways with GIFTGRAPH_PROVIDER=rest pointing at it: one as configured by default, one whose
catalog cache expires after a millisecond (every Catalog query walks the provider, as on a cold
start) and one on the aiohttp transport. Separate processes, as deployed: a gateway and a sandbox
in one event loop would queue each other's CPU work behind the 20 ms sleeps and blur both sides.

(A) Throughput and latency with N concurrent workers sharing one httpx.AsyncClient, the same client
for every side: the History and Catalog operations through the gateway versus the sandbox REST
calls the gateway makes for them, made directly. The client runs on httpx-aiohttp's transport by
default, so that the load generator's own CPU weighs as little as it can on either side.
(B) One provider call alone versus 50 at once: ProviderHttpClient (the gateway's HTTP layer, built
from Settings as giftgraph/rest.py builds it) on httpx's transport and on httpx-aiohttp's, and a plain
httpx.AsyncClient without the layer, so the layer's own cost shows.

Sides are measured in interleaved rounds, rotating which goes first; the tables give the median of
the rounds, and the ratios are taken per round, against the baseline of the same round.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable from a checkout even when not installed
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from giftgraph.auth import issue_token  # noqa: E402
from giftgraph.rest import http_policy, provider_auth  # noqa: E402
from giftgraph.settings import Settings  # noqa: E402
from providers.http import HttpPolicy, ProviderHttpClient, transport_for  # noqa: E402
from providers.sandbox.credentials import SandboxCredentials, load_or_create  # noqa: E402

OPERATIONS = ROOT / "graphql" / "operations"
CATALOG_QUERY = (OPERATIONS / "Catalog.graphql").read_text()
HISTORY_QUERY = (OPERATIONS / "History.graphql").read_text()
REDEEM_QUERY = (OPERATIONS / "Redeem.graphql").read_text()

LATENCY = 0.02  # seconds the sandbox adds to every port call
CATALOG_PAGE = 50  # the Catalog operation's default page
WALK_PAGE = 100  # the gateway's catalog_page_size: a cache miss walks the catalog in pages of this
HISTORY_PAGE = 20  # History first: 20, every transaction a redemption of a different reward
BURST = 50  # concurrent provider calls in (B)
BATCH_IDS = 5  # (B) calls GET /v1/rewards/batch with this many ids: a typical loader call
BENCH_SECRET = "bench-secret-not-for-production-0123456789abcdef"
USER = "bench-network"
RESULTS_COMMAND = ".venv/bin/python bench/bench_network.py --results bench/RESULTS-network.md"

Call = Callable[[], Awaitable[Any]]


# Processes


@dataclass
class Service:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environment(**values: str) -> dict[str, str]:
    """This process's environment without any GIFTGRAPH_ setting of the caller's, plus `values`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIFTGRAPH_")}
    return {**env, **values}


@contextlib.contextmanager
def spawned(name: str, args: list[str], env: dict[str, str], log: Path, url: str) -> Iterator[Service]:
    """A `python -m giftgraph ...` process for the block; terminated (then killed) on the way out, whatever happens."""
    with log.open("wb") as out:
        # A session of its own: Ctrl-C reaches this script only, which then stops the child in order.
        process = subprocess.Popen(
            [sys.executable, "-m", "giftgraph", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Service(name, url, process, log)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_ready(service: Service, path: str, *, auth: httpx.Auth | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(auth=auth, timeout=2.0, trust_env=False) as client:
        while True:
            if service.process.poll() is not None:
                raise RuntimeError(f"{service.name} exited ({service.process.returncode}); see {service.log}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(service.url + path).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{service.name} not ready after {timeout:g} s; see {service.log}")
            time.sleep(0.1)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process (this one when pid is None); 0.0 where /proc is missing."""
    if pid is None:
        return time.process_time()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sandbox_env(data_dir: Path, port: int) -> dict[str, str]:
    return clean_environment(
        GIFTGRAPH_DATA_DIR=str(data_dir),
        GIFTGRAPH_SANDBOX_URL=f"http://127.0.0.1:{port}",
        GIFTGRAPH_SANDBOX_LATENCY=str(LATENCY),
        GIFTGRAPH_SANDBOX_RATE_LIMIT="100000/second",  # generous: the rate limit is not what is measured
        GIFTGRAPH_SANDBOX_STARTING_BALANCE="10000000",
        GIFTGRAPH_SANDBOX_FULFILMENT_DELAY="3600",  # redemptions stay PENDING: nothing runs in the background
        # The provider runs elsewhere in real life; here it shares the two cores, so it logs warnings only.
        GIFTGRAPH_LOG_LEVEL="WARNING",
    )


def gateway_env(
    data_dir: Path, port: int, sandbox: Service, credentials: SandboxCredentials, **extra: str
) -> dict[str, str]:
    return clean_environment(
        GIFTGRAPH_DATA_DIR=str(data_dir),
        GIFTGRAPH_HOST="127.0.0.1",
        GIFTGRAPH_PORT=str(port),
        GIFTGRAPH_JWT_SECRET=BENCH_SECRET,
        GIFTGRAPH_PROVIDER="rest",
        GIFTGRAPH_PROVIDER_BASE_URL=sandbox.url,
        GIFTGRAPH_PROVIDER_API_KEY=credentials.api_key,
        GIFTGRAPH_PROVIDER_API_SECRET=credentials.api_secret,
        GIFTGRAPH_PROVIDER_RATE_LIMIT_PER_SECOND="0",  # the client-side limiter would cap the load at 20/s
        GIFTGRAPH_PROTECTIONS_ENABLED="false",  # budgets would throttle one user's load
        **extra,
    )


# (A) Load: N workers, one shared client


@dataclass(frozen=True)
class LoadRound:
    rate: float  # completed requests per second
    p50: float  # seconds
    p99: float
    cpu: dict[str, float]  # CPU seconds per request, by process ("gateway", "sandbox", "client")


@dataclass(frozen=True)
class LoadSide:
    label: str
    call: Call
    gateway_pid: int | None  # whose CPU is charged to the side as "gateway"


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def load(side: LoadSide, *, workers: int, seconds: float, sandbox_pid: int) -> LoadRound:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await side.call()
            latencies.append(time.perf_counter() - start)

    def cpu() -> dict[str, float]:
        gateway = cpu_seconds(side.gateway_pid) if side.gateway_pid else 0.0
        return {"gateway": gateway, "sandbox": cpu_seconds(sandbox_pid), "client": cpu_seconds(None)}

    before = cpu()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = time.perf_counter() - start
    after = cpu()
    count = len(latencies)
    return LoadRound(
        rate=count / elapsed,
        p50=percentile(latencies, 50),
        p99=percentile(latencies, 99),
        cpu={name: (after[name] - before[name]) / count for name in before},
    )


async def load_rounds(
    sides: dict[str, LoadSide], *, rounds: int, seconds: float, warmup: float, workers: int, sandbox_pid: int
) -> dict[str, list[LoadRound]]:
    for side in sides.values():
        await load(side, workers=workers, seconds=warmup, sandbox_pid=sandbox_pid)
    results: dict[str, list[LoadRound]] = {name: [] for name in sides}
    names = list(sides)
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(await load(sides[name], workers=workers, seconds=seconds, sandbox_pid=sandbox_pid))
        print(f"  load round {index + 1}/{rounds} done", file=sys.stderr)
    return results


class Sides:
    """The calls of (A), all on one shared httpx.AsyncClient."""

    def __init__(self, client: httpx.AsyncClient, *, sandbox: str, credentials: SandboxCredentials, token: str) -> None:
        self.client = client
        self.sandbox = sandbox
        basic = base64.b64encode(f"{credentials.api_key}:{credentials.api_secret}".encode()).decode()
        # Headers built once, on both sides: neither pays for an auth flow per request.
        self.direct_headers = {"Authorization": f"Basic {basic}", "Accept": "application/json"}
        self.gateway_headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def graphql(self, gateway: str, query: str, variables: dict[str, Any]) -> Call:
        body = json.dumps({"query": query, "variables": variables}).encode()
        url = f"{gateway}/graphql"

        async def call() -> bytes:
            response = await self.client.post(url, content=body, headers=self.gateway_headers)
            if response.status_code != 200 or b'"errors"' in response.content:
                raise RuntimeError(f"gateway answered {response.status_code}: {response.text[:300]}")
            return response.content

        return call

    async def direct(self, path: str, params: Any = None) -> Any:
        response = await self.client.get(f"{self.sandbox}{path}", params=params, headers=self.direct_headers)
        if response.status_code != 200:
            raise RuntimeError(f"sandbox answered {response.status_code} to {path}: {response.text[:300]}")
        return response.json()

    async def direct_history(self) -> list[str]:
        """What the gateway asks for one History page: the page, then its redemptions, then their rewards."""
        page = await self.direct("/v1/transactions", {"user_id": USER, "limit": HISTORY_PAGE})
        redemption_ids = [tx["redemption_id"] for tx in page["items"] if tx["redemption_id"]]
        redemptions = await self.direct("/v1/redemptions/batch", {"id": redemption_ids})
        reward_ids = list(dict.fromkeys(r["reward_id"] for r in redemptions["items"] if r))
        rewards = await self.direct("/v1/rewards/batch", {"id": reward_ids})
        return [tx["id"] for tx in page["items"]] + [r["id"] for r in rewards["items"] if r]

    async def direct_catalog_page(self) -> Any:
        return await self.direct("/v1/rewards", {"limit": CATALOG_PAGE})

    async def direct_catalog_walk(self) -> int:
        """The whole catalog in pages of WALK_PAGE: what a gateway's cache miss costs."""
        count, cursor = 0, None
        while True:
            params: dict[str, Any] = {"limit": WALK_PAGE}
            if cursor:
                params["cursor"] = cursor
            page = await self.direct("/v1/rewards", params)
            count += len(page["items"])
            cursor = page["next_cursor"]
            if not cursor or not page["items"]:
                return count


# (B) 50 concurrent provider calls versus one


@dataclass(frozen=True)
class BurstRound:
    single_p50: float
    single_p99: float
    burst_p50: float  # per call, all bursts of the round pooled
    burst_p99: float
    burst_wall: float  # median wall time of one burst of BURST calls


async def burst_round(call: Call, *, singles: int, bursts: int) -> BurstRound:
    alone = []
    for _ in range(singles):
        start = time.perf_counter()
        await call()
        alone.append(time.perf_counter() - start)
    per_call: list[float] = []
    walls = []

    async def timed() -> None:
        start = time.perf_counter()
        await call()
        per_call.append(time.perf_counter() - start)

    for _ in range(bursts):
        await asyncio.sleep(0.05)  # the previous burst's connections are back in the pool
        start = time.perf_counter()
        await asyncio.gather(*(timed() for _ in range(BURST)))
        walls.append(time.perf_counter() - start)
    return BurstRound(
        single_p50=percentile(alone, 50),
        single_p99=percentile(alone, 99),
        burst_p50=percentile(per_call, 50),
        burst_p99=percentile(per_call, 99),
        burst_wall=statistics.median(walls),
    )


PLAIN_HTTPX, PLAIN_AIOHTTP = "plain httpx.AsyncClient", "plain httpx.AsyncClient, aiohttp transport"
LAYER_HTTPX, LAYER_HTTPX_KA, LAYER_AIOHTTP = (
    "ProviderHttpClient, httpx",
    f"ProviderHttpClient, httpx, keep-alive pool {BURST}",
    "ProviderHttpClient, aiohttp",
)


@contextlib.asynccontextmanager
async def provider_clients(base_url: str, credentials: SandboxCredentials, ids: list[str]) -> Any:
    """Each (B) side's call, clients opened for the block and closed after."""
    settings = Settings(
        provider="rest",
        provider_base_url=base_url,
        provider_api_key=credentials.api_key,
        provider_api_secret=credentials.api_secret,
        provider_rate_limit_per_second=0,  # the limiter would space 50 calls 50 ms apart
        jwt_secret=BENCH_SECRET,
    )
    policy = http_policy(settings)
    roomy = dataclasses.replace(policy, max_keepalive_connections=policy.max_connections)
    params = {"id": ids}
    path = "/v1/rewards/batch"
    async with contextlib.AsyncExitStack() as stack:
        calls: dict[str, Call] = {}
        for label, kind in ((PLAIN_HTTPX, "httpx"), (PLAIN_AIOHTTP, "aiohttp")):
            plain = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=base_url,
                    auth=httpx.BasicAuth(credentials.api_key, credentials.api_secret),
                    timeout=policy.timeout(),
                    transport=transport_for(kind, policy),  # type: ignore[arg-type]
                    trust_env=False,
                )
            )
            calls[label] = _plain_call(plain, path, params)
        for label, kind, chosen in (
            (LAYER_HTTPX, "httpx", policy),
            (LAYER_HTTPX_KA, "httpx", roomy),
            (LAYER_AIOHTTP, "aiohttp", policy),
        ):
            layer = ProviderHttpClient(
                provider="rest",
                base_url=base_url,
                auth=provider_auth(settings, base_url),
                policy=chosen,
                transport=transport_for(kind, chosen),  # type: ignore[arg-type]
            )
            await stack.enter_async_context(layer)
            calls[label] = _layer_call(layer, path, params)
        for call in calls.values():  # every id exists, or the comparison is of error paths
            body = await call()
            if not isinstance(body, dict) or any(item is None for item in body["items"]):
                raise RuntimeError(f"unexpected reward batch: {str(body)[:200]}")
        yield calls


def _plain_call(client: httpx.AsyncClient, path: str, params: Any) -> Call:
    async def call() -> Any:
        response = await client.get(path, params=params)
        response.raise_for_status()
        return response.json()

    return call


def _layer_call(client: ProviderHttpClient, path: str, params: Any) -> Call:
    async def call() -> Any:
        return await client.get(path, params=params, operation="get_rewards")

    return call


async def burst_rounds(
    calls: dict[str, Call], *, rounds: int, singles: int, bursts: int
) -> dict[str, list[BurstRound]]:
    for call in calls.values():  # warm-up: connections, code paths
        await burst_round(call, singles=5, bursts=1)
    results: dict[str, list[BurstRound]] = {name: [] for name in calls}
    names = list(calls)
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(await burst_round(calls[name], singles=singles, bursts=bursts))
        print(f"  burst round {index + 1}/{rounds} done", file=sys.stderr)
    return results


# Setup: seed the history, check what one History query costs the provider


async def seed_history(client: httpx.AsyncClient, gateway: str, token: str) -> None:
    """HISTORY_PAGE redemptions of different available rewards, through the gateway's Redeem mutation."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    response = await client.post(
        f"{gateway}/graphql", json={"query": CATALOG_QUERY, "variables": {"first": 100}}, headers=headers
    )
    edges = response.json()["data"]["catalog"]["edges"]
    chosen = [edge["node"] for edge in edges if edge["node"]["availability"] == "AVAILABLE"][:HISTORY_PAGE]
    for index, node in enumerate(chosen):
        denomination = node["denomination"]
        face_values = denomination["faceValues"]
        face_value = face_values[0]["amount"] if face_values else denomination["minValue"]["amount"]
        variables = {
            "input": {"clientMutationId": f"bench-{index}", "rewardId": node["id"], "faceValue": face_value}
        }
        response = await client.post(
            f"{gateway}/graphql", json={"query": REDEEM_QUERY, "variables": variables}, headers=headers
        )
        payload = response.json()["data"]["redeem"]
        if payload["userErrors"] or payload["redemption"] is None:
            raise RuntimeError(f"seeding the history failed: {payload['userErrors']}")


async def provider_calls_per_query(sides: Sides, call: Call) -> dict[str, int]:
    """The sandbox's per-operation call counts for one `call` (its admin stats, before and after)."""
    before = (await sides.direct("/v1/sandbox/stats"))["calls"]
    await call()
    after = (await sides.direct("/v1/sandbox/stats"))["calls"]
    return {op: after.get(op, 0) - before.get(op, 0) for op in after if after.get(op, 0) != before.get(op, 0)}


# Main


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class STOP:
    signalled = False


async def interruptible(work: Awaitable[str]) -> str:
    """`work`, cancelled on Ctrl-C or SIGTERM (asyncio.run's own Ctrl-C handling covers SIGINT only)."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None

    def stop() -> None:
        STOP.signalled = True
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    return await work


# The gateways: settings on top of gateway_env's.
GATEWAYS: dict[str, dict[str, str]] = {
    # httpx's own transport, the catalog cache with its default TTLs
    "cached": {"GIFTGRAPH_PROVIDER_TRANSPORT": "httpx"},
    "uncached": {
        "GIFTGRAPH_PROVIDER_TRANSPORT": "httpx",
        "GIFTGRAPH_CATALOG_STABLE_TTL": "0.001",
        "GIFTGRAPH_CATALOG_VOLATILE_TTL": "0.001",
    },
    "aiohttp": {"GIFTGRAPH_PROVIDER_TRANSPORT": "aiohttp"},  # the default since this benchmark's first runs
}
H_GATEWAY, H_AIOHTTP = "History via gateway", "History via gateway, aiohttp transport"
H_DIRECT = "History direct: 3 REST calls"
C_CACHED, C_UNCACHED = "Catalog via gateway, cache on (default TTLs)", "Catalog via gateway, cache off (TTL 1 ms)"
GATEWAY_SIDES = (H_GATEWAY, H_AIOHTTP, C_CACHED, C_UNCACHED)
C_PAGE, C_WALK = (
    f"Catalog direct: 1 page of {CATALOG_PAGE}",
    f"Catalog direct: the whole catalog, pages of {WALK_PAGE}",
)


def main(args: argparse.Namespace) -> int:
    # SIGTERM takes Ctrl-C's way out, through every `finally`, which stops the services.
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory(prefix="giftgraph-bench-net-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        sandbox_dir = work / "sandbox"
        sandbox_dir.mkdir()
        credentials = load_or_create(sandbox_dir / "sandbox-credentials.json")  # the service reads the same file
        port = free_port()
        sandbox = stack.enter_context(
            spawned(
                "sandbox",
                ["sandbox", "serve", "--host", "127.0.0.1", "--port", str(port)],
                sandbox_env(sandbox_dir, port),
                work / "sandbox.log",
                f"http://127.0.0.1:{port}",
            )
        )
        gateways = {}
        for name, extra in GATEWAYS.items():
            gateway_port = free_port()
            (work / name).mkdir()
            env = gateway_env(work / name, gateway_port, sandbox, credentials, **extra)
            gateways[name] = stack.enter_context(
                spawned(f"gateway ({name})", ["serve"], env, work / f"{name}.log", f"http://127.0.0.1:{gateway_port}")
            )
        wait_ready(sandbox, "/v1/health", auth=httpx.BasicAuth(credentials.api_key, credentials.api_secret))
        for gateway in gateways.values():
            wait_ready(gateway, "/readyz")
        try:
            report = asyncio.run(interruptible(measure(args, sandbox, gateways, credentials)))
        except BaseException:
            if STOP.signalled:  # a cancelled request may surface as any error: it is still an interruption
                raise KeyboardInterrupt from None
            for service in (sandbox, *gateways.values()):
                tail = service.log.read_text(errors="replace")[-2000:]
                if tail.strip():
                    print(f"--- {service.name} log (tail) ---\n{tail}", file=sys.stderr)
            raise
    print(report)
    if args.results is not None:
        args.results.write_text(results_file(report))
        print(f"wrote {args.results}")
    return 0


async def measure(
    args: argparse.Namespace, sandbox: Service, gateways: dict[str, Service], credentials: SandboxCredentials
) -> str:
    token = issue_token(Settings(jwt_secret=BENCH_SECRET), USER)
    # The load generator: roomy enough that its own pool never queues a worker.
    roomy = HttpPolicy(max_connections=args.workers * 4, max_keepalive_connections=args.workers * 4)
    transport = transport_for(args.client_transport, roomy)
    async with httpx.AsyncClient(timeout=30.0, trust_env=False, transport=transport) as client:
        sides = Sides(client, sandbox=sandbox.url, credentials=credentials, token=token)
        await seed_history(client, gateways["cached"].url, token)
        load_sides = build_load_sides(sides, gateways)
        facts = await verify(sides, load_sides)
        print(f"(A) {args.workers} workers, {args.rounds} rounds of {args.seconds:g} s per side", file=sys.stderr)
        loads = await load_rounds(
            load_sides,
            rounds=args.rounds,
            seconds=args.seconds,
            warmup=args.warmup,
            workers=args.workers,
            sandbox_pid=sandbox.process.pid,
        )
        ids = [reward["id"] for reward in (await sides.direct_catalog_page())["items"][:BATCH_IDS]]
    print(f"(B) {BURST} concurrent calls versus one, {args.rounds} rounds", file=sys.stderr)
    async with provider_clients(sandbox.url, credentials, ids) as provider_calls:
        bursts = await burst_rounds(provider_calls, rounds=args.rounds, singles=args.singles, bursts=args.bursts)
    return render(loads, bursts, facts=facts, args=args)


def build_load_sides(sides: Sides, gateways: dict[str, Service]) -> dict[str, LoadSide]:
    def via(gateway: str, query: str, first: int) -> tuple[Call, int]:
        service = gateways[gateway]
        return sides.graphql(service.url, query, {"first": first}), service.process.pid

    return {
        H_GATEWAY: LoadSide(H_GATEWAY, *via("cached", HISTORY_QUERY, HISTORY_PAGE)),
        H_AIOHTTP: LoadSide(H_AIOHTTP, *via("aiohttp", HISTORY_QUERY, HISTORY_PAGE)),
        H_DIRECT: LoadSide(H_DIRECT, sides.direct_history, None),
        C_CACHED: LoadSide(C_CACHED, *via("cached", CATALOG_QUERY, CATALOG_PAGE)),
        C_UNCACHED: LoadSide(C_UNCACHED, *via("uncached", CATALOG_QUERY, CATALOG_PAGE)),
        C_PAGE: LoadSide(C_PAGE, sides.direct_catalog_page, None),
        C_WALK: LoadSide(C_WALK, sides.direct_catalog_walk, None),
    }


@dataclass(frozen=True)
class Facts:
    history_calls: dict[str, int]  # provider calls of one History query through the gateway
    miss_calls: dict[str, int]  # provider calls of one Catalog query with the cache off
    catalog_size: int


async def verify(sides: Sides, load_sides: dict[str, LoadSide]) -> Facts:
    """Every side answers in full, and the gateway makes the provider calls the direct History side makes."""
    for name in (H_GATEWAY, H_AIOHTTP):
        edges = json.loads(await load_sides[name].call())["data"]["viewer"]["history"]["edges"]
        _expect(len(edges) == HISTORY_PAGE, f"{name}: {len(edges)} edges")
    for name in (C_CACHED, C_UNCACHED):
        edges = json.loads(await load_sides[name].call())["data"]["catalog"]["edges"]
        _expect(len(edges) == CATALOG_PAGE, f"{name}: {len(edges)} edges")
    direct_ids = await sides.direct_history()
    _expect(len(direct_ids) == 2 * HISTORY_PAGE, f"the direct history returned {len(direct_ids)} ids")
    history_calls = await provider_calls_per_query(sides, load_sides[H_GATEWAY].call)
    expected = {"list_transactions": 1, "get_redemptions": 1, "get_rewards": 1}
    _expect(history_calls == expected, f"one History query made {history_calls} provider calls, not {expected}")
    return Facts(
        history_calls=history_calls,
        miss_calls=await provider_calls_per_query(sides, load_sides[C_UNCACHED].call),
        catalog_size=await sides.direct_catalog_walk(),
    )


def _expect(condition: bool, problem: str) -> None:
    if not condition:
        raise RuntimeError(f"nothing to compare: {problem}")


# Report


def ms(seconds: float, digits: int = 1) -> str:
    return f"{seconds * 1000:.{digits}f}"


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """Median, then the range over the rounds."""
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))} – {fmt.format(max(values))})"


def render(
    loads: dict[str, list[LoadRound]], bursts: dict[str, list[BurstRound]], *, facts: Facts, args: argparse.Namespace
) -> str:
    def load_row(name: str) -> str:
        rounds = loads[name]
        cpu = {key: ms(statistics.median(r.cpu[key] for r in rounds), 2) for key in ("gateway", "sandbox", "client")}
        return (
            f"| {name} | {statistics.median(r.rate for r in rounds):,.0f} "
            f"| {ms(statistics.median(r.p50 for r in rounds))} | {ms(statistics.median(r.p99 for r in rounds))} "
            f"| {cpu['gateway'] if name in GATEWAY_SIDES else '–'} | {cpu['sandbox']} | {cpu['client']} |"
        )

    def load_ratio(label: str, top: str, bottom: str) -> str:
        rates = [a.rate / b.rate for a, b in zip(loads[top], loads[bottom], strict=True)]
        p50s = [a.p50 / b.p50 for a, b in zip(loads[top], loads[bottom], strict=True)]
        return f"| {label} | {spread(rates)} | {spread(p50s)} |"

    def burst_row(name: str) -> str:
        rounds = bursts[name]
        figures = [
            ms(statistics.median(getattr(r, field) for r in rounds))
            for field in ("single_p50", "single_p99", "burst_p50", "burst_p99", "burst_wall")
        ]
        degrade = statistics.median(r.burst_p50 / r.single_p50 for r in rounds)
        return f"| {name} | {' | '.join(figures)} | {degrade:.2f} |"

    def burst_ratio(label: str, top: str, bottom: str) -> str:
        pairs = list(zip(bursts[top], bursts[bottom], strict=True))
        single = [a.single_p50 / b.single_p50 for a, b in pairs]
        p50 = [a.burst_p50 / b.burst_p50 for a, b in pairs]
        wall = [a.burst_wall / b.burst_wall for a, b in pairs]
        return f"| {label} | {spread(single)} | {spread(p50)} | {spread(wall)} |"

    history_calls = ", ".join(f"{op} {n}" for op, n in sorted(facts.history_calls.items()))
    miss_calls = ", ".join(f"{op} {n}" for op, n in sorted(facts.miss_calls.items()))
    lines = [
        f"Sandbox service (`giftgraph sandbox serve`) with {LATENCY * 1000:.0f} ms added to every port call and three",
        "gateways (`giftgraph serve`, GIFTGRAPH_PROVIDER=rest): two on httpx's own transport, catalog cache on and",
        "off, and one on the aiohttp transport (the default setting), each its own process on loopback;",
        "protections and the client-side rate limiter off in the gateways so that one user's load is not throttled.",
        f"The load generator's client uses the {args.client_transport} transport. "
        f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.machine()}, "
        f"{os.cpu_count()} CPUs shared by the load generator, the gateways and the sandbox.",
        "",
        f"### (A) Gateway versus direct REST calls: {args.workers} concurrent workers, one shared httpx.AsyncClient",
        "",
        f"{args.rounds} interleaved rounds of {args.seconds:g} s per side after {args.warmup:g} s of warm-up; "
        "medians of the rounds. CPU columns: CPU time per request of each process over the round (`–`: not involved).",
        f"History: first: {HISTORY_PAGE}, each transaction a redemption of a different reward; one query through the "
        f"gateway made these provider calls: {history_calls}. The direct side makes the same three calls in sequence "
        "(GET /v1/transactions, /v1/redemptions/batch, /v1/rewards/batch).",
        f"Catalog: first: {CATALOG_PAGE}, sorted by name. With the cache on (default TTLs: 30 s for availability, "
        "1 h for the rest) the gateway answers from memory and walks the provider once per 30 s; with the cache "
        "off every query (concurrent ones share one walk) walks the whole catalog, "
        f"{facts.catalog_size} rewards: {miss_calls}. "
        f"The direct baselines are one page of {CATALOG_PAGE} (the same number of rewards) and that whole walk.",
        "",
        "| side | req/s | p50 ms | p99 ms | gateway CPU ms/req | sandbox CPU ms/req | client CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(load_row(name) for name in loads),
        "",
        "| ratio per round: median (worst – best round) | req/s | p50 latency |",
        "|---|---:|---:|",
        load_ratio("**History: gateway / direct**", H_GATEWAY, H_DIRECT),
        load_ratio("History: gateway on aiohttp / direct", H_AIOHTTP, H_DIRECT),
        load_ratio("History: gateway on aiohttp / gateway on httpx", H_AIOHTTP, H_GATEWAY),
        load_ratio("Catalog, cache on: gateway / direct page", C_CACHED, C_PAGE),
        load_ratio("Catalog, cache off: gateway / direct page", C_UNCACHED, C_PAGE),
        load_ratio("Catalog, cache off: gateway / direct walk", C_UNCACHED, C_WALK),
        "",
        f"### (B) One provider call alone versus {BURST} at once",
        "",
        f"GET /v1/rewards/batch with {BATCH_IDS} ids (a loader call, {LATENCY * 1000:.0f} ms of it the sandbox's "
        "sleep), API-key auth, pool limits from the default settings (50 connections, 20 kept alive) unless named; "
        f"the client-side limiter off. Per round: {args.singles} calls one after another, then {args.bursts} bursts of "
        f"{BURST} calls started together (per-call latencies of all bursts pooled); {args.rounds} interleaved rounds, "
        "medians of the rounds.",
        "",
        f"| client | 1 call p50 ms | 1 call p99 ms | {BURST} at once: p50 ms per call | p99 ms | wall ms per burst "
        f"| p50 {BURST} / p50 1 |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(burst_row(name) for name in bursts),
        "",
        "| ratio per round: median (worst – best round) | 1 call p50 | "
        f"{BURST} at once: p50 | {BURST} at once: wall |",
        "|---|---:|---:|---:|",
        burst_ratio("**aiohttp / httpx** (ProviderHttpClient)", LAYER_AIOHTTP, LAYER_HTTPX),
        burst_ratio(f"httpx keep-alive {BURST} / httpx default (ProviderHttpClient)", LAYER_HTTPX_KA, LAYER_HTTPX),
        burst_ratio("aiohttp / httpx (plain clients)", PLAIN_AIOHTTP, PLAIN_HTTPX),
        burst_ratio("layer / plain (httpx): the layer's own cost", LAYER_HTTPX, PLAIN_HTTPX),
        burst_ratio("layer / plain (aiohttp)", LAYER_AIOHTTP, PLAIN_AIOHTTP),
        "",
        interpretation(loads, bursts),
    ]
    return "\n".join(lines)


def interpretation(loads: dict[str, list[LoadRound]], bursts: dict[str, list[BurstRound]]) -> str:
    """The paragraph that reads the tables, written from the numbers so that it cannot go stale."""

    def p50_ratio(top: str, bottom: str) -> float:
        return statistics.median(a.p50 / b.p50 for a, b in zip(loads[top], loads[bottom], strict=True))

    httpx_rounds, aiohttp_rounds = bursts[LAYER_HTTPX], bursts[LAYER_AIOHTTP]
    degrade = statistics.median(r.burst_p50 / r.single_p50 for r in httpx_rounds)
    degrade_aiohttp = statistics.median(r.burst_p50 / r.single_p50 for r in aiohttp_rounds)
    gains = [1 - a.burst_p50 / h.burst_p50 for a, h in zip(aiohttp_rounds, httpx_rounds, strict=True)]
    keepalive = statistics.median(
        k.burst_p50 / h.burst_p50 for k, h in zip(bursts[LAYER_HTTPX_KA], httpx_rounds, strict=True)
    )
    layer_cost = statistics.median(
        (a.single_p50 - b.single_p50) for a, b in zip(httpx_rounds, bursts[PLAIN_HTTPX], strict=True)
    )
    layer_burst = statistics.median(
        a.burst_p50 / b.burst_p50 for a, b in zip(httpx_rounds, bursts[PLAIN_HTTPX], strict=True)
    )
    history, history_aiohttp = p50_ratio(H_GATEWAY, H_DIRECT), p50_ratio(H_AIOHTTP, H_DIRECT)
    cached = p50_ratio(C_CACHED, C_PAGE)
    parts = [
        f"**Reading.** Through the gateway a History page takes {history:.2f}× the p50 of making its three provider "
        f"calls directly ({history_aiohttp:.2f}× with the gateway on the aiohttp transport).",
        (
            f"From its cache the Catalog answers at {cached:.2f}× the p50 of one direct page: the cache saves the "
            "provider's round trip, which is its job; the cache-off row shows the price of a miss."
            if cached < 1
            else f"Even from its cache the Catalog takes {cached:.2f}× the p50 of one direct page: the gateway's own "
            "CPU work per request (its CPU column) outweighs the 20 ms round trip it saves, on cores it shares with "
            "the load generator and the sandbox; the cache-off row shows the price of a miss."
        ),
        f"With httpx, {BURST} provider calls at once take {degrade:.1f}× the p50 of one call alone "
        f"(aiohttp: {degrade_aiohttp:.1f}×): httpx degrades under concurrency here"
        + (
            f", and a keep-alive pool of {BURST} does not help"
            if keepalive > 0.9
            else f" (a keep-alive pool of {BURST}: {keepalive:.2f}×)"
        )
        + ". "
        + (
            f"The layer's own cost is lost in the noise: {layer_cost * 1000:+.2f} ms on one call against a plain "
            f"httpx client, {layer_burst:.2f}× its p50 at {BURST} at once."
            if abs(layer_cost) < 0.001
            else f"The layer adds {layer_cost * 1000:+.2f} ms to one call over a plain httpx client "
            f"({layer_burst:.2f}× its p50 at {BURST} at once)."
        ),
        f"aiohttp's p50 at {BURST} concurrent is {statistics.median(gains):.0%} lower than httpx's through the layer "
        "(per round: " + ", ".join(f"{gain:.0%}" for gain in gains) + ").",
    ]
    if all(gain > 0.20 for gain in gains):
        parts.append(
            "That is more than 20% in every round: aiohttp is clearly better here, which is why "
            "`provider_transport=aiohttp` is the default."
        )
    else:
        parts.append(
            "That is not more than 20% lower in every round of this run, against the earlier runs that made "
            "`provider_transport=aiohttp` the default: worth a second look."
        )
    return " ".join(parts)


def results_file(report: str) -> str:
    return (
        "# Network benchmark results\n\n"
        f"Measured {datetime.date.today().isoformat()} with `{RESULTS_COMMAND}`\n"
        "(`--quick` for a short run; `--help` for the knobs). bench/bench_network.py says what each side does.\n\n"
        "Machine: 2 CPU cores shared with other work, and here also by the processes measured (the load\n"
        "generator, the sandbox and the gateway under load; the other gateways idle meanwhile), so absolute\n"
        "figures move between runs and CPU-bound sides hold each other back; read the ratios, each taken\n"
        "against a baseline of the same run and round.\n\n"
        f"{report}\n"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run: 2 rounds of 1 s, fewer samples")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per side (median reported; default 5)")
    parser.add_argument("--seconds", type=float, help="length of one timed load run (default 1.5)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up load per side (default 1)")
    parser.add_argument("--workers", type=int, default=10, help="concurrent workers in (A)")
    parser.add_argument("--singles", type=int, help="sequential calls per round in (B) (default 30)")
    parser.add_argument("--bursts", type=int, help=f"bursts of {BURST} calls per round in (B) (default 4)")
    # httpx's own pool costs the load generator several ms of CPU per request under concurrency (see (B)),
    # which would weigh most on the direct sides (three or six requests per operation).
    parser.add_argument(
        "--client-transport",
        choices=("httpx", "aiohttp"),
        default="aiohttp",
        help="the transport under (A)'s load-generating httpx.AsyncClient (default aiohttp: the lighter load)",
    )
    parser.add_argument("--results", type=Path, help="also write the report, dated, to this Markdown file")
    args = parser.parse_args(argv)
    defaults = (
        {"rounds": 2, "seconds": 1.0, "warmup": 0.5, "singles": 20, "bursts": 3}
        if args.quick
        else {"rounds": 5, "seconds": 1.5, "warmup": 1.0, "singles": 30, "bursts": 4}
    )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


if __name__ == "__main__":
    try:
        sys.exit(main(parse_args()))
    except KeyboardInterrupt:
        print("interrupted: services stopped", file=sys.stderr)
        sys.exit(130)
