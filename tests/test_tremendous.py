"""The Tremendous adapter against the fake Tremendous over real HTTP on loopback: catalog, orders, errors, limits."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from giftgraph.fulfilment import fulfilment_provider
from giftgraph.settings import ConfigurationError, Settings, load_settings
from providers.base import DenominationKind, Reward, RewardAvailability
from providers.errors import (
    FundingInsufficient,
    IdempotencyConflict,
    ProviderError,
    ProviderPermanentFailure,
    InsufficientPoints,
    InvalidFaceValue,
    ProviderAuthenticationFailed,
    ProviderMalformedResponse,
    ProviderRateLimited,
    ProviderUnavailable,
    RewardUnavailable,
)
from providers.fulfilment import OrderRequest, OrderStatus
from providers.http import HttpPolicy
from providers.tremendous import TremendousOrderEvent, TremendousProvider, build_tremendous
from providers.tremendous.wire import OrderEnvelopeWire
from tests.fake_tremendous import FakeTremendous, running_fake_tremendous

pytestmark = pytest.mark.anyio

# Quick retries, no client-side limiter (tests about the limiter pass their own), a generous retry budget.
FAST = HttpPolicy(
    rate_limit_per_second=0,
    retry_base_delay=0.02,
    retry_max_delay=0.1,
    call_budget_seconds=5,
    retry_budget_min_per_second=1000,
)


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeTremendous]:
    with running_fake_tremendous() as fake:
        yield fake


@pytest.fixture
def fake(fake_server: FakeTremendous) -> FakeTremendous:
    fake_server.state.reset()  # one server for the module, a fresh Tremendous account per test
    return fake_server


def make_provider(fake: FakeTremendous, **overrides: object) -> TremendousProvider:
    values: dict[str, object] = {
        "base_url": fake.url,
        "api_key": fake.api_key,
        "funding_source_id": "balance",
        "webhook_secrets": ["whk-test"],
        "policy": FAST,
    }
    values.update(overrides)
    return build_tremendous(**values)  # type: ignore[arg-type]


@pytest.fixture
async def provider(fake: FakeTremendous) -> AsyncIterator[TremendousProvider]:
    provider = make_provider(fake)
    await provider.start()
    try:
        yield provider
    finally:
        await provider.aclose()


def order(reference: str = "ref1", reward_id: str = "AMZN-US", face_value: str = "25", currency: str = "USD"):
    return OrderRequest(
        reference=reference,
        reward_id=reward_id,
        face_value=Decimal(face_value),
        currency_code=currency,
        recipient_name="user-42",
    )


# Catalog


async def test_fixed_value_product_maps_to_fixed_denomination(provider: TremendousProvider) -> None:
    rewards = {reward.id: reward for reward in await provider.catalog()}

    amazon = rewards["AMZN-US"]
    assert amazon.denomination.kind is DenominationKind.FIXED
    assert amazon.denomination.face_values == (Decimal(10), Decimal(25), Decimal(50))
    assert (amazon.denomination.min_value, amazon.denomination.max_value) == (Decimal(10), Decimal(50))
    assert amazon.countries == ("US",)
    assert amazon.currency_code == "USD"
    assert amazon.availability is RewardAvailability.AVAILABLE
    assert amazon.image_url == "https://img.example/amzn-card.png"  # the card image over the logo
    assert amazon.category == "shopping"
    assert amazon.terms == "Restrictions apply."
    assert amazon.redemption_instructions == "Redeem at amazon.com"


async def test_variable_product_maps_to_a_range_in_the_preferred_currency(fake: FakeTremendous) -> None:
    for currency, high in (("USD", Decimal(1000)), ("EUR", Decimal(2000))):
        provider = make_provider(fake, currencies=[currency])
        await provider.start()
        try:
            visa = {reward.id: reward for reward in await provider.catalog()}["VISA-INTL"]
        finally:
            await provider.aclose()

        assert visa.denomination.kind is DenominationKind.VARIABLE
        assert visa.denomination.face_values == ()
        assert (visa.denomination.min_value, visa.denomination.max_value) == (Decimal(5), high)
        assert visa.currency_code == currency
        assert visa.countries == ("DE", "FR", "US")
        assert visa.image_url == ""


async def test_catalog_sends_country_and_currency_filters_and_tolerates_unknown_status(fake: FakeTremendous) -> None:
    provider = make_provider(fake, countries=["CA"], currencies=["CAD"])
    await provider.start()
    try:
        rewards = await provider.catalog()
    finally:
        await provider.aclose()

    assert [reward.id for reward in rewards] == ["OLD-BRAND"]  # the fake filtered by the query
    assert rewards[0].availability is RewardAvailability.OUT_OF_STOCK  # "TEMPORARILY_SUSPENDED": unknown


async def test_catalog_asks_only_for_the_configured_currencies(fake: FakeTremendous) -> None:
    provider = make_provider(fake, countries=["US"], currencies=["EUR"])
    await provider.start()
    try:
        rewards = await provider.catalog()
    finally:
        await provider.aclose()

    assert [(reward.id, reward.currency_code) for reward in rewards] == [("VISA-INTL", "EUR")]


async def test_the_catalog_filters_come_from_the_settings(fake: FakeTremendous, tmp_path: Path) -> None:
    configured = tremendous_settings(
        tmp_path, fake, tremendous_countries=["us", "CA"], tremendous_currencies=["CAD", "USD"]
    )

    filtered = await catalog_through_settings(configured)
    default = await catalog_through_settings(tremendous_settings(tmp_path, fake))

    products = [params for path, params in fake.state.queries if path.endswith("/products")]
    assert products == [{"country": "US,CA", "currency": "CAD,USD"}, {"currency": "USD"}]
    assert [(reward.id, reward.currency_code) for reward in filtered] == [
        ("AMZN-US", "USD"), ("OLD-BRAND", "CAD"), ("VISA-INTL", "USD")
    ]  # fmt: skip
    assert [reward.id for reward in default] == ["AMZN-US", "VISA-INTL"]


@pytest.mark.parametrize(
    "overrides",
    [{"tremendous_countries": ["USA"]}, {"tremendous_currencies": ["US$"]}, {"tremendous_currencies": ["EU"]}],
)
def test_catalog_filters_that_are_not_iso_codes_are_refused_at_start(
    tmp_path: Path, overrides: dict[str, object]
) -> None:
    with pytest.raises(ConfigurationError, match="ISO codes"):
        load_settings(data_dir=tmp_path, provider="tremendous", **overrides)


def test_an_empty_webhook_key_is_refused_at_start_naming_the_setting_not_the_keys(
    fake: FakeTremendous, tmp_path: Path
) -> None:
    settings = tremendous_settings(tmp_path, fake, tremendous_webhook_secrets=["whk-kept-secret", ""])

    with pytest.raises(ConfigurationError, match=r"GIFTGRAPH_TREMENDOUS_WEBHOOK_SECRETS.*#2") as caught:
        fulfilment_provider(settings)

    assert "whk-kept-secret" not in str(caught.value)


def tremendous_settings(data_dir: Path, fake: FakeTremendous, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "provider": "tremendous",
        "tremendous_base_url": fake.url,
        "tremendous_api_key": fake.api_key,
    }
    return load_settings(**{**values, **overrides})


async def catalog_through_settings(settings: Settings) -> list[Reward]:
    provider = fulfilment_provider(settings)
    await provider.start()
    try:
        return await provider.catalog()
    finally:
        await provider.aclose()


async def test_a_product_of_an_unexpected_shape_is_skipped_not_fatal(
    fake: FakeTremendous, provider: TremendousProvider
) -> None:
    broken = {"id": "BROKEN", "name": "Broken", "skus": "not a list", "currency_codes": ["USD"]}
    fake.state.products.append({**broken, "countries": [{"abbr": "US"}]})

    ids = [reward.id for reward in await provider.catalog()]

    assert "BROKEN" not in ids
    assert "AMZN-US" in ids


async def test_requests_carry_the_bearer_key_and_reprs_hide_it(
    fake: FakeTremendous, provider: TremendousProvider
) -> None:
    await provider.catalog()

    assert fake.state.authorizations == [f"Bearer {fake.api_key}"]
    assert fake.api_key not in repr(provider)
    assert fake.api_key not in repr(provider.http._auth)


async def test_a_bad_api_key_is_an_authentication_failure(fake: FakeTremendous) -> None:
    provider = make_provider(fake, api_key="wrong-key")
    await provider.start()
    try:
        with pytest.raises(ProviderAuthenticationFailed) as caught:
            await provider.catalog()
    finally:
        await provider.aclose()

    assert caught.value.status == 401
    assert "wrong-key" not in str(caught.value)


# Orders


async def test_an_order_is_fulfilled_with_the_claim_link(fake: FakeTremendous, provider: TremendousProvider) -> None:
    placed = await provider.place_order(order())

    assert placed.status is OrderStatus.FULFILLED
    assert placed.reference == "ref1"
    assert placed.reward_id == "AMZN-US"
    assert (placed.face_value, placed.currency_code) == (Decimal(25), "USD")
    assert placed.gift_card is not None
    assert placed.gift_card.claim_url is not None
    assert placed.gift_card.claim_url.startswith("https://testflight.tremendous.com/rewards/payout/")
    assert (placed.gift_card.code, placed.gift_card.pin) == (None, None)  # LINK delivery: no code through the API
    assert placed.gift_card.claim_url not in repr(placed)
    assert fake.state.balance_cents == 100_000 - 2500


async def test_replaying_a_reference_returns_the_same_order(fake: FakeTremendous, provider: TremendousProvider) -> None:
    first = await provider.place_order(order())

    again = await provider.place_order(order())

    assert again.order_id == first.order_id
    assert again.gift_card == first.gift_card
    assert fake.state.post_orders() == 2
    assert len(fake.state.orders) == 1
    assert fake.state.balance_cents == 100_000 - 2500


async def test_a_reference_reused_with_other_parameters_is_an_idempotency_conflict(
    fake: FakeTremendous, provider: TremendousProvider
) -> None:
    await provider.place_order(order(face_value="25"))

    with pytest.raises(IdempotencyConflict) as caught:
        await provider.place_order(order(face_value="50"))

    assert caught.value.status == 409
    assert len(fake.state.orders) == 1


async def test_insufficient_company_funds_is_provider_unavailable_not_insufficient_points(
    fake: FakeTremendous, provider: TremendousProvider
) -> None:
    fake.state.balance_cents = 1000

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.place_order(order(face_value="25"))

    assert not isinstance(caught.value, InsufficientPoints)
    assert caught.value.status == 402
    assert (caught.value.retryable, caught.value.maybe_committed) == (False, False)
    assert fake.state.orders == {}
    assert fake.state.post_orders() == 1  # not retried


@pytest.mark.parametrize(
    ("reward_id", "face_value"),
    [("AMZN-US", "30"), ("VISA-INTL", "5000"), ("VISA-INTL", "1")],
    ids=["not-a-fixed-value", "above-range", "below-range"],
)
async def test_a_face_value_tremendous_refuses_is_invalid_face_value(
    fake: FakeTremendous, provider: TremendousProvider, reward_id: str, face_value: str
) -> None:
    with pytest.raises(InvalidFaceValue) as caught:
        await provider.place_order(order(reward_id=reward_id, face_value=face_value))

    assert caught.value.status == 400
    assert fake.state.orders == {}


def _errors(message: str, payload: dict[str, object] | None = None) -> dict[str, object]:
    return {"errors": {"message": message, "payload": payload or {}}}


@pytest.mark.parametrize(
    ("status", "body", "expected", "maybe_committed"),
    [
        (400, _errors("Bad request", {"reward": {"recipient": ["email is invalid"]}}), ProviderPermanentFailure, False),
        (401, _errors("Unauthorized"), ProviderAuthenticationFailed, False),
        (402, _errors("Insufficient funds"), FundingInsufficient, False),
        (403, _errors("Forbidden"), ProviderAuthenticationFailed, False),
        (404, _errors("Record not found"), ProviderPermanentFailure, False),
        (409, _errors("Conflict", {"external_id": ["taken"]}), IdempotencyConflict, False),
        (422, _errors("Unprocessable", {"reward": {"value": {"denomination": ["too high"]}}}), InvalidFaceValue, False),
        (422, _errors("Unprocessable", {"reward": {"products": ["unavailable"]}}), RewardUnavailable, False),
        (422, _errors("Unprocessable"), ProviderPermanentFailure, False),
        (429, {"error": {"message": "Too many requests", "payload": {}}}, ProviderRateLimited, False),
        (500, _errors("Internal error"), ProviderUnavailable, True),
        (503, "<html>maintenance</html>", ProviderUnavailable, True),
        (418, {"unexpected": True}, ProviderPermanentFailure, False),
    ],
)
async def test_each_tremendous_error_maps_to_its_port_error(
    fake: FakeTremendous,
    status: int,
    body: object,
    expected: type[ProviderError],
    maybe_committed: bool,
) -> None:
    provider = make_provider(fake, policy=HttpPolicy(rate_limit_per_second=0, retry_attempts=1))
    fake.state.inject(status, body)
    await provider.start()
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.place_order(order())
    finally:
        await provider.aclose()

    assert type(caught.value) is expected
    assert (caught.value.status, caught.value.maybe_committed) == (status, maybe_committed)
    assert "payload" not in str(caught.value)  # the message names the status, never the body


async def test_an_unknown_product_is_reward_unavailable(provider: TremendousProvider) -> None:
    with pytest.raises(RewardUnavailable):
        await provider.place_order(order(reward_id="NO-SUCH-PRODUCT"))


async def test_a_503_on_order_is_retried_with_the_same_external_id_and_orders_once(
    fake: FakeTremendous, provider: TremendousProvider
) -> None:
    fake.state.inject(503, {"errors": {"message": "Service unavailable", "payload": {}}})

    placed = await provider.place_order(order())

    assert placed.status is OrderStatus.FULFILLED
    assert fake.state.post_orders() == 2
    assert len(fake.state.orders) == 1


async def test_a_500_on_order_is_maybe_committed_and_find_order_settles_it(
    fake: FakeTremendous, provider: TremendousProvider
) -> None:
    fake.state.inject(500, {"errors": {"message": "Internal error", "payload": {}}})

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.place_order(order())

    assert caught.value.maybe_committed is True
    assert await provider.find_order("ref1") is None  # the fake failed before ordering


async def test_a_429_with_the_singular_error_body_is_retried_then_succeeds(
    fake: FakeTremendous, provider: TremendousProvider
) -> None:
    fake.state.inject(429, {"error": {"message": "Too many requests", "payload": {}}}, times=2)

    placed = await provider.place_order(order())

    assert placed.status is OrderStatus.FULFILLED
    assert provider.http.stats.retries == 2
    assert len(fake.state.orders) == 1


async def test_bursting_past_ten_per_second_is_rate_limited(fake: FakeTremendous) -> None:
    fake.state.clock = lambda: 1000.0  # the whole burst in one instant of the fake's window, however slow the box
    provider = make_provider(fake, policy=HttpPolicy(rate_limit_per_second=0, retry_attempts=1))
    await provider.start()
    try:
        results = await asyncio.gather(*(provider.funding_balance() for _ in range(15)), return_exceptions=True)
    finally:
        await provider.aclose()

    limited = [result for result in results if isinstance(result, ProviderRateLimited)]
    assert len(limited) == 5 == fake.state.rate_limited
    assert all(error.status == 429 for error in limited)
    assert sum(1 for result in results if not isinstance(result, BaseException)) == 10


async def test_the_client_limiter_keeps_under_tremendous_limit(fake: FakeTremendous) -> None:
    # 11 requests spaced 1/6 s apart span 1.67 s: the fake sees 11 in one second only if the loopback delays
    # them by more than half a second. Without the limiter they arrive together: 429s.
    provider = make_provider(fake, policy=HttpPolicy(rate_limit_per_second=6, retry_attempts=1))
    await provider.start()
    try:
        await asyncio.gather(*(provider.funding_balance() for _ in range(11)))
    finally:
        await provider.aclose()

    assert fake.state.rate_limited == 0


async def test_find_order_looks_the_order_up_by_external_id(provider: TremendousProvider) -> None:
    placed = await provider.place_order(order())

    found = await provider.find_order("ref1")

    assert found is not None
    assert (found.order_id, found.status, found.reference) == (placed.order_id, OrderStatus.FULFILLED, "ref1")
    assert found.gift_card == placed.gift_card
    assert await provider.find_order("never-used") is None


async def test_an_asynchronous_order_is_pending_until_delivered(
    fake: FakeTremendous, provider: TremendousProvider
) -> None:
    fake.state.async_orders = True

    placed = await provider.place_order(order())
    assert (placed.status, placed.gift_card) == (OrderStatus.PENDING, None)
    fake.state.complete_pending()
    found = await provider.find_order("ref1")

    assert found is not None
    assert found.status is OrderStatus.FULFILLED
    assert found.gift_card is not None and found.gift_card.claim_url


@pytest.mark.parametrize(
    ("status", "expected"),
    [("ON_HOLD_FOR_REVIEW", OrderStatus.PENDING), ("OPEN", OrderStatus.PENDING), ("CANCELED", OrderStatus.FAILED)],
)
async def test_order_statuses_unknown_ones_included_never_crash(
    fake: FakeTremendous, provider: TremendousProvider, status: str, expected: OrderStatus
) -> None:
    fake.state.order_status = status

    placed = await provider.place_order(order())

    assert placed.status is expected
    assert placed.gift_card is None


async def test_order_for_a_reward_event_is_fetched_with_its_reference(
    fake: FakeTremendous, provider: TremendousProvider
) -> None:
    placed = await provider.place_order(order())
    reward_id = fake.state.orders[placed.order_id]["rewards"][0]["id"]
    event = TremendousOrderEvent(event_id="e1", reference="", status=OrderStatus.FULFILLED, reward_id=reward_id)

    found = await provider.order_for_event(event)

    assert found is not None
    assert (found.order_id, found.reference, found.status) == (placed.order_id, "ref1", OrderStatus.FULFILLED)


# Funding


async def test_funding_balance_reads_the_balance_source(fake: FakeTremendous, provider: TremendousProvider) -> None:
    fake.state.balance_cents = 123_456

    balance = await provider.funding_balance()

    assert (balance.available, balance.currency_code) == (Decimal("1234.56"), "USD")


async def test_funding_balance_of_an_explicit_source_id_and_of_an_unknown_one(fake: FakeTremendous) -> None:
    explicit, unknown = make_provider(fake, funding_source_id="BAL-FS-1"), make_provider(fake, funding_source_id="X")
    await explicit.start()
    await unknown.start()
    try:
        assert (await explicit.funding_balance()).available == Decimal(1000)
        with pytest.raises(ProviderMalformedResponse):
            await unknown.funding_balance()
    finally:
        await explicit.aclose()
        await unknown.aclose()


# Secrets


async def test_claim_links_and_the_key_never_reach_the_logs(
    fake: FakeTremendous, provider: TremendousProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.state.inject(503, {"errors": {"message": "Service unavailable", "payload": {}}})

    placed = await provider.place_order(order())
    await provider.find_order("ref1")

    assert placed.gift_card is not None and placed.gift_card.claim_url
    assert "retrying" in caplog.text  # the retry was logged...
    assert placed.gift_card.claim_url not in caplog.text  # ...without the card
    assert fake.api_key not in caplog.text
    assert placed.gift_card.claim_url not in repr(placed.gift_card)


async def test_wire_models_never_show_the_claim_link(fake: FakeTremendous, provider: TremendousProvider) -> None:
    placed = await provider.place_order(order())
    raw = {"order": fake.state.orders[placed.order_id]}

    wire = OrderEnvelopeWire.model_validate(raw)

    link = raw["order"]["rewards"][0]["delivery"]["link"]
    assert link and link not in repr(wire) and link not in str(wire)


async def test_a_signed_orders_webhook_leads_to_the_order_and_its_reference(
    fake: FakeTremendous, provider: TremendousProvider
) -> None:
    fake.state.async_orders = True
    placed = await provider.place_order(order())
    fake.state.complete_pending()
    raw = json.dumps(
        {
            "event": "ORDERS.APPROVED",
            "uuid": "evt-1",
            "created_utc": datetime.now(UTC).isoformat(),
            "payload": {"resource": {"id": placed.order_id, "type": "orders"}, "meta": {}},
        }
    ).encode()
    signature = hmac.new(b"whk-test", raw, hashlib.sha256).hexdigest()

    (event,) = provider.verify_webhook({"Tremendous-Webhook-Signature": f"sha256={signature}"}, raw)
    assert isinstance(event, TremendousOrderEvent)
    settled = await provider.order_for_event(event)

    assert settled is not None
    assert (settled.reference, settled.status) == ("ref1", OrderStatus.FULFILLED)
    assert settled.gift_card is not None and settled.gift_card.claim_url
