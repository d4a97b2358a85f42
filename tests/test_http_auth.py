"""Provider authentication: API key and secret, OAuth2 client credentials with a single-flight token."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qs

import httpx
import pytest

import providers.errors as perr
from providers.http import ApiKeyAuth, BreakerState, ClientCredentialsAuth
from providers.http.auth import MemoryTokenStore, StoredToken
from tests.test_http_fakes import API_KEY, API_SECRET, FAST, FakeClock, make_client, started

pytestmark = pytest.mark.anyio

CLIENT_ID, CLIENT_SECRET = "client-1", "client-secret-never-logged"
TOKEN_URL = "/oauth/token"


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class TokenServer:
    """The contract's OAuth2 endpoint and one API route, as a MockTransport handler."""

    clock: FakeClock
    ttl: int = 3600
    token_answer: httpx.Response | Exception | None = None  # override the token endpoint's answer
    token_delay: float = 0.0  # real seconds the token endpoint takes (lets requests pile up)
    issued: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    expiry: dict[str, float] = field(default_factory=dict)
    token_requests: list[httpx.Request] = field(default_factory=list)
    api_requests: list[httpx.Request] = field(default_factory=list)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == TOKEN_URL:
            self.token_requests.append(request)
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            if isinstance(self.token_answer, Exception):
                raise self.token_answer
            if self.token_answer is not None:
                return httpx.Response(
                    self.token_answer.status_code, headers=self.token_answer.headers, content=self.token_answer.content
                )
            if request.headers.get("Authorization") != _basic(CLIENT_ID, CLIENT_SECRET):
                return httpx.Response(401, json={"error": "invalid_client"})
            token = f"token-{len(self.issued) + 1}"
            self.issued.append(token)
            self.expiry[token] = self.clock.now + self.ttl
            return httpx.Response(200, json={"access_token": token, "token_type": "Bearer", "expires_in": self.ttl})
        self.api_requests.append(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self.expiry or token in self.revoked or self.clock.now >= self.expiry[token]:
            return httpx.Response(401, json={"error": {"code": "authentication_failed", "message": "bad token"}})
        return httpx.Response(200, json={"status": "ok", "token": token})

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def _oauth(clock: FakeClock, **kwargs: object) -> ClientCredentialsAuth:
    return ClientCredentialsAuth(
        token_url=TOKEN_URL, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, clock=clock, **kwargs
    )


# API key and secret


async def test_given_an_api_key_when_calling_then_every_request_carries_http_basic() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200, json={})

    async with started(make_client(httpx.MockTransport(handler), auth=ApiKeyAuth(API_KEY, API_SECRET))) as client:
        await client.get("/v1/health", operation="check")
        await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k")
    assert seen == [_basic(API_KEY, API_SECRET)] * 2


def test_auth_objects_never_show_their_credentials() -> None:
    for auth in (ApiKeyAuth(API_KEY, API_SECRET), _oauth(FakeClock())):
        text = f"{auth!r} {auth!s}"
        basic = base64.b64encode(f"{API_KEY}:{API_SECRET}".encode()).decode()
        for secret in (API_KEY, API_SECRET, CLIENT_SECRET, basic):
            assert secret not in text
    with pytest.raises(ValueError):
        ApiKeyAuth("", "secret")


# Client credentials: fetching and caching the token


async def test_given_client_credentials_when_calling_twice_then_one_token_request_with_basic_client_auth() -> None:
    clock = FakeClock()
    server = TokenServer(clock)
    auth = _oauth(clock)
    async with started(make_client(server.transport, auth=auth)) as client:
        assert (await client.get("/v1/health", operation="check"))["token"] == "token-1"
        assert (await client.get("/v1/health", operation="check"))["token"] == "token-1"
    (token_request,) = server.token_requests
    assert token_request.method == "POST"
    assert token_request.headers["Authorization"] == _basic(CLIENT_ID, CLIENT_SECRET)
    assert parse_qs(token_request.content.decode()) == {"grant_type": ["client_credentials"]}
    assert CLIENT_SECRET.encode() not in token_request.content  # sent by HTTP Basic only
    assert auth.token_requests == 1


async def test_given_a_token_near_expiry_when_calling_then_it_is_refreshed_refresh_margin_early() -> None:
    clock = FakeClock()
    server = TokenServer(clock, ttl=600)
    async with started(make_client(server.transport, auth=_oauth(clock, refresh_margin=30))) as client:
        await client.get("/v1/health", operation="check")
        clock.now += 569
        assert (await client.get("/v1/health", operation="check"))["token"] == "token-1"
        clock.now += 2  # 571 s: inside the 30 s margin
        assert (await client.get("/v1/health", operation="check"))["token"] == "token-2"
    assert len(server.token_requests) == 2


async def test_given_100_concurrent_requests_at_expiry_when_calling_then_exactly_one_token_request() -> None:
    clock = FakeClock()
    server = TokenServer(clock, ttl=600, token_delay=0.05)
    auth = _oauth(clock)
    policy = replace(FAST, max_connections=200)
    async with started(make_client(server.transport, auth=auth, policy=policy)) as client:
        await client.get("/v1/health", operation="check")
        clock.now += 601  # token-1 has expired
        answers = await asyncio.gather(*(client.get("/v1/health", operation="check") for _ in range(100)))
    assert {answer["token"] for answer in answers} == {"token-2"}
    assert len(server.token_requests) == 2 and auth.token_requests == 2  # the first token, then one refresh
    assert len(server.api_requests) == 101  # nobody sent the expired token and had to retry


async def test_given_100_concurrent_first_requests_when_calling_then_one_token_request() -> None:
    clock = FakeClock()
    server = TokenServer(clock, token_delay=0.05)
    policy = replace(FAST, max_connections=200)
    async with started(make_client(server.transport, auth=_oauth(clock), policy=policy)) as client:
        await asyncio.gather(*(client.get("/v1/health", operation="check") for _ in range(100)))
    assert len(server.token_requests) == 1


async def test_given_a_token_in_its_refresh_window_when_one_request_refreshes_then_the_others_keep_using_it() -> None:
    clock = FakeClock()
    server = TokenServer(clock, ttl=600, token_delay=0.1)
    async with started(make_client(server.transport, auth=_oauth(clock, refresh_margin=30))) as client:
        await client.get("/v1/health", operation="check")
        clock.now += 580  # refresh due, token still valid
        refreshing = asyncio.ensure_future(client.get("/v1/health", operation="check"))
        await asyncio.sleep(0.02)  # the refresh is in flight
        others = await asyncio.gather(*(client.get("/v1/health", operation="check") for _ in range(5)))
        assert {answer["token"] for answer in others} == {"token-1"}
        assert not refreshing.done()
        assert (await refreshing)["token"] == "token-2"
    assert len(server.token_requests) == 2


# A 401 from the API: one refresh and one retry, never a loop


async def test_given_a_revoked_token_when_the_api_answers_401_then_one_refresh_and_the_request_succeeds() -> None:
    clock = FakeClock()
    server = TokenServer(clock)
    async with started(make_client(server.transport, auth=_oauth(clock))) as client:
        await client.get("/v1/health", operation="check")
        server.revoked.add("token-1")
        assert (await client.get("/v1/health", operation="check"))["token"] == "token-2"
        assert client.stats.retries == 0  # handled inside the attempt, not by the retry policy
    assert len(server.token_requests) == 2
    assert len(server.api_requests) == 3


async def test_given_the_api_rejects_every_token_when_calling_then_one_retry_and_authentication_failed() -> None:
    clock = FakeClock()
    server = TokenServer(clock)
    server.revoked.update(f"token-{n}" for n in range(1, 10))
    async with started(make_client(server.transport, auth=_oauth(clock))) as client:
        with pytest.raises(perr.ProviderAuthenticationFailed) as raised:
            await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k")
    assert raised.value.status == 401 and raised.value.maybe_committed is False
    assert len(server.api_requests) == 2 and len(server.token_requests) == 2


async def test_given_concurrent_401s_for_one_token_when_retrying_then_a_single_refresh_serves_them_all() -> None:
    clock = FakeClock()
    server = TokenServer(clock, token_delay=0.05)
    async with started(make_client(server.transport, auth=_oauth(clock))) as client:
        await client.get("/v1/health", operation="check")
        server.revoked.add("token-1")
        answers = await asyncio.gather(*(client.get("/v1/health", operation="check") for _ in range(20)))
    assert {answer["token"] for answer in answers} == {"token-2"}
    assert len(server.token_requests) == 2


async def test_given_a_401_after_another_request_refreshed_when_retrying_then_the_new_token_is_kept() -> None:
    clock = FakeClock()
    server = TokenServer(clock)
    auth = _oauth(clock)
    gate = asyncio.Event()

    async def slow_api(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/slow":
            await gate.wait()  # answers 401 only after another request already refreshed
        return await server(request)

    async with started(make_client(httpx.MockTransport(slow_api), auth=auth)) as client:
        await client.get("/v1/health", operation="check")
        server.revoked.add("token-1")
        slow = asyncio.ensure_future(client.get("/v1/slow", operation="check"))
        await asyncio.sleep(0.01)
        assert (await client.get("/v1/health", operation="check"))["token"] == "token-2"
        gate.set()
        assert (await slow)["token"] == "token-2"  # retried with token-2, without fetching token-3
    assert len(server.token_requests) == 2


# The token endpoint failing


MALFORMED = perr.ProviderMalformedResponse


@pytest.mark.parametrize(
    ("answer", "expected", "retried"),
    [
        (httpx.Response(401, json={"error": "invalid_client"}), perr.ProviderAuthenticationFailed, False),
        (httpx.Response(400, json={"error": "invalid_client"}), perr.ProviderAuthenticationFailed, False),
        (httpx.Response(400, json={"error": "unsupported_grant_type"}), perr.ProviderAuthenticationFailed, False),
        (httpx.Response(503, json={"error": "temporarily_unavailable"}), perr.ProviderUnavailable, True),
        (httpx.Response(500, text="oops"), perr.ProviderUnavailable, False),
        (httpx.Response(429, headers={"Retry-After": "1"}), perr.ProviderRateLimited, True),
        (httpx.Response(200, json={"access_token": "t", "token_type": "mac", "expires_in": 60}), MALFORMED, False),
        (httpx.Response(200, json={"access_token": "t", "token_type": "Bearer"}), MALFORMED, False),
        (httpx.Response(200, text="<html>"), perr.ProviderMalformedResponse, False),
        (httpx.ConnectError("refused"), perr.ProviderConnectionError, True),
        (httpx.ReadTimeout("slow"), perr.ProviderTimeout, True),
    ],
    ids=[
        *("401", "400-invalid-client", "400-grant", "503", "500", "429"),
        *("not-bearer", "no-expiry", "html", "connect", "read-timeout"),
    ],
)
async def test_given_a_failing_token_endpoint_when_calling_then_mapped_and_nothing_was_sent(
    answer: httpx.Response | Exception, expected: type[perr.ProviderError], retried: bool
) -> None:
    clock = FakeClock()
    server = TokenServer(clock, token_answer=answer)
    policy = replace(FAST, retry_attempts=2)
    async with started(make_client(server.transport, auth=_oauth(clock), policy=policy, clock=clock)) as client:
        with pytest.raises(perr.ProviderError) as raised:
            await client.post("/v1/redemptions", json={}, operation="redeem", idempotency_key="k")
    assert type(raised.value) is expected
    assert raised.value.maybe_committed is False  # the API request itself never left
    assert raised.value.provider == "fake"
    assert server.api_requests == []
    assert len(server.token_requests) == (2 if retried else 1)


async def test_given_a_token_endpoint_refusing_when_many_wait_on_it_then_each_gets_its_own_error() -> None:
    clock = FakeClock()
    server = TokenServer(clock, token_answer=httpx.Response(401, json={"error": "invalid_client"}), token_delay=0.05)
    async with started(make_client(server.transport, auth=_oauth(clock))) as client:
        results = await asyncio.gather(
            *(client.get("/v1/health", operation="check") for _ in range(10)), return_exceptions=True
        )
    assert all(isinstance(result, perr.ProviderAuthenticationFailed) for result in results)
    assert len({id(result) for result in results}) == 10
    assert len(server.token_requests) == 1


async def test_given_the_token_fetch_is_cancelled_when_others_wait_then_one_of_them_fetches_instead() -> None:
    clock = FakeClock()
    server = TokenServer(clock, token_delay=0.1)
    async with started(make_client(server.transport, auth=_oauth(clock))) as client:
        leader = asyncio.ensure_future(client.get("/v1/health", operation="check"))
        await asyncio.sleep(0.02)
        waiters = [asyncio.ensure_future(client.get("/v1/health", operation="check")) for _ in range(3)]
        await asyncio.sleep(0.02)
        leader.cancel()
        answers = await asyncio.gather(*waiters)
    assert {answer["token"] for answer in answers} == {"token-1"}
    assert len(server.token_requests) == 2  # the cancelled fetch, then one more


async def test_given_oauth_traffic_when_logging_at_debug_then_no_secret_or_token_appears(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    server = TokenServer(clock)
    async with started(make_client(server.transport, auth=_oauth(clock))) as client:
        await client.get("/v1/health", operation="check")
        server.revoked.add("token-1")
        await client.get("/v1/health", operation="check")
    server.token_answer = httpx.Response(503)
    server.revoked.add("token-2")
    policy = replace(FAST, retry_attempts=2)
    async with started(make_client(server.transport, auth=_oauth(clock), policy=policy)) as client:
        with pytest.raises(perr.ProviderUnavailable) as raised:
            await client.get("/v1/health", operation="check")
    text = caplog.text + str(raised.value) + repr(raised.value)
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    for secret in (CLIENT_SECRET, "token-1", "token-2", basic):
        assert secret not in text


def test_client_credentials_refuse_a_sync_client() -> None:
    auth = _oauth(FakeClock())
    with httpx.Client(auth=auth, transport=httpx.MockTransport(lambda request: httpx.Response(200))) as client:
        with pytest.raises(RuntimeError, match="AsyncClient"):
            client.get("http://provider.test/v1/health")


async def test_given_the_token_endpoint_failing_while_the_token_is_still_valid_then_calls_keep_using_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    server = TokenServer(clock, ttl=600)
    auth = _oauth(clock, refresh_margin=30)
    async with started(make_client(server.transport, auth=auth, policy=replace(FAST, retry_attempts=1))) as client:
        assert (await client.get("/v1/health", operation="check"))["token"] == "token-1"
        clock.now += 575  # inside the refresh margin; the token is good for 25 s more
        server.token_answer = httpx.Response(503, json={"error": "down"})
        during_outage = [(await client.get("/v1/health", operation="check"))["token"] for _ in range(3)]
        failed_refreshes = len(server.token_requests) - 1
        server.token_answer = None
        clock.now += 30  # now expired: a call must get a new token, and the endpoint is back
        after_expiry = (await client.get("/v1/health", operation="check"))["token"]

    assert during_outage == ["token-1"] * 3
    assert failed_refreshes == 1  # one failed refresh, then a pause rather than one per call
    assert after_expiry == "token-2"
    assert "refresh failed" in caplog.text and "token-1" not in caplog.text


async def test_given_an_expired_token_and_the_token_endpoint_failing_then_the_call_fails_as_unavailable() -> None:
    clock = FakeClock()
    server = TokenServer(clock, ttl=600)
    auth = _oauth(clock, refresh_margin=30)
    async with started(make_client(server.transport, auth=auth, policy=replace(FAST, retry_attempts=1))) as client:
        await client.get("/v1/health", operation="check")
        clock.now += 601
        server.token_answer = httpx.Response(503, json={"error": "down"})
        with pytest.raises(perr.ProviderUnavailable):
            await client.get("/v1/health", operation="check")

    assert [r.url.path for r in server.api_requests] == ["/v1/health"]  # the expired token was never sent


@pytest.mark.parametrize(
    "expires_in",
    [10**400, 2**31, 0, -5, True, "3600"],
    ids=["huge", "past-int32", "zero", "negative", "bool", "string"],
)
async def test_given_a_token_lifetime_no_token_has_then_a_malformed_answer(expires_in: object) -> None:
    clock = FakeClock()
    server = TokenServer(clock)
    body = f'{{"access_token": "t", "token_type": "Bearer", "expires_in": {json.dumps(expires_in)}}}'
    server.token_answer = httpx.Response(200, headers={"Content-Type": "application/json"}, content=body.encode())
    async with started(make_client(server.transport, auth=_oauth(clock), policy=replace(FAST, retry_attempts=1))) as c:
        with pytest.raises(perr.ProviderMalformedResponse):
            await c.get("/v1/health", operation="check")
    assert server.api_requests == []


async def test_given_the_token_endpoint_unreachable_while_the_token_is_still_valid_then_calls_keep_using_it() -> None:
    clock = FakeClock()
    server = TokenServer(clock, ttl=600)
    auth = _oauth(clock, refresh_margin=30)
    async with started(make_client(server.transport, auth=auth)) as client:
        assert (await client.get("/v1/health", operation="check"))["token"] == "token-1"
        clock.now += 575  # inside the refresh margin; the token is good for 25 s more
        server.token_answer = httpx.ConnectError("the auth host is down")
        during_outage = [(await client.get("/v1/health", operation="check"))["token"] for _ in range(3)]
        breaker = client.stats.breaker_state

    # The first call's attempt that tried to refresh failed in transit and was retried with the token in hand.
    assert during_outage == ["token-1"] * 3
    assert len(server.token_requests) == 2  # one refresh tried, then a pause rather than one per call
    assert breaker is BreakerState.CLOSED


async def test_given_a_token_refusal_seen_by_a_call_that_may_have_committed_then_later_calls_are_not_marked() -> None:
    api_calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal api_calls
        if request.url.path == TOKEN_URL:
            if not api_calls:
                return httpx.Response(200, json={"access_token": "A", "token_type": "Bearer", "expires_in": 3600})
            return httpx.Response(401, json={"error": "invalid_client"})  # the client's credentials were revoked
        api_calls += 1
        if api_calls == 1:
            return httpx.Response(200, json={})
        if api_calls == 2:
            return httpx.Response(503, json={})  # an order attempt that may have been committed
        return httpx.Response(401, json={})  # the token is refused too: a new one is asked for, and refused

    auth = ClientCredentialsAuth(
        token_url=TOKEN_URL, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refusal_cooldown=60
    )
    async with started(make_client(httpx.MockTransport(handler), auth=auth)) as client:
        await client.get("/v1/health", operation="check")
        with pytest.raises(perr.ProviderAuthenticationFailed) as first:
            await client.post("/orders", json={}, operation="place_order", idempotency_key="k1")
        with pytest.raises(perr.ProviderAuthenticationFailed) as fresh:
            await client.post("/orders", json={}, operation="place_order", idempotency_key="k2")

    assert first.value.maybe_committed is True  # its own earlier attempt may have reached the provider
    assert fresh.value.maybe_committed is False  # nothing of this call was sent: a definite refusal


class SlowStore(MemoryTokenStore):
    """A shared store whose first save takes longer than the call's budget (a busy database)."""

    def __init__(self) -> None:
        super().__init__()
        self.slow = True

    async def save(self, token: StoredToken) -> None:
        if self.slow:
            self.slow = False
            await asyncio.sleep(1.0)
        await super().save(token)


async def test_given_the_token_save_outlasting_the_call_budget_then_the_token_is_kept_and_stored_anyway() -> None:
    clock = FakeClock()
    server = TokenServer(clock, ttl=86_400)
    store = SlowStore()
    auth = ClientCredentialsAuth(
        token_url=TOKEN_URL, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, store=store, clock=clock
    )
    policy = replace(FAST, retry_attempts=1, call_budget_seconds=0.3)
    async with started(make_client(server.transport, auth=auth, policy=policy)) as client:
        with pytest.raises(perr.ProviderTimeout):
            await client.get("/v1/health", operation="check")  # the budget ran out while the token was saved
        later = (await client.get("/v1/health", operation="check"))["token"]
        await asyncio.sleep(1.0)  # the shielded save finishes on its own
        stored = await store.load()

    assert later == "token-1"
    assert len(server.token_requests) == 1  # never asked for a second token (Tango would refuse it for 20 h)
    assert stored is not None and stored.value == "token-1"
