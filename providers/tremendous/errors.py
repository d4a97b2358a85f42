"""Tremendous' failed answers -> the port's errors: its statuses and `{"errors": {"message", "payload"}}` bodies.

Tremendous sends no error codes; the table's "code" is derived from the status and which request field
the body's `payload` blames (`denomination`, `products`), so a 400/422 about the face value becomes
InvalidFaceValue and one about the product RewardUnavailable. The 429 body uses a singular `error`.
"""

from __future__ import annotations

from typing import Any

from providers.errors import (
    FundingInsufficient,
    IdempotencyConflict,
    InvalidFaceValue,
    ProviderAuthenticationFailed,
    ProviderPermanentFailure,
    ProviderRateLimited,
    ProviderUnavailable,
    RewardUnavailable,
)
from providers.http import ErrorRule, ErrorTable

FACE_VALUE = "denomination"  # the payload blames reward.value(.denomination)
PRODUCT = "products"  # the payload blames reward.products (unknown, unavailable in that country...)
_MAX_DEPTH = 6


def _blamed_keys(payload: Any, depth: int = 0) -> set[str]:
    """Every key anywhere in the error payload (bounded): which request fields Tremendous complains about."""
    if depth > _MAX_DEPTH or not isinstance(payload, dict):
        return set()
    keys: set[str] = set()
    for key, value in payload.items():
        if isinstance(key, str):
            keys.add(key)
        keys |= _blamed_keys(value, depth + 1)
    return keys


def tremendous_error_code(body: Any) -> str | None:
    """A synthetic code from `{"errors": {"payload": {...}}}`; None when the body names no known field."""
    if not isinstance(body, dict):
        return None
    errors = body.get("errors")
    if not isinstance(errors, dict):
        return None
    keys = _blamed_keys(errors.get("payload"))
    if FACE_VALUE in keys or "value" in keys:
        return FACE_VALUE
    if PRODUCT in keys:
        return PRODUCT
    return None


TREMENDOUS_ERRORS = ErrorTable(
    [
        ErrorRule(400, FACE_VALUE, InvalidFaceValue),
        ErrorRule(400, PRODUCT, RewardUnavailable),
        ErrorRule(400, None, ProviderPermanentFailure),
        ErrorRule(401, None, ProviderAuthenticationFailed),
        # The COMPANY's Tremendous balance is short, not the user's points: a provider problem for
        # operators. Not retried (topping up takes a human) and nothing was ordered.
        ErrorRule(402, None, FundingInsufficient),
        ErrorRule(403, None, ProviderAuthenticationFailed),  # the key lacks the scope (read-only key)
        ErrorRule(404, None, ProviderPermanentFailure),
        ErrorRule(409, None, IdempotencyConflict),  # the external_id was used with other parameters
        ErrorRule(422, FACE_VALUE, InvalidFaceValue),
        ErrorRule(422, PRODUCT, RewardUnavailable),
        ErrorRule(422, None, ProviderPermanentFailure),
        ErrorRule(429, None, ProviderRateLimited, retry=True),  # 10 requests/s; no Retry-After documented
        ErrorRule(500, None, ProviderUnavailable, maybe_committed=True),
        ErrorRule(502, None, ProviderUnavailable, retry=True, maybe_committed=True),
        ErrorRule(503, None, ProviderUnavailable, retry=True, maybe_committed=True),
        ErrorRule(504, None, ProviderUnavailable, retry=True, maybe_committed=True),
    ],
    code_of=tremendous_error_code,
)
