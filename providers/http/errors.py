"""The one table from a provider's (HTTP status, body error code) to the port's errors.

Each adapter's contract gets an ErrorTable; REST_ERRORS is the one for providers/rest/contract.py.
A row with `code=None` matches any code of its status; statuses without a row fall back to
ProviderPermanentFailure (4xx) or ProviderUnavailable (5xx), so an unknown code is never a crash.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from providers.errors import (
    IdempotencyConflict,
    InsufficientPoints,
    InvalidFaceValue,
    ProviderAuthenticationFailed,
    ProviderError,
    ProviderMalformedResponse,
    ProviderPermanentFailure,
    ProviderRateLimited,
    ProviderUnavailable,
    RewardNotFound,
    RewardUnavailable,
)
from providers.http.response import parse_retry_after, request_id_of


@dataclass(frozen=True)
class ErrorRule:
    status: int
    code: str | None  # the body's error code; None: any code (or no body) with this status
    error: type[ProviderError]
    retry: bool = False  # the HTTP layer retries it (only temporary failures)
    # The provider may have done the work before failing (a 5xx); never for a 4xx, which is a refusal.
    maybe_committed: bool = False


FALLBACK_4XX = ErrorRule(0, None, ProviderPermanentFailure)
FALLBACK_5XX = ErrorRule(0, None, ProviderUnavailable, maybe_committed=True)
FALLBACK_OTHER = ErrorRule(0, None, ProviderMalformedResponse, maybe_committed=True)  # 1xx/3xx: not our contract


def error_code_of(body: Any) -> str | None:
    """`{"error": {"code": ...}}` (the REST contract) or `{"error": "..."}` (RFC 6749 token errors)."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict):
        error = error.get("code")
    return error if isinstance(error, str) and 0 < len(error) <= 100 else None


class ErrorTable:
    """Looks a failed response up: exact (status, code), then (status, any code), then a fallback."""

    def __init__(self, rules: Iterable[ErrorRule], *, code_of: Callable[[Any], str | None] = error_code_of) -> None:
        self.rules = tuple(rules)
        self._code_of = code_of
        self._index: dict[tuple[int, str | None], ErrorRule] = {}
        for rule in self.rules:
            if (rule.status, rule.code) in self._index:
                raise ValueError(f"two rules for {rule.status} {rule.code}")
            self._index[(rule.status, rule.code)] = rule

    def lookup(self, status: int, code: str | None) -> ErrorRule:
        rule = self._index.get((status, code)) or self._index.get((status, None))
        if rule is not None:
            return rule
        if 400 <= status < 500:
            return FALLBACK_4XX
        return FALLBACK_5XX if 500 <= status < 600 else FALLBACK_OTHER

    def code_of(self, response: httpx.Response) -> str | None:
        try:
            return self._code_of(json.loads(response.content))
        except (ValueError, RecursionError):  # not JSON: the status alone decides
            return None

    def error_for(self, response: httpx.Response, *, provider: str, operation: str) -> ProviderError:
        """The port error for a non-2xx response; its message names the status and code, never the body."""
        code = self.code_of(response)
        rule = self.lookup(response.status_code, code)
        return rule.error(
            f"{provider} {operation}: HTTP {response.status_code} ({code or 'no error code'})",
            provider=provider,
            status=response.status_code,
            request_id=request_id_of(response),
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            retryable=rule.retry,
            maybe_committed=rule.maybe_committed,
        )


REST_ERRORS = ErrorTable(
    [
        # The contract's codes (providers/rest/contract.py ERROR_CODES); tests check each is here.
        ErrorRule(400, None, ProviderPermanentFailure),  # invalid_request
        ErrorRule(401, None, ProviderAuthenticationFailed),  # authentication_failed
        ErrorRule(402, "insufficient_points", InsufficientPoints),
        ErrorRule(403, None, ProviderAuthenticationFailed),  # forbidden
        ErrorRule(404, "reward_not_found", RewardNotFound),
        ErrorRule(404, None, ProviderPermanentFailure),  # not_found: a route or object we do not model
        ErrorRule(409, "idempotency_conflict", IdempotencyConflict),
        ErrorRule(422, "reward_unavailable", RewardUnavailable),
        ErrorRule(422, "invalid_face_value", InvalidFaceValue),
        ErrorRule(429, None, ProviderRateLimited, retry=True),  # rate_limited, with Retry-After
        # 500 is not retried: the provider failed while working on it, and may fail the same way.
        ErrorRule(500, None, ProviderUnavailable, maybe_committed=True),  # internal_error
        ErrorRule(502, None, ProviderUnavailable, retry=True, maybe_committed=True),
        ErrorRule(503, None, ProviderUnavailable, retry=True, maybe_committed=True),  # unavailable
        ErrorRule(504, None, ProviderUnavailable, retry=True, maybe_committed=True),
    ]
)
