"""RetryBudget: retries may be at most a share of recent calls plus a small floor (Finagle's retry budget).

Per-call attempt limits do not stop a retry storm: when a provider is down, every call retries.
The budget caps retries across all calls, so a dead provider sees about (1 + ratio) times the
normal traffic instead of `retry_attempts` times.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

WINDOW_SECONDS = 10  # deposits and withdrawals older than this are forgotten (Finagle's default TTL)


class RetryBudget:
    """Each call deposits `ratio`, each retry withdraws 1; `min_per_second` retries are always allowed."""

    def __init__(
        self, *, ratio: float, min_per_second: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if ratio < 0 or min_per_second < 0:
            raise ValueError("ratio and min_per_second must not be negative")
        self._ratio = ratio
        self._reserve = min_per_second * WINDOW_SECONDS
        self._clock = clock
        # One slot per whole second of the window: second -> [calls, retries].
        self._slots: dict[int, list[int]] = {}

    def deposit(self) -> None:
        """A call starts: it earns `ratio` of a retry."""
        self._slot()[0] += 1

    def try_withdraw(self) -> bool:
        """A retry wants to go: True (and counted) when the budget has a whole retry left."""
        if self.balance < 1:
            return False
        self._slot()[1] += 1
        return True

    @property
    def balance(self) -> float:
        self._forget_old()
        calls = sum(slot[0] for slot in self._slots.values())
        retries = sum(slot[1] for slot in self._slots.values())
        return self._reserve + self._ratio * calls - retries

    def _slot(self) -> list[int]:
        self._forget_old()
        return self._slots.setdefault(math.floor(self._clock()), [0, 0])

    def _forget_old(self) -> None:
        oldest = math.floor(self._clock()) - WINDOW_SECONDS + 1
        for second in [second for second in self._slots if second < oldest]:
            del self._slots[second]
