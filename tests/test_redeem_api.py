"""The `redeem` mutation over real HTTP: every outcome, idempotency, concurrency and durability."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from providers.base import DenominationKind, RedeemRequest, Reward, RewardAvailability
from providers.sandbox import is_failing
from providers.sql import create_engine
from resolvers.idempotency import ClaimState, IdempotencyStore
from resolvers.ids import encode_global_id
from resolvers.redeem import provider_idempotency_key, request_fingerprint
from tests.support import LiveServer, agql, gql, live_server, make_settings, operation, run_on_server_loop

REDEEM = operation("Redeem")
HISTORY = operation("History")
VIEWER_BALANCE = operation("ViewerBalance")
REDEMPTION = operation("Redemption")
CATALOG = operation("Catalog")

START = 2_000  # every new user's points: small, so a few redemptions exhaust it
PENDING_FOR_LONG = 60.0  # fulfilment delay that keeps redemptions PENDING for a whole test
AVAILABLE = RewardAvailability.AVAILABLE
# base64url("Reward:rw_9999") without padding: well-formed, but the catalog has no such reward.
UNKNOWN_REWARD_ID = base64.urlsafe_b64encode(b"Reward:rw_9999").rstrip(b"=").decode()


# Fixtures and helpers


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("redeem"),
        sandbox_starting_balance=START,
        sandbox_fulfilment_delay=PENDING_FOR_LONG,
        catalog_volatile_ttl=3600.0,  # the catalog cache stays stale for the whole module
    )
    with live_server(settings) as running:
        yield running


@pytest.fixture
def faults(server: LiveServer) -> Iterator[Any]:
    """The module server's fault injection, switched off again after the test."""
    yield server.provider.faults
    server.provider.faults.clear()


def new_user(server: LiveServer) -> str:
    """The token of a user no other test has touched."""
    return server.token(f"user-{uuid.uuid4().hex}")


def usd_rewards(
    server: LiveServer, kind: DenominationKind, availability: RewardAvailability = AVAILABLE
) -> list[Reward]:
    return [
        reward
        for reward in server.provider.catalog
        if reward.currency_code == "USD"
        and reward.denomination.kind is kind
        and reward.availability is availability
        and not is_failing(reward)
    ]


def fixed_reward(server: LiveServer) -> Reward:
    """An available USD reward with fixed face values, the smallest of them within a new user's points."""
    fixed = usd_rewards(server, DenominationKind.FIXED)
    return next(r for r in fixed if points(server, r.denomination.min_value) <= START)


def variable_reward(server: LiveServer) -> Reward:
    return next(r for r in usd_rewards(server, DenominationKind.VARIABLE) if r.denomination.min_value <= 3)


def gid(reward: Reward) -> str:
    return encode_global_id("Reward", reward.id)


def points(server: LiveServer, face_value: Decimal | str) -> int:
    return int(Decimal(face_value) * server.settings.points_per_unit["USD"])


def redeem_body(
    server: LiveServer, token: str | None, key: str, reward_id: str, face_value: Decimal | str
) -> dict[str, Any]:
    variables = {"input": {"clientMutationId": key, "rewardId": reward_id, "faceValue": str(face_value)}}
    return gql(server, REDEEM, variables, token=token)


def redeem(server: LiveServer, token: str, key: str, reward_id: str, face_value: Decimal | str) -> dict[str, Any]:
    body = redeem_body(server, token, key, reward_id, face_value)
    assert "errors" not in body, body
    return body["data"]["redeem"]


async def aredeem(
    client: httpx.AsyncClient, server: LiveServer, token: str, key: str, reward_id: str, face_value: Decimal | str
) -> dict[str, Any]:
    variables = {"input": {"clientMutationId": key, "rewardId": reward_id, "faceValue": str(face_value)}}
    body = await agql(client, server, REDEEM, variables, token=token)
    assert "errors" not in body, body
    return body["data"]["redeem"]


def provider_calls(server: LiveServer) -> int:
    """Every port call the provider has answered so far."""
    return sum(server.provider.calls.counts.values())


def codes(payload: dict[str, Any]) -> list[str]:
    return [error["code"] for error in payload["userErrors"]]


def available(server: LiveServer, token: str) -> int:
    body = gql(server, VIEWER_BALANCE, token=token)
    return body["data"]["viewer"]["balance"]["available"]


def redeem_transactions(server: LiveServer, token: str) -> list[dict[str, Any]]:
    body = gql(server, HISTORY, {"first": 100, "kinds": ["REDEEM"]}, token=token)
    return [edge["node"] for edge in body["data"]["viewer"]["history"]["edges"]]


def ledger(server: LiveServer, token: str) -> tuple[int, int]:
    """(available points, number of REDEEM transactions): what a debit changes."""
    return available(server, token), len(redeem_transactions(server, token))


def catalog_availability(server: LiveServer, reward: Reward) -> str:
    body = gql(server, CATALOG, {"first": 100, "filter": {"brand": reward.brand, "currencyCode": "USD"}})
    (node,) = [edge["node"] for edge in body["data"]["catalog"]["edges"] if edge["node"]["id"] == gid(reward)]
    return node["availability"]


def set_availability(server: LiveServer, reward: Reward, availability: RewardAvailability) -> None:
    async def change() -> None:
        server.provider.set_availability(reward.id, availability)

    run_on_server_loop(server, change())


def wait_for(condition: Any, *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


# Outcomes


def test_given_enough_points_when_redeeming_then_a_pending_redemption_comes_back_with_the_debited_balance(
    server: LiveServer,
) -> None:
    token, reward = new_user(server), fixed_reward(server)
    face_value = reward.denomination.min_value

    payload = redeem(server, token, "ok-1", gid(reward), face_value)

    cost = points(server, face_value)
    summary = {
        "errors": payload["userErrors"],
        "key": payload["clientMutationId"],
        "status": payload["redemption"]["status"],
        "points": payload["redemption"]["points"],
        "reward": payload["redemption"]["reward"]["id"],
        "faceValue": Decimal(payload["redemption"]["faceValue"]["amount"]),
        "available": payload["balance"]["available"],
        "pending": payload["balance"]["pending"],
    }
    assert summary == {
        "errors": [],
        "key": "ok-1",
        "status": "PENDING",
        "points": cost,
        "reward": gid(reward),
        "faceValue": face_value,
        "available": START - cost,
        "pending": cost,
    }


def test_given_a_successful_redemption_when_reading_history_then_it_shows_the_redeem_with_its_balance_after(
    server: LiveServer,
) -> None:
    token, reward = new_user(server), fixed_reward(server)
    face_value = reward.denomination.min_value
    payload = redeem(server, token, "ok-history", gid(reward), face_value)

    (transaction,) = redeem_transactions(server, token)

    cost = points(server, face_value)
    assert (transaction["points"], transaction["balanceAfter"], transaction["redemption"]["id"]) == (
        -cost,
        START - cost,
        payload["redemption"]["id"],
    )


def test_given_too_few_points_when_redeeming_then_insufficient_points_and_nothing_is_debited(
    server: LiveServer,
) -> None:
    token = new_user(server)
    reward = next(
        r for r in usd_rewards(server, DenominationKind.FIXED) if points(server, r.denomination.max_value) > START
    )

    payload = redeem(server, token, "too-dear", gid(reward), reward.denomination.max_value)

    assert (codes(payload), payload["redemption"], ledger(server, token)) == (["INSUFFICIENT_POINTS"], None, (START, 0))


def test_given_an_unknown_reward_id_when_redeeming_then_reward_not_found_on_the_reward_id(server: LiveServer) -> None:
    token = new_user(server)

    payload = redeem(server, token, "unknown", UNKNOWN_REWARD_ID, "10")

    error = payload["userErrors"][0]
    assert (error["code"], error["field"], payload["redemption"], ledger(server, token)) == (
        "REWARD_NOT_FOUND",
        ["input", "rewardId"],
        None,
        (START, 0),
    )


@pytest.mark.parametrize("availability", [RewardAvailability.OUT_OF_STOCK, RewardAvailability.DISCONTINUED])
def test_given_a_reward_that_is_not_available_when_redeeming_then_reward_unavailable_and_nothing_is_debited(
    server: LiveServer, availability: RewardAvailability
) -> None:
    token = new_user(server)
    reward = usd_rewards(server, DenominationKind.FIXED, availability)[0]

    payload = redeem(server, token, "unavailable", gid(reward), reward.denomination.min_value)

    assert (codes(payload), payload["redemption"], ledger(server, token)) == (["REWARD_UNAVAILABLE"], None, (START, 0))


FIXED_BAD_VALUES = {
    "not listed": "7",
    "too many decimals": "10.001",
}
VARIABLE_BAD_VALUES = {
    "above the maximum": "100000",
    "below the minimum": "0.50",
    "negative": "-5",
    "zero": "0",
    "too many decimals": "5.005",
}


@pytest.mark.parametrize(
    ("kind", "face_value"),
    [(DenominationKind.FIXED, value) for value in FIXED_BAD_VALUES.values()]
    + [(DenominationKind.VARIABLE, value) for value in VARIABLE_BAD_VALUES.values()],
    ids=[f"fixed {name}" for name in FIXED_BAD_VALUES] + [f"variable {name}" for name in VARIABLE_BAD_VALUES],
)
def test_given_a_face_value_the_reward_does_not_allow_when_redeeming_then_invalid_face_value_and_nothing_is_debited(
    server: LiveServer, kind: DenominationKind, face_value: str
) -> None:
    token = new_user(server)
    reward = next(
        r
        for r in usd_rewards(server, kind)
        if Decimal(face_value) not in r.denomination.face_values and r.denomination.min_value >= 1
    )

    payload = redeem(server, token, "bad-value", gid(reward), face_value)

    error = payload["userErrors"][0]
    assert (error["code"], error["field"], payload["redemption"], ledger(server, token)) == (
        "INVALID_FACE_VALUE",
        ["input", "faceValue"],
        None,
        (START, 0),
    )


@pytest.mark.parametrize("failing_call", ["get_rewards", "redeem"])
def test_given_the_provider_fails_when_redeeming_then_provider_unavailable_and_nothing_is_debited(
    server: LiveServer, faults: Any, failing_call: str
) -> None:
    token, reward = new_user(server), fixed_reward(server)
    faults.fail_next(failing_call)

    payload = redeem(server, token, "provider-down", gid(reward), reward.denomination.min_value)

    assert (codes(payload), payload["redemption"], ledger(server, token)) == (
        ["PROVIDER_UNAVAILABLE"],
        None,
        (START, 0),
    )


def test_given_provider_unavailable_when_retried_with_the_same_key_then_it_succeeds_with_exactly_one_debit(
    server: LiveServer, faults: Any
) -> None:
    token, reward = new_user(server), fixed_reward(server)
    face_value = reward.denomination.min_value
    faults.fail_next("redeem")
    first = redeem(server, token, "retry-after-outage", gid(reward), face_value)

    retry = redeem(server, token, "retry-after-outage", gid(reward), face_value)

    assert (codes(first), codes(retry), retry["redemption"]["status"], ledger(server, token)) == (
        ["PROVIDER_UNAVAILABLE"],
        [],
        "PENDING",
        (START - points(server, face_value), 1),
    )


# REWARD_UNAVAILABLE is decided by the provider, not the catalog cache


def test_given_the_cache_says_available_but_the_provider_does_not_when_redeeming_then_reward_unavailable(
    server: LiveServer,
) -> None:
    token = new_user(server)
    reward = usd_rewards(server, DenominationKind.FIXED)[-1]  # a reward no other test redeems
    catalog_availability(server, reward)  # warm the catalog cache while the reward is in stock
    set_availability(server, reward, RewardAvailability.OUT_OF_STOCK)
    try:
        assert catalog_availability(server, reward) == "AVAILABLE", "the catalog cache should still be stale"

        payload = redeem(server, token, "stale-cache", gid(reward), reward.denomination.min_value)
    finally:
        set_availability(server, reward, AVAILABLE)

    assert (codes(payload), ledger(server, token)) == (["REWARD_UNAVAILABLE"], (START, 0))


# Idempotency


def test_given_a_redemption_when_retried_with_the_same_key_and_input_then_the_very_same_payload_comes_back(
    server: LiveServer,
) -> None:
    token, reward = new_user(server), fixed_reward(server)
    first = redeem(server, token, "same-1", gid(reward), reward.denomination.min_value)

    retry = redeem(server, token, "same-1", gid(reward), reward.denomination.min_value)

    assert retry == first


def test_given_a_redemption_when_retried_with_the_same_key_and_input_then_nothing_is_debited_or_ordered_again(
    server: LiveServer,
) -> None:
    token, reward = new_user(server), fixed_reward(server)
    face_value = reward.denomination.min_value
    calls_before = server.provider.calls.get("redeem")
    redeem(server, token, "same-2", gid(reward), face_value)

    for _ in range(3):
        redeem(server, token, "same-2", gid(reward), face_value)

    assert (ledger(server, token), server.provider.calls.get("redeem") - calls_before) == (
        (START - points(server, face_value), 1),
        1,
    )


def test_given_a_redemption_when_retried_with_the_same_amount_written_differently_then_it_is_replayed(
    server: LiveServer,
) -> None:
    token, reward = new_user(server), fixed_reward(server)
    whole = reward.denomination.min_value.normalize()  # e.g. "5"
    first = redeem(server, token, "same-amount", gid(reward), f"{whole}")

    retry = redeem(server, token, "same-amount", gid(reward), f"{whole:.2f}")

    assert (codes(retry), retry["redemption"]["id"], ledger(server, token)[1]) == ([], first["redemption"]["id"], 1)


@pytest.mark.parametrize("changed", ["rewardId", "faceValue"])
def test_given_a_used_key_when_reused_with_different_input_then_idempotency_key_reused_and_no_side_effect(
    server: LiveServer, changed: str
) -> None:
    token, reward = new_user(server), fixed_reward(server)
    first_value, other_value = reward.denomination.face_values[:2]
    other_reward = usd_rewards(server, DenominationKind.FIXED)[1]
    redeem(server, token, "reused", gid(reward), first_value)
    before = ledger(server, token)
    calls_before = server.provider.calls.get("redeem")

    if changed == "rewardId":
        payload = redeem(server, token, "reused", gid(other_reward), other_reward.denomination.min_value)
    else:
        payload = redeem(server, token, "reused", gid(reward), other_value)

    assert (codes(payload), payload["redemption"], ledger(server, token), server.provider.calls.get("redeem")) == (
        ["IDEMPOTENCY_KEY_REUSED"],
        None,
        before,
        calls_before,
    )


@pytest.mark.anyio
async def test_given_twenty_concurrent_calls_with_one_key_then_exactly_one_redemption_is_made(
    server: LiveServer, faults: Any
) -> None:
    token, reward = new_user(server), fixed_reward(server)
    face_value = reward.denomination.min_value
    calls_before = server.provider.calls.get("redeem")
    faults.latency = 0.1  # keep the original running while the others arrive

    async with httpx.AsyncClient() as client:
        payloads = await asyncio.gather(
            *(aredeem(client, server, token, "double-click", gid(reward), face_value) for _ in range(20))
        )
    faults.clear()

    ids = {p["redemption"]["id"] for p in payloads if p["redemption"] is not None}
    other_codes = {code for p in payloads for code in codes(p)} - {"REDEMPTION_IN_PROGRESS"}
    assert (len(ids), other_codes, ledger(server, token), server.provider.calls.get("redeem") - calls_before) == (
        1,
        set(),
        (START - points(server, face_value), 1),
        1,
    )


@pytest.mark.anyio
async def test_given_concurrent_calls_with_one_key_when_the_original_ends_within_the_wait_then_all_get_its_payload(
    server: LiveServer, faults: Any
) -> None:
    token, reward = new_user(server), fixed_reward(server)
    faults.latency = 0.1  # well inside the 5 s the others wait

    async with httpx.AsyncClient() as client:
        payloads = await asyncio.gather(
            *(aredeem(client, server, token, "waits", gid(reward), reward.denomination.min_value) for _ in range(20))
        )
    faults.clear()

    assert all(payload == payloads[0] for payload in payloads) and codes(payloads[0]) == []


def test_given_two_users_when_they_use_the_same_key_then_each_gets_an_independent_redemption(
    server: LiveServer,
) -> None:
    alice, bob, reward = new_user(server), new_user(server), fixed_reward(server)
    face_value = reward.denomination.min_value

    for_alice = redeem(server, alice, "shared-key", gid(reward), face_value)
    for_bob = redeem(server, bob, "shared-key", gid(reward), face_value)

    debited = (START - points(server, face_value), 1)
    distinct = for_alice["redemption"]["id"] != for_bob["redemption"]["id"]
    assert (distinct, ledger(server, alice), ledger(server, bob)) == (True, debited, debited)


@pytest.mark.parametrize("rejection", ["INVALID_FACE_VALUE", "REWARD_NOT_FOUND", "INVALID_FACE_VALUE at the provider"])
def test_given_a_key_whose_input_was_rejected_when_reused_with_fixed_input_then_the_redemption_succeeds(
    server: LiveServer, rejection: str
) -> None:
    token = new_user(server)
    reward = variable_reward(server)
    face_value = reward.denomination.min_value
    bad_input = {
        "INVALID_FACE_VALUE": (gid(reward), "-1"),
        "REWARD_NOT_FOUND": (UNKNOWN_REWARD_ID, face_value),
        # Within the range, so only the provider's whole-cents rule rejects it.
        "INVALID_FACE_VALUE at the provider": (gid(reward), face_value + Decimal("0.001")),
    }[rejection]
    rejected = redeem(server, token, "fix-and-retry", *bad_input)

    fixed = redeem(server, token, "fix-and-retry", gid(reward), face_value)

    assert (codes(rejected), codes(fixed), ledger(server, token)) == (
        [rejection.split()[0]],
        [],
        (START - points(server, face_value), 1),
    )


def test_given_a_face_value_with_a_fraction_of_a_cent_when_redeeming_then_it_is_rejected_before_the_provider_is_called(
    server: LiveServer,
) -> None:
    token, reward = new_user(server), variable_reward(server)
    calls_before = server.provider.calls.get("redeem")

    payload = redeem(server, token, "sub-cent", gid(reward), reward.denomination.min_value + Decimal("0.005"))

    assert (codes(payload), server.provider.calls.get("redeem")) == (["INVALID_FACE_VALUE"], calls_before)


BAD_KEYS = {
    "empty": "",
    "256 characters": "k" * 256,
    "10,000 characters": "k" * 10_000,
    "non-ASCII": "clé-1",
    "a newline": "key\n1",
    "a tab": "key\t1",
    "a NUL": "key\x001",
    "DEL": "key\x7f",
}


@pytest.mark.parametrize("key", BAD_KEYS.values(), ids=BAD_KEYS.keys())
def test_given_a_malformed_client_mutation_id_when_redeeming_then_bad_user_input_and_no_state_change(
    server: LiveServer, key: str
) -> None:
    token, reward = new_user(server), fixed_reward(server)
    calls_before = provider_calls(server)

    body = redeem_body(server, token, key, gid(reward), reward.denomination.min_value)

    calls_after = provider_calls(server)
    assert ([e["extensions"]["code"] for e in body["errors"]], body["data"], calls_after, ledger(server, token)) == (
        ["BAD_USER_INPUT"],
        None,
        calls_before,
        (START, 0),
    )


def test_given_a_client_mutation_id_of_255_printable_characters_when_redeeming_then_it_succeeds(
    server: LiveServer,
) -> None:
    token, reward = new_user(server), fixed_reward(server)
    printable = "".join(chr(c) for c in range(0x20, 0x7F))  # space to tilde
    key = (printable * 3)[:255]

    payload = redeem(server, token, key, gid(reward), reward.denomination.min_value)

    assert (codes(payload), payload["clientMutationId"], payload["redemption"]["status"]) == ([], key, "PENDING")


def test_given_no_token_when_redeeming_then_unauthenticated_and_the_provider_is_not_called(server: LiveServer) -> None:
    reward = fixed_reward(server)
    calls_before = provider_calls(server)

    body = redeem_body(server, None, "anonymous", gid(reward), reward.denomination.min_value)

    calls_after = provider_calls(server)
    assert ([e["extensions"]["code"] for e in body["errors"]], body["data"], calls_after) == (
        ["UNAUTHENTICATED"],
        None,
        calls_before,
    )


# Concurrent redemptions by one user


@pytest.mark.anyio
async def test_given_fifty_concurrent_redemptions_that_the_balance_only_partly_covers_then_it_never_goes_negative(
    server: LiveServer,
) -> None:
    token, reward = new_user(server), variable_reward(server)
    face_value = Decimal("3.00")
    cost = points(server, face_value)

    async with httpx.AsyncClient() as client:
        payloads = await asyncio.gather(
            *(aredeem(client, server, token, f"burst-{i}", gid(reward), face_value) for i in range(50))
        )

    outcomes = Counter(codes(p)[0] if p["userErrors"] else "OK" for p in payloads)
    final, redeemed = ledger(server, token)
    balances_after = [t["balanceAfter"] for t in redeem_transactions(server, token)]
    assert {
        "outcomes": outcomes,
        "final": final,
        "redeem transactions": redeemed,
        "lowest balance after": min(balances_after),
    } == {
        "outcomes": {"OK": START // cost, "INSUFFICIENT_POINTS": 50 - START // cost},
        "final": START - (START // cost) * cost,
        "redeem transactions": START // cost,
        "lowest balance after": START - (START // cost) * cost,
    }


# Durability across a restart


def test_given_a_redemption_when_the_server_restarts_then_a_retry_with_the_key_replays_it_without_a_new_debit(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, sandbox_starting_balance=START, sandbox_fulfilment_delay=PENDING_FOR_LONG)
    with live_server(settings) as first_server:
        token, reward = new_user(first_server), fixed_reward(first_server)
        original = redeem(first_server, token, "survives-restart", gid(reward), reward.denomination.min_value)

    with live_server(settings) as second_server:
        retry = redeem(second_server, token, "survives-restart", gid(reward), reward.denomination.min_value)
        after = (ledger(second_server, token), second_server.provider.calls.get("redeem"))

    assert (retry["redemption"]["id"], retry["balance"], after) == (
        original["redemption"]["id"],
        original["balance"],
        ((START - points(second_server, reward.denomination.min_value), 1), 0),
    )


def test_given_a_redemption_pending_at_shutdown_when_the_server_restarts_then_it_is_fulfilled(tmp_path: Path) -> None:
    with live_server(make_settings(tmp_path, sandbox_fulfilment_delay=PENDING_FOR_LONG)) as first_server:
        token, reward = new_user(first_server), fixed_reward(first_server)
        original = redeem(first_server, token, "pending-at-shutdown", gid(reward), reward.denomination.min_value)
    with sqlite3.connect(tmp_path / "sandbox.db") as db:
        (status_at_shutdown,) = db.execute("SELECT status FROM redemptions").fetchone()
    assert status_at_shutdown == "PENDING"

    with live_server(make_settings(tmp_path, sandbox_fulfilment_delay=0.2)) as second_server:

        def redemption() -> dict[str, Any]:
            return gql(second_server, REDEMPTION, {"id": original["redemption"]["id"]}, token=token)["data"]["node"]

        wait_for(lambda: redemption()["status"] != "PENDING")
        settled = redemption()

    assert (settled["status"], settled["giftCard"]["code"] is not None) == ("FULFILLED", True)


# A retry racing a slow original, and one taking over a crashed attempt


@pytest.mark.anyio
async def test_given_the_original_outlasts_the_bounded_wait_when_retried_then_in_progress_and_later_its_payload(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, sandbox_starting_balance=START, idempotency_wait_seconds=0.3)
    with live_server(settings) as server:
        token, reward = new_user(server), fixed_reward(server)
        face_value = reward.denomination.min_value
        server.provider.faults.latency = 0.5  # the original holds its key for over a second
        lookups_before = server.provider.calls.get("get_rewards")
        async with httpx.AsyncClient() as client:
            original = asyncio.create_task(aredeem(client, server, token, "slow", gid(reward), face_value))
            while server.provider.calls.get("get_rewards") == lookups_before:  # the original holds the key
                await asyncio.sleep(0.01)
            racing = await aredeem(client, server, token, "slow", gid(reward), face_value)
            first = await original
        server.provider.faults.clear()
        later = redeem(server, token, "slow", gid(reward), face_value)
        debits = ledger(server, token)

    assert (codes(racing), codes(first), later, debits) == (
        ["REDEMPTION_IN_PROGRESS"],
        [],
        first,
        (START - points(server, face_value), 1),
    )


def test_given_a_crashed_attempt_that_reached_the_provider_when_retried_after_its_lease_then_no_second_debit(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, sandbox_starting_balance=START, idempotency_lease_seconds=0.5)
    with live_server(settings) as server:
        user_id = f"user-{uuid.uuid4().hex}"
        token, reward = server.token(user_id), fixed_reward(server)
        face_value = reward.denomination.min_value

        async def crashed_attempt() -> tuple[ClaimState, str]:
            # What a process that died mid-redeem leaves behind: a claim in progress, never
            # completed, and the provider's redemption under the key derived from it.
            engine = create_engine(settings.gateway_database_url, logging_name="crashed-attempt")
            store = IdempotencyStore(engine, ttl_seconds=86_400, lease_seconds=settings.idempotency_lease_seconds)
            try:
                claim = await store.claim(user_id, "crashed", request_fingerprint(reward.id, face_value))
            finally:
                await engine.dispose()
            result = await server.provider.redeem(
                RedeemRequest(
                    user_id=user_id,
                    reward_id=reward.id,
                    face_value=face_value,
                    points=points(server, face_value),
                    idempotency_key=provider_idempotency_key(user_id, "crashed"),
                )
            )
            return claim.state, encode_global_id("Redemption", result.redemption.id)

        claim_state, crashed_redemption_id = run_on_server_loop(server, crashed_attempt())

        retry = redeem(server, token, "crashed", gid(reward), face_value)
        debits = ledger(server, token)

    assert (claim_state, codes(retry), retry["redemption"]["id"], debits) == (
        ClaimState.ACQUIRED,
        [],
        crashed_redemption_id,
        (START - points(server, face_value), 1),
    )
