"""POST /webhooks/loyalty: points earned in the app's loyalty system, credited to giftgraph's points ledger.

Standard Webhooks signatures (GIFTGRAPH_LOYALTY_WEBHOOK_SECRETS); the body is
{"type": "points.earned", "timestamp", "data": {"user_id", "points", "reason"?}} (README: "Points from the
loyalty system"). The ledger records the credit and the webhook id in one transaction, so a retried delivery
credits once. Only with a provider that keeps its points in the ledger (tremendous, tango); 404 otherwise.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from giftgraph.auth import user_id_error
from giftgraph.settings import ConfigurationError, Settings
from giftgraph.webhooks import MAX_BODY_BYTES, error_response, read_body, unavailable_response
from providers.errors import InsufficientPoints, PointsLimitExceeded
from providers.events import BalanceChanged
from providers.ledger.store import MAX_POINTS
from providers.rest.webhooks import WebhookRejected, WebhookVerifier

logger = logging.getLogger(__name__)

SOURCE = "webhook:loyalty"
MAX_EVENT_POINTS = 1_000_000_000  # one event's credit; a balance stops at the ledger's MAX_POINTS
MAX_REASON_LENGTH = 500


def _valid_user_id(user_id: str) -> str:
    error = user_id_error(user_id)
    if error is not None:
        raise ValueError(error)
    return user_id


class _Earned(BaseModel):
    # Strict: "5", 5.0 and true are not points, and 42 is not a user id.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    user_id: Annotated[str, AfterValidator(_valid_user_id)]
    points: Annotated[int, Field(gt=0, le=MAX_EVENT_POINTS)]
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_REASON_LENGTH)] = (
        "Points earned"
    )


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    type: str
    data: dict[str, Any]


def loyalty_verifier(settings: Settings) -> WebhookVerifier | None:
    secrets = [secret.get_secret_value() for secret in settings.loyalty_webhook_secrets]
    if not secrets:
        return None
    try:
        return WebhookVerifier(secrets, tolerance=settings.webhook_tolerance_seconds)
    except ValueError as exc:
        raise ConfigurationError(f"GIFTGRAPH_LOYALTY_WEBHOOK_SECRETS: {exc}") from None


def loyalty_route(verifier: WebhookVerifier | None) -> Route:
    async def receive(request: Request) -> JSONResponse:
        ledger = getattr(request.app.state.services.provider, "ledger", None)
        if verifier is None or ledger is None:
            return error_response(404, "not_found", "loyalty webhooks are not configured")
        body = await read_body(request)
        if body is None:
            return error_response(413, "payload_too_large", f"a webhook body is at most {MAX_BODY_BYTES} bytes")
        try:
            event_id = verifier.authenticate(request.headers, body)
        except WebhookRejected as exc:
            logger.warning("loyalty webhook refused: not verified", extra={"reason": str(exc)})
            return error_response(401, "invalid_signature", "the webhook signature could not be verified")
        try:
            event = _Event.model_validate_json(body)
            if event.type != "points.earned":
                return JSONResponse({"status": "ignored"})
            earned = _Earned.model_validate(event.data)
        except ValidationError as exc:
            # Where, never what: the values are the sender's data.
            fields = sorted({".".join(str(part) for part in error["loc"]) or "body" for error in exc.errors()})
            logger.warning(
                "loyalty webhook refused: not a points.earned event", extra={"webhook_id": event_id, "fields": fields}
            )
            return error_response(400, "invalid_event", "the body is not a valid points.earned event")
        log = {"webhook_id": event_id, "user_id": earned.user_id, "points": earned.points}
        try:
            granted = await ledger.grant(
                earned.user_id, earned.points, reason=earned.reason, source=SOURCE, event_id=event_id
            )
        except PointsLimitExceeded:
            # Rolled back with the event id: a redelivery is weighed afresh against the balance of then.
            logger.warning("loyalty webhook refused: over the points limit", extra=log)
            return error_response(
                422,
                "points_limit_exceeded",
                f"the user's points, available and reserved, would pass {MAX_POINTS}: nothing was credited",
            )
        except (InsufficientPoints, ValueError) as exc:  # the model rules these out; a 4xx, never a retry loop
            logger.warning("loyalty webhook refused: not a grant", extra={**log, "error": type(exc).__name__})
            return error_response(400, "invalid_event", "the grant cannot be applied")
        except Exception as exc:  # the database: the sender retries a 503
            logger.error("loyalty webhook failed", extra={**log, "error": type(exc).__name__})
            return unavailable_response("try again later", 5)
        if granted is None:
            logger.info("loyalty webhook duplicate", extra=log)
            return JSONResponse({"status": "duplicate"})
        request.app.state.services.events.publish(BalanceChanged(user_id=earned.user_id, balance=granted.balance))
        logger.info("loyalty points credited", extra=log)
        return JSONResponse({"status": "processed"})

    return Route("/webhooks/loyalty", receive, methods=["POST"])
