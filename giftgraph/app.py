"""The Starlette app factory: routes, middleware, and the lifespan that owns every resource."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import httpx
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from giftgraph.auth import TokenVerifier
from giftgraph.csrf import cors_middleware
from giftgraph.loyalty import loyalty_route, loyalty_verifier
from giftgraph.middleware import RequestIdMiddleware
from giftgraph.persisted import ManifestError, persisted_queries
from giftgraph.ratelimit import protections
from giftgraph.sellers import funding_check, metrics, seller_webhook_routes
from giftgraph.settings import ConfigurationError, Settings
from giftgraph.view import GiftgraphView
from giftgraph.webhooks import webhook_route, webhook_verifiers
from providers import EventHub, RewardsProvider
from providers.errors import ProviderError
from providers.sql import create_engine
from resolvers.catalog_cache import CatalogCache
from resolvers.context import Services
from resolvers.idempotency import IdempotencyStore
from resolvers.pricing import Pricing
from resolvers.reconciler import Reconciler
from resolvers.redeem import RedeemService
from resolvers.webhooks import WebhookService
from schema import build_schema

logger = logging.getLogger(__name__)

ProviderFactory = Callable[[Settings, EventHub], RewardsProvider]


def sandbox_provider(settings: Settings, events: EventHub) -> RewardsProvider:
    from providers.sandbox import SandboxConfig, SandboxFaults, SandboxProvider

    return SandboxProvider(
        database_url=settings.sandbox_database_url,
        events=events,
        config=SandboxConfig(
            starting_balance=settings.sandbox_starting_balance,
            fulfilment_delay=settings.sandbox_fulfilment_delay,
        ),
        faults=SandboxFaults(latency=settings.sandbox_latency, failure_rate=settings.sandbox_failure_rate),
    )


def provider_factory_for(settings: Settings) -> ProviderFactory:
    """The provider GIFTGRAPH_PROVIDER names: the embedded sandbox, or a REST provider over the network."""
    if settings.provider == "rest":
        from giftgraph.rest import rest_provider  # httpx, tenacity...: loaded only when used

        return rest_provider
    if settings.provider == "sandbox":
        return sandbox_provider
    from giftgraph.fulfilment import ledger_provider  # the points ledger with Tremendous or Tango

    return ledger_provider


def create_app(settings: Settings, *, provider_factory: ProviderFactory | None = None) -> Starlette:
    """The app; `provider_factory` overrides the provider the settings name (tests put fakes there)."""
    make_provider = provider_factory or provider_factory_for(settings)
    if provider_factory is None and settings.provider != "sandbox":
        # Built once and dropped (no I/O before start()): a missing credential or a bad key stops the
        # process now, with a readable message, instead of failing the server's startup.
        make_provider(settings, EventHub())
    verifier = TokenVerifier(settings)
    webhooks = webhook_verifiers(settings)
    loyalty = loyalty_verifier(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        events = EventHub()
        provider = make_provider(settings, events)
        engine = create_engine(settings.gateway_database_url, logging_name="giftgraph")
        store = IdempotencyStore(
            engine,
            ttl_seconds=settings.idempotency_ttl_seconds,
            lease_seconds=settings.idempotency_lease_seconds,
        )
        pricing = Pricing(settings.points_per_unit)
        jwks_http: httpx.AsyncClient | None = None
        if verifier.jwks is not None:
            # One client for the identity provider's keys, for the app's lifetime.
            jwks_http = httpx.AsyncClient(timeout=httpx.Timeout(settings.jwt_jwks_timeout_seconds))
            verifier.jwks.attach(jwks_http)
        reconciler: Reconciler | None = None
        try:
            await store.start()
            await store.purge_expired()
            await provider.start()
            app.state.engine = engine
            redeem = RedeemService(
                provider,
                store,
                pricing,
                wait_seconds=settings.idempotency_wait_seconds,
                defer_seconds=settings.reconcile_interval_seconds,
                max_defer_seconds=settings.reconcile_max_backoff_seconds,
            )
            reconciler = Reconciler(redeem, store, interval=settings.reconcile_interval_seconds)
            app.state.reconciler = reconciler
            catalog = CatalogCache(
                provider,
                pricing,
                stable_ttl=settings.catalog_stable_ttl,
                volatile_ttl=settings.catalog_volatile_ttl,
                max_stale=settings.catalog_max_stale,
                page_size=settings.catalog_page_size,
                retry_after=settings.catalog_retry_after,
            )
            app.state.webhooks = WebhookService(engine, provider, events, catalog)
            await app.state.webhooks.start()
            app.state.services = Services(
                provider=provider,
                catalog=catalog,
                pricing=pricing,
                redeem=redeem,
                events=events,
            )
            reconciler.start()
            logger.info("giftgraph ready", extra={"provider": provider.name, "env": settings.env})
            yield
        finally:
            if reconciler is not None:
                await reconciler.stop()
            await provider.aclose()
            await engine.dispose()
            if jwks_http is not None:
                await jwks_http.aclose()

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        checks: dict[str, object] = {"provider": "ok", "database": "ok"}
        provider = request.app.state.services.provider
        try:
            await provider.check()
        except ProviderError:
            checks["provider"] = "unavailable"
        funding = await funding_check(provider)  # the company account at a seller: operators watch it
        if funding is not None:
            checks["funding"] = funding
        try:
            async with request.app.state.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:  # any driver failure means "not ready", never a 500
            logger.warning("readiness: database check failed", exc_info=True)
            checks["database"] = "unavailable"
        ready = checks["provider"] == "ok" and checks["database"] == "ok"
        return JSONResponse({"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503)

    try:
        persisted = persisted_queries(
            settings.persisted_queries,
            settings.persisted_queries_manifest,
            cache_chars=settings.persisted_queries_cache_chars,
        )
    except ManifestError as exc:
        raise ConfigurationError(f"persisted queries ({settings.persisted_queries}): {exc}") from exc
    limits, throttle = protections(settings)  # (None, None) with protections_enabled=false
    view = GiftgraphView(
        build_schema(
            introspection=settings.introspection_enabled,
            field_suggestions=settings.field_suggestions_enabled,
            limits=limits,
            throttle=throttle,
        ),
        verifier,
        graphiql=settings.graphiql_enabled,
        persisted=persisted,
        persisted_max_age=settings.persisted_queries_max_age,
        csrf_headers=settings.csrf_headers,
        allowed_origins=settings.cors_origins,
        max_document_bytes=settings.max_document_bytes if settings.protections_enabled else 0,
    )
    return Starlette(
        routes=[
            Route("/graphql", view),  # every method: the view answers other methods with a JSON 405
            WebSocketRoute("/graphql", view),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            loyalty_route(loyalty),
            *seller_webhook_routes(),
            webhook_route(webhooks),  # server to server: signed, so outside the view's CSRF check
        ],
        middleware=[
            Middleware(RequestIdMiddleware),
            *cors_middleware(settings.cors_origins, allow_headers=settings.csrf_headers),
        ],
        lifespan=lifespan,
    )
