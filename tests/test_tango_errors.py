"""TANGO_ERRORS: every documented Tango status/code to its port error, and what is safe to retry."""

from __future__ import annotations

import httpx
import pytest

import providers.errors as perr
from providers.tango import TANGO_ERRORS, tango_error_code


def tango_error(status: int, code: str | None) -> httpx.Response:
    errors = [{"path": "amount", "code": code, "i18nKey": "x", "message": "m"}] if code else []
    body = {"timestamp": "2026-01-01T00:00:00Z", "requestId": "r-1", "path": "/raas/v2/orders", "httpCode": status,
            "httpPhrase": "Phrase", "errors": errors}  # fmt: skip
    return httpx.Response(status, json=body, headers={"X-REQUEST-ID": "r-1"})


@pytest.mark.parametrize(
    ("status", "code", "error", "retryable", "maybe_committed"),
    [
        (402, "402.001", perr.FundingInsufficient, False, False),  # the company account, not the user's points
        (422, "422.025", perr.InvalidFaceValue, False, False),
        (422, "422.026", perr.InvalidFaceValue, False, False),
        (422, "422.027", perr.InvalidFaceValue, False, False),
        (503, "503.002", perr.RewardUnavailable, False, False),
        (401, "401.501", perr.ProviderAuthenticationFailed, False, False),
        (401, "401.502", perr.ProviderAuthenticationFailed, False, False),
        (403, None, perr.ProviderAuthenticationFailed, False, False),
        (409, None, perr.IdempotencyConflict, False, False),
        (429, None, perr.ProviderRateLimited, True, False),
        (500, "500.001", perr.ProviderUnavailable, True, True),
        (502, None, perr.ProviderUnavailable, True, True),
        (503, None, perr.ProviderUnavailable, True, True),
        (504, None, perr.ProviderUnavailable, True, True),
        (400, "400.123", perr.ProviderPermanentFailure, False, False),
        (422, "422.999", perr.ProviderPermanentFailure, False, False),  # an unknown code: a refusal, not a crash
        (418, None, perr.ProviderPermanentFailure, False, False),
    ],
)
def test_each_tango_error_maps_to_its_port_error(
    status: int, code: str | None, error: type[perr.ProviderError], retryable: bool, maybe_committed: bool
) -> None:
    raised = TANGO_ERRORS.error_for(tango_error(status, code), provider="tango", operation="place_order")
    assert type(raised) is error
    assert (raised.retryable, raised.maybe_committed, raised.status) == (retryable, maybe_committed, status)
    assert raised.request_id == "r-1"
    assert raised.message == f"tango place_order: HTTP {status} ({code or 'no error code'})"


@pytest.mark.parametrize(
    "body",
    [None, [], {"errors": "nope"}, {"errors": [{"code": 402001}]}, {"errors": [{"code": "x" * 500}]}, {"error": "e"}],
)
def test_bodies_without_a_documented_code_fall_back_to_the_status(body: object) -> None:
    assert tango_error_code(body) is None
    response = httpx.Response(402, json=body)
    assert type(TANGO_ERRORS.error_for(response, provider="tango", operation="o")) is perr.FundingInsufficient


def test_the_first_documented_code_wins_and_a_non_json_body_is_read_by_status() -> None:
    assert tango_error_code({"errors": [{"code": None}, {"code": "422.027"}, {"code": "422.025"}]}) == "422.027"
    response = httpx.Response(503, content=b"<html>busy</html>")
    raised = TANGO_ERRORS.error_for(response, provider="tango", operation="o")
    assert type(raised) is perr.ProviderUnavailable and raised.retryable
