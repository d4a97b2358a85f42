"""Dataloaders over real HTTP: one provider call per loader level, and loaders that live for one request.

The proof is the sandbox's own call counts (`server.provider.calls`), read around
requests to a live server. One user owns 100 REDEEM transactions whose redemptions
point at 60 different available rewards.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from providers import Reward, RewardAvailability
from providers.sandbox import failing_reward_ids
from resolvers.ids import encode_global_id
from tests.support import LiveServer, gql, live_server, make_settings, operation

HISTORY = operation("History")
REDEEM = operation("Redeem")
NODE_IDS = "query Nodes($ids: [ID!]!) { nodes(ids: $ids) { id } }"
LATEST_REWARD_AVAILABILITY = """
query LatestRewardAvailability {
  viewer { history(first: 1) { edges { node { redemption { reward { id availability } } } } } }
}
"""

REDEMPTIONS, REWARDS = 100, 60
OWNER, OTHER = "ledger-owner", "other-user"
LOADER_OPERATIONS = ("list_transactions", "get_transactions", "get_redemptions", "get_rewards", "get_balances")


class Scenario:
    def __init__(self, server: LiveServer, rewards: list[Reward]) -> None:
        self.server = server
        self.rewards = rewards
        self.owner_token = server.token(OWNER)
        self.other_token = server.token(OTHER)

    def calls_during(self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None) -> dict[str, Any]:
        """The provider calls one request makes, and its response body."""
        self.server.provider.calls.reset()
        body = gql(self.server, query, variables, token=token)
        assert "errors" not in body, body["errors"]
        calls = {name: self.server.provider.calls.get(name) for name in LOADER_OPERATIONS}
        return {"calls": {name: count for name, count in calls.items() if count}, "body": body}


def redeem(server: LiveServer, token: str, reward: Reward, key: str) -> None:
    body = gql(
        server,
        REDEEM,
        {
            "input": {
                "clientMutationId": key,
                "rewardId": encode_global_id("Reward", reward.id),
                "faceValue": str(reward.denomination.min_value),
            }
        },
        token=token,
    )
    payload = body["data"]["redeem"]
    assert payload["userErrors"] == [], payload["userErrors"]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    settings = make_settings(
        tmp_path_factory.mktemp("dataloaders"),
        sandbox_starting_balance=10_000_000,
        sandbox_fulfilment_delay=3600.0,  # redemptions stay PENDING: nothing changes behind the counts
    )
    with live_server(settings) as server:
        failing = failing_reward_ids(server.provider.catalog)
        rewards = [
            r for r in server.provider.catalog if r.availability is RewardAvailability.AVAILABLE and r.id not in failing
        ][:REWARDS]
        scenario = Scenario(server, rewards)
        for index in range(REDEMPTIONS):
            redeem(server, scenario.owner_token, rewards[index % REWARDS], f"history-{index}")
        # The other user's latest redemption is of the same reward as the owner's latest one.
        redeem(server, scenario.other_token, rewards[(REDEMPTIONS - 1) % REWARDS], "other-0")

        page = gql(server, HISTORY, {"first": REDEMPTIONS}, token=scenario.owner_token)["data"]["viewer"]["history"]
        reward_ids = {edge["node"]["redemption"]["reward"]["id"] for edge in page["edges"]}
        assert len(page["edges"]) == REDEMPTIONS and len(reward_ids) == REWARDS, "the scenario was not built"
        yield scenario


@pytest.mark.parametrize("first", [10, 50, 100])
def test_given_a_history_page_of_redemptions_when_queried_then_each_loader_level_costs_one_provider_call(
    scenario: Scenario, first: int
) -> None:
    result = scenario.calls_during(HISTORY, {"first": first}, token=scenario.owner_token)

    assert len(result["body"]["data"]["viewer"]["history"]["edges"]) == first
    assert result["calls"] == {"list_transactions": 1, "get_redemptions": 1, "get_rewards": 1}


def test_given_many_reward_ids_when_refetched_with_nodes_then_one_get_rewards_call_loads_them_all(
    scenario: Scenario,
) -> None:
    ids = [encode_global_id("Reward", r.id) for r in scenario.rewards]
    ids += ids[:20]  # repeats are answered from the same batch

    result = scenario.calls_during(NODE_IDS, {"ids": ids})

    assert [node["id"] for node in result["body"]["data"]["nodes"]] == ids
    assert result["calls"] == {"get_rewards": 1}


def test_given_ids_of_rewards_redemptions_and_transactions_when_refetched_with_nodes_then_one_call_per_kind(
    scenario: Scenario,
) -> None:
    edges = scenario.calls_during(HISTORY, {"first": 20}, token=scenario.owner_token)["body"]["data"]["viewer"][
        "history"
    ]["edges"]
    ids = [encode_global_id("Reward", r.id) for r in scenario.rewards[:20]]
    ids += [edge["node"]["id"] for edge in edges]
    ids += [edge["node"]["redemption"]["id"] for edge in edges]

    result = scenario.calls_during(NODE_IDS, {"ids": ids}, token=scenario.owner_token)

    assert None not in result["body"]["data"]["nodes"]
    assert result["calls"] == {"get_rewards": 1, "get_transactions": 1, "get_redemptions": 1}


def test_given_a_history_request_when_the_same_request_is_sent_again_then_its_loaders_ask_the_provider_again(
    scenario: Scenario,
) -> None:
    scenario.calls_during(HISTORY, {"first": 50}, token=scenario.owner_token)

    second = scenario.calls_during(HISTORY, {"first": 50}, token=scenario.owner_token)

    assert second["calls"] == {"list_transactions": 1, "get_redemptions": 1, "get_rewards": 1}


def test_given_one_user_loaded_a_reward_when_it_changes_then_another_users_request_sees_the_change(
    scenario: Scenario,
) -> None:
    provider = scenario.server.provider
    reward = scenario.rewards[(REDEMPTIONS - 1) % REWARDS]
    scenario.calls_during(LATEST_REWARD_AVAILABILITY, token=scenario.owner_token)  # the owner's loaders hold it
    provider.set_availability(reward.id, RewardAvailability.OUT_OF_STOCK)
    try:
        result = scenario.calls_during(LATEST_REWARD_AVAILABILITY, token=scenario.other_token)
    finally:
        provider.set_availability(reward.id, RewardAvailability.AVAILABLE)

    seen = result["body"]["data"]["viewer"]["history"]["edges"][0]["node"]["redemption"]["reward"]
    assert seen == {"id": encode_global_id("Reward", reward.id), "availability": "OUT_OF_STOCK"}
