"""HttpPolicy: every knob of the provider HTTP layer in one value object (defaults = Settings defaults)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass(frozen=True, kw_only=True)
class HttpPolicy:
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    write_timeout: float = 5.0
    pool_timeout: float = 2.0  # waiting for a free connection from the pool
    max_connections: int = 50
    max_keepalive_connections: int = 20
    rate_limit_per_second: float = 20.0  # client-side limiter on every attempt; 0 = off
    retry_attempts: int = 4  # attempts per call, the first included
    retry_base_delay: float = 0.1  # full jitter: sleep uniform(0, min(max_delay, base * 2**retry))
    retry_max_delay: float = 2.0
    retry_after_cap: float = 10.0  # a longer Retry-After ends the call instead of sleeping
    call_budget_seconds: float = 10.0  # one call: every attempt and sleep included
    retry_budget_ratio: float = 0.2  # retries at most this share of calls...
    retry_budget_min_per_second: float = 2.0  # ...plus this floor
    breaker_failure_threshold: int = 5  # consecutive temporary failures that open the circuit
    breaker_cooldown_seconds: float = 10.0  # fail fast this long, then let one probe through

    def __post_init__(self) -> None:
        if self.retry_attempts < 1:
            raise ValueError("retry_attempts must be at least 1 (the first attempt)")
        if self.breaker_failure_threshold < 1:
            raise ValueError("breaker_failure_threshold must be at least 1")
        if self.call_budget_seconds <= 0:
            raise ValueError("call_budget_seconds must be positive")
        if self.rate_limit_per_second < 0:
            raise ValueError("rate_limit_per_second must not be negative")

    def timeout(self, budget: float | None = None) -> httpx.Timeout:
        """httpx's four timeouts, each shortened to what is left of the call's budget."""
        cap = float("inf") if budget is None else max(budget, 0.001)
        return httpx.Timeout(
            connect=min(self.connect_timeout, cap),
            read=min(self.read_timeout, cap),
            write=min(self.write_timeout, cap),
            pool=min(self.pool_timeout, cap),
        )

    def limits(self) -> httpx.Limits:
        return httpx.Limits(
            max_connections=self.max_connections, max_keepalive_connections=self.max_keepalive_connections
        )
