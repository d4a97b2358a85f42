"""What resolvers receive: app-wide services and the per-request context."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from providers import EventHub, RewardsProvider
from resolvers.catalog_cache import CatalogCache
from resolvers.dataloaders import Loaders
from resolvers.errors import Unauthenticated
from resolvers.pricing import Pricing
from resolvers.redeem import RedeemService


@dataclass(frozen=True, slots=True)
class Services:
    """Built once at startup by the composition root and shared by every request."""

    provider: RewardsProvider
    catalog: CatalogCache
    pricing: Pricing
    redeem: RedeemService
    events: EventHub


@dataclass(slots=True)
class RequestContext:
    """One HTTP request, or one WebSocket connection. Strawberry passes it as `info.context`."""

    services: Services
    request_id: str
    user_id: str | None = None
    request: Any = None
    response: Any = None
    connection_params: dict[str, Any] | None = None  # graphql-transport-ws connection_init payload
    _loaders: Loaders | None = field(default=None, repr=False)

    @property
    def loaders(self) -> Loaders:
        if self._loaders is None:
            self._loaders = Loaders.create(self.services.provider)
        return self._loaders

    def reset_loaders(self) -> None:
        """Drop cached loads: a long-lived WebSocket context must not serve stale objects."""
        self._loaders = None

    def require_user(self) -> str:
        if self.user_id is None:
            raise Unauthenticated("Sign in to do this: send `Authorization: Bearer <token>`.")
        return self.user_id
