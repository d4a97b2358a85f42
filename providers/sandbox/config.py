"""Settings of the embedded sandbox provider and the faults it can be told to inject."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from providers.errors import ProviderUnavailable

OPERATIONS = frozenset(
    {
        "list_rewards",
        "get_rewards",
        "get_balances",
        "list_transactions",
        "get_transactions",
        "get_redemptions",
        "redeem",
        "check",
    }
)

# The sandbox service's faults (providers/sandbox/service_faults.py applies them): here, so that settings can
# check a start-time fault table without loading Starlette.
ANY_OPERATION = "*"
FAULT_KINDS = (
    "latency",  # answer after `seconds`
    "error_500",
    "error_502",  # a proxy's page, not the contract's JSON
    "error_503",
    "error_504",  # a proxy's page, not the contract's JSON
    "rate_limit_429",  # with Retry-After: `seconds`
    "hang",  # wait `seconds` or until the client gives up, then do the work and answer
    "reset",  # close the connection before the work and before any response byte
    "truncated",  # do the work, answer 200 with the JSON body cut in half
    "malformed",  # do the work, answer 200 with valid JSON of the wrong shape
    "lost_after_commit",  # do the work (commit), then close the connection before any response byte
    "cut_after_headers",  # do the work, send 200 and its headers, then close the connection before the body
    "hang_after_commit",  # do the work (commit), then wait `seconds` or until the client gives up
)
DEFAULT_SECONDS = {"latency": 0.5, "rate_limit_429": 1.0, "hang": 30.0, "hang_after_commit": 30.0}
MAX_SECONDS = 300.0

FaultRates = Mapping[str, Mapping[str, float]]  # operation (or "*") -> fault kind -> share of its calls


def check_fault_rates(rates: FaultRates) -> dict[str, dict[str, float]]:
    """A start-time fault table, checked: known operations and kinds, rates from 0 to 1 that add up to at most 1
    for any one operation (its own plus those of "*"). ValueError says what is wrong."""
    checked: dict[str, dict[str, float]] = {}
    # ValueError, not TypeError, throughout: pydantic reports only those as a settings error.
    if not isinstance(rates, Mapping):
        raise ValueError(  # noqa: TRY004
            'expected a JSON object like {"redeem": {"lost_after_commit": 0.1}, "*": {"error_503": 0.05}}'
        )
    for operation, kinds in rates.items():
        if operation != ANY_OPERATION and operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; expected one of {sorted(OPERATIONS)} or '*'")
        if not isinstance(kinds, Mapping):
            raise ValueError(f'{operation!r} must map fault kinds to rates, e.g. {{"error_503": 0.1}}')  # noqa: TRY004
        for kind, rate in kinds.items():
            if kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
            if (
                isinstance(rate, bool)
                or not isinstance(rate, int | float)
                or not (math.isfinite(rate) and 0 <= rate <= 1)
            ):
                raise ValueError(f"the rate of {kind!r} for {operation!r} must be a number from 0 to 1")
        checked[operation] = {kind: float(rate) for kind, rate in kinds.items()}
    shared = sum(checked.get(ANY_OPERATION, {}).values())
    for operation in OPERATIONS:
        if sum(checked.get(operation, {}).values()) + shared > 1 + 1e-9:  # 0.1 + 0.2 + 0.7 is not quite 1
            raise ValueError(f"the rates for {operation!r} (with those of '*') add up to more than 1")
    return checked


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
