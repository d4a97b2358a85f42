"""Tremendous' wire models -> the port's data: products to Rewards, orders to Orders (with the claim link).

Unknown enum values never crash: an unknown product status is "not available", an unknown order
status is PENDING (the reconciler keeps looking until Tremendous says something we understand).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from providers.base import Denomination, DenominationKind, GiftCard, Reward, RewardAvailability
from providers.fulfilment import Order, OrderStatus
from providers.tremendous.wire import OrderWire, ProductWire, RewardWire

_AVAILABLE = frozenset({"ACTIVE", "AVAILABLE"})
_GONE = frozenset({"INACTIVE", "DISABLED", "DISCONTINUED", "ARCHIVED", "REMOVED", "DELETED"})
_ORDER_FAILED = frozenset({"FAILED", "CANCELED", "CANCELLED", "REJECTED"})
_ORDER_DONE = "EXECUTED"
_IMAGE_PREFERENCE = ("card", "logo")


def availability_of(status: str | None) -> RewardAvailability:
    """Listed without a status: available. Unknown status: OUT_OF_STOCK (not orderable, may come back)."""
    if status is None or status.upper() in _AVAILABLE:
        return RewardAvailability.AVAILABLE
    if status.upper() in _GONE:
        return RewardAvailability.DISCONTINUED
    return RewardAvailability.OUT_OF_STOCK


def denomination_of(product: ProductWire, currency: str) -> Denomination | None:
    """FIXED when every sku has min == max (the listed values); otherwise VARIABLE over the skus' span.

    Several disjoint ranges are flattened into one span: a value in a gap is refused by Tremendous
    (400 about the denomination -> InvalidFaceValue), never ordered wrongly.
    """
    skus = [sku for sku in product.skus if sku.currency_code in (None, currency) and sku.min <= sku.max]
    if not skus:
        return None
    low, high = min(sku.min for sku in skus), max(sku.max for sku in skus)
    if all(sku.min == sku.max for sku in skus):
        values = tuple(sorted({sku.min for sku in skus}))
        return Denomination(DenominationKind.FIXED, values, low, high)
    return Denomination(DenominationKind.VARIABLE, (), low, high)


def currency_of(product: ProductWire, preferred: Sequence[str]) -> str | None:
    """The first preferred currency the product sells in, else its first; the port has one per reward."""
    codes = [code.upper() for code in product.currency_codes]
    for code in preferred:
        if code.upper() in codes:
            return code.upper()
    return codes[0] if codes else None


def image_of(product: ProductWire) -> str:
    for kind in _IMAGE_PREFERENCE:
        for image in product.images:
            if image.type == kind:
                return image.src
    return product.images[0].src if product.images else ""


def reward_of(product: ProductWire, preferred_currencies: Sequence[str]) -> Reward | None:
    """The product as a reward, or None when it cannot be ordered at all (no currency, no skus)."""
    currency = currency_of(product, preferred_currencies)
    if currency is None:
        return None
    denomination = denomination_of(product, currency)
    if denomination is None:
        return None
    return Reward(
        id=product.id,
        name=product.name,
        brand=product.name,  # a Tremendous product is one brand's card
        description=product.description,
        category=product.subcategory or product.category,
        image_url=image_of(product),
        countries=tuple(sorted({country.abbr.upper() for country in product.countries})),
        currency_code=currency,
        denomination=denomination,
        availability=availability_of(product.status),
        terms=product.disclosure or None,
        redemption_instructions=product.usage_instructions or None,
    )


def gift_card_of(reward: RewardWire | None) -> GiftCard | None:
    """LINK delivery: Tremendous returns a claim URL (`delivery.link`), never a code or pin through the API."""
    if reward is None or reward.delivery is None or not reward.delivery.link:
        return None
    return GiftCard(code=None, pin=None, claim_url=reward.delivery.link, expires_at=None)


def order_status_of(order: OrderWire, card: GiftCard | None) -> tuple[OrderStatus, str | None]:
    status = order.status.upper()
    if status in _ORDER_FAILED:
        return OrderStatus.FAILED, f"Tremendous order {status}"
    if status == _ORDER_DONE and card is not None:
        return OrderStatus.FULFILLED, None
    return OrderStatus.PENDING, None  # CART/OPEN, PENDING APPROVAL, EXECUTED without a link yet, unknown


def order_of(
    order: OrderWire, *, reference: str, reward_id: str = "", face_value: Decimal = Decimal(0), currency: str = ""
) -> Order:
    """The order as the port sees it; the keyword values fill what an answer leaves out."""
    reward = order.rewards[0] if order.rewards else None  # giftgraph orders one reward per order
    card = gift_card_of(reward)
    status, failure = order_status_of(order, card)
    value = reward.value if reward is not None else None
    return Order(
        reference=order.external_id or reference,
        order_id=order.id,
        status=status,
        reward_id=reward.products[0] if reward is not None and reward.products else reward_id,
        face_value=value.denomination if value is not None else face_value,
        currency_code=value.currency_code if value is not None else currency,
        gift_card=card if status is OrderStatus.FULFILLED else None,
        failure_reason=failure,
        created_at=order.created_at,
    )
