"""TangoProvider against the fake Tango server over loopback HTTP: catalog, balance, orders, errors, rate limit."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

import providers.errors as perr
from providers.base import DenominationKind, RedeemRequest, RewardAvailability
from providers.fulfilment import OrderStatus
from providers.http import HttpPolicy
from providers.rules import validate
from providers.tango import wire
from tests.fake_tango import (
    ACCOUNT,
    CARD_CODE,
    CARD_PIN,
    CARD_URL,
    CUSTOMER,
    PLATFORM_KEY,
    PLATFORM_NAME,
    make_tango,
    order_request,
    running_fake_tango,
    started,
)

pytestmark = pytest.mark.anyio


# Catalog


async def test_catalog_maps_fixed_and_variable_items_countries_currencies_and_availability() -> None:
    with running_fake_tango(rate_limit=None) as tango:
        async with started(make_tango(tango.url)) as provider:
            rewards = {reward.id: reward for reward in await provider.catalog()}
    # U000006 has a value type Tango may add later, U000007 no currency: skipped, not a crash.
    assert sorted(rewards) == ["U000001", "U000002", "U000003", "U000004", "U000005"]
    fixed = rewards["U000001"]
    assert fixed.denomination.kind is DenominationKind.FIXED
    assert fixed.denomination.face_values == (Decimal("10"),)
    assert (fixed.countries, fixed.currency_code, fixed.availability) == (("US",), "USD", RewardAvailability.AVAILABLE)
    assert (fixed.brand, fixed.name, fixed.description, fixed.terms) == (
        "Coffee Co", "Coffee Co $10", "Coffee everywhere", "Coffee terms"
    )  # fmt: skip
    assert fixed.image_url == "https://img.example/coffee-300.png"
    assert fixed.redemption_instructions == "Show the code"
    variable = rewards["U000002"]
    assert variable.denomination.kind is DenominationKind.VARIABLE
    assert (variable.denomination.min_value, variable.denomination.max_value) == (Decimal("5"), Decimal("100"))
    assert (variable.countries, variable.currency_code) == (("DE", "FR"), "EUR")
    assert rewards["U000004"].currency_code == "GBP"
    assert rewards["U000004"].image_url == "https://img.example/books-200.png"
    assert rewards["U000003"].availability is RewardAvailability.OUT_OF_STOCK  # inactive
    assert rewards["U000005"].availability is RewardAvailability.OUT_OF_STOCK  # unknown status


async def test_catalog_is_cached_within_its_ttl_and_refetched_after() -> None:
    now = [0.0]
    with running_fake_tango(rate_limit=None) as tango:
        provider = make_tango(tango.url, catalog_ttl=60)
        provider._clock = lambda: now[0]
        async with started(provider):
            await provider.catalog()
            await provider.catalog()
            assert tango.state.api_requests.count(("GET", "/catalogs")) == 1
            now[0] = 61
            await provider.catalog()
            assert tango.state.api_requests.count(("GET", "/catalogs")) == 2


# Funding


async def test_funding_balance_is_the_accounts_current_balance() -> None:
    with running_fake_tango(rate_limit=None, balance=Decimal("123.45")) as tango:
        async with started(make_tango(tango.url)) as provider:
            balance = await provider.funding_balance()
    assert (balance.available, balance.currency_code) == (Decimal("123.45"), "USD")


# Orders


async def test_place_order_sends_the_reference_as_external_ref_id_and_returns_the_card() -> None:
    with running_fake_tango(rate_limit=None) as tango:
        async with started(make_tango(tango.url)) as provider:
            order = await provider.place_order(order_request("ref0001"))
        (stored,) = tango.state.orders.values()
    assert order.status is OrderStatus.FULFILLED
    assert (order.reference, order.order_id, order.reward_id, order.face_value) == (
        "ref0001", stored["referenceOrderID"], "U000001", Decimal("10")
    )  # fmt: skip
    assert order.gift_card is not None
    assert (order.gift_card.code, order.gift_card.pin, order.gift_card.claim_url) == (CARD_CODE, CARD_PIN, CARD_URL)
    assert order.gift_card.expires_at == datetime(2030, 1, 31, tzinfo=UTC)
    assert (stored["externalRefID"], stored["sendEmail"]) == ("ref0001", False)
    assert tango.state.balance == Decimal("990.00")


async def test_same_reference_twice_replays_the_first_order_and_charges_once() -> None:
    with running_fake_tango(rate_limit=None) as tango:
        async with started(make_tango(tango.url)) as provider:
            first = await provider.place_order(order_request("ref0002"))
            again = await provider.place_order(order_request("ref0002"))
        assert len(tango.state.orders) == 1
        assert tango.state.balance == Decimal("990.00")
    assert again.order_id == first.order_id
    assert again.status is OrderStatus.FULFILLED


async def test_tango_replays_a_reused_reference_even_for_another_item_and_the_adapter_refuses_it() -> None:
    with running_fake_tango(rate_limit=None) as tango:
        async with started(make_tango(tango.url)) as provider:
            await provider.place_order(order_request("ref0003", "U000001", "10"))
            # What Tango does (documented): 200 with the ORIGINAL order, no conflict status.
            raw = httpx.post(
                f"{tango.url}/orders",
                auth=(PLATFORM_NAME, PLATFORM_KEY),
                json={"accountIdentifier": ACCOUNT, "customerIdentifier": CUSTOMER, "amount": 50, "utid": "U000002",
                      "sendEmail": False, "externalRefID": "ref0003"},  # fmt: skip
            )
            assert (raw.status_code, raw.json()["utid"]) == (200, "U000001")
            with pytest.raises(perr.IdempotencyConflict) as caught:
                await provider.place_order(order_request("ref0003", "U000002", "50"))
        assert len(tango.state.orders) == 1
    assert caught.value.maybe_committed is False


async def test_an_order_whose_answer_was_lost_is_retried_with_the_same_reference_and_ordered_once() -> None:
    with running_fake_tango(rate_limit=None) as tango:
        tango.fake.lose_next_order_answer()
        async with started(make_tango(tango.url)) as provider:
            order = await provider.place_order(order_request("ref0004"))
        assert len(tango.state.orders) == 1
        assert tango.state.api_requests.count(("POST", "/orders")) == 2
    assert order.status is OrderStatus.FULFILLED


async def test_find_order_fetches_the_card_from_the_order_details_and_none_for_an_unknown_reference() -> None:
    with running_fake_tango(rate_limit=None) as tango:
        async with started(make_tango(tango.url)) as provider:
            placed = await provider.place_order(order_request("ref0005"))
            found = await provider.find_order("ref0005")
            missing = await provider.find_order("ref9999")
            invalid = await provider.find_order("not/alphanumeric")
    assert found is not None and found.order_id == placed.order_id
    assert found.status is OrderStatus.FULFILLED
    assert found.gift_card is not None and found.gift_card.code == CARD_CODE
    assert missing is None and invalid is None


async def test_a_pending_order_stays_pending_without_a_card() -> None:
    with running_fake_tango(rate_limit=None, pending_utids={"U000001"}) as tango:
        async with started(make_tango(tango.url)) as provider:
            placed = await provider.place_order(order_request("ref0006"))
            found = await provider.find_order("ref0006")
    assert placed.status is OrderStatus.PENDING and placed.gift_card is None
    assert found is not None and found.status is OrderStatus.PENDING


@pytest.mark.parametrize(("status", "expected"), [("ON_HOLD_FOR_REVIEW", OrderStatus.PENDING),
                                                  ("CANCELLED", OrderStatus.FAILED)])  # fmt: skip
async def test_order_statuses_tango_may_add_are_tolerated(status: str, expected: OrderStatus) -> None:
    with running_fake_tango(rate_limit=None, order_status_override=status) as tango:
        async with started(make_tango(tango.url)) as provider:
            order = await provider.place_order(order_request("ref0007"))
    assert order.status is expected and order.gift_card is None


async def test_an_invalid_reference_is_refused_before_any_call() -> None:
    with running_fake_tango(rate_limit=None) as tango:
        async with started(make_tango(tango.url)) as provider:
            with pytest.raises(perr.ProviderPermanentFailure):
                await provider.place_order(order_request("ref-with-dash"))
        assert tango.state.api_requests == []


# Error mapping


@pytest.mark.parametrize(
    ("request_args", "state", "error", "code"),
    [
        (("ref0101", "U000001", "10"), {"balance": Decimal("5")}, perr.FundingInsufficient, "402.001"),
        (("ref0102", "U000001", "11"), {}, perr.InvalidFaceValue, "422.027"),
        (("ref0103", "U000002", "500"), {}, perr.InvalidFaceValue, "422.025"),
        (("ref0104", "U000002", "7.5"), {}, perr.InvalidFaceValue, "422.026"),
        (("ref0105", "U000001", "10"), {"unavailable_utids": {"U000001"}}, perr.RewardUnavailable, "503.002"),
    ],
)
async def test_order_refusals_map_to_port_errors_and_are_definite(
    request_args: tuple[str, str, str], state: dict[str, object], error: type[perr.ProviderError], code: str
) -> None:
    with running_fake_tango(rate_limit=None, **state) as tango:
        async with started(make_tango(tango.url)) as provider:
            with pytest.raises(error) as caught:
                await provider.place_order(order_request(*request_args))
        assert tango.state.orders == {}
        assert tango.state.api_requests.count(("POST", "/orders")) == 1  # a refusal is not retried
    assert type(caught.value) is error  # the exact class: 402.001 is not a rate limit, nor the user's points
    assert code in caught.value.message
    assert (caught.value.retryable, caught.value.maybe_committed, caught.value.provider) == (False, False, "tango")


async def test_wrong_platform_credentials_are_an_authentication_failure() -> None:
    with running_fake_tango(rate_limit=None) as tango:
        async with started(make_tango(tango.url, platform_key="wrong-key")) as provider:
            with pytest.raises(perr.ProviderAuthenticationFailed) as caught:
                await provider.funding_balance()
    assert "401.501" in caught.value.message


async def test_a_5xx_is_retried_then_surfaces_as_unavailable_and_maybe_committed() -> None:
    with running_fake_tango(rate_limit=None) as tango:
        tango.fake.fail_next(503, None, times=10)
        async with started(make_tango(tango.url)) as provider:
            with pytest.raises(perr.ProviderUnavailable) as caught:
                await provider.place_order(order_request("ref0201"))
        assert tango.state.api_requests.count(("POST", "/orders")) == provider.http.policy.retry_attempts
    assert caught.value.maybe_committed is True


async def test_a_scripted_500_then_success_is_retried_transparently() -> None:
    with running_fake_tango(rate_limit=None) as tango:
        tango.fake.fail_next(500, "500.001")
        async with started(make_tango(tango.url)) as provider:
            balance = await provider.funding_balance()
    assert balance.available == Decimal("1000")


# Rate limit


def stepping_clock(step: float) -> Callable[[], float]:
    """A clock that moves `step` seconds each time it is read: the fake reads it once per request, so which
    request falls inside its window is fixed, however fast or slow the machine runs."""
    ticks = itertools.count(1)
    return lambda: next(ticks) * step


async def test_a_429_from_the_one_per_second_limit_is_retried_until_it_passes() -> None:
    policy = HttpPolicy(rate_limit_per_second=0, retry_attempts=10, retry_base_delay=0.01, retry_max_delay=0.05)
    # The fake sees the requests 0.6 s apart: the second is inside the first's one-second window, its retry not.
    with running_fake_tango(rate_limit=1, rate_window=1.0, clock=stepping_clock(0.6)) as tango:
        async with started(make_tango(tango.url, policy=policy)) as provider:
            first = await provider.funding_balance()
            second = await provider.funding_balance()  # 429, then retried
        assert tango.state.rate_limited == 1
        assert tango.state.api_requests == [("GET", f"/accounts/{ACCOUNT}")] * 3
    assert first == second
    assert provider.http.stats.retries == 1


async def test_the_client_side_limiter_keeps_under_tangos_limit() -> None:
    # Requests sent 0.5 s apart against a 0.1 s window: only a loopback delay of 0.4 s could bunch them.
    # Without the limiter they arrive back to back: a 429, and with one attempt an error.
    policy = HttpPolicy(rate_limit_per_second=2, retry_attempts=1)
    with running_fake_tango(rate_limit=1, rate_window=0.1) as tango:
        async with started(make_tango(tango.url, policy=policy)) as provider:
            for _ in range(4):
                await provider.funding_balance()
        assert tango.state.rate_limited == 0


# Whole amounts


async def test_an_item_requiring_whole_amounts_is_marked_on_its_reward() -> None:
    with running_fake_tango(rate_limit=None) as tango:
        async with started(make_tango(tango.url)) as provider:
            rewards = {reward.id: reward for reward in await provider.catalog()}
    assert rewards["U000002"].whole_amounts_only is True  # isWholeAmountValueRequired: true
    assert rewards["U000001"].whole_amounts_only is False  # false
    assert rewards["U000004"].whole_amounts_only is False  # not said


@pytest.mark.parametrize(("face_value", "allowed"), [("7.5", False), ("7.01", False), ("7", True), ("7.00", True)])
async def test_a_fractional_amount_of_a_whole_amount_item_is_refused_before_ordering(
    face_value: str, allowed: bool
) -> None:
    with running_fake_tango(rate_limit=None) as tango:
        async with started(make_tango(tango.url)) as provider:
            (reward,) = [reward for reward in await provider.catalog() if reward.id == "U000002"]
            request = RedeemRequest(
                user_id="u1", reward_id="U000002", face_value=Decimal(face_value), points=1, idempotency_key="k"
            )
            if allowed:
                assert validate(request, reward, provider="tango") is reward
                order = await provider.place_order(order_request("ref0401", "U000002", face_value))
                assert order.status is OrderStatus.FULFILLED  # Tango takes it: the rule refuses no more than Tango
            else:
                with pytest.raises(perr.InvalidFaceValue, match="not a face value of reward U000002"):
                    validate(request, reward, provider="tango")
        assert tango.state.api_requests.count(("POST", "/orders")) == (1 if allowed else 0)


@pytest.mark.parametrize(("flag", "expected"), [(True, True), (False, False), (None, False), ("yes", False)])
def test_an_odd_whole_amount_flag_does_not_break_the_catalog(flag: object, expected: bool) -> None:
    item = {"utid": "U1", "currencyCode": "USD", "valueType": "VARIABLE_VALUE", "isWholeAmountValueRequired": flag}

    parsed = wire.CatalogWire.model_validate({"brands": [{"brandName": "B", "items": [item]}]})

    assert parsed.brands[0].items[0].whole_amounts_only is expected


# Secrets


async def test_card_data_and_credentials_never_reach_logs_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with running_fake_tango(rate_limit=None) as tango:
        tango.fake.lose_next_order_answer()  # a retry, so the layer logs
        async with started(make_tango(tango.url)) as provider:
            order = await provider.place_order(order_request("ref0301"))
            found = await provider.find_order("ref0301")
            raw = httpx.get(f"{tango.url}/orders/{order.order_id}", auth=(PLATFORM_NAME, PLATFORM_KEY)).json()
    texts = [caplog.text, repr(order), repr(found), repr(order.gift_card), repr(provider), repr(provider.http),
             repr(wire.OrderWire.model_validate(raw)), str(wire.OrderWire.model_validate(raw))]  # fmt: skip
    assert "retrying" in caplog.text
    for secret in (CARD_CODE, CARD_PIN, CARD_URL, PLATFORM_KEY):
        for text in texts:
            assert secret not in text
