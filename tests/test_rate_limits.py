"""Budgets over real HTTP and WebSockets: each user (each address when anonymous) spends query-cost
points from a budget that refills, and has a stricter count of redeem attempts; going over is
RATE_LIMITED with the seconds to wait, 429, Retry-After and the IETF RateLimit headers, and reaches
nothing upstream: no provider call, no idempotency claim."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from schema.limits import client_key
from tests.support import (
    calls,
    codes,
    idempotency_rows,
    LiveServer,
    gql,
    live_server,
    make_settings,
    operation,
    post,
    reward_to_redeem,
    run_on_server_loop,
    ws_connect,
)

HISTORY = operation("History")
VIEWER_BALANCE = operation("ViewerBalance")
REDEEM = operation("Redeem")
HISTORY_100 = 3 + 100 * 5  # the History operation's cost for a page of 100
NODES = "query($ids: [ID!]!) { nodes(ids: $ids) { id } }"  # costs one point per id

BUDGET = {
    "rate_limit_points": 1000,
    "rate_limit_window_seconds": 10,
    "redeem_attempts_limit": 3,
    "redeem_attempts_window_seconds": 60,
}
POLICY = '"cost";q=1000;w=10, "redeem";q=3;w=60'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(make_settings(tmp_path_factory.mktemp("budgets"), **BUDGET)) as running:
        yield running


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A server of its own, for tests that spend the anonymous (per-address) budget."""
    with live_server(make_settings(tmp_path, **BUDGET)) as running:
        yield running


def new_token(server: LiveServer) -> str:
    return server.token(f"budget-{uuid.uuid4().hex[:12]}")


def spend_everything(server: LiveServer, token: str | None) -> None:
    """Spend the caller's whole budget: a thousand ids (the same reward, so one provider call)."""
    reward_id = reward_to_redeem(server)["rewardId"]
    body = gql(server, NODES, {"ids": [reward_id] * 1000}, token=token)
    assert body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == 0


def redeem_variables(server: LiveServer, key: str) -> dict[str, Any]:
    reward = reward_to_redeem(server)
    return {"input": {"clientMutationId": key, "rewardId": reward["rewardId"], "faceValue": reward["faceValue"]}}


def aliased_redeems(server: LiveServer, count: int) -> str:
    reward = reward_to_redeem(server)
    fields = " ".join(
        f'r{i}: redeem(input: {{clientMutationId: "alias-{i}", rewardId: "{reward["rewardId"]}", '
        f'faceValue: "{reward["faceValue"]}"}}) {{ clientMutationId }}'
        for i in range(count)
    )
    return f"mutation {{ {fields} }}"


# Within the budget


def test_given_an_operation_within_the_budget_then_it_reports_the_budget_left_in_the_body_and_headers(
    server: LiveServer,
) -> None:
    response = post(server, VIEWER_BALANCE, token=new_token(server))

    assert response.json()["extensions"]["cost"] == {
        "requestedQueryCost": 2,
        "actualQueryCost": 2,
        "throttleStatus": {"maximumAvailable": 1000, "currentlyAvailable": 998, "restoreRate": 100},
    }
    assert response.headers["RateLimit-Policy"] == POLICY
    assert re.fullmatch(r'"cost";r=998;t=(9|10)', response.headers["RateLimit"])
    assert "Retry-After" not in response.headers


def test_given_several_operations_then_each_is_charged_its_own_cost(server: LiveServer) -> None:
    token = new_token(server)

    left = [
        gql(server, query, variables, token=token)["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"]
        for query, variables in ((VIEWER_BALANCE, None), (HISTORY, {"first": 100}), (VIEWER_BALANCE, None))
    ]

    assert left == [998, 998 - HISTORY_100, 996 - HISTORY_100]


# Over the budget


def test_given_less_budget_left_than_an_operation_costs_then_429_rate_limited_with_the_wait_and_nothing_upstream(
    server: LiveServer,
) -> None:
    token = new_token(server)
    assert codes(gql(server, HISTORY, {"first": 100}, token=token)) == []
    before = calls(server)

    response = post(server, HISTORY, {"first": 100}, token=token)  # 503 more than the 497 left

    body = response.json()
    assert (response.status_code, codes(body), body["data"], calls(server)) == (429, ["RATE_LIMITED"], None, before)
    wait = int(response.headers["Retry-After"])
    assert 1 <= wait <= 10 and body["errors"][0]["extensions"]["retryAfter"] == wait
    assert response.headers["RateLimit-Policy"] == POLICY
    assert re.fullmatch(rf'"cost";r={1000 - HISTORY_100};t=\d+', response.headers["RateLimit"])
    assert body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == 1000 - HISTORY_100
    # A cheaper operation still fits in what is left.
    assert codes(gql(server, VIEWER_BALANCE, token=token)) == []


def test_given_one_user_out_of_budget_then_another_user_is_still_served(server: LiveServer) -> None:
    spent, other = new_token(server), new_token(server)
    spend_everything(server, spent)

    assert post(server, VIEWER_BALANCE, token=spent).status_code == 429
    assert (post(server, VIEWER_BALANCE, token=other).status_code, codes(gql(server, VIEWER_BALANCE, token=other))) == (
        200,
        [],
    )


def test_given_anonymous_clients_then_each_address_has_a_budget_of_its_own(own_server: LiveServer) -> None:
    spend_everything(own_server, None)  # from 127.0.0.1
    query = "{ catalog(first: 1) { totalCount } }"

    from_spent = post(own_server, query)
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=30) as client:
        from_another = client.post(own_server.url, json={"query": query})

    assert (from_spent.status_code, codes(from_spent.json())) == (429, ["RATE_LIMITED"])
    assert (from_another.status_code, codes(from_another.json())) == (200, [])
    # A signed-in user on the spent address has a budget of their own.
    assert post(own_server, query, token=new_token(own_server)).status_code == 200


def test_given_a_refused_operation_when_retried_after_retry_after_then_it_runs(tmp_path: Path) -> None:
    # A 3 s window: the second request must land in the first one's window, also on a loaded machine.
    settings = make_settings(tmp_path, rate_limit_points=100, rate_limit_window_seconds=3, max_query_cost=100)
    query = "{ catalog(first: 60) { nodes { id } } }"  # 61 points
    with live_server(settings) as server:
        assert post(server, query).status_code == 200
        refused = post(server, query)
        assert refused.status_code == 429
        time.sleep(int(refused.headers["Retry-After"]))

        retried = post(server, query)

    assert (refused.status_code, retried.status_code, codes(retried.json())) == (429, 200, [])


def test_given_a_spent_budget_when_subscribing_over_a_websocket_then_rate_limited_and_the_provider_is_not_asked(
    server: LiveServer,
) -> None:
    token = new_token(server)
    spend_everything(server, token)
    before = calls(server)

    async def subscribe() -> dict[str, Any]:
        async with ws_connect(server, init_payload={"authorization": f"Bearer {token}"}) as client:
            assert (await client.receive())["type"] == "connection_ack"
            await client.subscribe(operation("BalanceChanged"))
            return await client.receive()

    message = asyncio.run(subscribe())

    assert (message["type"], message["payload"]["data"]) == ("next", None)
    assert [error["extensions"]["code"] for error in message["payload"]["errors"]] == ["RATE_LIMITED"]
    assert calls(server) == before


# Redeem attempts


def test_given_redeem_attempts_up_to_the_limit_then_the_next_is_refused_before_the_provider_and_the_idempotency_store(
    server: LiveServer,
) -> None:
    token = new_token(server)
    answers = [gql(server, REDEEM, redeem_variables(server, f"attempt-{i}"), token=token) for i in range(3)]
    assert [codes(answer) for answer in answers] == [[], [], []]
    before, rows = calls(server), idempotency_rows(server)

    response = post(server, REDEEM, redeem_variables(server, "attempt-3"), token=token)

    body = response.json()
    assert (response.status_code, codes(body), body["data"]) == (429, ["RATE_LIMITED"], None)
    assert (calls(server), idempotency_rows(server)) == (before, rows)
    assert re.fullmatch(r'"cost";r=\d+;t=\d+, "redeem";r=0;t=\d+', response.headers["RateLimit"])
    assert 1 <= body["errors"][0]["extensions"]["retryAfter"] <= 60
    # Other operations are not redeem attempts.
    assert codes(gql(server, VIEWER_BALANCE, token=token)) == []


def test_given_more_aliased_redeems_in_one_document_than_the_limit_then_each_counts_and_none_runs(
    server: LiveServer,
) -> None:
    token = new_token(server)
    before, rows = calls(server), idempotency_rows(server)

    response = post(server, aliased_redeems(server, 4), token=token)

    body = response.json()
    assert (response.status_code, codes(body)) == (429, ["RATE_LIMITED"])
    assert body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == 1000  # no points spent either
    assert (calls(server), idempotency_rows(server)) == (before, rows)
    # None of the four was spent: the three allowed still run.
    assert codes(gql(server, aliased_redeems(server, 3), token=token)) == []


def test_given_a_hundred_aliased_redeems_then_they_count_as_a_hundred_attempts(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, max_query_aliases=100, max_query_cost=2000, rate_limit_points=2000, redeem_attempts_limit=60
    )
    # One input for all (within the default token and size limits): the attempts are what is counted.
    fields = " ".join(f"r{i}: redeem(input: $input) {{ clientMutationId }}" for i in range(100))
    document = f"mutation($input: RedeemInput!) {{ {fields} }}"
    with live_server(settings) as server:
        before = calls(server)

        response = post(server, document, redeem_variables(server, "hundred"), token=new_token(server))

        body = response.json()
        assert (response.status_code, codes(body), calls(server), idempotency_rows(server)) == (
            429,
            ["RATE_LIMITED"],
            before,
            0,
        )
        assert "asks for 100" in body["errors"][0]["message"]
        assert body["extensions"]["cost"]["requestedQueryCost"] == 100 * (10 + 0)  # clientMutationId is a scalar


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "ip:203.0.113.7"),
        ("2001:db8:1:2::7", "ip:2001:db8:1:2::/64"),  # any address of the /64: one budget
        ("2001:db8:1:2:ffff::1", "ip:2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "ip:203.0.113.7"),  # an IPv4 client through a dual-stack socket
    ],
)
def test_given_anonymous_client_addresses_then_an_ipv6_host_is_budgeted_by_its_64_and_ipv4_by_its_address(
    host: str, key: str
) -> None:
    context = SimpleNamespace(user_id=None, request=SimpleNamespace(client=SimpleNamespace(host=host)))

    assert client_key(context) == key
