"""`TremendousProvider`: the fulfilment port over Tremendous REST v2 (catalog, orders by external_id, balance).

Each answer's shape is checked inside its HTTP call (the call's `parse` step): a Tremendous answering
the wrong shape counts against the circuit breaker, as one answering garbage does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from providers.base import Reward
from providers.errors import ProviderError, ProviderMalformedResponse
from providers.fulfilment import FulfilmentEvent, FundingBalance, Order, OrderEvent, OrderRequest
from providers.http import HttpPolicy, ProviderHttpClient, parse_model
from providers.tremendous.auth import BearerAuth
from providers.tremendous.errors import TREMENDOUS_ERRORS
from providers.tremendous.mapping import order_of, reward_of
from providers.tremendous.webhooks import TremendousOrderEvent, TremendousWebhookVerifier
from providers.tremendous.wire import (
    FundingSourceListWire,
    OrderEnvelopeWire,
    OrderListWire,
    ProductListWire,
    ProductWire,
    RewardEnvelopeWire,
)

logger = logging.getLogger(__name__)
W = TypeVar("W", bound=BaseModel)

NAME = "tremendous"
BALANCE = "balance"  # the funding source id Tremendous accepts for "the account's balance"
BALANCE_CURRENCY = "USD"  # Tremendous keeps the balance in USD cents (meta.available_cents)


class TremendousProvider:
    """A FulfilmentProvider; retries, the 10/s limiter, auth and the breaker live in the ProviderHttpClient."""

    name = NAME

    def __init__(
        self,
        *,
        http: ProviderHttpClient,
        funding_source_id: str,
        webhooks: TremendousWebhookVerifier,
        countries: Sequence[str] = (),
        currencies: Sequence[str] = ("USD",),
    ) -> None:
        self.http = http
        self._funding_source_id = funding_source_id
        self._webhooks = webhooks
        self._countries = tuple(countries)
        self._currencies = tuple(code.upper() for code in currencies)

    def __repr__(self) -> str:
        return f"TremendousProvider({self.http!r})"

    async def start(self) -> None:
        await self.http.start()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def catalog(self) -> list[Reward]:
        params: dict[str, str] = {}
        if self._countries:
            params["country"] = ",".join(self._countries)
        if self._currencies:
            params["currency"] = ",".join(self._currencies)
        listing = await self.http.get(
            "/products", params=params or None, operation="catalog", parse=_parser(ProductListWire, "catalog")
        )
        rewards: list[Reward] = []
        for raw in listing.products:
            try:
                product = ProductWire.model_validate(raw)
            except ValidationError:
                # One odd product must not hide the catalog; its id only, the body may be anything.
                logger.warning("tremendous: skipping a product of an unexpected shape: id=%.64r", raw.get("id"))
                continue
            reward = reward_of(product, self._currencies)
            if reward is not None:
                rewards.append(reward)
        return sorted(rewards, key=lambda reward: reward.id)

    async def funding_balance(self) -> FundingBalance:
        listing = await self.http.get(
            "/funding_sources", operation="funding_balance", parse=_parser(FundingSourceListWire, "funding_balance")
        )
        sources = listing.funding_sources
        wanted = self._funding_source_id
        source = next((s for s in sources if s.id == wanted), None)
        if source is None and wanted.lower() == BALANCE:
            source = next((s for s in sources if s.method.lower() == BALANCE), None)
        if source is None or source.meta is None or source.meta.available_cents is None:
            raise self._malformed("funding_balance", "no available balance for the configured funding source")
        return FundingBalance(available=Decimal(source.meta.available_cents) / 100, currency_code=BALANCE_CURRENCY)

    async def place_order(self, request: OrderRequest) -> Order:
        recipient: dict[str, str] = {"name": request.recipient_name}
        if request.recipient_email:
            recipient["email"] = request.recipient_email
        payload: dict[str, Any] = {
            "external_id": request.reference,  # Tremendous dedupes on it: a retry returns the same order
            "payment": {"funding_source_id": self._funding_source_id},
            "reward": {
                "products": [request.reward_id],
                "value": {"denomination": float(request.face_value), "currency_code": request.currency_code},
                "recipient": recipient,
                "delivery": {"method": "LINK"},  # giftgraph shows the claim link in-app; Tremendous emails nobody
            },
        }
        # The reference as the layer's idempotency key: only then does it retry a POST (timeouts, 429, 5xx).
        _, envelope = await self.http.post(
            "/orders",
            json=payload,
            operation="place_order",
            idempotency_key=request.reference,
            parse=_parser(OrderEnvelopeWire, "place_order"),  # a wrong shape here: maybe ordered, as a 5xx is
        )
        return order_of(
            envelope.order,
            reference=request.reference,
            reward_id=request.reward_id,
            face_value=request.face_value,
            currency=request.currency_code,
        )

    async def find_order(self, reference: str) -> Order | None:
        listing = await self.http.get(
            "/orders",
            params={"external_id": reference},
            operation="find_order",
            parse=_parser(OrderListWire, "find_order"),
        )
        orders = [o for o in listing.orders if o.external_id == reference]
        if not orders:
            return None
        order = orders[0]
        if not order.rewards:  # a listing may be abridged: the order itself carries the reward and its link
            return await self._order_by_id(order.id, reference=reference)
        return order_of(order, reference=reference)

    async def order_for_event(self, event: OrderEvent) -> Order | None:
        """The order a webhook is about, fetched from Tremendous (its events carry no external_id)."""
        if event.reference:
            return await self.find_order(event.reference)
        order_id = event.order_id
        if order_id is None and isinstance(event, TremendousOrderEvent) and event.reward_id:
            envelope = await self.http.get(
                f"/rewards/{_segment(event.reward_id)}",
                operation="get_reward",
                parse=_parser(RewardEnvelopeWire, "get_reward"),
            )
            order_id = envelope.reward.order_id
            if order_id is None:
                raise self._malformed("get_reward", "the reward names no order")
        if order_id is None:
            return None
        return await self._order_by_id(order_id, reference="")

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> list[FulfilmentEvent]:
        return self._webhooks.verify(headers, body)

    async def _order_by_id(self, order_id: str, *, reference: str) -> Order:
        envelope = await self.http.get(
            f"/orders/{_segment(order_id)}", operation="get_order", parse=_parser(OrderEnvelopeWire, "get_order")
        )
        return order_of(envelope.order, reference=reference)

    def _malformed(self, operation: str, why: str) -> ProviderError:
        return ProviderMalformedResponse(f"{NAME} {operation}: {why}", provider=NAME, retryable=False)


def _parser(model: type[W], operation: str) -> Callable[[Any], W]:
    """A call's `parse` step: the body validated against `model` by the HTTP layer, inside the attempt."""
    return partial(parse_model, model, provider=NAME, operation=operation)


def _segment(value: str) -> str:
    """An id as one path segment: Tremendous ids are [A-Z0-9]; anything else must not change the path."""
    return quote(value, safe="")


def build_tremendous(
    *,
    base_url: str,
    api_key: str,
    funding_source_id: str,
    webhook_secrets: Sequence[str],
    policy: HttpPolicy,
    transport: httpx.AsyncBaseTransport | None = None,
    countries: Sequence[str] = (),
    currencies: Sequence[str] = ("USD",),
) -> TremendousProvider:
    """A TremendousProvider from plain values (giftgraph/ passes its settings in); call start() before use."""
    http = ProviderHttpClient(
        provider=NAME,
        base_url=base_url.rstrip("/"),
        auth=BearerAuth(api_key),
        policy=policy,
        transport=transport,
        error_table=TREMENDOUS_ERRORS,
    )
    return TremendousProvider(
        http=http,
        funding_source_id=funding_source_id,
        webhooks=TremendousWebhookVerifier(webhook_secrets),
        countries=countries,
        currencies=currencies,
    )
