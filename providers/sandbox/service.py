"""`giftgraph sandbox serve`: the sandbox provider as its own REST service (Starlette), speaking the contract
of providers/rest/contract.py and documented by providers/sandbox/openapi.json.

The app owns a SandboxProvider with its own SQLite file, authenticates and rate-limits callers
(service_auth), injects faults (service_faults), and sends signed webhooks (webhook_sender).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from providers.events import EventHub
from providers.rest.contract import error_body
from providers.sandbox.config import SandboxConfig
from providers.sandbox.credentials import SandboxCredentials
from providers.sandbox.provider import SandboxProvider
from providers.sandbox.service_admin import ADMIN_ROUTES
from providers.sandbox.service_api import PORT_ROUTES, contract_errors
from providers.sandbox.service_auth import (
    Authenticator,
    CredentialRateLimiter,
    GuardMiddleware,
    TokenEndpoint,
    TokenStore,
)
from providers.sandbox.service_faults import FaultPlan, InjectedOperation, keep_transport
from providers.sandbox.service_webhooks import SettlementRelay
from providers.sandbox.webhook_sender import WebhookRetry, WebhookSender

logger = logging.getLogger(__name__)

OPENAPI_PATH = Path(__file__).with_name("openapi.json")
TOKEN_PATH = "/oauth/token"
EVENT_QUEUE_SIZE = 10_000
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._\-]{1,64}")


@dataclass(frozen=True, kw_only=True)
class SandboxServiceConfig:
    database_url: str
    credentials: SandboxCredentials
    token_ttl_seconds: int = 3600
    rate_limit: str = "50/second"  # `limits` notation, per credential
    webhook_url: str | None = None
    webhook_retry: WebhookRetry = WebhookRetry()
    sandbox: SandboxConfig = SandboxConfig()  # starting balance, fulfilment delay, catalog
    latency: float = 0.0  # start-time faults: seconds added to every port call...
    failure_rate: float = 0.0  # ...the share of them answered 503...
    # ...and the share of each operation's calls (or "*": every operation's) that suffer each fault kind.
    faults: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    fault_seed: int | None = None  # the random source of the shares above: a seed makes a run repeatable
    fault_injection: bool = True  # off: no faults at all (none at start, none scheduled, X-Sandbox-Fault ignored)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)  # token expiry


def create_sandbox_app(config: SandboxServiceConfig) -> Starlette:
    """The service's ASGI app; its lifespan starts and closes the provider and the webhook sender."""
    tokens = TokenStore(ttl_seconds=config.token_ttl_seconds, clock=config.clock)
    authenticator = Authenticator(config.credentials, tokens)
    limiter = CredentialRateLimiter(config.rate_limit)
    faults = FaultPlan(
        latency=config.latency,
        failure_rate=config.failure_rate,
        rates=config.faults,
        seed=config.fault_seed,
        enabled=config.fault_injection,
    )
    openapi = OPENAPI_PATH.read_bytes() if OPENAPI_PATH.exists() else b"{}"

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events = EventHub()
        provider = SandboxProvider(database_url=config.database_url, events=events, config=config.sandbox)
        sender = None
        if config.webhook_url:
            sender = WebhookSender(
                url=config.webhook_url, secret=config.credentials.webhook_secret, retry=config.webhook_retry
            )
        async with contextlib.AsyncExitStack() as stack:
            if sender is not None:
                await sender.start()
                stack.push_async_callback(sender.aclose)  # last out: after the relay has stopped
                # Subscribed before the provider starts, so no settlement resumed at start is missed.
                queue = await stack.enter_async_context(events.subscribe_all(queue_size=EVENT_QUEUE_SIZE))
                relay = SettlementRelay(queue, provider, sender)
                relay.start()
                stack.push_async_callback(relay.aclose)
            await provider.start()
            stack.push_async_callback(provider.aclose)
            app.state.sandbox = provider
            app.state.webhooks = sender
            app.state.faults = faults
            app.state.tokens = tokens
            logger.info("sandbox service ready", extra={"webhooks": sender is not None})
            yield

    routes = [
        Route(path, InjectedOperation(operation, contract_errors(handler), faults), methods=[method])
        for path, method, operation, handler in PORT_ROUTES
    ]
    routes += [Route(path, contract_errors(handler), methods=[method]) for path, method, handler in ADMIN_ROUTES]
    routes += [
        Route(TOKEN_PATH, TokenEndpoint(authenticator, limiter).token, methods=["POST"]),
        Route("/openapi.json", _serve(openapi), methods=["GET"]),
    ]
    return SandboxApp(
        routes=routes,
        middleware=[
            Middleware(RequestLogMiddleware),
            Middleware(GuardMiddleware, authenticator=authenticator, limiter=limiter),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )


class SandboxApp(Starlette):
    """Starlette, keeping each request's connection at hand for the faults that close it without an answer."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            keep_transport(scope, send)  # here, before any middleware wraps `send`
        await super().__call__(scope, receive, send)


def _serve(document: bytes) -> Callable[[Request], Response]:
    def openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")

    return openapi  # type: ignore[return-value]


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
    return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


class RequestLogMiddleware:
    """A request id on every response, and one log line per request: method, path, status, time.

    Never headers (Authorization), query strings or bodies: those carry credentials and gift cards.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _VALID_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logger.info(
                "sandbox %s %s %s %.1fms",
                scope["method"],
                scope["path"],
                status or "-",
                (time.perf_counter() - started) * 1000,
                extra={"request_id": request_id},  # giftgraph's log format shows it on every line
            )
