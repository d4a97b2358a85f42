"""Tango's error bodies and codes -> the port's errors (one ErrorTable, keyed by HTTP status and `errors[0].code`)."""

from __future__ import annotations

import re
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

_CODE = re.compile(r"[0-9]{3}\.[0-9]{3}")  # "402.001": the HTTP status, a dot, a number


def tango_error_code(body: Any) -> str | None:
    """The first `errors[].code` of a Tango error body, when it has the documented NNN.NNN shape."""
    if not isinstance(body, dict):
        return None
    errors = body.get("errors")
    if not isinstance(errors, list):
        return None
    for item in errors:
        code = item.get("code") if isinstance(item, dict) else None
        if isinstance(code, str) and _CODE.fullmatch(code):
            return code
    return None


TANGO_ERRORS = ErrorTable(
    [
        ErrorRule(400, None, ProviderPermanentFailure),  # validation failures we do not model
        # Authentication: 401.501 / 401.502 and any other 401; 403 is a platform without the permission.
        ErrorRule(401, None, ProviderAuthenticationFailed),
        ErrorRule(403, None, ProviderAuthenticationFailed),
        # The COMPANY account cannot pay: an operator must fund it. Never the user's points, and a
        # definite refusal (nothing ordered), so not retried and not maybe_committed.
        ErrorRule(402, "402.001", FundingInsufficient),
        ErrorRule(402, None, FundingInsufficient),
        ErrorRule(409, None, IdempotencyConflict),
        ErrorRule(422, "422.025", InvalidFaceValue),  # amount outside minValue..maxValue
        ErrorRule(422, "422.026", InvalidFaceValue),  # whole amounts only
        ErrorRule(422, "422.027", InvalidFaceValue),  # not the item's fixed faceValue
        ErrorRule(429, None, ProviderRateLimited, retry=True),  # 1 request/second
        # An item temporarily unavailable is a refusal, not an outage: nothing was ordered.
        ErrorRule(503, "503.002", RewardUnavailable),
        # Tango advises retrying a 5xx with backoff and the same externalRefID (it may have processed the order).
        ErrorRule(500, None, ProviderUnavailable, retry=True, maybe_committed=True),
        ErrorRule(502, None, ProviderUnavailable, retry=True, maybe_committed=True),
        ErrorRule(503, None, ProviderUnavailable, retry=True, maybe_committed=True),
        ErrorRule(504, None, ProviderUnavailable, retry=True, maybe_committed=True),
    ],
    code_of=tango_error_code,
)
