"""Reading a provider's response: its JSON body, request id and Retry-After, and validating its shape."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from providers.errors import ProviderMalformedResponse

Model = TypeVar("Model", bound=BaseModel)

_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")  # printable, bounded: it ends up in logs


def request_id_of(response: httpx.Response) -> str | None:
    value = response.headers.get("X-Request-ID")
    return value if value is not None and _REQUEST_ID.fullmatch(value) else None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" dates parse naive; HTTP dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def is_json(response: httpx.Response) -> bool:
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def decode_json(response: httpx.Response, *, provider: str, operation: str, maybe_committed: bool) -> Any:
    """The body of a 2xx answer as JSON, or ProviderMalformedResponse (never the body in the message)."""
    if response.status_code == 204:
        return None

    def malformed(why: str) -> ProviderMalformedResponse:
        return ProviderMalformedResponse(
            f"{provider} {operation}: {why} (HTTP {response.status_code})",
            provider=provider,
            status=response.status_code,
            request_id=request_id_of(response),
            retryable=False,
            maybe_committed=maybe_committed,
        )

    if not is_json(response):
        raise malformed("the answer is not JSON")
    try:
        return json.loads(response.content)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise malformed(f"the JSON body does not parse ({type(exc).__name__})") from exc


def parse_model(
    model: type[Model], data: Any, *, provider: str, operation: str, maybe_committed: bool = False
) -> Model:
    """Validate a decoded body against a wire model; a wrong shape becomes ProviderMalformedResponse.

    Pass it to ProviderHttpClient as a call's `parse` step, so a wrong shape counts against the breaker.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise shape_error(exc, provider=provider, operation=operation, maybe_committed=maybe_committed) from None


def shape_error(
    exc: ValidationError, *, provider: str, operation: str, maybe_committed: bool
) -> ProviderMalformedResponse:
    """The port error for a body of the wrong shape; raise it `from None`.

    The message names the model and the failing fields only: pydantic's own text quotes the input, which
    may hold a gift card, so the ValidationError must not be chained either (a logged traceback prints it).
    """
    where = sorted({".".join(str(part) for part in error["loc"]) or "<body>" for error in exc.errors()})
    return ProviderMalformedResponse(
        f"{provider} {operation}: the answer does not match {exc.title} at {', '.join(where[:5])}",
        provider=provider,
        retryable=False,
        maybe_committed=maybe_committed,
    )
