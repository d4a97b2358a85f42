"""Retries: what is retried, how long it waits, when it stops, and what the final error says."""

from __future__ import annotations

import logging
import random
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import pytest

import providers.errors as perr
from providers.http.budget import WINDOW_SECONDS, RetryBudget
from providers.http.response import parse_retry_after
from providers.http.retry import full_jitter
from tests.test_http_fakes import (
    API_SECRET,
    BASE_URL,
    FAST,
    FakeClock,
    ScriptedProvider,
    error,
    make_client,
    ok,
    started,
)

pytestmark = pytest.mark.anyio

POLICY = replace(FAST, retry_attempts=4, retry_base_delay=0.1, retry_max_delay=2.0, retry_after_cap=10.0)


def _req() -> httpx.Request:
    return httpx.Request("GET", BASE_URL)


# Which failures are retried


@pytest.mark.parametrize(
    "failure",
    [
        error(429, "rate_limited"),
        error(502),
        error(503, "unavailable"),
        error(504),
        httpx.ConnectError("refused", request=_req()),
        httpx.ConnectTimeout("slow connect", request=_req()),
        httpx.ReadTimeout("slow read", request=_req()),
        httpx.RemoteProtocolError("server disconnected", request=_req()),
        httpx.PoolTimeout("pool", request=_req()),
    ],
    ids=["429", "502", "503", "504", "connect", "connect-timeout", "read-timeout", "dropped", "pool-timeout"],
)
async def test_given_a_temporary_failure_then_success_when_getting_then_retried_and_answered(
    failure: httpx.Response | Exception,
) -> None:
    provider = ScriptedProvider([failure, failure, ok({"items": []})])
    clock = FakeClock()
    async with started(make_client(provider.transport, policy=POLICY, clock=clock)) as client:
        assert await client.get("/v1/rewards", operation="list_rewards") == {"items": []}
        assert (client.stats.attempts, client.stats.retries) == (3, 2)
    assert len(provider.requests) == 3
    assert len(clock.sleeps) == 2


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (error(500, "internal_error"), perr.ProviderUnavailable),
        (error(400, "invalid_request"), perr.ProviderPermanentFailure),
        (error(401, "authentication_failed"), perr.ProviderAuthenticationFailed),
        (error(402, "insufficient_points"), perr.InsufficientPoints),
        (error(404, "reward_not_found"), perr.RewardNotFound),
        (error(409, "idempotency_conflict"), perr.IdempotencyConflict),
        (error(422, "reward_unavailable"), perr.RewardUnavailable),
        (httpx.Response(200, content=b"nope", headers={"Content-Type": "text/plain"}), perr.ProviderMalformedResponse),
        (httpx.UnsupportedProtocol("ftp", request=_req()), perr.ProviderPermanentFailure),
    ],
    ids=["500", "400", "401", "402", "404", "409", "422", "garbled-2xx", "bad-url"],
)
async def test_given_a_failure_that_is_not_temporary_when_getting_then_not_retried(
    answer: httpx.Response | Exception, expected: type[perr.ProviderError]
) -> None:
    provider = ScriptedProvider([answer, ok()])
    async with started(make_client(provider.transport, policy=POLICY, clock=FakeClock())) as client:
        with pytest.raises(expected):
            await client.get("/v1/rewards", operation="list_rewards")
        assert client.stats.retries == 0
    assert len(provider.requests) == 1


async def test_given_a_post_without_idempotency_key_when_it_fails_to_connect_then_it_is_never_retried() -> None:
    provider = ScriptedProvider([httpx.ConnectError("refused", request=_req()), ok()])
    async with started(make_client(provider.transport, policy=POLICY, clock=FakeClock())) as client:
        with pytest.raises(perr.ProviderConnectionError):
            await client.post("/v1/things", json={"a": 1}, operation="op")
    assert len(provider.requests) == 1


async def test_given_a_post_with_idempotency_key_when_retried_then_every_attempt_carries_the_same_key() -> None:
    provider = ScriptedProvider(
        [
            httpx.ReadTimeout("slow", request=_req()),
            error(503, "unavailable"),
            httpx.RemoteProtocolError("dropped", request=_req()),
            ok({"replayed": True}, status=200),
        ]
    )
    async with started(make_client(provider.transport, policy=POLICY, clock=FakeClock())) as client:
        status, body = await client.post(
            "/v1/redemptions", json={"points": 500}, operation="redeem", idempotency_key="user-1:mutation-7"
        )
    assert (status, body) == (200, {"replayed": True})
    assert len(provider.requests) == 4
    assert {request.headers["Idempotency-Key"] for request in provider.requests} == {"user-1:mutation-7"}
    assert {request.content for request in provider.requests} == {b'{"points":500}'}


async def test_given_attempts_exhausted_when_getting_then_the_last_error_is_raised() -> None:
    provider = ScriptedProvider([error(503, "unavailable")])
    async with started(make_client(provider.transport, policy=POLICY, clock=FakeClock())) as client:
        with pytest.raises(perr.ProviderUnavailable) as raised:
            await client.get("/v1/rewards", operation="list_rewards")
    assert len(provider.requests) == POLICY.retry_attempts
    assert raised.value.status == 503


# maybe_committed across attempts


async def test_given_a_read_timeout_then_a_connect_error_when_posting_then_the_outcome_stays_unknown() -> None:
    provider = ScriptedProvider(
        [httpx.ReadTimeout("slow", request=_req()), httpx.ConnectError("refused", request=_req())]
    )
    policy = replace(POLICY, retry_attempts=2)
    async with started(make_client(provider.transport, policy=policy, clock=FakeClock())) as client:
        with pytest.raises(perr.ProviderConnectionError) as raised:
            await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k")
    assert raised.value.maybe_committed is True  # attempt 1 may have committed, whatever attempt 2 says


@pytest.mark.parametrize(
    ("failures", "committed"),
    [
        ([httpx.ConnectError("refused", request=_req())], False),
        ([httpx.PoolTimeout("pool", request=_req())], False),
        ([error(429, "rate_limited")], False),
        ([error(503, "unavailable")], True),
        ([httpx.WriteTimeout("half sent", request=_req())], True),
        ([httpx.ConnectTimeout("t", request=_req()), error(502)], True),
    ],
    ids=["connect", "pool", "429", "503", "write-timeout", "connect-then-502"],
)
async def test_given_only_failures_when_posting_then_maybe_committed_says_whether_it_may_have_been_processed(
    failures: list[httpx.Response | Exception], committed: bool
) -> None:
    provider = ScriptedProvider(failures)
    policy = replace(POLICY, retry_attempts=len(failures), retry_after_cap=0)
    async with started(make_client(provider.transport, policy=policy, clock=FakeClock())) as client:
        with pytest.raises(perr.ProviderUnavailable) as raised:
            await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k")
    assert raised.value.maybe_committed is committed


# How long it waits


def test_full_jitter_draws_below_the_capped_exponential() -> None:
    rng = random.Random(7)
    for retry in range(8):
        ceiling = min(2.0, 0.1 * 2**retry)
        draws = [full_jitter(retry, base=0.1, cap=2.0, rng=rng) for _ in range(200)]
        assert all(0 <= draw <= ceiling for draw in draws)
        assert max(draws) > ceiling * 0.9  # full jitter: the whole range, not a fraction of it
        assert min(draws) < ceiling * 0.1


async def test_given_retries_when_sleeping_then_each_sleep_is_full_jitter_of_its_retry() -> None:
    provider = ScriptedProvider([error(503)])
    clock = FakeClock()
    seed = 11
    async with started(
        make_client(provider.transport, policy=POLICY, clock=clock, rng=random.Random(seed))
    ) as client:
        with pytest.raises(perr.ProviderUnavailable):
            await client.get("/v1/rewards", operation="list_rewards")
    expected_rng = random.Random(seed)
    expected = [full_jitter(n, base=0.1, cap=2.0, rng=expected_rng) for n in range(3)]
    assert clock.sleeps == pytest.approx(expected)


@pytest.mark.parametrize("header", ["3", "Wed, 21 Oct 2015 07:28:03 GMT"])
async def test_given_a_429_with_retry_after_when_getting_then_it_waits_exactly_that_long(
    header: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import providers.http.errors as errors_module

    # The HTTP date is three seconds after "now".
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    monkeypatch.setattr(errors_module, "parse_retry_after", lambda value: parse_retry_after(value, now=now))
    provider = ScriptedProvider([error(429, "rate_limited", **{"Retry-After": header}), ok()])
    clock = FakeClock()
    async with started(make_client(provider.transport, policy=POLICY, clock=clock)) as client:
        await client.get("/v1/rewards", operation="list_rewards")
    assert clock.sleeps == [3.0]


async def test_given_a_retry_after_over_the_cap_when_getting_then_it_stops_with_retry_after_set() -> None:
    provider = ScriptedProvider([error(429, "rate_limited", **{"Retry-After": "60"}), ok()])
    clock = FakeClock()
    async with started(make_client(provider.transport, policy=POLICY, clock=clock)) as client:
        with pytest.raises(perr.ProviderRateLimited) as raised:
            await client.get("/v1/rewards", operation="list_rewards")
    assert raised.value.retry_after == 60.0
    assert clock.sleeps == [] and len(provider.requests) == 1


async def test_given_a_503_with_retry_after_past_the_call_budget_when_getting_then_it_stops_at_once() -> None:
    provider = ScriptedProvider([error(503, "unavailable", **{"Retry-After": "8"}), ok()])
    clock = FakeClock()
    policy = replace(POLICY, call_budget_seconds=5.0)
    async with started(make_client(provider.transport, policy=policy, clock=clock)) as client:
        with pytest.raises(perr.ProviderUnavailable) as raised:
            await client.get("/v1/rewards", operation="list_rewards")
    assert raised.value.retry_after == 8.0
    assert clock.sleeps == []


async def test_given_slow_attempts_when_the_budget_runs_low_then_no_sleep_ends_past_the_deadline() -> None:
    clock = FakeClock()

    def slow_503(request: httpx.Request) -> httpx.Response:
        clock.now += 1.5  # each attempt takes 1.5 s of the 4 s budget
        return error(503)

    provider = ScriptedProvider([slow_503])
    policy = replace(POLICY, call_budget_seconds=4.0, retry_attempts=10, retry_base_delay=1.0, retry_max_delay=1.0)
    start = clock.now
    async with started(make_client(provider.transport, policy=policy, clock=clock, rng=_Max())) as client:
        with pytest.raises(perr.ProviderUnavailable):
            await client.get("/v1/rewards", operation="list_rewards")
    # 1.5 + sleep 1.0 = 2.5, then 1.5 more = 4.0: a second sleep would end past the deadline.
    assert clock.sleeps == [1.0]
    assert clock.now - start == pytest.approx(4.0)


async def test_given_the_call_budget_when_attempts_are_sent_then_their_timeouts_fit_in_what_is_left() -> None:
    clock = FakeClock()
    seen: list[dict[str, float]] = []

    def slow_503(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        clock.now += 2.0
        return error(503)

    provider = ScriptedProvider([slow_503])
    policy = replace(POLICY, call_budget_seconds=3.0, read_timeout=5.0, retry_base_delay=0.5, retry_max_delay=0.5)
    async with started(make_client(provider.transport, policy=policy, clock=clock, rng=_Max())) as client:
        with pytest.raises(perr.ProviderUnavailable):
            await client.get("/v1/rewards", operation="list_rewards")
    assert seen[0]["read"] == 3.0  # the budget, not the 5 s read timeout
    assert seen[1]["read"] == pytest.approx(0.5)  # 3 - 2 - 0.5 slept
    assert seen[0]["connect"] == policy.connect_timeout


# The retry budget


def test_retry_budget_allows_the_floor_then_a_share_of_calls_and_forgets_after_the_window() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.5, min_per_second=0.2, clock=clock)  # floor: 0.2/s * 10 s = 2 retries
    assert [budget.try_withdraw() for _ in range(3)] == [True, True, False]
    for _ in range(4):
        budget.deposit()  # 4 calls * 0.5 = 2 more retries
    assert [budget.try_withdraw() for _ in range(3)] == [True, True, False]
    clock.now += WINDOW_SECONDS
    assert budget.balance == pytest.approx(2.0)  # deposits and withdrawals forgotten; the floor stays
    assert budget.try_withdraw()


async def test_given_an_empty_retry_budget_when_a_call_fails_then_it_is_not_retried() -> None:
    provider = ScriptedProvider([error(503)])
    clock = FakeClock()
    policy = replace(POLICY, retry_budget_ratio=0.0, retry_budget_min_per_second=0.1)  # one retry per 10 s
    async with started(make_client(provider.transport, policy=policy, clock=clock)) as client:
        with pytest.raises(perr.ProviderUnavailable):
            await client.get("/v1/rewards", operation="list_rewards")
        assert (client.stats.retries, client.stats.retries_refused_by_budget) == (1, 1)
        with pytest.raises(perr.ProviderUnavailable):
            await client.get("/v1/rewards", operation="list_rewards")
        assert (client.stats.retries, client.stats.retries_refused_by_budget) == (1, 2)
    assert len(provider.requests) == 3  # 2 for the first call, 1 for the second


async def test_given_a_dead_provider_when_many_calls_fail_then_retries_stay_within_the_budget() -> None:
    provider = ScriptedProvider([error(503)])
    clock = FakeClock()
    policy = replace(POLICY, retry_budget_ratio=0.2, retry_budget_min_per_second=0.0, breaker_failure_threshold=10_000)
    async with started(make_client(provider.transport, policy=policy, clock=clock)) as client:
        for _ in range(50):
            with pytest.raises(perr.ProviderUnavailable):
                await client.get("/v1/rewards", operation="list_rewards")
        stats = client.stats
    assert stats.retries == 10  # 20% of 50 calls, where per-call limits alone would allow 150
    assert len(provider.requests) == 60


# Logging


async def test_given_retried_failures_when_logging_then_one_warning_each_without_headers_or_bodies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = {"error": {"code": "unavailable", "message": "card CARD-SECRET-1"}}
    provider = ScriptedProvider([httpx.Response(503, json=body), httpx.ConnectError("x", request=_req()), ok()])
    caplog.set_level(logging.DEBUG)
    async with started(make_client(provider.transport, policy=POLICY, clock=FakeClock())) as client:
        await client.post("/v1/redemptions", json={"user": "u-1"}, operation="redeem", idempotency_key="key-77")
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert [record.getMessage().split("cause=")[1].split()[0] for record in warnings] == ["HTTP", "ConnectError"]
    assert all("operation=redeem" in record.getMessage() for record in warnings)
    assert [f"attempt={n}" in record.getMessage() for n, record in zip((1, 2), warnings, strict=True)] == [True, True]
    text = caplog.text
    for secret in (API_SECRET, "CARD-SECRET-1", "key-77", "Basic ", "u-1"):
        assert secret not in text


class _Max(random.Random):
    """An rng whose uniform() is its upper bound: sleeps become predictable."""

    def uniform(self, a: float, b: float) -> float:
        return b
