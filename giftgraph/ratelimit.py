"""Per-client budgets, with the `limits` library: query-cost points per user (per address when
anonymous), and a stricter count of redeem attempts.

Both are moving windows: no client spends more than its budget in any window of `window` seconds,
and each point comes back `window` seconds after it was spent, so the budget restores at
points / window per second on average. The storage comes from a URL: `async+memory://` keeps the
budgets in this process; `async+redis://host:6379` shares them between instances (with `coredis`).
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from giftgraph.settings import Settings
from schema.limits import Charge, QueryLimits, ThrottleStatus

COST_POLICY, REDEEM_POLICY = "cost", "redeem"


class RateLimiter:
    """The schema's Throttle (schema.limits): charges an operation's cost and redeem attempts, or neither."""

    def __init__(
        self,
        *,
        points: int,
        window_seconds: int,
        redeem_attempts: int,
        redeem_window_seconds: int,
        storage_url: str = "async+memory://",
    ) -> None:
        if not storage_url.startswith("async+"):
            raise ValueError("the rate limit storage must be an async one (async+memory://, async+redis://...)")
        self._limiter = MovingWindowRateLimiter(storage_from_string(storage_url))  # type: ignore[arg-type]
        self._cost = RateLimitItemPerSecond(points, window_seconds, namespace=COST_POLICY)
        self._redeem = RateLimitItemPerSecond(redeem_attempts, redeem_window_seconds, namespace=REDEEM_POLICY)
        self.restore_rate = points / window_seconds
        # RFC draft "RateLimit header fields for HTTP": each policy's quota (q) and window (w, seconds).
        self._policies = ", ".join(
            f'"{name}";q={item.amount};w={item.get_expiry()}'
            for name, item in ((COST_POLICY, self._cost), (REDEEM_POLICY, self._redeem))
        )

    async def charge(self, client: str, *, cost: int, attempts: int) -> Charge:
        limiter = self._limiter
        if attempts and not await limiter.test(self._redeem, client, cost=attempts):
            return await self._refused(client, self._redeem, attempts, attempts=attempts)
        if cost and not await limiter.hit(self._cost, client, cost=cost):
            return await self._refused(client, self._cost, cost, attempts=attempts)
        if attempts and not await limiter.hit(self._redeem, client, cost=attempts):  # lost a race since the test
            return await self._refused(client, self._redeem, attempts, attempts=attempts)
        return await self._answer(client, allowed=True, attempts=attempts)

    async def peek(self, client: str) -> Charge:
        return await self._answer(client, allowed=True, attempts=0)

    async def _refused(self, client: str, item: RateLimitItem, wanted: int, *, attempts: int) -> Charge:
        reset, remaining = await self._limiter.get_window_stats(item, client)
        window = item.get_expiry()
        if wanted > item.amount:
            # More than the whole budget: no wait is enough; say so, and name the full window.
            retry_after = window
            reason = f"at most {item.amount} per {window} seconds are allowed, and this operation asks for {wanted}"
        else:
            # The earliest moment spent points come back (the oldest in the window).
            retry_after = max(1, math.ceil(reset - time.time()))
            reason = f"{remaining} of {item.amount} are left in this {window}-second window; it needs {wanted}"
        what = "Too many redeem attempts" if item is self._redeem else "Query cost budget exhausted"
        answer = await self._answer(client, allowed=False, attempts=attempts)
        return Charge(
            allowed=False,
            status=answer.status,
            retry_after=retry_after,
            reason=f"{what}: {reason}. Retry in {retry_after} seconds.",
            headers=answer.headers,
        )

    async def _answer(self, client: str, *, allowed: bool, attempts: int) -> Charge:
        states = []
        remaining = 0
        for name, item in ((COST_POLICY, self._cost), (REDEEM_POLICY, self._redeem)):
            if item is self._redeem and not attempts:
                continue
            reset, left = await self._limiter.get_window_stats(item, client)
            left = max(left, 0)
            if item is self._cost:
                remaining = left
            # t: seconds until spent points start coming back; nothing spent, nothing to wait for.
            wait = 0 if left >= item.amount else max(0, math.ceil(reset - time.time()))
            states.append(f'"{name}";r={left};t={wait}')
        status = ThrottleStatus(
            maximum_available=self._cost.amount, currently_available=remaining, restore_rate=self.restore_rate
        )
        headers = {"RateLimit-Policy": self._policies, "RateLimit": ", ".join(states)}
        return Charge(allowed=allowed, status=status, headers=headers)


def protections(settings: Settings) -> tuple[QueryLimits | None, RateLimiter | None]:
    """The schema's limits and the budgets from the settings; (None, None) when protections are off."""
    if not settings.protections_enabled:
        return None, None
    limits = QueryLimits(
        max_cost=settings.max_query_cost,
        max_depth=settings.max_query_depth,
        max_aliases=settings.max_query_aliases,
        max_tokens=settings.max_query_tokens,
        max_document_bytes=settings.max_document_bytes,
        timeout_seconds=settings.operation_timeout_seconds,
    )
    limiter = RateLimiter(
        points=settings.rate_limit_points,
        window_seconds=settings.rate_limit_window_seconds,
        redeem_attempts=settings.redeem_attempts_limit,
        redeem_window_seconds=settings.redeem_attempts_window_seconds,
        storage_url=settings.rate_limit_storage_url,
    )
    return limits, limiter
