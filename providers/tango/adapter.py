"""`TangoProvider`: Tango Card RaaS v2 behind the FulfilmentProvider port, over ProviderHttpClient.

Idempotency: orders carry our reference as `externalRefID`. Tango answers 201 for a new order and
200 with the ORIGINAL order for a known externalRefID, even when the item or amount differ; the
gateway catches such reuse in its ledger before calling, and this adapter refuses a replay that does
not match the request (IdempotencyConflict) rather than hand out a card for another item.

Each answer's shape is checked inside its HTTP call (the call's `parse` step): a Tango answering the
wrong shape counts against the circuit breaker, as one answering garbage does.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any

import httpx

from providers.base import Denomination, DenominationKind, GiftCard, Reward, RewardAvailability
from providers.errors import IdempotencyConflict, ProviderMalformedResponse, ProviderPermanentFailure
from providers.fulfilment import (
    CatalogEvent,
    FulfilmentEvent,
    FundingBalance,
    Order,
    OrderEvent,
    OrderRequest,
    OrderStatus,
)
from providers.http import HttpPolicy, ProviderHttpClient, parse_model
from providers.http.auth import TokenStore
from providers.tango import wire
from providers.tango.auth import AuthMode, tango_auth
from providers.tango.errors import TANGO_ERRORS
from providers.tango.webhooks import DEFAULT_TOLERANCE, TangoWebhookVerifier

logger = logging.getLogger(__name__)

NAME = "tango"
REFERENCE = re.compile(r"[A-Za-z0-9]{1,100}")  # Tango's externalRefID: at most 100 alphanumerics
# Tango asks for at most about two catalog fetches a day; an ItemAvailability webhook drops the cache sooner.
CATALOG_TTL = 12 * 3600.0
_IMAGE_SIZES = ("300w-326ppi", "200w-326ppi", "278w-326ppi", "130w-326ppi", "80w-326ppi")

_ORDER_STATUS = {
    "COMPLETE": OrderStatus.FULFILLED,
    "FAILED": OrderStatus.FAILED,
    "CANCELLED": OrderStatus.FAILED,
    "CANCELED": OrderStatus.FAILED,
}  # PENDING, PARTIAL (one item: still settling) and anything new: PENDING, so the reconciler asks again

_CODE_TYPES = frozenset({"cardnumber", "claimcode", "code", "ecode", "giftcode", "cardcode", "redemptioncode"})
_PIN_TYPES = frozenset({"cardpin", "pin", "securitycode", "accesscode"})
_URL_TYPES = frozenset({"redemptionurl", "cardurl", "url", "claimurl", "redemptionlink"})


class TangoProvider:
    """The FulfilmentProvider for Tango; retries, auth, rate limit and breaker live in `http`."""

    name = NAME

    def __init__(
        self,
        *,
        http: ProviderHttpClient,
        account_identifier: str,
        customer_identifier: str,
        verifier: TangoWebhookVerifier,
        catalog_ttl: float = CATALOG_TTL,
        clock: Callable[[], float] = time.monotonic,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.http = http
        self._account = account_identifier
        self._customer = customer_identifier
        self._verifier = verifier
        self._catalog_ttl = catalog_ttl
        self._clock = clock
        self._catalog: tuple[float, list[Reward]] | None = None
        self._catalog_lock = asyncio.Lock()
        self._catalog_generation = 0  # bumped by a catalog event: a fetch begun before it is not kept
        self._on_close = on_close  # e.g. dispose the token store's engine, which the factory made

    def __repr__(self) -> str:
        return f"TangoProvider(account={self._account!r})"

    async def start(self) -> None:
        await self.http.start()

    async def aclose(self) -> None:
        try:
            await self.http.aclose()
        finally:
            if self._on_close is not None:
                await self._on_close()

    # Catalog

    async def catalog(self) -> list[Reward]:
        async with self._catalog_lock:  # one fetch for concurrent callers: 1 request/second matters
            cached = self._catalog
            if cached is not None and self._clock() - cached[0] < self._catalog_ttl:
                return list(cached[1])
            generation = self._catalog_generation
            catalog = await self.http.get("/catalogs", operation="catalog", parse=_parser(wire.CatalogWire, "catalog"))
            rewards = catalog_rewards(catalog)
            # A catalog event that arrived during the fetch may not be in it: answer with it, but keep nothing.
            if generation == self._catalog_generation:
                self._catalog = (self._clock(), rewards)
            return list(rewards)

    # Funding

    async def funding_balance(self) -> FundingBalance:
        account = await self.http.get(
            f"/accounts/{self._account}",
            operation="funding_balance",
            parse=_parser(wire.AccountWire, "funding_balance"),
        )
        return FundingBalance(available=account.currentBalance, currency_code=account.currencyCode)

    # Orders

    async def place_order(self, request: OrderRequest) -> Order:
        if not REFERENCE.fullmatch(request.reference):
            raise ProviderPermanentFailure(
                "tango place_order: the reference is not 1-100 alphanumerics", provider=NAME, maybe_committed=False
            )
        recipient: dict[str, str] = {"firstName": request.recipient_name[:100] or "Recipient"}
        if request.recipient_email:
            recipient["email"] = request.recipient_email
        payload = {
            "accountIdentifier": self._account,
            "customerIdentifier": self._customer,
            "amount": float(request.face_value),  # Tango's amount is a double
            "utid": request.reward_id,
            "recipient": recipient,
            "sendEmail": False,  # giftgraph shows the card to its owner; Tango must not email it
            "externalRefID": request.reference,
        }
        # The reference as the layer's idempotency key: that is what lets it retry this POST; Tango
        # itself dedupes by externalRefID in the body.
        status, order = await self.http.post(
            "/orders",
            json=payload,
            operation="place_order",
            idempotency_key=request.reference,
            parse=_parser(wire.OrderWire, "place_order"),  # a wrong shape here: maybe ordered, as a 5xx is
        )
        if status not in (200, 201):
            raise self._malformed("place_order", f"unexpected status {status} for an order", maybe_committed=True)
        if order.externalRefID not in (None, request.reference):
            raise self._malformed("place_order", "the order returned has another reference", maybe_committed=True)
        if status == 200 and not _matches(order, request):
            # A replay of an order placed under this reference for another item or amount.
            raise IdempotencyConflict(
                "tango place_order: externalRefID already used for a different order",
                provider=NAME,
                status=status,
                maybe_committed=False,
            )
        return to_order(order, request.reference)

    async def order_for_event(self, event: OrderEvent) -> Order | None:
        """Tango's events name our externalRefID: the order is looked up by it."""
        return await self.find_order(event.reference) if event.reference else None

    async def find_order(self, reference: str) -> Order | None:
        if not REFERENCE.fullmatch(reference):
            return None  # never sent to Tango, so Tango has no such order
        params = {"externalRefID": reference, "accountIdentifier": self._account, "elementsPerBlock": 10}
        listing = await self.http.get(
            "/orders", params=params, operation="find_order", parse=_parser(wire.OrderListWire, "find_order")
        )
        found = [order for order in listing.orders if order.externalRefID == reference]
        if not found:
            return None
        order = found[0]
        if _status(order) is OrderStatus.FULFILLED and not _credentials(order):
            # The order history omits reward credentials; the order's own page has them.
            order = await self.http.get(
                f"/orders/{order.referenceOrderID}", operation="find_order", parse=_parser(wire.OrderWire, "find_order")
            )
        return to_order(order, reference)

    # Webhooks

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> list[FulfilmentEvent]:
        events = self._verifier.verify(headers, body)
        if any(isinstance(event, CatalogEvent) for event in events):
            self._catalog = None  # the catalog changed: the next read asks Tango, however long the TTL
            self._catalog_generation += 1
        return events

    # Helpers

    def _malformed(self, operation: str, detail: str, *, maybe_committed: bool) -> ProviderMalformedResponse:
        return ProviderMalformedResponse(
            f"tango {operation}: {detail}", provider=NAME, retryable=False, maybe_committed=maybe_committed
        )


def _parser(model: type[wire.W], operation: str) -> Callable[[Any], wire.W]:
    """A call's `parse` step: the body validated against `model` by the HTTP layer, inside the attempt."""
    return partial(parse_model, model, provider=NAME, operation=operation)


# Mapping (pure functions: tested directly and through the fake server)


def catalog_rewards(catalog: wire.CatalogWire) -> list[Reward]:
    """Every item of every brand as a Reward, sorted by utid; an item of an unknown value type is skipped."""
    rewards = []
    for brand in catalog.brands:
        for item in brand.items:
            reward = _reward(brand, item)
            if reward is None:
                logger.warning("tango catalog item skipped: utid=%s value_type=%s", item.utid[:40], item.valueType[:40])
                continue
            rewards.append(reward)
    return sorted(rewards, key=lambda reward: reward.id)


def _reward(brand: wire.BrandWire, item: wire.ItemWire) -> Reward | None:
    denomination = _denomination(item)
    if denomination is None or not 0 < len(item.utid) <= 255 or len(item.currencyCode) != 3:
        return None
    return Reward(
        id=item.utid,
        name=item.rewardName or brand.brandName,
        brand=brand.brandName,
        description=brand.description or brand.shortDescription,
        category="gift card",
        image_url=_image(brand.imageUrls),
        countries=tuple(item.countries),
        currency_code=item.currencyCode.upper(),
        denomination=denomination,
        availability=_availability(brand.status, item.status),
        terms=brand.terms,
        redemption_instructions=item.redemptionInstructions,
        whole_amounts_only=item.whole_amounts_only,
    )


def _denomination(item: wire.ItemWire) -> Denomination | None:
    value_type = item.valueType.upper()
    fixed = item.faceValue
    if value_type == "FIXED_VALUE" and fixed is not None:
        return Denomination(DenominationKind.FIXED, (fixed,), fixed, fixed)
    low, high = item.minValue, item.maxValue
    if value_type == "VARIABLE_VALUE" and low is not None and high is not None and low <= high:
        return Denomination(DenominationKind.VARIABLE, (), low, high)
    return None


def _availability(brand_status: str, item_status: str) -> RewardAvailability:
    statuses = {status.lower() for status in (brand_status, item_status) if status}  # a brand may omit it
    if statuses == {"active"}:
        return RewardAvailability.AVAILABLE
    if statuses & {"deleted", "deprecated", "discontinued", "retired"}:
        return RewardAvailability.DISCONTINUED
    return RewardAvailability.OUT_OF_STOCK  # inactive, temporarily unavailable, or a status Tango adds


def _image(urls: dict[str, str]) -> str:
    for size in _IMAGE_SIZES:
        if size in urls:
            return urls[size]
    return urls[min(urls)] if urls else ""


def _status(order: wire.OrderWire) -> OrderStatus:
    return _ORDER_STATUS.get(order.status.upper(), OrderStatus.PENDING)


def _credentials(order: wire.OrderWire) -> list[wire.CredentialWire]:
    return list(order.reward.credentialList) if order.reward is not None else []


def _face_value(order: wire.OrderWire) -> tuple[Decimal | None, str]:
    amount = order.denomination or order.amountCharged
    return (amount.value, amount.currencyCode.upper()) if amount is not None else (None, "")


def _matches(order: wire.OrderWire, request: OrderRequest) -> bool:
    face_value, currency = _face_value(order)
    return (
        order.utid == request.reward_id
        and (face_value is None or face_value == request.face_value)
        and currency in ("", request.currency_code.upper())
    )


def gift_card(credentials: list[wire.CredentialWire]) -> GiftCard | None:
    """The card in a credentialList; None when it holds nothing usable."""
    code = pin = url = None
    expires_at: datetime | None = None
    for credential in credentials:
        kind = credential.credentialType.replace("_", "").lower()
        value = credential.value.get_secret_value()
        if credential.type.lower() == "date":
            if "expir" in kind or "expir" in credential.label.lower():
                expires_at = _date(value)
        elif kind in _PIN_TYPES and pin is None:
            pin = value
        elif (kind in _URL_TYPES or credential.type.lower() == "url") and url is None:
            url = value
        elif kind in _CODE_TYPES and code is None:
            code = value
    if code is None and pin is None and url is None:
        return None
    return GiftCard(code=code, pin=pin, claim_url=url, expires_at=expires_at)


def _date(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)  # a trailing "Z" included (Python 3.11)
    except ValueError:
        return None  # an expiry we cannot read is left out, never a reason to lose the card
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def to_order(order: wire.OrderWire, reference: str) -> Order:
    status = _status(order)
    card = gift_card(_credentials(order)) if status is OrderStatus.FULFILLED else None
    if status is OrderStatus.FULFILLED and card is None:
        status = OrderStatus.PENDING  # complete but no credentials yet: look again rather than settle blind
    face_value, currency = _face_value(order)
    return Order(
        reference=reference,
        order_id=order.referenceOrderID,
        status=status,
        reward_id=order.utid,
        face_value=face_value if face_value is not None else Decimal(0),
        currency_code=currency,
        gift_card=card,
        failure_reason=f"Tango order {order.status.upper()[:40]}" if status is OrderStatus.FAILED else None,
        created_at=order.createdAt,
    )


def build_tango(
    *,
    base_url: str,
    auth_mode: AuthMode,
    platform_name: str | None,
    platform_key: str | None,
    client_id: str | None,
    client_secret: str | None,
    token_url: str | None,
    account_identifier: str,
    customer_identifier: str,
    webhook_secrets: list[str] | tuple[str, ...],
    policy: HttpPolicy,
    transport: httpx.AsyncBaseTransport | None = None,
    oauth_audience: str | None = None,
    token_store: TokenStore | None = None,
    webhook_tolerance: float = DEFAULT_TOLERANCE,
    catalog_ttl: float = CATALOG_TTL,
    on_close: Callable[[], Awaitable[None]] | None = None,
) -> TangoProvider:
    """A TangoProvider from plain values (the composition root reads them from settings).

    `token_store`: where the OAuth2 token is kept (shared by every process: the gateway database); none: in
    this process only. `on_close`: awaited when the provider closes (e.g. the store's engine's dispose).
    """
    if not account_identifier or not customer_identifier:
        raise ValueError("Tango needs an account identifier and a customer identifier")
    auth = tango_auth(
        auth_mode,
        platform_name=platform_name,
        platform_key=platform_key,
        client_id=client_id,
        client_secret=client_secret,
        token_url=token_url,
        audience=oauth_audience,
        token_store=token_store,
    )
    http = ProviderHttpClient(
        provider=NAME, base_url=base_url, auth=auth, policy=policy, transport=transport, error_table=TANGO_ERRORS
    )
    return TangoProvider(
        http=http,
        account_identifier=account_identifier,
        customer_identifier=customer_identifier,
        verifier=TangoWebhookVerifier(webhook_secrets, tolerance=webhook_tolerance),
        catalog_ttl=catalog_ttl,
        on_close=on_close,
    )
