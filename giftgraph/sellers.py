"""HTTP routes for providers that sell cards against a funded account: their webhooks, and the funding balance.

POST /webhooks/tremendous|tango: verified by the adapter's own scheme (not proven genuine, or stale: 401;
well signed but not an event of that seller, a ValueError from the adapter: 400; either way nothing is
processed); an order event settles the redemption with that reference (read live from the provider, and only
from PENDING, so a duplicate or late delivery changes nothing); a catalog event drops the catalog caches.
GET /metrics: whether the provider answers and, for a seller, the funding balance, for the operators' alerting.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from giftgraph.webhooks import MAX_BODY_BYTES, error_response, read_body, unavailable_response
from providers.errors import ProviderError
from providers.fulfilment import CatalogEvent, OrderEvent, WebhookSignatureInvalid

logger = logging.getLogger(__name__)

SELLERS = ("tremendous", "tango")


def _seller(request: Request, seller: str) -> Any | None:
    """The running LedgerProvider when it sells through `seller`."""
    provider = request.app.state.services.provider
    if seller != getattr(provider, "name", None) or not hasattr(provider, "fulfilment"):
        return None
    return provider


def seller_webhook_routes() -> list[Route]:
    return [Route(f"/webhooks/{seller}", _receiver(seller), methods=["POST"]) for seller in SELLERS]


def _receiver(seller: str) -> Any:
    async def receive(request: Request) -> JSONResponse:
        provider = _seller(request, seller)
        if provider is None:
            return error_response(404, "not_found", "no such provider")
        body = await read_body(request)
        if body is None:
            return error_response(413, "payload_too_large", f"a webhook body is at most {MAX_BODY_BYTES} bytes")
        try:
            events = provider.fulfilment.verify_webhook(request.headers, body)
        except WebhookSignatureInvalid as exc:
            logger.warning("webhook refused: not verified", extra={"provider": provider.name, "reason": str(exc)})
            return error_response(401, "invalid_signature", "the webhook signature could not be verified")
        except ValueError:
            logger.warning("webhook refused: not an event", extra={"provider": provider.name})
            return error_response(400, "invalid_event", "the body is not an event of this provider")
        try:
            for event in events:
                if isinstance(event, OrderEvent):
                    await provider.settle_event(event)
                elif isinstance(event, CatalogEvent):
                    provider.invalidate_catalog()
                    request.app.state.services.catalog.invalidate()
        except ProviderError as exc:
            logger.warning("webhook deferred: provider unavailable", extra={"provider": provider.name})
            retry_after = exc.retry_after if exc.retry_after is not None else 5
            return unavailable_response("the provider could not be asked; retry", retry_after)
        except Exception as exc:  # the database: never a 500, the sender retries
            logger.error("webhook failed", extra={"provider": provider.name, "error": type(exc).__name__})
            return unavailable_response("retry", 5)
        logger.info("webhook processed", extra={"provider": provider.name, "events": len(events)})
        return JSONResponse({"status": "processed"})

    return receive


async def funding_check(provider: Any) -> dict[str, str] | None:
    """The funding balance for /readyz, when the provider has one (None otherwise)."""
    funding = getattr(provider, "funding_balance", None)
    if funding is None:
        return None
    try:
        balance = await funding()
    except ProviderError:
        return {"status": "unavailable"}
    return {"available": str(balance.available), "currency": balance.currency_code}


async def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text format: the funding balance of a seller (the company account, not users' points)."""
    provider = request.app.state.services.provider
    try:
        await provider.check()
        up = 1
    except ProviderError:
        up = 0
    lines = ["# TYPE giftgraph_provider_up gauge", f'giftgraph_provider_up{{provider="{provider.name}"}} {up}']
    funding = await funding_check(provider)
    if funding is not None and "available" in funding:
        lines += [
            "# HELP giftgraph_provider_funding_balance What the company account at the provider can still pay for.",
            "# TYPE giftgraph_provider_funding_balance gauge",
            f'giftgraph_provider_funding_balance{{provider="{provider.name}",currency="{funding["currency"]}"}} '
            f"{funding['available']}",
        ]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
