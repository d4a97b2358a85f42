"""CircuitBreaker: after repeated failures, fail fast for a cool-down, then let exactly one probe through.

Written by hand because purgatory 3.0.1 (the maintained asyncio breaker on PyPI) lets every caller
through while half-open and reads the wall clock directly; we need a single probe and a fake clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"  # calls go through; consecutive failures are counted
    OPEN = "open"  # calls fail fast until the cool-down ends
    HALF_OPEN = "half_open"  # one probe is in flight; everyone else fails fast


class CircuitBreaker:
    """Counts consecutive failures; callers ask `allow()` for a Permit and report how the call went."""

    def __init__(
        self, *, failure_threshold: int, cooldown_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = failure_threshold
        self._cooldown = cooldown_seconds
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        # Bumped on every transition: a permit issued before it reports into a state it never saw.
        self._generation = 0

    @property
    def state(self) -> BreakerState:
        return self._state

    def retry_after(self) -> float:
        """Seconds until an open circuit lets a probe through (0 when not open)."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._cooldown - self._clock())

    def rejecting(self) -> bool:
        """Whether `allow()` would fail fast now; asking changes nothing (a probe is issued only by allow)."""
        if self._state is BreakerState.OPEN:
            return self.retry_after() > 0
        return self._state is BreakerState.HALF_OPEN

    def allow(self) -> Permit | None:
        """A permit to call, or None: fail fast."""
        if self._state is BreakerState.CLOSED:
            return Permit(self, self._generation, probe=False)
        if self._state is BreakerState.OPEN and self.retry_after() <= 0:
            self._move(BreakerState.HALF_OPEN)
            return Permit(self, self._generation, probe=True)
        return None

    def _report(self, permit: Permit, outcome: str) -> None:
        if permit.generation != self._generation:
            return  # started before the last transition: says nothing about the provider now
        if outcome == "release":
            if permit.probe:  # the probe never reached the provider: let the next caller probe
                self._state = BreakerState.OPEN
                self._opened_at = self._clock() - self._cooldown
                self._generation += 1
        elif outcome == "success":
            self._failures = 0
            if permit.probe:
                self._move(BreakerState.CLOSED)
        elif permit.probe:
            self._open()
        else:
            self._failures += 1
            if self._failures >= self._threshold:
                self._open()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._move(BreakerState.OPEN)

    def _move(self, state: BreakerState) -> None:
        self._state = state
        self._failures = 0
        self._generation += 1


class Permit:
    """One admitted call; exactly one of success / failure / release counts, the first."""

    __slots__ = ("_breaker", "_done", "generation", "probe")

    def __init__(self, breaker: CircuitBreaker, generation: int, *, probe: bool) -> None:
        self._breaker = breaker
        self.generation = generation
        self.probe = probe
        self._done = False

    def success(self) -> None:
        self._finish("success")

    def failure(self) -> None:
        self._finish("failure")

    def release(self) -> None:
        """The call ended without telling anything about the provider (cancelled, never sent)."""
        self._finish("release")

    def _finish(self, outcome: str) -> None:
        if not self._done:
            self._done = True
            self._breaker._report(self, outcome)
