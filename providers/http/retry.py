"""When and how long to wait before retrying a provider call: tenacity, told our rules.

Retried: temporary failures only (the error's `retryable`: timeouts, connection errors, 429, 502,
503, 504), and only for calls that are safe to repeat. The wait is full jitter
(uniform(0, min(max_delay, base * 2**retry))) or the provider's Retry-After. The call stops
instead of sleeping when the attempts are used up, the Retry-After is over the cap, the sleep
would end past the call's deadline, or the shared retry budget is empty.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from providers.errors import ProviderError
from providers.http.budget import RetryBudget
from providers.http.policy import HttpPolicy

logger = logging.getLogger(__name__)


@dataclass
class CallState:
    """One call across its attempts: where it must end, and what every attempt taught us."""

    provider: str
    operation: str
    deadline: float
    repeatable: bool  # GET, or a POST with an idempotency key
    maybe_committed: bool = False  # sticky: once any attempt may have reached the provider


def full_jitter(retry: int, *, base: float, cap: float, rng: random.Random) -> float:
    """AWS's full jitter: a uniform sleep below the capped exponential (`retry` counts from 0)."""
    return rng.uniform(0.0, min(cap, base * 2**retry))


class RetryRules:
    """Builds the AsyncRetrying for one call; holds what all calls share (budget, clock, rng, stats)."""

    def __init__(
        self,
        policy: HttpPolicy,
        *,
        budget: RetryBudget,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        rng: random.Random,
        on_retry: Callable[[], None],
        on_refused: Callable[[], None],
    ) -> None:
        self._policy = policy
        self._budget = budget
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._on_retry = on_retry
        self._on_refused = on_refused

    def retrying(self, call: CallState) -> AsyncRetrying:
        return AsyncRetrying(
            retry=retry_if_exception(lambda exc: call.repeatable and isinstance(exc, ProviderError) and exc.retryable),
            wait=lambda state: self._wait(state),
            stop=lambda state: self._stop(call, state),
            before_sleep=lambda state: self._log(call, state),
            sleep=self._sleep,
            reraise=True,  # the caller sees the port error itself, never tenacity's RetryError
        )

    def _wait(self, state: RetryCallState) -> float:
        error = _error(state)
        if error.retry_after is not None:  # the provider said when; jitter would only add to it
            return error.retry_after
        return full_jitter(
            state.attempt_number - 1,
            base=self._policy.retry_base_delay,
            cap=self._policy.retry_max_delay,
            rng=self._rng,
        )

    def _stop(self, call: CallState, state: RetryCallState) -> bool:
        error, sleep = _error(state), state.upcoming_sleep
        if state.attempt_number >= self._policy.retry_attempts:
            return True
        if error.retry_after is not None and error.retry_after > self._policy.retry_after_cap:
            return True
        if self._clock() + sleep >= call.deadline:  # never start a sleep that ends past the budget
            return True
        if not self._budget.try_withdraw():  # checked last: a refused retry must not spend the budget
            self._on_refused()
            return True
        self._on_retry()
        return False

    def _log(self, call: CallState, state: RetryCallState) -> None:
        error = _error(state)
        cause = f"HTTP {error.status}" if error.status is not None else _cause_name(error)
        # Operation, attempt and cause only: never headers, bodies or the request's parameters.
        logger.warning(
            "provider call failed; retrying: provider=%s operation=%s attempt=%d cause=%s retry_in=%.3fs",
            call.provider,
            call.operation,
            state.attempt_number,
            cause,
            state.upcoming_sleep,
        )


def _error(state: RetryCallState) -> ProviderError:
    error = state.outcome.exception() if state.outcome is not None else None
    if not isinstance(error, ProviderError):  # retry_if_exception lets nothing else through
        raise TypeError(f"not a provider error: {error!r}")
    return error


def _cause_name(error: ProviderError) -> str:
    cause = error.__cause__
    return type(cause).__name__ if cause is not None else type(error).__name__
