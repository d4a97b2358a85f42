"""The circuit breaker (every transition, and through the client) and the client-side rate limiter."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import httpx
import pytest

import providers.errors as perr
from providers.http import BreakerState
from providers.http.breaker import CircuitBreaker
from providers.tremendous.errors import TREMENDOUS_ERRORS
from tests.test_http_fakes import FAST, FakeClock, ScriptedProvider, error, make_client, ok, started

pytestmark = pytest.mark.anyio

THRESHOLD, COOLDOWN = 3, 10.0


def _breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=THRESHOLD, cooldown_seconds=COOLDOWN, clock=clock)


def _fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        permit = breaker.allow()
        assert permit is not None
        permit.failure()


# The state machine


def test_closed_stays_closed_below_the_threshold_and_a_success_resets_the_count() -> None:
    breaker = _breaker(FakeClock())
    _fail(breaker, THRESHOLD - 1)
    permit = breaker.allow()
    assert permit is not None
    permit.success()
    _fail(breaker, THRESHOLD - 1)
    assert breaker.state is BreakerState.CLOSED


def test_closed_opens_after_threshold_consecutive_failures_and_then_fails_fast() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    _fail(breaker, THRESHOLD)
    assert breaker.state is BreakerState.OPEN
    assert breaker.allow() is None
    clock.now += COOLDOWN - 0.5
    assert breaker.allow() is None
    assert breaker.retry_after() == pytest.approx(0.5)


def test_open_lets_exactly_one_probe_through_after_the_cooldown() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    _fail(breaker, THRESHOLD)
    clock.now += COOLDOWN
    probe = breaker.allow()
    assert probe is not None and probe.probe
    assert breaker.state is BreakerState.HALF_OPEN
    assert [breaker.allow() for _ in range(5)] == [None] * 5  # concurrent callers fail fast


def test_a_successful_probe_closes_the_circuit() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    _fail(breaker, THRESHOLD)
    clock.now += COOLDOWN
    probe = breaker.allow()
    assert probe is not None
    probe.success()
    assert breaker.state is BreakerState.CLOSED
    _fail(breaker, THRESHOLD - 1)  # the count started again from zero
    assert breaker.state is BreakerState.CLOSED


def test_a_failed_probe_reopens_for_a_whole_new_cooldown() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    _fail(breaker, THRESHOLD)
    clock.now += COOLDOWN
    probe = breaker.allow()
    assert probe is not None
    probe.failure()
    assert breaker.state is BreakerState.OPEN
    clock.now += COOLDOWN - 0.1
    assert breaker.allow() is None
    clock.now += 0.1
    assert breaker.allow() is not None


def test_a_released_probe_lets_the_next_caller_probe_at_once() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    _fail(breaker, THRESHOLD)
    clock.now += COOLDOWN
    probe = breaker.allow()
    assert probe is not None
    probe.release()  # cancelled before it reached the provider
    assert breaker.state is BreakerState.OPEN
    assert breaker.allow() is not None


def test_asking_whether_it_rejects_says_what_allow_would_do_without_issuing_a_probe() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    assert breaker.rejecting() is False
    _fail(breaker, THRESHOLD)
    assert breaker.rejecting() is True
    clock.now += COOLDOWN
    assert breaker.rejecting() is False
    assert breaker.state is BreakerState.OPEN  # asking issued no probe
    assert breaker.allow() is not None
    assert breaker.rejecting() is True  # half open: the probe is out


def test_outcomes_of_calls_admitted_before_a_transition_are_ignored() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    straggler = breaker.allow()
    assert straggler is not None
    _fail(breaker, THRESHOLD)
    straggler.success()  # started while closed: says nothing about the provider now
    assert breaker.state is BreakerState.OPEN
    clock.now += COOLDOWN
    probe = breaker.allow()
    assert probe is not None
    probe.success()
    late = breaker.allow()
    assert late is not None
    probe.failure()  # a permit reports once: the first outcome counts
    assert breaker.state is BreakerState.CLOSED


# Through the client


async def test_given_repeated_5xx_when_the_circuit_opens_then_calls_fail_fast_without_sending() -> None:
    provider = ScriptedProvider([error(503)])
    clock = FakeClock()
    policy = replace(FAST, retry_attempts=1, breaker_failure_threshold=THRESHOLD, breaker_cooldown_seconds=COOLDOWN)
    async with started(make_client(provider.transport, policy=policy, clock=clock)) as client:
        for _ in range(THRESHOLD):
            with pytest.raises(perr.ProviderUnavailable):
                await client.get("/v1/rewards", operation="list_rewards")
        assert client.stats.breaker_state is BreakerState.OPEN
        with pytest.raises(perr.ProviderCircuitOpen) as raised:
            await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k")
        assert client.stats.rejected_by_breaker == 1
    assert raised.value.maybe_committed is False and raised.value.retry_after == pytest.approx(COOLDOWN)
    assert len(provider.requests) == THRESHOLD


@pytest.mark.parametrize(
    "answer",
    [error(402, "insufficient_points"), error(404, "reward_not_found"), error(401), error(429, "rate_limited"), ok()],
    ids=["402", "404", "401", "429", "200"],
)
async def test_given_refusals_or_successes_when_counting_failures_then_the_circuit_stays_closed(
    answer: httpx.Response,
) -> None:
    provider = ScriptedProvider([answer])
    policy = replace(FAST, retry_attempts=1, breaker_failure_threshold=2)
    async with started(make_client(provider.transport, policy=policy)) as client:
        for _ in range(5):
            try:
                await client.get("/v1/rewards", operation="list_rewards")
            except perr.ProviderError:
                pass
        assert client.stats.breaker_state is BreakerState.CLOSED
    assert len(provider.requests) == 5


@pytest.mark.parametrize(
    "failure",
    [error(500), httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.Response(200, text="<html>")],
    ids=["500", "connect", "read-timeout", "garbled"],
)
async def test_given_temporary_failures_of_any_kind_when_counting_then_they_open_the_circuit(
    failure: httpx.Response | Exception,
) -> None:
    provider = ScriptedProvider([failure])
    policy = replace(FAST, retry_attempts=1, breaker_failure_threshold=2)
    async with started(make_client(provider.transport, policy=policy)) as client:
        for _ in range(2):
            with pytest.raises(perr.ProviderUnavailable):
                await client.get("/v1/rewards", operation="list_rewards")
        assert client.stats.breaker_state is BreakerState.OPEN


async def test_given_an_open_circuit_after_the_cooldown_when_callers_race_then_one_probe_is_sent() -> None:
    clock = FakeClock()
    release = asyncio.Event()

    async def recovering(request: httpx.Request) -> httpx.Response:
        await release.wait()  # the probe stays in flight while the others arrive
        return ok()

    provider = ScriptedProvider([error(503), error(503), recovering])
    policy = replace(FAST, retry_attempts=1, breaker_failure_threshold=2, breaker_cooldown_seconds=COOLDOWN)
    async with started(make_client(provider.transport, policy=policy, clock=clock)) as client:
        for _ in range(2):
            with pytest.raises(perr.ProviderUnavailable):
                await client.get("/v1/rewards", operation="list_rewards")
        clock.now += COOLDOWN
        probe = asyncio.ensure_future(client.get("/v1/rewards", operation="list_rewards"))
        await asyncio.sleep(0.01)
        assert client.stats.breaker_state is BreakerState.HALF_OPEN
        others = await asyncio.gather(
            *(client.get("/v1/rewards", operation="list_rewards") for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(other, perr.ProviderCircuitOpen) for other in others)
        release.set()
        assert await probe == {"status": "ok"}
        assert client.stats.breaker_state is BreakerState.CLOSED
        assert await client.get("/v1/rewards", operation="list_rewards") == {"status": "ok"}
    assert len(provider.requests) == 4  # 2 failures, the probe, one call after closing


async def test_given_calls_queued_behind_the_limiter_when_the_circuit_opens_then_they_fail_fast_unsent() -> None:
    states_seen: list[BreakerState] = []

    def failing(request: httpx.Request) -> httpx.Response:
        states_seen.append(client.stats.breaker_state)
        return error(503)

    policy = replace(
        FAST,
        rate_limit_per_second=20,
        retry_attempts=1,
        breaker_failure_threshold=2,
        breaker_cooldown_seconds=60,
        call_budget_seconds=30,
    )
    client = make_client(httpx.MockTransport(failing), policy=policy)
    async with started(client):
        results = await asyncio.gather(
            *(client.get("/v1/rewards", operation="list_rewards") for _ in range(20)), return_exceptions=True
        )
        rejected = client.stats.rejected_by_breaker
    # Each request that reached the provider was admitted while the circuit was closed: the threshold's
    # worth, plus any already in flight when it opened. Every call still queued failed without sending.
    assert set(states_seen) == {BreakerState.CLOSED}
    assert 2 <= len(states_seen) <= 3
    circuit_open = [result for result in results if isinstance(result, perr.ProviderCircuitOpen)]
    assert len(circuit_open) == rejected == 20 - len(states_seen)
    assert all(result.maybe_committed is False for result in circuit_open)


async def test_given_a_retrying_call_when_the_circuit_opens_midway_then_it_stops_with_circuit_open() -> None:
    provider = ScriptedProvider([error(503)])
    policy = replace(FAST, retry_attempts=5, breaker_failure_threshold=2)
    async with started(make_client(provider.transport, policy=policy, clock=FakeClock())) as client:
        with pytest.raises(perr.ProviderCircuitOpen) as raised:
            await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k")
    assert len(provider.requests) == 2
    assert raised.value.maybe_committed is True  # the two 503s before it may have committed


async def test_given_a_probe_cancelled_when_the_next_caller_comes_then_it_probes() -> None:
    clock = FakeClock()

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    provider = ScriptedProvider([error(503), hang, ok()])
    policy = replace(FAST, retry_attempts=1, breaker_failure_threshold=1, breaker_cooldown_seconds=COOLDOWN)
    async with started(make_client(provider.transport, policy=policy, clock=clock)) as client:
        with pytest.raises(perr.ProviderUnavailable):
            await client.get("/v1/rewards", operation="list_rewards")
        clock.now += COOLDOWN
        probe = asyncio.ensure_future(client.get("/v1/rewards", operation="list_rewards"))
        await asyncio.sleep(0.01)
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        assert await client.get("/v1/rewards", operation="list_rewards") == {"status": "ok"}


# The rate limiter


async def test_given_20_per_second_when_sending_10_requests_then_they_are_spread_over_half_a_second() -> None:
    sent_at: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent_at.append(time.monotonic())
        return ok()

    policy = replace(FAST, rate_limit_per_second=20)
    async with started(make_client(httpx.MockTransport(handler), policy=policy)) as client:
        started_at = time.monotonic()
        await asyncio.gather(*(client.get("/v1/rewards", operation="list_rewards") for _ in range(10)))
        elapsed = time.monotonic() - started_at
    assert 0.4 <= elapsed < 2.0  # 9 gaps of 1/20 s; the ceiling has a loaded machine's margin
    gaps = [b - a for a, b in zip(sent_at, sent_at[1:], strict=False)]
    assert min(gaps) > 0.03  # no bursts: evenly spaced


async def test_given_the_limiter_off_when_sending_10_requests_then_they_go_at_once() -> None:
    policy = replace(FAST, rate_limit_per_second=0)
    async with started(make_client(httpx.MockTransport(lambda request: ok()), policy=policy)) as client:
        started_at = time.monotonic()
        await asyncio.gather(*(client.get("/v1/rewards", operation="list_rewards") for _ in range(10)))
    assert time.monotonic() - started_at < 0.35  # with the 20/s limiter on, the same takes 0.45 s


async def test_given_retries_when_rate_limited_then_every_attempt_waits_for_the_limiter() -> None:
    sent_at: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent_at.append(time.monotonic())
        return error(503) if len(sent_at) < 3 else ok()

    policy = replace(FAST, rate_limit_per_second=10, retry_base_delay=0.0, retry_max_delay=0.0)
    async with started(make_client(httpx.MockTransport(handler), policy=policy)) as client:
        await client.get("/v1/rewards", operation="list_rewards")
    assert sent_at[2] - sent_at[0] >= 0.18  # three attempts, 1/10 s apart despite zero backoff


async def test_given_a_queue_longer_than_the_call_budget_when_waiting_for_the_limiter_then_timeout_unsent() -> None:
    provider = ScriptedProvider([ok()])
    policy = replace(FAST, rate_limit_per_second=5, call_budget_seconds=0.3, retry_attempts=1)
    async with started(make_client(provider.transport, policy=policy)) as client:
        results = await asyncio.gather(
            *(client.get("/v1/rewards", operation="list_rewards") for _ in range(4)), return_exceptions=True
        )
        state = client.stats.breaker_state
    timeouts = [result for result in results if isinstance(result, perr.ProviderTimeout)]
    assert len(timeouts) == 2 and len(provider.requests) == 2  # slots at 0 s and 0.2 s fit in 0.3 s
    assert all(timeout.maybe_committed is False for timeout in timeouts)
    assert state is BreakerState.CLOSED  # our own queue says nothing about the provider


async def test_given_a_seller_refusing_orders_for_want_of_funds_then_the_circuit_stays_closed_for_reads() -> None:
    # Tremendous' table: a 402 is the company account running short, a refusal of orders, not an outage.
    provider = ScriptedProvider([httpx.Response(402, json={"errors": {"message": "Insufficient funds", "payload": {}}})])
    policy = replace(FAST, retry_attempts=1, breaker_failure_threshold=2)
    async with started(make_client(provider.transport, policy=policy, error_table=TREMENDOUS_ERRORS)) as client:
        for attempt in range(5):
            with pytest.raises(perr.FundingInsufficient):
                await client.post("/orders", json={}, operation="place_order", idempotency_key=f"k{attempt}")
        assert client.stats.breaker_state is BreakerState.CLOSED
    assert len(provider.requests) == 5
