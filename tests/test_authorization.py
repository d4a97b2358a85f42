"""Object-level authorization over real HTTP: every id a client sends is checked against its owner.

tests/test_nodes.py proves that a stranger (or nobody) gets null for an owner's objects; this adds
batches that mix two users' objects, ids whose type was swapped, another user's ids where a reward
id belongs, and another user's history cursors.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from resolvers.ids import decode_global_id, encode_global_id
from tests.support import (
    LiveServer,
    gql,
    live_server,
    make_settings,
    operation,
    post,
    reward_to_redeem,
    without_extensions,
)

HISTORY = operation("History")
REDEEM = operation("Redeem")
NODES = "query Nodes($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }"
NODE = "query Node($id: ID!) { node(id: $id) { __typename id } }"

ALICE, BOB = "authz-alice", "authz-bob"


@dataclass(frozen=True)
class Account:
    user_id: str
    token: str
    transactions: list[str]  # global ids, newest first
    redemptions: list[str]
    cursors: list[str]  # the history cursor of each transaction, newest first


@dataclass(frozen=True)
class Accounts:
    alice: Account
    bob: Account


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(make_settings(tmp_path_factory.mktemp("authorization"), sandbox_fulfilment_delay=0.1)) as running:
        yield running


def redeem(server: LiveServer, token: str, key: str, reward: dict[str, Any]) -> str:
    payload = gql(
        server,
        REDEEM,
        {"input": {"clientMutationId": key, "rewardId": reward["rewardId"], "faceValue": reward["faceValue"]}},
        token=token,
    )["data"]["redeem"]
    assert payload["userErrors"] == [], payload
    return payload["redemption"]["id"]


def account(server: LiveServer, user_id: str, redemptions: list[str]) -> Account:
    token = server.token(user_id)
    edges = gql(server, HISTORY, {"first": 20}, token=token)["data"]["viewer"]["history"]["edges"]
    return Account(
        user_id=user_id,
        token=token,
        transactions=[edge["node"]["id"] for edge in edges],
        redemptions=redemptions,
        cursors=[edge["cursor"] for edge in edges],
    )


@pytest.fixture(scope="module")
def accounts(server: LiveServer) -> Accounts:
    """Interleaved ledgers: Bob's EARN and first REDEEM, then Alice's EARN and REDEEM, then Bob's second REDEEM."""
    reward = reward_to_redeem(server)
    bob_token, alice_token = server.token(BOB), server.token(ALICE)
    bob_first = redeem(server, bob_token, "bob-1", reward)
    alice_only = redeem(server, alice_token, "alice-1", reward)
    bob_second = redeem(server, bob_token, "bob-2", reward)
    return Accounts(
        alice=account(server, ALICE, [alice_only]),
        bob=account(server, BOB, [bob_second, bob_first]),
    )


def history_ids(server: LiveServer, token: str, variables: dict[str, Any]) -> list[str]:
    body = gql(server, HISTORY, variables, token=token)
    assert "errors" not in body, body
    return [edge["node"]["id"] for edge in body["data"]["viewer"]["history"]["edges"]]


# History cursors hold a position, never an owner


def test_given_alices_newest_cursor_when_bob_pages_after_it_then_only_his_older_transactions_come_back(
    server: LiveServer, accounts: Accounts
) -> None:
    alice, bob = accounts.alice, accounts.bob

    ids = history_ids(server, bob.token, {"first": 20, "after": alice.cursors[0]})

    # Bob's EARN and first REDEEM came before Alice's REDEEM; his second came after it.
    assert ids == bob.transactions[1:]


def test_given_alices_newest_cursor_when_bob_pages_before_it_then_only_his_newer_transactions_come_back(
    server: LiveServer, accounts: Accounts
) -> None:
    alice, bob = accounts.alice, accounts.bob

    ids = history_ids(server, bob.token, {"last": 20, "before": alice.cursors[0]})

    assert ids == bob.transactions[:1]


@pytest.mark.parametrize("direction", ["after", "before"])
def test_given_every_cursor_of_alice_when_bob_pages_from_it_then_none_of_alices_transactions_appear(
    server: LiveServer, accounts: Accounts, direction: str
) -> None:
    alice, bob = accounts.alice, accounts.bob
    size = "first" if direction == "after" else "last"

    seen = {tx for cursor in alice.cursors for tx in history_ids(server, bob.token, {size: 20, direction: cursor})}

    assert seen and seen <= set(bob.transactions)
    assert not seen & set(alice.transactions)


# node / nodes: every id of a batch is checked on its own


@pytest.mark.parametrize("viewer", ["alice", "bob"])
def test_given_both_users_objects_in_one_batch_when_one_refetches_them_then_only_their_own_come_back(
    server: LiveServer, accounts: Accounts, viewer: str
) -> None:
    me = getattr(accounts, viewer)
    alice, bob = accounts.alice, accounts.bob
    ids = [*alice.redemptions, *bob.redemptions, *alice.transactions, *bob.transactions]

    nodes = gql(server, NODES, {"ids": ids}, token=me.token)["data"]["nodes"]

    mine = set(me.redemptions) | set(me.transactions)
    assert [node and node["id"] for node in nodes] == [gid if gid in mine else None for gid in ids]


def swapped_types(global_id: str) -> list[str]:
    """The same provider id under each other Node type."""
    type_name, raw_id = decode_global_id(global_id)
    return [encode_global_id(other, raw_id) for other in ("Reward", "Transaction", "Redemption") if other != type_name]


def test_given_an_owners_ids_under_another_type_when_the_owner_refetches_them_then_null(
    server: LiveServer, accounts: Accounts
) -> None:
    alice = accounts.alice
    ids = [swapped for gid in [*alice.redemptions, *alice.transactions] for swapped in swapped_types(gid)]

    nodes = gql(server, NODES, {"ids": ids}, token=alice.token)["data"]["nodes"]

    assert nodes == [None] * len(ids)


def test_given_a_forged_id_with_a_valid_type_and_another_users_raw_id_when_refetched_then_null(
    server: LiveServer, accounts: Accounts
) -> None:
    _, raw_id = decode_global_id(accounts.alice.redemptions[0])
    # Built by hand (padding and all), the way an attacker would, not by our encoder.
    forged = base64.b64encode(f"Redemption:{raw_id}".encode()).decode()

    body = gql(server, NODE, {"id": forged}, token=accounts.bob.token)

    assert without_extensions(body) == {"data": {"node": None}}


# redeem's rewardId takes only a Reward's id


def balance(server: LiveServer, token: str) -> dict[str, int]:
    viewer = gql(server, operation("ViewerBalance"), token=token)["data"]["viewer"]
    return {key: viewer["balance"][key] for key in ("available", "pending")}


@pytest.mark.parametrize(
    "whose_object",
    ["alice's transaction", "alice's redemption", "bob's own transaction", "bob's own redemption"],
)
def test_given_an_object_id_as_the_reward_id_when_bob_redeems_then_bad_user_input_and_nothing_happens(
    server: LiveServer, accounts: Accounts, whose_object: str
) -> None:
    owner = accounts.alice if whose_object.startswith("alice") else accounts.bob
    object_id = (owner.transactions if whose_object.endswith("transaction") else owner.redemptions)[0]
    before = (balance(server, accounts.bob.token), server.provider.calls.get("redeem"))

    response = post(
        server,
        REDEEM,
        {"input": {"clientMutationId": f"confused-{whose_object}", "rewardId": object_id, "faceValue": "10"}},
        token=accounts.bob.token,
    )

    [error] = response.json()["errors"]
    assert response.json()["data"] is None
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "Reward" in error["message"]
    assert (balance(server, accounts.bob.token), server.provider.calls.get("redeem")) == before
    assert not any(gid in response.text for gid in owner.redemptions + owner.transactions if gid != object_id)
