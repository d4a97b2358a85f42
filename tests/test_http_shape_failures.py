"""A 2xx answer of the wrong shape is the provider failing: checked by a call's `parse` step inside the attempt,
it fails like a body that is not JSON and counts against the circuit breaker, in the client and every adapter."""

from __future__ import annotations

import traceback
from dataclasses import replace
from decimal import Decimal
from functools import partial
from typing import Any, Literal

import httpx
import pytest
from pydantic import BaseModel

import providers.errors as perr
from providers.base import RedeemRequest
from providers.events import EventHub
from providers.http import ApiKeyAuth, BreakerState, ProviderHttpClient, parse_model
from providers.rest.adapter import RestProvider
from providers.tremendous import build_tremendous
from tests.fake_tango import make_tango, running_fake_tango
from tests.fake_tango import started as started_tango
from tests.fake_tremendous import running_fake_tremendous
from tests.test_http_fakes import BASE_URL, FAST, FakeClock, ScriptedProvider, make_client, ok, started

pytestmark = pytest.mark.anyio

THRESHOLD = 3
COOLDOWN = 600.0  # far longer than any test: once open, the circuit stays open
# One attempt per call: each wrong answer is one failure for the breaker to count.
POLICY = replace(FAST, retry_attempts=1, breaker_failure_threshold=THRESHOLD, breaker_cooldown_seconds=COOLDOWN)


class StatusWire(BaseModel):
    status: Literal["ok"]


parse_status = partial(parse_model, StatusWire, provider="fake", operation="check")
WRONG_SHAPE = ok({"status": 42})


# Through the client


async def test_given_a_provider_answering_the_wrong_shape_when_called_repeatedly_then_the_circuit_opens() -> None:
    provider = ScriptedProvider([WRONG_SHAPE])
    async with started(make_client(provider.transport, policy=POLICY, clock=FakeClock())) as client:
        for _ in range(THRESHOLD):
            with pytest.raises(perr.ProviderMalformedResponse):
                await client.get("/v1/health", operation="check", parse=parse_status)
        assert client.stats.breaker_state is BreakerState.OPEN

        with pytest.raises(perr.ProviderCircuitOpen):
            await client.get("/v1/health", operation="check", parse=parse_status)
        with pytest.raises(perr.ProviderCircuitOpen):
            await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k", parse=parse_status)
        assert client.stats.rejected_by_breaker == 2
    assert len(provider.requests) == THRESHOLD  # failing fast: nothing more reached the provider


@pytest.mark.parametrize("method", ["GET", "keyed POST"])
async def test_a_wrong_shape_fails_exactly_as_a_body_that_is_not_json(method: str) -> None:
    not_json = httpx.Response(200, text="<html>", headers={"X-Request-ID": "req-1"})
    wrong_shape = ok({"status": 42}, **{"X-Request-ID": "req-1"})
    # Three attempts allowed: an error the layer took for temporary would be sent again.
    policy = replace(POLICY, retry_attempts=3)

    async def failure_of(answer: httpx.Response) -> tuple[Any, ...]:
        provider = ScriptedProvider([answer])
        async with started(make_client(provider.transport, policy=policy, clock=FakeClock())) as client:
            with pytest.raises(perr.ProviderError) as raised:
                if method == "GET":
                    await client.get("/v1/health", operation="check", parse=parse_status)
                else:
                    await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k",
                                      parse=parse_status)  # fmt: skip
        error = raised.value
        return (
            type(error),
            error.retryable,
            error.maybe_committed,
            error.status,
            error.request_id,
            len(provider.requests),
        )

    expected = (perr.ProviderMalformedResponse, False, True, 200, "req-1", 1)
    assert await failure_of(not_json) == expected
    assert await failure_of(wrong_shape) == expected


async def test_a_parse_step_raising_pydantics_own_error_is_translated_and_counted_without_the_body() -> None:
    secret = "CARD-CODE-SECRET-1234"
    provider = ScriptedProvider([ok({"status": secret})])
    async with started(make_client(provider.transport, policy=POLICY, clock=FakeClock())) as client:
        for _ in range(THRESHOLD):
            with pytest.raises(perr.ProviderMalformedResponse) as raised:
                await client.get("/v1/health", operation="check", parse=StatusWire.model_validate)
        assert client.stats.breaker_state is BreakerState.OPEN

    logged = "".join(traceback.format_exception(raised.value))  # what a logger would print
    assert "StatusWire" in str(raised.value) and "status" in str(raised.value)
    assert secret not in logged


async def test_a_body_of_the_right_shape_is_returned_parsed_and_counts_as_a_success() -> None:
    almost = [WRONG_SHAPE] * (THRESHOLD - 1)
    provider = ScriptedProvider([*almost, ok({"status": "ok"}, status=201), *almost])
    async with started(make_client(provider.transport, policy=POLICY, clock=FakeClock())) as client:
        for _ in almost:
            with pytest.raises(perr.ProviderMalformedResponse):
                await client.get("/v1/health", operation="check", parse=parse_status)
        answer = await client.post("/v1/redemptions", json={}, operation="redeem", parse=parse_status)
        for _ in almost:
            with pytest.raises(perr.ProviderMalformedResponse):
                await client.get("/v1/health", operation="check", parse=parse_status)

        assert answer == (201, StatusWire(status="ok"))
        assert client.stats.breaker_state is BreakerState.CLOSED  # the success reset the count


# Through the adapters


def _rest(provider: ScriptedProvider) -> RestProvider:
    http = ProviderHttpClient(
        provider="rest",
        base_url=BASE_URL,
        auth=ApiKeyAuth("key", "secret"),
        policy=POLICY,
        transport=provider.transport,
    )
    return RestProvider(http=http, events=EventHub())


async def test_rest_a_page_of_the_wrong_shape_opens_the_circuit() -> None:
    provider = ScriptedProvider([ok({"items": "nope", "next_cursor": None})])
    rest = _rest(provider)
    await rest.start()
    try:
        for _ in range(THRESHOLD):
            with pytest.raises(perr.ProviderMalformedResponse):
                await rest.list_rewards(cursor=None, limit=10)
        with pytest.raises(perr.ProviderCircuitOpen):
            await rest.get_rewards(["r1"])
    finally:
        await rest.aclose()
    assert len(provider.requests) == THRESHOLD


async def test_rest_a_redemption_answered_in_the_wrong_shape_is_unknown_and_counted() -> None:
    provider = ScriptedProvider([ok({"redemption": "nope"}, status=201)])
    request = RedeemRequest(user_id="u1", reward_id="r1", face_value=Decimal(25), points=2500, idempotency_key="k1")
    rest = _rest(provider)
    await rest.start()
    try:
        for _ in range(THRESHOLD):
            with pytest.raises(perr.RedemptionOutcomeUnknown) as unknown:
                await rest.redeem(request)
            assert isinstance(unknown.value.__cause__, perr.ProviderMalformedResponse)
        assert rest.http.stats.breaker_state is BreakerState.OPEN
        with pytest.raises(perr.ProviderCircuitOpen):  # nothing sent: a definite failure, not an unknown one
            await rest.redeem(request)
    finally:
        await rest.aclose()
    assert len(provider.requests) == THRESHOLD


async def test_tremendous_a_catalog_of_the_wrong_shape_opens_the_circuit() -> None:
    with running_fake_tremendous() as fake:
        fake.state.inject(200, {"products": "nope"}, times=THRESHOLD)
        tremendous = build_tremendous(
            base_url=fake.url, api_key=fake.api_key, funding_source_id="balance", webhook_secrets=["whk"], policy=POLICY
        )
        await tremendous.start()
        try:
            for _ in range(THRESHOLD):
                with pytest.raises(perr.ProviderMalformedResponse):
                    await tremendous.catalog()
            # The fake would answer this one properly: only an open circuit keeps it from being sent.
            with pytest.raises(perr.ProviderCircuitOpen):
                await tremendous.funding_balance()
        finally:
            await tremendous.aclose()
        assert len(fake.state.requests) == THRESHOLD


async def test_tango_a_catalog_of_the_wrong_shape_opens_the_circuit() -> None:
    with running_fake_tango(rate_limit=None) as tango:
        tango.state.catalog = {"brands": "nope"}
        async with started_tango(make_tango(tango.url, policy=POLICY)) as provider:
            for _ in range(THRESHOLD):
                with pytest.raises(perr.ProviderMalformedResponse):
                    await provider.catalog()
            # The fake would answer this one properly: only an open circuit keeps it from being sent.
            with pytest.raises(perr.ProviderCircuitOpen):
                await provider.funding_balance()
        assert len(tango.state.api_requests) == THRESHOLD
