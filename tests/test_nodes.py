"""Relay node refetching over real HTTP: rewards for anyone, transactions and redemptions for their owner only."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from providers import DenominationKind, RewardAvailability
from providers.sandbox import is_failing
from resolvers.ids import encode_global_id
from tests.support import LiveServer, gql, live_server, make_settings, operation, post, without_extensions

CATALOG = operation("Catalog")
REWARD_DETAIL = operation("RewardDetail")
REDEEM = operation("Redeem")
REDEMPTION = operation("Redemption")
HISTORY = operation("History")

OWNER, STRANGER = "node-owner", "node-stranger"

NODE_IDS = "query Node($id: ID!) { node(id: $id) { __typename id } }"
NODES_IDS = "query Nodes($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }"
TRANSACTION = """
query Transaction($id: ID!) {
  node(id: $id) {
    id
    ... on Transaction { kind points balanceAfter description createdAt redemption { id } }
  }
}
"""
NODES_WITH_SECRETS = """
query Nodes($ids: [ID!]!) {
  nodes(ids: $ids) {
    id
    ... on Redemption { status giftCard { code pin claimUrl } }
    ... on Transaction { redemption { id giftCard { code pin claimUrl } } }
  }
}
"""


@dataclass(frozen=True)
class Fulfilled:
    """The owner's fulfilled redemption, the REDEEM transaction that paid for it, and the card's secrets."""

    redemption_id: str
    transaction_id: str
    earn_transaction_id: str
    secrets: tuple[str, str, str]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path_factory.mktemp("nodes"), sandbox_fulfilment_delay=0.2)
    with live_server(settings) as running:
        yield running


@pytest.fixture(scope="module")
def fulfilled(server: LiveServer) -> Fulfilled:
    reward = next(
        r
        for r in server.provider.catalog
        if r.availability is RewardAvailability.AVAILABLE
        and r.denomination.kind is DenominationKind.FIXED
        and r.currency_code == "USD"
        and not is_failing(r)
    )
    token = server.token(OWNER)
    payload = gql(
        server,
        REDEEM,
        {
            "input": {
                "clientMutationId": "node-test-1",
                "rewardId": encode_global_id("Reward", reward.id),
                "faceValue": str(reward.denomination.min_value),
            }
        },
        token=token,
    )["data"]["redeem"]
    assert payload["userErrors"] == [], payload
    redemption_id = payload["redemption"]["id"]
    redemption = wait_until_fulfilled(server, redemption_id, token)
    card = redemption["giftCard"]
    history = gql(server, HISTORY, {"first": 10}, token=token)["data"]["viewer"]["history"]["edges"]
    by_kind = {edge["node"]["kind"]: edge["node"]["id"] for edge in history}
    return Fulfilled(
        redemption_id=redemption_id,
        transaction_id=by_kind["REDEEM"],
        earn_transaction_id=by_kind["EARN"],
        secrets=(card["code"], card["pin"], card["claimUrl"]),
    )


def wait_until_fulfilled(server: LiveServer, redemption_id: str, token: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        node = gql(server, REDEMPTION, {"id": redemption_id}, token=token)["data"]["node"]
        if node["status"] == "FULFILLED":
            return node
        assert node["status"] == "PENDING" and time.monotonic() < deadline, node
        time.sleep(0.05)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def first_rewards(server: LiveServer, count: int) -> list[dict[str, Any]]:
    body = gql(server, CATALOG, {"first": count})
    return [edge["node"] for edge in body["data"]["catalog"]["edges"]]


def assert_bad_user_input(body: dict[str, Any], field: str) -> None:
    assert body["data"] is None or body["data"][field] is None, body
    assert [error["extensions"]["code"] for error in body["errors"]] == ["BAD_USER_INPUT"], body


# Rewards


def test_given_a_catalog_reward_id_when_refetched_with_node_then_the_same_reward_comes_back(
    server: LiveServer,
) -> None:
    card = first_rewards(server, 3)[2]

    node = gql(server, REWARD_DETAIL, {"id": card["id"], "faceValue": "1"})["data"]["node"]

    assert {key: node[key] for key in card} == card


def test_given_reward_ids_and_unknown_ids_when_refetched_with_nodes_then_order_is_kept_and_unknown_are_null(
    server: LiveServer,
) -> None:
    a, b, c = (card["id"] for card in first_rewards(server, 3))
    unknown = [encode_global_id("Reward", "rw_9999"), encode_global_id("Transaction", "tx_nope")]

    nodes = gql(server, NODES_IDS, {"ids": [c, unknown[0], a, unknown[1], b]}, token=server.token(OWNER))

    assert without_extensions(nodes) == {
        "data": {
            "nodes": [
                {"__typename": "Reward", "id": c},
                None,
                {"__typename": "Reward", "id": a},
                None,
                {"__typename": "Reward", "id": b},
            ]
        }
    }


@pytest.mark.parametrize("type_name", ["Reward", "Transaction", "Redemption"])
def test_given_a_well_formed_id_of_nothing_when_refetched_by_a_user_then_null_without_error(
    server: LiveServer, type_name: str
) -> None:
    body = gql(server, NODE_IDS, {"id": encode_global_id(type_name, "does-not-exist")}, token=server.token(OWNER))

    assert without_extensions(body) == {"data": {"node": None}}


MALFORMED_IDS = {
    "empty": "",
    "random": "not-an-id",
    "non-ascii": "caf\u00e9",
    "unknown-type": b64(b"User:42"),
    "no-raw-id": b64(b"Reward:"),
    "no-separator": b64(b"Reward"),
    "binary": b64(b"\xff\xfe:\x00"),
}


@pytest.mark.parametrize("global_id", MALFORMED_IDS.values(), ids=MALFORMED_IDS.keys())
def test_given_a_malformed_id_when_refetched_with_node_then_bad_user_input(server: LiveServer, global_id: str) -> None:
    body = gql(server, NODE_IDS, {"id": global_id}, token=server.token(OWNER))

    assert_bad_user_input(body, "node")


def test_given_one_malformed_id_among_good_ones_when_refetched_with_nodes_then_bad_user_input_and_no_objects(
    server: LiveServer,
) -> None:
    good = first_rewards(server, 1)[0]["id"]

    body = gql(server, NODES_IDS, {"ids": [good, "not-an-id"]})

    assert_bad_user_input(body, "nodes")


# Transactions and redemptions belong to their owner


def test_given_the_owner_when_refetching_their_transaction_then_it_matches_their_history(
    server: LiveServer, fulfilled: Fulfilled
) -> None:
    token = server.token(OWNER)
    history = gql(server, HISTORY, {"first": 10}, token=token)["data"]["viewer"]["history"]["edges"]
    listed = next(edge["node"] for edge in history if edge["node"]["id"] == fulfilled.transaction_id)

    node = gql(server, TRANSACTION, {"id": fulfilled.transaction_id}, token=token)["data"]["node"]

    assert node["kind"] == "REDEEM"
    assert {key: node[key] for key in ("id", "points", "balanceAfter", "description", "createdAt")} == {
        key: listed[key] for key in ("id", "points", "balanceAfter", "description", "createdAt")
    }
    assert node["redemption"] == {"id": fulfilled.redemption_id}


def test_given_the_owner_when_refetching_their_redemption_then_it_comes_with_the_gift_card(
    server: LiveServer, fulfilled: Fulfilled
) -> None:
    node = gql(server, REDEMPTION, {"id": fulfilled.redemption_id}, token=server.token(OWNER))["data"]["node"]

    assert node["id"] == fulfilled.redemption_id
    assert node["status"] == "FULFILLED"
    assert (node["giftCard"]["code"], node["giftCard"]["pin"], node["giftCard"]["claimUrl"]) == fulfilled.secrets
    assert all(fulfilled.secrets)


@pytest.mark.parametrize("caller", [STRANGER, None], ids=["another-user", "anonymous"])
@pytest.mark.parametrize("which", ["redemption_id", "transaction_id", "earn_transaction_id"])
def test_given_someone_else_when_refetching_an_owners_object_with_node_then_null_and_no_secret(
    server: LiveServer, fulfilled: Fulfilled, caller: str | None, which: str
) -> None:
    token = None if caller is None else server.token(caller)
    query = REDEMPTION if which == "redemption_id" else TRANSACTION

    response = post(server, query, {"id": getattr(fulfilled, which)}, token=token)

    assert without_extensions(response.json()) == {"data": {"node": None}}
    assert not any(secret in response.text for secret in fulfilled.secrets)


@pytest.mark.parametrize("caller", [STRANGER, None], ids=["another-user", "anonymous"])
def test_given_someone_else_when_refetching_an_owners_objects_with_nodes_then_nulls_and_no_secret(
    server: LiveServer, fulfilled: Fulfilled, caller: str | None
) -> None:
    token = None if caller is None else server.token(caller)
    ids = [fulfilled.redemption_id, fulfilled.transaction_id, fulfilled.earn_transaction_id]

    response = post(server, NODES_WITH_SECRETS, {"ids": ids}, token=token)

    assert without_extensions(response.json()) == {"data": {"nodes": [None, None, None]}}
    assert not any(secret in response.text for secret in fulfilled.secrets)


def test_given_the_owner_when_refetching_with_nodes_then_the_gift_card_reaches_them_through_both_paths(
    server: LiveServer, fulfilled: Fulfilled
) -> None:
    ids = [fulfilled.redemption_id, fulfilled.transaction_id]

    nodes = gql(server, NODES_WITH_SECRETS, {"ids": ids}, token=server.token(OWNER))["data"]["nodes"]

    cards = [nodes[0]["giftCard"], nodes[1]["redemption"]["giftCard"]]
    assert [(c["code"], c["pin"], c["claimUrl"]) for c in cards] == [fulfilled.secrets, fulfilled.secrets]

