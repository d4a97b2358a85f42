"""Settings of the embedded sandbox provider and the faults it can be told to inject."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from providers.errors import ProviderUnavailable

OPERATIONS = frozenset(
    {"list_rewards", "get_rewards", "get_balances", "list_transactions", "get_transactions", "get_redemptions", "redeem", "check"}
)


@dataclass(frozen=True, kw_only=True)
class SandboxConfig:
    starting_balance: int = 10_000  # points granted as a welcome EARN when a user is first seen
    fulfilment_delay: float = 2.0  # seconds a redemption stays PENDING
    catalog_seed: int = 7
    catalog_size: int = 520

    def __post_init__(self) -> None:
        if self.starting_balance < 0:
            raise ValueError("starting_balance must not be negative")
        if self.fulfilment_delay < 0:
            raise ValueError("fulfilment_delay must not be negative")
        if self.catalog_size < 1:
            raise ValueError("catalog_size must be at least 1")


@dataclass(kw_only=True)
class SandboxFaults:
    """Latency and failures injected before every port call; mutable so tests can turn them on and off."""

    latency: float = 0.0  # seconds added to every call
    failure_rate: float = 0.0  # probability that a call raises ProviderUnavailable
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False, compare=False)
    _scheduled: dict[str, int] = field(init=False, repr=False, compare=False, default_factory=dict)
    _slow: dict[str, float] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def fail_next(self, operation: str, times: int = 1) -> None:
        """Make the next `times` calls of `operation` (a port method name) raise ProviderUnavailable."""
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; expected one of {sorted(OPERATIONS)}")
        if times < 0:
            raise ValueError("times must not be negative")
        self._scheduled[operation] = self._scheduled.get(operation, 0) + times

    def slow_down(self, operation: str, seconds: float) -> None:
        """Add `seconds` to every call of `operation` only (on top of `latency`)."""
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; expected one of {sorted(OPERATIONS)}")
        self._slow[operation] = seconds

    def clear(self) -> None:
        """Drop every scheduled failure and switch latency and random failures off."""
        self._scheduled.clear()
        self._slow.clear()
        self.latency = 0.0
        self.failure_rate = 0.0

    async def apply(self, operation: str, *, provider: str) -> None:
        delay = self.latency + self._slow.get(operation, 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        remaining = self._scheduled.get(operation, 0)
        if remaining > 0:
            self._scheduled[operation] = remaining - 1
            raise ProviderUnavailable(f"injected failure of {operation}", provider=provider)
        if self.failure_rate > 0 and self._rng.random() < self.failure_rate:
            raise ProviderUnavailable(f"injected random failure of {operation}", provider=provider)
