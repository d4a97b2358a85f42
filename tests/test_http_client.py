"""ProviderHttpClient end to end: its lifecycle and configuration, and real sockets that hang, drop or garble."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import httpx
import pytest

import providers.errors as perr
from providers.http import ClientCredentialsAuth, HttpPolicy, ProviderHttpClient, transport_for
from providers.http.transport import TrackingTransport
from tests.test_http_fakes import (
    FAST,
    GARBAGE,
    ScriptedProvider,
    closed_port_url,
    make_client,
    ok,
    raw_server,
    started,
)

pytestmark = pytest.mark.anyio


# Lifecycle and configuration


async def test_given_a_client_when_started_and_closed_then_one_httpx_client_lives_in_between() -> None:
    provider = ScriptedProvider([ok()])
    client = make_client(provider.transport)
    with pytest.raises(RuntimeError, match="not started"):
        await client.get("/v1/health", operation="check")
    await client.start()
    inner = client._client
    await client.get("/v1/health", operation="check")
    await client.get("/v1/health", operation="check")
    assert client._client is inner  # one AsyncClient for every call
    with pytest.raises(RuntimeError, match="already started"):
        await client.start()
    await client.aclose()
    assert inner is not None and inner.is_closed
    await client.aclose()  # closing twice is harmless
    with pytest.raises(RuntimeError, match="not started"):
        await client.get("/v1/health", operation="check")


async def test_given_a_base_url_with_a_path_when_calling_then_paths_are_relative_to_it_with_params() -> None:
    provider = ScriptedProvider([ok()])
    async with started(make_client(provider.transport, base_url="http://provider.test/api")) as client:
        await client.get("/v1/balances", params={"user_id": ["a", "b"]}, operation="get_balances")
    assert str(provider.requests[0].url) == "http://provider.test/api/v1/balances?user_id=a&user_id=b"


async def test_given_a_policy_when_calling_then_its_timeouts_reach_each_request() -> None:
    provider = ScriptedProvider([ok()])
    policy = replace(FAST, connect_timeout=1.5, read_timeout=4.0, write_timeout=3.0, pool_timeout=0.5)
    async with started(make_client(provider.transport, policy=policy)) as client:
        await client.post("/v1/redemptions", json={"a": 1}, operation="redeem", idempotency_key="k")
    assert provider.requests[0].extensions["timeout"] == {"connect": 1.5, "read": 4.0, "write": 3.0, "pool": 0.5}
    assert provider.requests[0].headers["Content-Type"] == "application/json"


def test_the_production_transports_carry_the_pool_limits() -> None:
    policy = HttpPolicy(max_connections=7, max_keepalive_connections=3)
    native = transport_for("httpx", policy)
    pool = native._pool  # httpcore's pool: where httpx applies Limits
    assert (pool._max_connections, pool._max_keepalive_connections) == (7, 3)
    aiohttp_transport = transport_for("aiohttp", policy)
    assert aiohttp_transport.limits.max_connections == 7


async def test_given_no_transport_when_started_then_the_native_one_is_built_with_the_policy_limits() -> None:
    policy = HttpPolicy(max_connections=9)
    auth = httpx.BasicAuth("a", "b")
    client = ProviderHttpClient(provider="p", base_url="http://127.0.0.1:9", auth=auth, policy=policy)
    async with started(client):
        transport = client._client._transport  # type: ignore[union-attr]
        assert isinstance(transport, TrackingTransport)
        assert transport.inner._pool._max_connections == 9  # type: ignore[attr-defined]


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        HttpPolicy(retry_attempts=0)
    with pytest.raises(ValueError):
        HttpPolicy(call_budget_seconds=0)


async def test_given_success_when_calling_then_stats_count_calls_and_attempts() -> None:
    provider = ScriptedProvider([ok()])
    async with started(make_client(provider.transport)) as client:
        await client.get("/v1/health", operation="check")
        status, body = await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k")
        stats = client.stats
    assert (status, body) == (200, {"status": "ok"})
    assert (stats.calls, stats.attempts, stats.retries, stats.breaker_state) == (2, 2, 0, "closed")


# Real sockets: what a hung, dropped or truncated answer looks like to httpx

REAL = replace(FAST, read_timeout=0.3, connect_timeout=1.0, retry_attempts=1)


@pytest.mark.parametrize("kind", ["httpx", "aiohttp"])
async def test_given_a_hung_provider_when_posting_then_timeout_and_maybe_committed(kind: str) -> None:
    async with raw_server("hang") as server:
        client = make_client(transport_for(kind, REAL), policy=REAL, base_url=server.url)  # type: ignore[arg-type]
        async with started(client):
            started_at = time.monotonic()
            with pytest.raises(perr.ProviderTimeout) as raised:
                await client.post("/v1/redemptions", json={"a": 1}, operation="redeem", idempotency_key="k")
            elapsed = time.monotonic() - started_at
    assert raised.value.maybe_committed is True  # the request arrived; the answer never came
    assert 0.25 <= elapsed < 2.0
    assert len(server.requests) == 1 and b"idempotency-key: k" in server.requests[0].lower()


@pytest.mark.parametrize("kind", ["httpx", "aiohttp"])
async def test_given_a_provider_dropping_the_connection_when_posting_then_connection_error_maybe_committed(
    kind: str,
) -> None:
    async with raw_server("drop") as server:
        client = make_client(transport_for(kind, REAL), policy=REAL, base_url=server.url)  # type: ignore[arg-type]
        async with started(client):
            with pytest.raises(perr.ProviderUnavailable) as raised:
                await client.post("/v1/redemptions", json={"a": 1}, operation="redeem", idempotency_key="k")
    assert isinstance(raised.value, perr.ProviderConnectionError | perr.ProviderTimeout)
    assert raised.value.maybe_committed is True  # whatever the transport calls it, the request had left
    assert len(server.requests) == 1


@pytest.mark.parametrize("kind", ["httpx", "aiohttp"])
async def test_given_a_provider_dropping_the_connection_when_getting_then_the_transport_never_resends_it(
    kind: str,
) -> None:
    async with raw_server("drop") as server:
        client = make_client(transport_for(kind, REAL), policy=REAL, base_url=server.url)  # type: ignore[arg-type]
        async with started(client):
            with pytest.raises(perr.ProviderUnavailable):
                await client.get("/v1/rewards", operation="list_rewards")
    assert len(server.requests) == 1  # retries are the client's alone: one attempt, one request


@pytest.mark.parametrize("kind", ["httpx", "aiohttp"])
async def test_given_a_body_cut_short_on_the_wire_when_posting_then_malformed_maybe_committed(kind: str) -> None:
    async with raw_server("truncate") as server:
        client = make_client(transport_for(kind, REAL), policy=REAL, base_url=server.url)  # type: ignore[arg-type]
        async with started(client):
            with pytest.raises(perr.ProviderMalformedResponse) as raised:
                await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k")
    assert raised.value.maybe_committed is True


@pytest.mark.parametrize("kind", ["httpx", "aiohttp"])
async def test_given_nobody_listening_when_posting_then_connection_error_not_committed(kind: str) -> None:
    client = make_client(transport_for(kind, REAL), policy=REAL, base_url=closed_port_url())  # type: ignore[arg-type]
    async with started(client):
        with pytest.raises(perr.ProviderConnectionError) as raised:
            await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k")
    assert raised.value.maybe_committed is False  # refused: nothing was sent


@pytest.mark.parametrize("kind", ["httpx", "aiohttp"])
async def test_given_a_healthy_raw_provider_when_getting_then_json_and_request_id(kind: str) -> None:
    async with raw_server("ok") as server:
        client = make_client(transport_for(kind, REAL), policy=REAL, base_url=server.url)  # type: ignore[arg-type]
        async with started(client):
            assert await client.get("/v1/health", operation="check") == {"status": "ok"}


async def test_given_a_hung_provider_and_retries_when_calling_then_the_call_budget_bounds_the_total() -> None:
    policy = replace(FAST, read_timeout=0.3, retry_attempts=10, call_budget_seconds=0.8, retry_base_delay=0.01)
    async with raw_server("hang") as server:
        async with started(make_client(transport_for("httpx", policy), policy=policy, base_url=server.url)) as client:
            started_at = time.monotonic()
            with pytest.raises(perr.ProviderTimeout):
                await client.get("/v1/rewards", operation="list_rewards")
            elapsed = time.monotonic() - started_at
    assert elapsed < 2.0  # ten unbounded attempts would take 3 s; the margin is for loaded machines
    assert 2 <= len(server.requests) <= 3  # 0.3 s each, within 0.8 s


async def test_given_a_slow_drip_when_each_read_is_in_time_then_the_call_budget_still_ends_it() -> None:
    async def drip(request: httpx.Request) -> httpx.Response:
        class Drip(httpx.AsyncByteStream):
            async def __aiter__(self):  # type: ignore[no-untyped-def]
                for _ in range(100):
                    await asyncio.sleep(0.05)  # each chunk well inside the read timeout
                    yield b" "

        return httpx.Response(200, headers={"Content-Type": "application/json"}, stream=Drip())

    provider = ScriptedProvider([drip])
    policy = replace(FAST, call_budget_seconds=0.4, retry_attempts=1)
    async with started(make_client(provider.transport, policy=policy)) as client:
        started_at = time.monotonic()
        with pytest.raises(perr.ProviderTimeout) as raised:
            await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k")
    assert time.monotonic() - started_at < 2.0  # the drip alone lasts 5 s; the margin is for loaded machines
    assert raised.value.maybe_committed is True
    assert isinstance(raised.value.__cause__, TimeoutError)


# Real sockets: answers that are not HTTP, over either transport

GARBLED = replace(FAST, read_timeout=3.0, connect_timeout=3.0, retry_attempts=1)


@pytest.mark.parametrize("kind", ["httpx", "aiohttp"])
@pytest.mark.parametrize("behaviour", sorted(GARBAGE))
async def test_given_an_answer_that_is_not_http_when_posting_then_a_temporary_port_error_maybe_committed(
    kind: str, behaviour: str
) -> None:
    async with raw_server(behaviour) as server:
        client = make_client(transport_for(kind, GARBLED), policy=GARBLED, base_url=server.url)  # type: ignore[arg-type]
        async with started(client):
            with pytest.raises(perr.ProviderError) as raised:  # anything foreign would fly past this
                await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k")
    assert type(raised.value) in (perr.ProviderMalformedResponse, perr.ProviderConnectionError)
    assert (raised.value.retryable, raised.value.maybe_committed) == (True, True)  # the request had arrived
    assert len(server.requests) == 1


@pytest.mark.parametrize("kind", ["httpx", "aiohttp"])
async def test_given_a_garbled_chunk_after_a_good_head_when_reading_the_body_then_a_port_error_maybe_committed(
    kind: str,
) -> None:
    # aiohttp 3.14 never wakes a body reader whose chunk fails to parse: only the call budget ends it.
    policy = replace(GARBLED, call_budget_seconds=1.5)
    async with raw_server("late_bad_chunk") as server:
        client = make_client(transport_for(kind, policy), policy=policy, base_url=server.url)  # type: ignore[arg-type]
        async with started(client):
            with pytest.raises(perr.ProviderUnavailable) as raised:
                await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k")
    assert raised.value.maybe_committed is True


@pytest.mark.parametrize("kind", ["httpx", "aiohttp"])
async def test_given_a_token_endpoint_answering_garbage_when_calling_then_a_port_error_and_nothing_sent(
    kind: str,
) -> None:
    async with raw_server("garbage_status") as server:
        auth = ClientCredentialsAuth(token_url=f"{server.url}/oauth/token", client_id="id", client_secret="secret")
        client = make_client(transport_for(kind, GARBLED), policy=GARBLED, base_url=server.url, auth=auth)  # type: ignore[arg-type]
        async with started(client):
            with pytest.raises(perr.ProviderUnavailable) as raised:
                await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k")
    assert raised.value.maybe_committed is False  # only the token request went out
    assert [request.split(b" ")[:2] for request in server.requests] == [[b"POST", b"/oauth/token"]]
