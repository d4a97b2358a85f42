"""`RestProvider` over httpx.MockTransport: requests it sends, responses it maps, bodies it refuses; the factory."""

from __future__ import annotations

import json
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from giftgraph.rest import provider_auth, rest_provider
from giftgraph.settings import ConfigurationError
from providers.base import (
    Balance,
    GiftCard,
    RedeemRequest,
    Redemption,
    RedemptionStatus,
    Transaction,
    TransactionKind,
)
from providers.errors import (
    IdempotencyConflict,
    InsufficientPoints,
    ProviderError,
    ProviderMalformedResponse,
    ProviderUnavailable,
    RedemptionOutcomeUnknown,
)
from providers.events import BalanceChanged, EventHub, ProviderEvent, RedemptionUpdated
from providers.http import ApiKeyAuth, ClientCredentialsAuth, HttpPolicy, ProviderHttpClient
from providers.rest import contract
from providers.rest.adapter import RestProvider
from providers.sandbox import build_catalog
from tests.support import make_settings

pytestmark = pytest.mark.anyio

BASE_URL = "http://provider.test"
CATALOG = build_catalog(7, 30)
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CARD_CODE = "CARD-CODE-SECRET-1234"
Handler = Callable[[httpx.Request], httpx.Response]


# Helpers


class Recorder:
    """A MockTransport handler answering from a function, keeping every request it saw."""

    def __init__(self, answer: Handler) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


def ok(body: Any, status: int = 200) -> Handler:
    return lambda request: httpx.Response(status, json=body)


@asynccontextmanager
async def rest(
    answer: Handler, *, events: EventHub | None = None, attempts: int = 1
) -> AsyncIterator[tuple[RestProvider, Recorder]]:
    recorder = Recorder(answer)
    http = ProviderHttpClient(
        provider="rest",
        base_url=BASE_URL,
        auth=ApiKeyAuth("key", "secret"),
        # One attempt, no limiter: these tests are about mapping, the layer's own tests cover retries.
        policy=HttpPolicy(retry_attempts=attempts, retry_base_delay=0, rate_limit_per_second=0),
        transport=httpx.MockTransport(recorder),
    )
    provider = RestProvider(http=http, events=events or EventHub())
    await provider.start()
    try:
        yield provider, recorder
    finally:
        await provider.aclose()


def transaction(position: int, *, user_id: str = "u1", kind: TransactionKind = TransactionKind.EARN) -> Transaction:
    return Transaction(
        id=f"tx_{position}",
        position=position,
        user_id=user_id,
        kind=kind,
        points=100,
        balance_after=100 * position,
        description="Welcome",
        created_at=NOW,
    )


def redemption(*, user_id: str = "u1", reward_id: str | None = None, card: bool = False) -> Redemption:
    return Redemption(
        id="rd_1",
        user_id=user_id,
        reward_id=reward_id or CATALOG[0].id,
        face_value=Decimal("25.00"),
        currency_code="USD",
        points=2500,
        status=RedemptionStatus.FULFILLED if card else RedemptionStatus.PENDING,
        gift_card=GiftCard(code=CARD_CODE, pin="9876", claim_url=None, expires_at=None) if card else None,
        failure_reason=None,
        created_at=NOW,
        updated_at=NOW,
    )


def balance(user_id: str = "u1", available: int = 7500) -> Balance:
    return Balance(user_id=user_id, available=available, pending=2500, updated_at=NOW)


def redeem_request(key: str = "key-1") -> RedeemRequest:
    return RedeemRequest(
        user_id="u1", reward_id=CATALOG[0].id, face_value=Decimal("25.00"), points=2500, idempotency_key=key
    )


def redeem_body(*, replayed: bool = False, **kwargs: Any) -> dict[str, Any]:
    return contract.RedeemResultWire(
        redemption=contract.RedemptionWire.of(redemption(**kwargs)),
        balance=contract.BalanceWire.of(balance()),
        replayed=replayed,
    ).model_dump(mode="json")


def wire(model: Any) -> Any:
    return json.loads(model.model_dump_json())


def drain(queue: Any) -> list[ProviderEvent]:
    events = []
    while not queue.empty():
        events.append(queue.get_nowait())
    return events


# Reads: requests and mapping


async def test_list_rewards_sends_cursor_and_limit_and_maps_the_page() -> None:
    page = contract.RewardPageWire(items=[contract.RewardWire.of(r) for r in CATALOG[3:5]], next_cursor=CATALOG[4].id)
    async with rest(ok(wire(page))) as (provider, recorder):
        result = await provider.list_rewards(cursor=CATALOG[2].id, limit=2)

    assert result.items == CATALOG[3:5]
    assert result.next_cursor == CATALOG[4].id
    (request,) = recorder.requests
    assert request.method == "GET"
    assert request.url.path == "/v1/rewards"
    assert dict(request.url.params) == {"cursor": CATALOG[2].id, "limit": "2"}


@pytest.mark.parametrize(("asked", "sent"), [(500, "100"), (0, "1"), (-3, "1")])
async def test_list_rewards_clamps_the_page_size_like_the_embedded_sandbox(asked: int, sent: str) -> None:
    async with rest(ok({"items": [], "next_cursor": None})) as (provider, recorder):
        await provider.list_rewards(cursor=None, limit=asked)

    assert recorder.requests[0].url.params.get("limit") == sent
    assert "cursor" not in recorder.requests[0].url.params


async def test_get_rewards_keeps_order_and_unknown_ids_as_none() -> None:
    ids = [CATALOG[5].id, "nope", CATALOG[1].id]
    body = {"items": [wire(contract.RewardWire.of(CATALOG[5])), None, wire(contract.RewardWire.of(CATALOG[1]))]}
    async with rest(ok(body)) as (provider, recorder):
        result = await provider.get_rewards(ids)

    assert result == [CATALOG[5], None, CATALOG[1]]
    assert recorder.requests[0].url.path == "/v1/rewards/batch"
    assert recorder.requests[0].url.params.get_list("id") == ids


async def test_batch_lookups_are_chunked_at_the_contract_maximum() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"items": [None] * len(request.url.params.get_list("id"))})

    ids = [f"id_{n}" for n in range(2 * contract.MAX_BATCH + 50)]
    async with rest(answer) as (provider, recorder):
        result = await provider.get_redemptions(ids)

    assert result == [None] * len(ids)
    sent = [request.url.params.get_list("id") for request in recorder.requests]
    assert [len(chunk) for chunk in sent] == [contract.MAX_BATCH, contract.MAX_BATCH, 50]
    assert [i for chunk in sent for i in chunk] == ids
    assert provider.calls.get("get_redemptions") == 1  # one port call, whatever the number of requests


@pytest.mark.parametrize("operation", ["get_rewards", "get_balances", "get_transactions", "get_redemptions"])
async def test_empty_batch_answers_without_a_request(operation: str) -> None:
    async with rest(ok({})) as (provider, recorder):
        assert await getattr(provider, operation)([]) == []

    assert recorder.requests == []
    assert provider.calls.get(operation) == 1


async def test_get_balances_maps_each_user() -> None:
    body = {"items": [wire(contract.BalanceWire.of(balance("u2", 5))), wire(contract.BalanceWire.of(balance("u1")))]}
    async with rest(ok(body)) as (provider, recorder):
        result = await provider.get_balances(["u2", "u1"])

    assert result == [balance("u2", 5), balance("u1")]
    assert recorder.requests[0].url.path == "/v1/balances"
    assert recorder.requests[0].url.params.get_list("user_id") == ["u2", "u1"]


async def test_get_redemptions_and_transactions_map_cards_and_links() -> None:
    card = redemption(card=True)
    tx = transaction(3, kind=TransactionKind.REDEEM)
    answers = {
        "/v1/redemptions/batch": {"items": [wire(contract.RedemptionWire.of(card))]},
        "/v1/transactions/batch": {"items": [wire(contract.TransactionWire.of(tx)), None]},
    }
    async with rest(lambda request: httpx.Response(200, json=answers[request.url.path])) as (provider, _):
        assert await provider.get_redemptions(["rd_1"]) == [card]
        assert await provider.get_transactions(["tx_3", "tx_9"]) == [tx, None]


async def test_list_transactions_sends_the_window_and_kinds() -> None:
    page = contract.TransactionPageWire(
        items=[contract.TransactionWire.of(transaction(p)) for p in (7, 6)], total_count=9, has_more=True
    )
    async with rest(ok(wire(page))) as (provider, recorder):
        result = await provider.list_transactions(
            "u1",
            kinds=frozenset({TransactionKind.REFUND, TransactionKind.EARN}),
            older_than=8,
            newer_than=2,
            limit=2,
            from_oldest=True,
        )

    assert result.items == (transaction(7), transaction(6))
    assert (result.total_count, result.has_more) == (9, True)
    params = recorder.requests[0].url.params
    assert recorder.requests[0].url.path == "/v1/transactions"
    assert params.get_list("kind") == ["EARN", "REFUND"]
    assert {key: params[key] for key in ("user_id", "older_than", "newer_than", "limit", "from_oldest")} == {
        "user_id": "u1",
        "older_than": "8",
        "newer_than": "2",
        "limit": "2",
        "from_oldest": "true",
    }


async def test_list_transactions_without_filters_sends_only_user_and_limit() -> None:
    async with rest(ok({"items": [], "total_count": 0, "has_more": False})) as (provider, recorder):
        await provider.list_transactions("u1", kinds=None, older_than=None, newer_than=None, limit=5)

    assert dict(recorder.requests[0].url.params) == {"user_id": "u1", "limit": "5"}


async def test_list_transactions_with_no_kinds_matches_nothing_without_a_request() -> None:
    async with rest(ok({})) as (provider, recorder):
        page = await provider.list_transactions("u1", kinds=frozenset(), older_than=None, newer_than=None, limit=5)

    assert (page.items, page.total_count, page.has_more) == ((), 0, False)
    assert recorder.requests == []


async def test_check_asks_the_health_route() -> None:
    async with rest(ok({"status": "ok"})) as (provider, recorder):
        await provider.check()

    assert recorder.requests[0].url.path == "/v1/health"
    assert provider.calls.get("check") == 1


async def test_check_refuses_a_health_answer_that_is_not_ok() -> None:
    async with rest(ok({"status": "degraded"})) as (provider, _):
        with pytest.raises(ProviderMalformedResponse):
            await provider.check()


# Reads: bodies refused


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("list_rewards", {"items": "nope", "next_cursor": None}),
        ("list_rewards", {"items": [{"id": "r1"}], "next_cursor": None}),
        ("list_rewards", [1, 2, 3]),
        ("get_rewards", {"item": []}),
        ("get_balances", {"items": [{"user_id": "u1", "available": "lots", "pending": 0, "updated_at": "x"}]}),
        ("get_balances", {"items": [None]}),
        ("get_transactions", {"items": [{"id": "tx_1", "kind": "STEAL"}]}),
        ("get_redemptions", {"items": [{"id": "rd_1", "status": "DONE"}]}),
        ("list_transactions", {"items": [], "total_count": -1, "has_more": False}),
        ("list_transactions", None),
    ],
)
async def test_a_body_of_the_wrong_shape_is_a_malformed_response(operation: str, body: Any) -> None:
    async with rest(ok(body)) as (provider, _):
        with pytest.raises(ProviderMalformedResponse) as caught:
            await call(provider, operation, ["id_1"])

    assert caught.value.provider == "rest"
    assert isinstance(caught.value, ProviderError)


@pytest.mark.parametrize(
    ("operation", "field", "value"),
    [
        ("get_balances", "available", 2**31),
        ("get_balances", "available", -(2**31) - 1),
        ("get_balances", "pending", 2**31),
        ("get_transactions", "points", 2**31),
        ("get_transactions", "points", -(2**31) - 1),
        ("get_transactions", "balance_after", 10**30),
        ("get_redemptions", "points", 2**31),
    ],
)
async def test_a_point_count_past_graphql_int_is_a_malformed_response(operation: str, field: str, value: int) -> None:
    item = {**BATCH_ITEMS[operation]("id_1"), field: value}
    async with rest(ok({"items": [item]})) as (provider, _):
        with pytest.raises(ProviderMalformedResponse, match=field):
            await call(provider, operation, ["id_1"])


@pytest.mark.parametrize("value", [2**31 - 1, -(2**31)])
async def test_a_point_count_at_the_edge_of_graphql_int_is_passed_on(value: int) -> None:
    item = {**BATCH_ITEMS["get_transactions"]("id_1"), "points": value, "balance_after": value}
    async with rest(ok({"items": [item]})) as (provider, _):
        (found,) = await provider.get_transactions(["id_1"])
    assert found is not None and (found.points, found.balance_after) == (value, value)


async def test_a_total_count_past_graphql_int_is_a_malformed_response() -> None:
    async with rest(ok({"items": [], "total_count": 2**31, "has_more": False})) as (provider, _):
        with pytest.raises(ProviderMalformedResponse, match="total_count"):
            await call(provider, "list_transactions", [])


async def call(provider: RestProvider, operation: str, ids: list[str]) -> Any:
    if operation == "list_rewards":
        return await provider.list_rewards(cursor=None, limit=10)
    if operation == "list_transactions":
        return await provider.list_transactions("u1", kinds=None, older_than=None, newer_than=None, limit=10)
    return await getattr(provider, operation)(ids)


BATCH_ITEMS: dict[str, Callable[[str], Any]] = {
    "get_rewards": lambda i: {**wire(contract.RewardWire.of(CATALOG[0])), "id": i},
    "get_balances": lambda i: wire(contract.BalanceWire.of(balance(i))),
    "get_transactions": lambda i: {**wire(contract.TransactionWire.of(transaction(1))), "id": i},
    "get_redemptions": lambda i: {**wire(contract.RedemptionWire.of(redemption())), "id": i},
}


@pytest.mark.parametrize("operation", sorted(BATCH_ITEMS))
async def test_a_batch_with_too_few_items_is_malformed(operation: str) -> None:
    body = {"items": [BATCH_ITEMS[operation]("a")]}
    async with rest(ok(body)) as (provider, _):
        with pytest.raises(ProviderMalformedResponse, match="1 items for 2 ids"):
            await getattr(provider, operation)(["a", "b"])


@pytest.mark.parametrize("operation", sorted(BATCH_ITEMS))
async def test_a_batch_in_another_order_is_malformed(operation: str) -> None:
    body = {"items": [BATCH_ITEMS[operation]("b"), BATCH_ITEMS[operation]("a")]}
    async with rest(ok(body)) as (provider, _):
        with pytest.raises(ProviderMalformedResponse, match="order"):
            await getattr(provider, operation)(["a", "b"])


async def test_a_page_longer_than_asked_is_malformed() -> None:
    page = contract.RewardPageWire(items=[contract.RewardWire.of(r) for r in CATALOG[:3]], next_cursor=None)
    async with rest(ok(wire(page))) as (provider, _):
        with pytest.raises(ProviderMalformedResponse, match="3 rewards for a page of 2"):
            await provider.list_rewards(cursor=None, limit=2)


@pytest.mark.parametrize(
    ("items", "problem"),
    [
        ([transaction(5), transaction(4), transaction(3)], "for a page of 2"),
        ([transaction(5, user_id="u2")], "another user"),
        ([transaction(4), transaction(5)], "newest first"),
        ([transaction(5), transaction(5)], "newest first"),
        ([transaction(9)], "outside the window"),
        ([transaction(1)], "outside the window"),
        ([transaction(5, kind=TransactionKind.REDEEM)], "kind"),
    ],
)
async def test_a_transaction_page_that_breaks_the_request_is_malformed(items: list[Transaction], problem: str) -> None:
    page = contract.TransactionPageWire(
        items=[contract.TransactionWire.of(item) for item in items], total_count=len(items), has_more=False
    )
    async with rest(ok(wire(page))) as (provider, _):
        with pytest.raises(ProviderMalformedResponse, match=problem):
            await provider.list_transactions(
                "u1", kinds=frozenset({TransactionKind.EARN}), older_than=8, newer_than=2, limit=2
            )


async def test_a_malformed_error_never_repeats_a_gift_card() -> None:
    body = {"items": [{**wire(contract.RedemptionWire.of(redemption(card=True))), "points": "many"}]}
    async with rest(ok(body)) as (provider, _):
        with pytest.raises(ProviderMalformedResponse) as caught:
            await provider.get_redemptions(["rd_1"])

    logged = "".join(traceback.format_exception(caught.value))  # what a logger would print
    assert "points" in str(caught.value)
    assert CARD_CODE not in logged and "9876" not in logged


# Redemption


async def test_redeem_posts_the_request_with_its_idempotency_key_and_publishes() -> None:
    events = EventHub()
    async with events.subscribe("u1") as queue, rest(ok(redeem_body(), status=201), events=events) as (provider, rec):
        result = await provider.redeem(redeem_request("key-42"))
        published = drain(queue)

    (request,) = rec.requests
    assert (request.method, request.url.path) == ("POST", "/v1/redemptions")
    assert request.headers[contract.IDEMPOTENCY_HEADER] == "key-42"
    assert json.loads(request.content) == {
        "user_id": "u1",
        "reward_id": CATALOG[0].id,
        "face_value": "25.00",
        "points": 2500,
    }
    assert (result.redemption, result.balance, result.replayed) == (redemption(), balance(), False)
    assert published == [
        BalanceChanged(user_id="u1", balance=balance()),
        RedemptionUpdated(user_id="u1", redemption=redemption()),
    ]


async def test_a_replayed_redemption_is_reported_and_still_published() -> None:
    # The original's answer may have been lost: the replay can be the first this gateway hears of it.
    events = EventHub()
    async with events.subscribe("u1") as queue, rest(ok(redeem_body(replayed=True)), events=events) as (provider, _):
        result = await provider.redeem(redeem_request())
        published = drain(queue)

    assert result.replayed is True
    assert [type(event) for event in published] == [BalanceChanged, RedemptionUpdated]


async def test_a_refused_redemption_passes_the_port_error_on_and_publishes_nothing() -> None:
    events = EventHub()
    body = contract.error_body("insufficient_points", "not enough")
    async with events.subscribe("u1") as queue, rest(ok(body, status=402), events=events) as (provider, _):
        with pytest.raises(InsufficientPoints):
            await provider.redeem(redeem_request())
        assert drain(queue) == []


@pytest.mark.parametrize(
    "answer",
    [
        ok({"redemption": {"id": "rd_1"}}, status=201),  # the provider committed, the body is unusable
        ok(redeem_body(user_id="someone-else"), status=201),  # a result for another request
        ok({"error": {"code": "unavailable", "message": "down"}}, status=503),  # may have reached the provider
    ],
    ids=["malformed", "not-the-request", "503"],
)
async def test_a_redemption_that_may_have_committed_has_an_unknown_outcome(answer: Handler) -> None:
    events = EventHub()
    async with events.subscribe("u1") as queue, rest(answer, events=events) as (provider, _):
        with pytest.raises(RedemptionOutcomeUnknown) as caught:
            await provider.redeem(redeem_request("key-7"))
        assert drain(queue) == []

    assert caught.value.idempotency_key == "key-7"
    assert caught.value.maybe_committed is True


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (402, "insufficient_points", InsufficientPoints),
        (409, "idempotency_conflict", IdempotencyConflict),
        (401, "authentication_failed", RedemptionOutcomeUnknown),
    ],
)
async def test_after_an_unanswered_attempt_only_a_refusal_of_the_key_is_definitive(
    status: int, code: str, expected: type[ProviderError]
) -> None:
    # A provider that had committed the first attempt would replay it: a refusal proves it did not.
    # Any other failure (here the credentials) leaves the first attempt's outcome unknown.
    answers = iter([(503, "unavailable"), (status, code)])

    def answer(request: httpx.Request) -> httpx.Response:
        status, code = next(answers)
        return httpx.Response(status, json=contract.error_body(code, "no"))

    async with rest(answer, attempts=2) as (provider, recorder):
        with pytest.raises(expected):
            await provider.redeem(redeem_request())

    assert len(recorder.requests) == 2


async def test_a_redemption_that_never_left_is_unavailable_not_unknown() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with rest(refuse) as (provider, _):
        with pytest.raises(ProviderUnavailable) as caught:
            await provider.redeem(redeem_request())

    assert not isinstance(caught.value, RedemptionOutcomeUnknown)


async def test_port_calls_are_counted_like_the_embedded_sandbox() -> None:
    async with rest(ok({"items": [], "next_cursor": None})) as (provider, _):
        await provider.list_rewards(cursor=None, limit=5)
        await provider.list_rewards(cursor=None, limit=5)

    assert provider.calls.counts == {"list_rewards": 2}


# The factory


def rest_settings(tmp_path: Path, **overrides: Any) -> Any:
    values: dict[str, Any] = {"provider": "rest", "provider_base_url": "http://127.0.0.1:9"}
    values.update(overrides)
    return make_settings(tmp_path, **values)


@pytest.mark.parametrize(
    ("overrides", "missing"),
    [
        ({"provider_api_key": "k"}, "GIFTGRAPH_PROVIDER_API_SECRET"),
        ({"provider_api_secret": "s3cr3t-value"}, "GIFTGRAPH_PROVIDER_API_KEY"),
        ({"provider_auth": "oauth2", "provider_client_id": "c"}, "GIFTGRAPH_PROVIDER_CLIENT_SECRET"),
        ({"provider_auth": "oauth2", "provider_client_secret": "s3cr3t-value"}, "GIFTGRAPH_PROVIDER_CLIENT_ID"),
        ({"provider_base_url": "https://rewards.example.com"}, "GIFTGRAPH_PROVIDER_API_KEY"),
        ({"env": "production", "provider_base_url": "http://127.0.0.1:9"}, "GIFTGRAPH_PROVIDER_API_KEY"),
    ],
    ids=["no-secret", "no-key", "no-client-secret", "no-client-id", "remote", "production"],
)
def test_missing_credentials_name_the_setting_never_a_value(tmp_path: Path, overrides: dict, missing: str) -> None:
    settings = rest_settings(tmp_path, **overrides)
    with pytest.raises(ConfigurationError, match=missing) as caught:
        rest_provider(settings, EventHub())

    assert "s3cr3t-value" not in str(caught.value)
    assert not (tmp_path / "sandbox-credentials.json").exists()


def test_a_loopback_provider_in_development_shares_the_sandbox_credentials(tmp_path: Path) -> None:
    from providers.sandbox.credentials import load_or_create

    shared = load_or_create(tmp_path / "sandbox-credentials.json")
    for mode, expected in (("api_key", ApiKeyAuth), ("oauth2", ClientCredentialsAuth)):
        settings = rest_settings(tmp_path, provider_auth=mode)
        auth = provider_auth(settings, "http://127.0.0.1:9")
        assert isinstance(auth, expected)
    assert load_or_create(tmp_path / "sandbox-credentials.json") == shared


async def test_configured_credentials_and_policy_reach_the_wire(tmp_path: Path) -> None:
    settings = rest_settings(
        tmp_path,
        provider_api_key="key-1",
        provider_api_secret="secret-1",
        provider_read_timeout=0.7,
        provider_base_url="https://rewards.example.com/",
    )
    provider = rest_provider(settings, EventHub())

    assert provider.name == "rest"
    assert provider.http.policy.read_timeout == 0.7
    request = next(provider_auth(settings, "https://rewards.example.com").auth_flow(httpx.Request("GET", BASE_URL)))
    expected = next(httpx.BasicAuth("key-1", "secret-1").auth_flow(httpx.Request("GET", BASE_URL)))
    assert request.headers["Authorization"] == expected.headers["Authorization"]
