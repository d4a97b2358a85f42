"""ProviderHttpClient: one provider's httpx.AsyncClient behind retries, a rate limiter and a circuit breaker.

A call is: retry loop (tenacity) -> per attempt: rate limiter (not waited for while the circuit is open)
-> circuit breaker -> the request (auth flow, transport) bounded by the call's remaining time
-> status/body -> port error or JSON -> the caller's `parse` step, if any -> the breaker told how it went.
Nothing foreign leaves a call: every failure is a providers.errors.ProviderError.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from aiolimiter import AsyncLimiter
from pydantic import ValidationError

from providers.errors import (
    FundingInsufficient,
    ProviderCircuitOpen,
    ProviderError,
    ProviderMalformedResponse,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from providers.http.breaker import BreakerState, CircuitBreaker, Permit
from providers.http.budget import RetryBudget
from providers.http.errors import REST_ERRORS, ErrorTable
from providers.http.exceptions import translate
from providers.http.policy import HttpPolicy
from providers.http.response import decode_json, request_id_of, shape_error
from providers.http.retry import CallState, RetryRules
from providers.http.transport import InFlight, TrackingTransport, track, transport_for, untrack

IDEMPOTENCY_HEADER = "Idempotency-Key"
# A call's own reading of a 2xx body (a wire model's validation, say): returns the value the call returns,
# or raises ProviderMalformedResponse (or pydantic's ValidationError) when the body has the wrong shape.
Parse = Callable[[Any], Any]


@dataclass(frozen=True)
class HttpStats:
    """Counters since start, for tests and the benchmark."""

    calls: int
    attempts: int
    retries: int
    retries_refused_by_budget: int
    rejected_by_breaker: int
    breaker_state: BreakerState


class ProviderHttpClient:
    """The resilient HTTP client of one provider; `start()` opens it, `aclose()` closes it."""

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        auth: httpx.Auth,
        policy: HttpPolicy,
        transport: httpx.AsyncBaseTransport | None = None,
        error_table: ErrorTable = REST_ERRORS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.provider = provider
        self.policy = policy
        self._base_url = base_url
        self._auth = auth
        self._transport = transport
        self._errors = error_table
        self._clock = clock
        self._client: httpx.AsyncClient | None = None
        self._limiter: AsyncLimiter | None = None
        self._breaker = CircuitBreaker(
            failure_threshold=policy.breaker_failure_threshold,
            cooldown_seconds=policy.breaker_cooldown_seconds,
            clock=clock,
        )
        self._budget = RetryBudget(
            ratio=policy.retry_budget_ratio, min_per_second=policy.retry_budget_min_per_second, clock=clock
        )
        self._retry_rules = RetryRules(
            policy,
            budget=self._budget,
            clock=clock,
            sleep=sleep,
            rng=rng or random.Random(),
            on_retry=self._count_retry,
            on_refused=self._count_refused,
        )
        self._calls = self._attempts = self._retries = self._refused = self._rejected = 0

    def __repr__(self) -> str:
        return f"ProviderHttpClient(provider={self.provider!r}, base_url={self._base_url!r})"

    @property
    def stats(self) -> HttpStats:
        return HttpStats(
            calls=self._calls,
            attempts=self._attempts,
            retries=self._retries,
            retries_refused_by_budget=self._refused,
            rejected_by_breaker=self._rejected,
            breaker_state=self._breaker.state,
        )

    async def start(self) -> None:
        if self._client is not None:
            raise RuntimeError(f"{self!r} is already started")
        policy = self.policy
        if policy.rate_limit_per_second > 0:
            # One permit per 1/rate seconds, no bursts: a provider counting in a moving window
            # never sees more than its limit from us.
            self._limiter = AsyncLimiter(1, 1 / policy.rate_limit_per_second)
        self._client = httpx.AsyncClient(
            base_url=self._base_url,
            auth=self._auth,
            timeout=policy.timeout(),
            transport=TrackingTransport(self._transport or transport_for("httpx", policy)),
            follow_redirects=False,
            trust_env=False,  # no proxies or netrc from the environment: the transport is configured here
            headers={"Accept": "application/json", "User-Agent": "giftgraph"},
        )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> ProviderHttpClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def get(self, path: str, *, params: Any = None, operation: str, parse: Parse | None = None) -> Any:
        """GET `path` (relative to the base URL) and return its JSON, or what `parse` makes of it; retried on
        temporary failures. A body `parse` refuses counts against the breaker, as one that is not JSON does."""
        _, body = await self._call(
            "GET", path, params=params, json=None, headers={}, operation=operation, repeatable=True, parse=parse
        )
        return body

    async def post(
        self,
        path: str,
        *,
        json: Any,
        operation: str,
        idempotency_key: str | None = None,
        parse: Parse | None = None,
    ) -> tuple[int, Any]:
        """POST JSON and return (status, JSON or what `parse` makes of it). Retried only with an idempotency
        key, the same on every attempt."""
        headers = {} if idempotency_key is None else {IDEMPOTENCY_HEADER: idempotency_key}
        repeatable = idempotency_key is not None
        return await self._call(
            "POST",
            path,
            params=None,
            json=json,
            headers=headers,
            operation=operation,
            repeatable=repeatable,
            parse=parse,
        )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Any,
        json: Any,
        headers: dict[str, str],
        operation: str,
        repeatable: bool,
        parse: Parse | None,
    ) -> tuple[int, Any]:
        client = self._client
        if client is None:
            raise RuntimeError(f"{self!r} is not started")
        self._calls += 1
        self._budget.deposit()
        call = CallState(
            provider=self.provider,
            operation=operation,
            deadline=self._clock() + self.policy.call_budget_seconds,
            repeatable=repeatable,
        )

        async def attempt() -> tuple[int, Any]:
            try:
                return await self._attempt(
                    client, call, method, path, params=params, json=json, headers=headers, parse=parse
                )
            except ProviderError as error:
                # Once any attempt may have reached the provider, the call's outcome stays unknown.
                call.maybe_committed = call.maybe_committed or error.maybe_committed
                error.maybe_committed = call.maybe_committed
                if not error.provider:
                    error.provider = self.provider
                raise

        async for try_ in self._retry_rules.retrying(call):
            with try_:
                return await attempt()
        raise AssertionError("unreachable: tenacity either returns or reraises")  # pragma: no cover

    async def _attempt(
        self,
        client: httpx.AsyncClient,
        call: CallState,
        method: str,
        path: str,
        *,
        params: Any,
        json: Any,
        headers: dict[str, str],
        parse: Parse | None,
    ) -> tuple[int, Any]:
        self._attempts += 1
        if self._breaker.rejecting():  # fail fast instead of queueing for a slot first
            raise self._circuit_open(call)
        await self._wait_for_rate_limit(call)
        # Asked only now: the breaker may have opened while this attempt was queued behind the limiter.
        permit = self._breaker.allow()
        if permit is None:
            raise self._circuit_open(call)
        try:
            result = await self._exchange(
                client, call, method, path, params=params, json=json, headers=headers, parse=parse
            )
        except ProviderError as error:
            _report(permit, error)
            raise
        except BaseException:  # cancelled: the provider's health is unknown, free the probe slot
            permit.release()
            raise
        permit.success()
        return result

    def _circuit_open(self, call: CallState) -> ProviderCircuitOpen:
        self._rejected += 1
        return ProviderCircuitOpen(
            f"{self.provider} {call.operation}: circuit open after repeated failures",
            retry_after=self._breaker.retry_after(),
            retryable=False,
            maybe_committed=False,
        )

    async def _wait_for_rate_limit(self, call: CallState) -> None:
        if self._limiter is None:
            return
        try:
            async with asyncio.timeout(max(0.0, call.deadline - self._clock())):
                await self._limiter.acquire()
        except TimeoutError as exc:
            raise ProviderTimeout(
                f"{self.provider} {call.operation}: no request slot within the call's time budget",
                retryable=False,
                maybe_committed=False,
            ) from exc

    async def _exchange(
        self,
        client: httpx.AsyncClient,
        call: CallState,
        method: str,
        path: str,
        *,
        params: Any,
        json: Any,
        headers: dict[str, str],
        parse: Parse | None,
    ) -> tuple[int, Any]:
        remaining = call.deadline - self._clock()
        request = client.build_request(
            method, path, params=params, json=json, headers=headers, timeout=self.policy.timeout(remaining)
        )
        in_flight = InFlight(request=request)
        token = track(in_flight)
        reading_body = False
        try:
            async with asyncio.timeout(max(remaining, 0.0)):  # a slow drip of bytes cannot outlive the budget
                response = await client.send(request, stream=True)
                try:
                    reading_body = True
                    await response.aread()
                finally:
                    await response.aclose()
        except ProviderError:  # raised by the auth flow: already a port error
            raise
        except Exception as exc:  # everything else is foreign, whichever library raised it
            raise translate(
                exc, provider=self.provider, operation=call.operation, sent=in_flight.sent, reading_body=reading_body
            ) from exc
        finally:
            untrack(token)
        if 200 <= response.status_code < 300:
            body = decode_json(response, provider=self.provider, operation=call.operation, maybe_committed=True)
            if parse is not None:
                body = self._parsed(parse, body, response, call)
            return response.status_code, body
        raise self._errors.error_for(response, provider=self.provider, operation=call.operation)

    def _parsed(self, parse: Parse, body: Any, response: httpx.Response, call: CallState) -> Any:
        """`parse(body)`, run inside the attempt: a body of the wrong shape is the provider failing as surely
        as one that is not JSON, so it is the same error (not retried, maybe committed) and the breaker
        counts it the same way. Nothing is chained to pydantic's error: its text quotes the body."""
        try:
            return parse(body)
        except ValidationError as exc:  # a step that validated with pydantic directly
            error = shape_error(exc, provider=self.provider, operation=call.operation, maybe_committed=True)
        except ProviderMalformedResponse as exc:
            error = exc
        error.status = response.status_code
        error.request_id = error.request_id or request_id_of(response)
        error.retryable = False
        error.maybe_committed = True
        raise error

    def _count_retry(self) -> None:
        self._retries += 1

    def _count_refused(self) -> None:
        self._refused += 1


def _report(permit: Permit, error: ProviderError) -> None:
    """Only the provider failing counts against it: not its refusals, not a 429, not a 402 (the company
    account is short: orders are refused, but catalog reads and order look-ups still work)."""
    if isinstance(error, ProviderUnavailable) and not isinstance(error, ProviderRateLimited | FundingInsufficient):
        permit.failure()
    else:
        permit.success()
