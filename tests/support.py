"""Test support: a real uvicorn server on a loopback port, and small GraphQL clients."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy
import websockets

from giftgraph.app import create_app
from giftgraph.auth import issue_token
from giftgraph.settings import Settings
from tests.servers import ThreadedServer

TEST_SECRET = "test-secret-not-for-production-0123456789abcdef"
OPERATIONS = Path(__file__).resolve().parents[1] / "graphql" / "operations"


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "jwt_secret": TEST_SECRET,
        "sandbox_fulfilment_delay": 0.3,
        "idempotency_wait_seconds": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


def without_extensions(body: dict[str, Any]) -> dict[str, Any]:
    """A GraphQL response body without `extensions`: every response reports its query cost there."""
    return {key: value for key, value in body.items() if key != "extensions"}


def operation(name: str) -> str:
    """The text of graphql/operations/<name>.graphql: tests use the frontend's own documents."""
    return (OPERATIONS / f"{name}.graphql").read_text()


class LiveServer(ThreadedServer):
    """The real app under uvicorn, in a thread, on a free loopback port."""

    def __init__(self, settings: Settings, **app_options: Any) -> None:
        self.settings = settings
        self.app = create_app(settings, **app_options)
        super().__init__(self.app, name="the gateway")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/graphql"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def services(self) -> Any:
        return self.app.state.services

    @property
    def provider(self) -> Any:
        return self.services.provider

    def token(self, user_id: str, **kwargs: Any) -> str:
        return issue_token(self.settings, user_id, **kwargs)


@contextmanager
def live_server(settings: Settings) -> Iterator[LiveServer]:
    server = LiveServer(settings).start()
    try:
        yield server
    finally:
        server.stop()


def gql(
    server: LiveServer,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """POST one operation and return the decoded body (asserting it was JSON)."""
    response = post(server, query, variables, token=token, headers=headers)
    return response.json()


def post(
    server: LiveServer,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    return httpx.post(server.url, json={"query": query, "variables": variables or {}}, headers=all_headers, timeout=30)


async def agql(
    client: httpx.AsyncClient, server: LiveServer, query: str, variables: dict[str, Any] | None = None, *, token: str
) -> dict[str, Any]:
    response = await client.post(
        server.url,
        json={"query": query, "variables": variables or {}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    return response.json()


class WsClient:
    """A minimal graphql-transport-ws client over a real WebSocket."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self._next_id = 0

    async def subscribe(self, query: str, variables: dict[str, Any] | None = None) -> str:
        self._next_id += 1
        op_id = str(self._next_id)
        await self.ws.send(
            json.dumps({"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": variables or {}}})
        )
        return op_id

    async def receive(self, timeout: float = 10) -> dict[str, Any]:
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if message["type"] not in ("ping", "pong"):
                return message


@asynccontextmanager
async def ws_connect(server: LiveServer, *, init_payload: dict[str, Any] | None):
    async with websockets.connect(server.ws_url, subprotocols=["graphql-transport-ws"]) as ws:
        client = WsClient(ws)
        await ws.send(json.dumps({"type": "connection_init", "payload": init_payload or {}}))
        yield client


def reward_to_redeem(server: LiveServer, *, failing: bool = False) -> dict[str, Any]:
    """An AVAILABLE sandbox reward (one the sandbox fails to fulfil when `failing`), with a face
    value it allows: {"rewardId": global id, "faceValue": str, "points": int}."""
    from providers import RewardAvailability
    from providers.sandbox import failing_reward_ids
    from resolvers.ids import encode_global_id

    failing_ids = failing_reward_ids(server.provider.catalog)
    for reward in server.provider.catalog:
        if reward.availability is not RewardAvailability.AVAILABLE or (reward.id in failing_ids) != failing:
            continue
        points = server.services.pricing.point_cost(reward)
        if points is not None:
            face_value = reward.denomination.min_value
            return {"rewardId": encode_global_id("Reward", reward.id), "faceValue": str(face_value), "points": points}
    raise LookupError("the sandbox catalog has no such reward")


class FactoryLiveServer(LiveServer):
    """A LiveServer whose app gets its provider from `provider_factory` (a fake at the provider boundary)."""

    def __init__(self, settings: Settings, provider_factory: Any) -> None:
        super().__init__(settings, provider_factory=provider_factory)


@contextmanager
def live_server_with_provider(settings: Settings, provider_factory: Any) -> Iterator[LiveServer]:
    server = FactoryLiveServer(settings, provider_factory).start()
    try:
        yield server
    finally:
        server.stop()


def run_on_server_loop(server: LiveServer, coro: Any, *, timeout: float = 30) -> Any:
    """Run a coroutine on the live server's own event loop (where its provider and engines live); its result."""
    return server.run(coro, timeout=timeout)


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors") or ()]


def calls(server: LiveServer) -> dict[str, int]:
    return dict(server.provider.calls.counts)


def idempotency_rows(server: LiveServer) -> int:
    async def count() -> int:
        async with server.app.state.engine.connect() as conn:
            return (await conn.execute(sqlalchemy.text("SELECT count(*) FROM idempotency_keys"))).scalar_one()

    return run_on_server_loop(server, count())


def eventually(check: Any, *, timeout: float = 10.0, interval: float = 0.05) -> None:
    """Wait until `check()` is true; fail the test after `timeout` seconds (background work: reconcilers...)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(interval)
