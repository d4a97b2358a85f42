"""POST /webhooks/{provider}: provider events, verified on their raw bytes, then applied once by the WebhookService.

Server to server: no CORS, no CSRF check (those live in the GraphQL view), no user token; the
signature is the authentication. Answers are JSON: 200 processed/duplicate/ignored; 400 a signed body
that is not an event; 401 not proven to come from the provider; 404 unknown provider, or webhooks not
configured (no secret: nothing could be verified, so the route does not exist); 413 too large;
503 with Retry-After when the provider is needed and down. Never a 500: the sender would retry anyway,
and 503 says so. Log lines carry the event id and type only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from giftgraph.settings import ConfigurationError, Settings
from providers.rest.webhooks import InvalidWebhookEvent, WebhookRejected, WebhookVerifier
from resolvers.webhooks import DEFAULT_RETRY_AFTER, WebhookDeferred, WebhookService

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
# Providers whose webhooks follow the REST contract (Standard Webhooks); the path names the provider.
CONTRACT_PROVIDERS = ("sandbox",)


def webhook_secrets(settings: Settings) -> list[str]:
    """The Standard Webhooks secrets to accept: the configured ones, or in development, for a
    `giftgraph sandbox serve` on loopback started from the same data folder, its generated one."""
    if settings.webhook_secrets:
        return [secret.get_secret_value() for secret in settings.webhook_secrets]
    if settings.provider != "rest":
        return []
    from giftgraph.rest import local_sandbox_credentials

    local = local_sandbox_credentials(settings)
    return [] if local is None else [local.webhook_secret]


def webhook_verifiers(settings: Settings) -> dict[str, WebhookVerifier]:
    """One verifier per provider with webhooks configured; ConfigurationError for a secret that is not one."""
    secrets = webhook_secrets(settings)
    if not secrets:
        logger.info("no webhook secrets: POST /webhooks/{provider} answers 404")
        return {}
    try:
        verifier = WebhookVerifier(secrets, tolerance=settings.webhook_tolerance_seconds)
    except ValueError as exc:
        raise ConfigurationError(f"GIFTGRAPH_WEBHOOK_SECRETS: {exc}") from None
    return {provider: verifier for provider in CONTRACT_PROVIDERS}


def webhook_route(verifiers: Mapping[str, WebhookVerifier]) -> Route:
    async def receive_webhook(request: Request) -> JSONResponse:
        provider = request.path_params["provider"]
        verifier = verifiers.get(provider)
        if verifier is None:
            known = provider in CONTRACT_PROVIDERS
            message = "webhooks are not configured for this provider" if known else "no such provider"
            return error_response(404, "not_found", message)
        body = await read_body(request)
        if body is None:
            return error_response(413, "payload_too_large", f"a webhook body is at most {MAX_BODY_BYTES} bytes")
        try:
            event = verifier.verify(request.headers, body)
        except InvalidWebhookEvent as exc:
            logger.warning("webhook refused: invalid event", extra={"reason": str(exc)})
            return error_response(400, "invalid_event", str(exc))
        except WebhookRejected as exc:
            logger.warning("webhook refused: not verified", extra={"reason": str(exc)})
            return error_response(401, "invalid_signature", "the webhook signature could not be verified")
        service: WebhookService = request.app.state.webhooks
        log = {"webhook_id": event.id, "webhook_type": event.type}
        try:
            outcome = await service.handle(provider, event)
        except WebhookDeferred as exc:
            logger.warning("webhook deferred: provider unavailable", extra=log)
            return unavailable_response(str(exc), exc.retry_after)
        except Exception as exc:  # the database or a bug: never a 500, the sender's retry may succeed
            logger.error("webhook failed", extra={**log, "error": type(exc).__name__})
            return unavailable_response("the webhook could not be processed now", DEFAULT_RETRY_AFTER)
        logger.info("webhook %s", outcome.value, extra=log)
        return JSONResponse({"status": outcome.value})

    return Route("/webhooks/{provider}", receive_webhook, methods=["POST"])


async def read_body(request: Request) -> bytes | None:
    """The raw body (the signature covers these bytes), or None beyond MAX_BODY_BYTES, read no further."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return None
            chunks.append(chunk)
    except ClientDisconnect:
        return b""  # nobody is listening; an empty body fails verification quietly
    return b"".join(chunks)


def error_response(status: int, code: str, message: str) -> JSONResponse:
    """Every webhook receiver's refusal: `{"error": {"code", "message"}}` with the status."""
    return JSONResponse({"error": {"code": code, "message": message}}, status)


def unavailable_response(message: str, retry_after: float) -> JSONResponse:
    """503 with `Retry-After` (whole seconds, at least 1): nothing was recorded, the sender retries."""
    response = error_response(503, "unavailable", message)
    response.headers["Retry-After"] = str(max(1, round(retry_after)))
    return response


__all__ = [
    "CONTRACT_PROVIDERS",
    "MAX_BODY_BYTES",
    "error_response",
    "read_body",
    "unavailable_response",
    "webhook_route",
    "webhook_secrets",
    "webhook_verifiers",
]
