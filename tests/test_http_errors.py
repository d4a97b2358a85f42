"""The one status/code -> port error table, foreign exception translation, and what errors may carry."""

from __future__ import annotations

import logging
from dataclasses import replace

import httpx
import pytest
from pydantic import BaseModel

import providers.errors as perr
from providers.http import REST_ERRORS, ErrorRule, parse_model
from providers.http.errors import FALLBACK_4XX, FALLBACK_5XX, FALLBACK_OTHER
from providers.http.exceptions import FOREIGN_ERRORS, UNMAPPED, ForeignRule, aiohttp_errors, rule_for
from providers.rest.contract import ERROR_CODES
from tests.test_http_fakes import BASE_URL, FAST, ScriptedProvider, error, make_client, started

pytestmark = pytest.mark.anyio

CARD = "GIFT-CARD-CODE-9911"  # must never reach an exception message
ONE_ATTEMPT = replace(FAST, retry_attempts=1)


def _code_for(rule: ErrorRule) -> str | None:
    return rule.code if rule.code is not None else "some_code_not_in_the_table"


@pytest.mark.parametrize("rule", REST_ERRORS.rules, ids=lambda r: f"{r.status}-{r.code or 'any'}")
async def test_given_each_table_row_when_the_provider_answers_it_then_its_error_is_raised_with_the_facts(
    rule: ErrorRule,
) -> None:
    answer = error(rule.status, _code_for(rule), **{"X-Request-ID": "req-42", "Retry-After": "1"})
    provider = ScriptedProvider([answer])
    async with started(make_client(provider.transport, policy=ONE_ATTEMPT)) as client:
        with pytest.raises(perr.ProviderError) as raised:
            await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k-1")
    err = raised.value
    assert type(err) is rule.error
    assert (err.provider, err.status, err.request_id, err.retry_after) == ("fake", rule.status, "req-42", 1.0)
    assert err.retryable is rule.retry
    assert err.maybe_committed is rule.maybe_committed
    assert "from the fake" not in str(err)  # the provider's message is not ours to repeat


@pytest.mark.parametrize(
    ("status", "code", "fallback"),
    [
        (402, "unknown_code", FALLBACK_4XX),  # known status, unknown code
        (418, "teapot", FALLBACK_4XX),
        (410, None, FALLBACK_4XX),
        (501, "not_implemented", FALLBACK_5XX),
        (599, None, FALLBACK_5XX),
        (302, None, FALLBACK_OTHER),
        (101, None, FALLBACK_OTHER),
    ],
)
async def test_given_a_status_or_code_outside_the_table_when_answered_then_the_fallback_applies(
    status: int, code: str | None, fallback: ErrorRule
) -> None:
    assert REST_ERRORS.lookup(status, code) is fallback
    if status < 200:
        return  # httpx cannot carry an informational status as a final response
    provider = ScriptedProvider([error(status, code)])
    async with started(make_client(provider.transport, policy=ONE_ATTEMPT)) as client:
        with pytest.raises(fallback.error) as raised:
            await client.get("/v1/rewards", operation="list_rewards")
    assert raised.value.status == status
    assert raised.value.maybe_committed is fallback.maybe_committed


def test_the_fallbacks_are_permanent_for_4xx_and_temporary_for_5xx() -> None:
    assert FALLBACK_4XX.error is perr.ProviderPermanentFailure and not FALLBACK_4XX.retry
    assert FALLBACK_5XX.error is perr.ProviderUnavailable and FALLBACK_5XX.maybe_committed
    assert FALLBACK_OTHER.error is perr.ProviderMalformedResponse


# The contract's codes, checked by hand: a new code in ERROR_CODES fails here until it is decided.
EXPECTED_BY_CODE: dict[str, type[perr.ProviderError]] = {
    "invalid_request": perr.ProviderPermanentFailure,
    "authentication_failed": perr.ProviderAuthenticationFailed,
    "insufficient_points": perr.InsufficientPoints,
    "forbidden": perr.ProviderAuthenticationFailed,
    "not_found": perr.ProviderPermanentFailure,
    "reward_not_found": perr.RewardNotFound,
    "method_not_allowed": perr.ProviderPermanentFailure,  # our bug, not the provider's mood: never retried
    "idempotency_conflict": perr.IdempotencyConflict,
    "reward_unavailable": perr.RewardUnavailable,
    "invalid_face_value": perr.InvalidFaceValue,
    "rate_limited": perr.ProviderRateLimited,
    "internal_error": perr.ProviderUnavailable,
    "unavailable": perr.ProviderUnavailable,
}


def test_every_code_of_the_contract_maps_to_the_error_the_port_expects() -> None:
    assert set(EXPECTED_BY_CODE) == set(ERROR_CODES)
    for code, status in ERROR_CODES.items():
        assert REST_ERRORS.lookup(status, code).error is EXPECTED_BY_CODE[code], code


def test_a_table_with_two_rules_for_one_key_is_refused() -> None:
    from providers.http import ErrorTable

    with pytest.raises(ValueError, match="two rules"):
        ErrorTable([ErrorRule(404, None, perr.RewardNotFound), ErrorRule(404, None, perr.ProviderPermanentFailure)])


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(402, content=b"<html>Payment Required</html>", headers={"Content-Type": "text/html"}),
        httpx.Response(402, content=b'{"error": ', headers={"Content-Type": "application/json"}),
        httpx.Response(402, json=["insufficient_points"]),
        httpx.Response(402, json={"error": 7}),
        httpx.Response(402, json={"error": {"code": ["insufficient_points"]}}),
        httpx.Response(402, json={"error": {"code": "x" * 500}}),
        httpx.Response(402),
    ],
    ids=["html", "cut-json", "list", "number", "code-list", "code-too-long", "empty"],
)
async def test_given_an_error_body_of_the_wrong_shape_when_answered_then_the_status_alone_decides(
    answer: httpx.Response,
) -> None:
    provider = ScriptedProvider([answer])
    async with started(make_client(provider.transport, policy=ONE_ATTEMPT)) as client:
        with pytest.raises(perr.ProviderPermanentFailure) as raised:
            await client.get("/v1/balances", operation="get_balances")
    assert raised.value.status == 402


async def test_given_a_token_style_error_body_when_answered_then_its_string_code_is_read() -> None:
    assert REST_ERRORS.code_of(httpx.Response(401, json={"error": "invalid_client"})) == "invalid_client"


# 2xx answers that are not what was promised


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, content=b"<html>ok</html>", headers={"Content-Type": "text/html"}),
        httpx.Response(200, content=b'{"status": "o', headers={"Content-Type": "application/json"}),
        httpx.Response(200, content=b"\xff\xfe\x00", headers={"Content-Type": "application/json"}),
        httpx.Response(200, content=b"[" * 100_000, headers={"Content-Type": "application/json"}),
        httpx.Response(200, content=b'{"a": 1}'),  # no content type
    ],
    ids=["html", "cut-json", "not-utf8", "deep-nesting", "no-content-type"],
)
async def test_given_a_2xx_that_is_not_json_when_posting_then_malformed_and_maybe_committed(
    answer: httpx.Response,
) -> None:
    provider = ScriptedProvider([answer])
    async with started(make_client(provider.transport)) as client:
        with pytest.raises(perr.ProviderMalformedResponse) as raised:
            await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k-1")
    assert raised.value.maybe_committed is True  # the provider answered 2xx: it did the work
    assert len(provider.requests) == 1  # a garbled answer is not retried
    assert isinstance(raised.value, perr.ProviderUnavailable)


async def test_given_a_204_when_posting_then_status_and_no_body() -> None:
    provider = ScriptedProvider([httpx.Response(204)])
    async with started(make_client(provider.transport)) as client:
        assert await client.post("/v1/things", json={}, operation="op") == (204, None)


async def test_given_a_body_with_a_card_of_the_wrong_shape_when_validated_then_no_card_in_the_error() -> None:
    class Card(BaseModel):
        code: str
        pin: int

    with pytest.raises(perr.ProviderMalformedResponse) as raised:
        parse_model(Card, {"code": CARD, "pin": CARD}, provider="fake", operation="redeem", maybe_committed=True)
    assert "pin" in str(raised.value)
    assert CARD not in str(raised.value) and CARD not in repr(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # no traceback echo either
    assert raised.value.maybe_committed is True


async def test_given_an_error_body_quoting_a_card_when_answered_then_the_message_does_not_repeat_it() -> None:
    answer = httpx.Response(409, json={"error": {"code": "idempotency_conflict", "message": f"card {CARD}"}})
    provider = ScriptedProvider([answer])
    async with started(make_client(provider.transport)) as client:
        with pytest.raises(perr.IdempotencyConflict) as raised:
            await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k")
    assert CARD not in str(raised.value)


async def test_given_a_request_id_that_is_not_printable_when_answered_then_it_is_dropped() -> None:
    provider = ScriptedProvider([error(404, "reward_not_found", **{"X-Request-ID": "a b\tc"})])
    async with started(make_client(provider.transport)) as client:
        with pytest.raises(perr.RewardNotFound) as raised:
            await client.get("/v1/rewards/batch", operation="get_rewards")
    assert raised.value.request_id is None


# Foreign exceptions: every class the translation table names is mapped, the cause kept.


def _instance(exc_type: type[BaseException]) -> BaseException:
    if issubclass(exc_type, httpx.TooManyRedirects | httpx.RequestError):
        return exc_type("boom", request=httpx.Request("GET", BASE_URL))
    return exc_type("boom")


@pytest.mark.parametrize("rule", FOREIGN_ERRORS, ids=lambda r: r.exception.__name__)
async def test_given_each_foreign_exception_when_the_transport_raises_it_then_it_is_translated(
    rule: ForeignRule,
) -> None:
    foreign = _instance(rule.exception)
    provider = ScriptedProvider([foreign])
    async with started(make_client(provider.transport, policy=ONE_ATTEMPT)) as client:
        with pytest.raises(perr.ProviderError) as raised:
            await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k")
    err = raised.value
    assert type(err) is rule.error
    assert err.__cause__ is foreign
    assert err.retryable is rule.retry
    assert err.maybe_committed is rule.reached  # the request had been handed to the transport
    assert err.provider == "fake" and "redeem" in str(err)


@pytest.mark.parametrize(
    "foreign",
    [httpx.RemoteProtocolError("peer closed connection without sending complete message body"), httpx.ReadError("x")],
)
async def test_given_a_body_cut_short_when_reading_it_then_malformed_or_connection_error_maybe_committed(
    foreign: Exception,
) -> None:
    class CutStream(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            yield b'{"status": '
            raise foreign

    provider = ScriptedProvider([lambda request: httpx.Response(200, stream=CutStream())])
    async with started(make_client(provider.transport, policy=ONE_ATTEMPT)) as client:
        with pytest.raises(perr.ProviderUnavailable) as raised:
            await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k")
    cut_short = isinstance(foreign, httpx.RemoteProtocolError)
    expected = perr.ProviderMalformedResponse if cut_short else perr.ProviderConnectionError
    assert type(raised.value) is expected
    assert raised.value.maybe_committed is True and raised.value.__cause__ is foreign


@pytest.mark.parametrize("rule", aiohttp_errors(), ids=lambda r: r.exception.__name__)
async def test_given_each_aiohttp_failure_disguised_by_httpx_aiohttp_when_raised_then_its_cause_decides(
    rule: ForeignRule,
) -> None:
    cause = rule.exception.__new__(rule.exception)  # the instance's details do not matter, its class does
    disguised = httpx.ConnectTimeout("as httpx-aiohttp maps it", request=httpx.Request("GET", BASE_URL))
    disguised.__cause__ = cause
    provider = ScriptedProvider([disguised])
    async with started(make_client(provider.transport, policy=ONE_ATTEMPT)) as client:
        with pytest.raises(perr.ProviderError) as raised:
            await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k")
    assert type(raised.value) is rule.error
    assert raised.value.maybe_committed is rule.reached


@pytest.mark.parametrize("rule", aiohttp_errors(), ids=lambda r: r.exception.__name__)
async def test_given_each_aiohttp_failure_httpx_aiohttp_lets_through_as_is_when_raised_then_it_is_translated(
    rule: ForeignRule,
) -> None:
    foreign = rule.exception.__new__(rule.exception)  # a garbled status line arrives as a bare ClientResponseError
    provider = ScriptedProvider([foreign])
    async with started(make_client(provider.transport, policy=ONE_ATTEMPT)) as client:
        with pytest.raises(perr.ProviderError) as raised:
            await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k")
    assert type(raised.value) is rule.error and raised.value.__cause__ is foreign
    assert (raised.value.retryable, raised.value.maybe_committed) == (rule.retry, rule.reached)


def test_every_aiohttp_client_exception_is_covered_by_the_translation() -> None:
    import aiohttp

    exported = [getattr(aiohttp, name) for name in aiohttp.__all__]
    client_errors = [cls for cls in exported if isinstance(cls, type) and issubclass(cls, aiohttp.ClientError)]
    assert client_errors, "aiohttp exports no client errors?"
    missing = [cls.__name__ for cls in client_errors if rule_for(cls.__new__(cls)) is UNMAPPED]
    assert missing == []


async def test_given_an_exception_no_rule_names_when_the_transport_raises_it_then_an_unknown_provider_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Surprise(Exception):
        pass

    foreign = Surprise(f"quoting {CARD}")
    provider = ScriptedProvider([foreign])
    async with started(make_client(provider.transport, policy=FAST)) as client:
        with caplog.at_level(logging.WARNING), pytest.raises(perr.ProviderUnavailable) as raised:
            await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k")
    err = raised.value
    assert type(err) is UNMAPPED.error and err.__cause__ is foreign
    assert (err.retryable, err.maybe_committed) == (False, True)  # unknown: not repeated, maybe done
    assert len(provider.requests) == 1
    assert "Surprise" in caplog.text and CARD not in caplog.text and CARD not in str(err)


def test_every_concrete_httpx_exception_is_covered_by_the_translation() -> None:
    covered = tuple(rule.exception for rule in FOREIGN_ERRORS)
    names = [name for name in httpx.__all__ if name[0].isupper()]
    httpx_errors = [getattr(httpx, name) for name in names]
    httpx_errors = [cls for cls in httpx_errors if isinstance(cls, type) and issubclass(cls, Exception)]
    assert httpx_errors, "httpx exports no exceptions?"
    # CookieConflict comes only from reading cookies, which the client never does.
    missing = [cls.__name__ for cls in httpx_errors if not issubclass(cls, covered) and cls is not httpx.CookieConflict]
    assert missing == []


# The error tree


def test_temporary_errors_are_provider_unavailable_and_permanent_ones_are_not() -> None:
    temporary = [
        perr.ProviderRateLimited,
        perr.ProviderTimeout,
        perr.ProviderConnectionError,
        perr.ProviderMalformedResponse,
        perr.ProviderCircuitOpen,
    ]
    permanent = [perr.ProviderAuthenticationFailed, perr.ProviderPermanentFailure, perr.RedemptionOutcomeUnknown]
    assert all(issubclass(cls, perr.ProviderUnavailable) and cls("x").retryable for cls in temporary)
    assert not any(issubclass(cls, perr.ProviderUnavailable) or cls("x").retryable for cls in permanent)
    assert perr.RedemptionOutcomeUnknown("x").maybe_committed is True
    for cls in [*temporary, *permanent]:
        assert cls.__name__ in (perr.__doc__ or "")  # drawn in the module's tree


def test_an_error_keeps_its_facts_and_old_call_sites_still_work() -> None:
    legacy = perr.ProviderUnavailable("down", provider="sandbox")
    assert (legacy.retryable, legacy.maybe_committed, legacy.status, legacy.retry_after) == (True, False, None, None)
    err = perr.ProviderRateLimited("slow", provider="p", status=429, retry_after=3.0, request_id="r", retryable=False)
    assert (err.provider, err.status, err.retry_after, err.request_id, err.retryable) == ("p", 429, 3.0, "r", False)
    assert str(err) == "slow"
