"""Query limits over real HTTP: document size, tokens, depth, aliases and query cost are checked before
anything runs and reach nothing upstream; every response reports its cost; a running operation past
its deadline is cancelled cleanly, a redeem included; the frontend's operations fit the defaults."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import graphql
import httpx
import pytest
import websockets

from giftgraph.ratelimit import protections
from giftgraph.settings import ConfigurationError, Settings, load_settings
from schema import build_schema
from schema.limits import Protection, operation_cost
from tests.support import (
    calls,
    codes,
    idempotency_rows,
    OPERATIONS,
    LiveServer,
    gql,
    live_server,
    make_settings,
    operation,
    post,
    reward_to_redeem,
    run_on_server_loop,
)

CATALOG = operation("Catalog")
HISTORY = operation("History")
REDEEM = operation("Redeem")
VIEWER_BALANCE = operation("ViewerBalance")

# Small limits, so each is easy to reach and to stay just under.
TIGHT = {
    "max_query_cost": 300,
    "max_query_depth": 5,
    "max_query_aliases": 3,
    "max_query_tokens": 200,
    "max_document_bytes": 2048,
}
DEADLINE = 0.75  # seconds
LATENCY = 0.5  # seconds the slowed provider takes for every call


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Default limits."""
    with live_server(make_settings(tmp_path_factory.mktemp("limits"))) as running:
        yield running


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(make_settings(tmp_path_factory.mktemp("tight"), **TIGHT)) as running:
        yield running


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[LiveServer]:
    """A server with a short deadline whose provider is slowed down for the test."""
    with live_server(make_settings(tmp_path, operation_timeout_seconds=DEADLINE, reconcile_interval_seconds=0.1)) as running:
        yield running


def token(server: LiveServer) -> str:
    return server.token(f"limits-{uuid.uuid4().hex[:12]}")


def refused(server: LiveServer, query: str, variables: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Send an operation the limits must refuse; assert it reached nothing upstream and return its body."""
    before = calls(server)
    body = gql(server, query, variables, **kwargs)
    assert (body["data"], calls(server)) == (None, before)
    return body


# Cost: what a response reports


def test_given_a_full_catalog_page_when_queried_then_every_object_counts_once_per_item_and_scalars_nothing(
    server: LiveServer,
) -> None:
    body = gql(server, CATALOG, {"first": 50})

    # catalog 1 + pageInfo 1 + 50 × (edge 1 + node 1 + denomination 1 + faceValues 1 + minValue 1 + maxValue 1)
    assert (len(body["data"]["catalog"]["edges"]), body["extensions"]["cost"]["requestedQueryCost"]) == (50, 302)
    assert body["extensions"]["cost"]["actualQueryCost"] == 302


def test_given_a_page_that_is_not_full_then_the_actual_cost_counts_the_items_that_came_back(server: LiveServer) -> None:
    reward = server.provider.catalog[0]
    body = gql(server, CATALOG, {"first": 50, "filter": {"brand": reward.brand, "currencyCode": reward.currency_code}})

    returned = len(body["data"]["catalog"]["edges"])
    assert 0 < returned < 50
    assert body["extensions"]["cost"] == {
        "requestedQueryCost": 302,
        "actualQueryCost": 2 + 6 * returned,
        "throttleStatus": body["extensions"]["cost"]["throttleStatus"],
    }


@pytest.mark.parametrize(
    ("query", "variables", "cost"),
    [
        ("{ catalog { nodes { id } } }", None, 1 + 20),  # no first/last: the default page of 20
        ("{ catalog(last: 7) { nodes { id } } }", None, 1 + 7),
        ("query($n: Int) { catalog(first: $n) { nodes { id } } }", {"n": 9}, 1 + 9),
        ("query($n: Int = 4) { catalog(first: $n) { nodes { id } } }", None, 1 + 4),  # the variable's default
        ("{ catalog(first: 100000) { nodes { id } } }", None, 1 + 100),  # refused by the resolver past 100
        ("{ catalog(first: 3) { totalCount pageInfo { hasNextPage } } }", None, 1 + 1),
        ('{ nodes(ids: ["a", "b", "c"]) { id ... on Reward { denomination { kind } } } }', None, 3 * 2),
    ],
    ids=["default-page", "last", "variable", "variable-default", "past-the-maximum", "no-items", "nodes-by-id"],
)
def test_given_page_sizes_and_id_lists_when_costed_then_lists_count_once_per_item(
    server: LiveServer, query: str, variables: dict[str, Any] | None, cost: int
) -> None:
    body = gql(server, query, variables)

    assert body["extensions"]["cost"]["requestedQueryCost"] == cost


def test_given_a_redeem_when_costed_then_the_mutation_costs_ten_plus_its_payload(server: LiveServer) -> None:
    reward = reward_to_redeem(server)
    variables = {
        "input": {"clientMutationId": "cost-1", "rewardId": reward["rewardId"], "faceValue": reward["faceValue"]}
    }

    body = gql(server, REDEEM, variables, token=token(server))

    # redeem 10 + userErrors 1 + balance 1 + redemption (1 + faceValue 1 + reward 1 + giftCard 1)
    assert (codes(body), body["extensions"]["cost"]["requestedQueryCost"]) == ([], 16)


def test_given_a_request_that_fails_to_parse_then_it_still_reports_its_cost_as_nothing(server: LiveServer) -> None:
    body = gql(server, "{ catalog {")

    assert (codes(body), body["extensions"]["cost"]["requestedQueryCost"]) == (["GRAPHQL_PARSE_FAILED"], 0)
    assert body["extensions"]["cost"]["actualQueryCost"] == 0


# Cost: the maximum


# Two history pages: 2 × (viewer 1 + history 1 + n × (node 1 + redemption 1)), within the depth limit.
TWO_HISTORIES = """
query Two($n: Int) {
  a: viewer { history(first: $n) { nodes { redemption { id } } } }
  b: viewer { history(first: $n) { nodes { redemption { id } } } }
}
"""


@pytest.mark.parametrize(("first", "cost"), [(74, 4 + 74 * 4), (75, 4 + 75 * 4)])
def test_given_history_pages_when_their_cost_passes_the_maximum_then_they_are_refused_before_anything_runs(
    tight: LiveServer, first: int, cost: int
) -> None:
    user = token(tight)
    before = calls(tight)

    body = gql(tight, TWO_HISTORIES, {"n": first}, token=user)

    if cost <= TIGHT["max_query_cost"]:
        assert (codes(body), body["extensions"]["cost"]["requestedQueryCost"]) == ([], cost)
        return
    assert codes(body) == ["MAX_COST_EXCEEDED"]
    assert body["errors"][0]["extensions"]["requestedQueryCost"] == cost
    assert body["extensions"]["cost"]["requestedQueryCost"] == cost
    assert (body["data"], calls(tight)) == (None, before)


def test_given_more_ids_than_the_maximum_cost_when_refetched_with_nodes_then_max_cost_exceeded(
    tight: LiveServer,
) -> None:
    reward_id = reward_to_redeem(tight)["rewardId"]

    body = refused(tight, "query($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": [reward_id] * 301})

    assert codes(body) == ["MAX_COST_EXCEEDED"]


# Depth, aliases, tokens, document size


DEPTH_5 = "{ viewer { history(first: 1) { edges { node { id } } } } }"
DEPTH_6 = "{ viewer { history(first: 1) { edges { node { redemption { id } } } } } }"


def test_given_a_query_at_the_maximum_depth_then_it_runs(tight: LiveServer) -> None:
    body = gql(tight, DEPTH_5, token=token(tight))

    assert (codes(body), len(body["data"]["viewer"]["history"]["edges"])) == ([], 1)


@pytest.mark.parametrize(
    "query",
    [
        DEPTH_6,
        "query { ...Deep } fragment Deep on Query { viewer { history { edges { node { redemption { id } } } } } }",
    ],
    ids=["inline", "through-a-fragment"],
)
def test_given_a_query_one_level_too_deep_then_max_depth_exceeded_and_nothing_runs(
    tight: LiveServer, query: str
) -> None:
    body = refused(tight, query, token=token(tight))

    assert codes(body) == ["MAX_DEPTH_EXCEEDED"]
    assert body["errors"][0]["extensions"]["maxDepth"] == TIGHT["max_query_depth"]


def test_given_as_many_aliases_as_allowed_then_the_query_runs(tight: LiveServer) -> None:
    body = gql(tight, "{ a: viewer { userId } b: viewer { userId } c: viewer { userId } }", token=token(tight))

    assert (codes(body), sorted(body["data"])) == ([], ["a", "b", "c"])


@pytest.mark.parametrize(
    "query",
    [
        "{ a: viewer { userId } b: viewer { userId } c: viewer { userId } d: viewer { userId } }",
        # Two aliases, plus one in a fragment spread twice.
        "{ a: viewer { ...Id } b: viewer { ...Id } } fragment Id on Viewer { id: userId }",
    ],
    ids=["four-aliases", "aliases-in-a-fragment-count-per-spread"],
)
def test_given_more_aliases_than_allowed_then_max_aliases_exceeded_and_nothing_runs(
    tight: LiveServer, query: str
) -> None:
    body = refused(tight, query, token=token(tight))

    assert codes(body) == ["MAX_ALIASES_EXCEEDED"]
    assert body["errors"][0]["extensions"] == {"code": "MAX_ALIASES_EXCEEDED", "aliases": 4, "maxAliases": 3}


def test_given_a_document_under_the_token_limit_then_it_runs(tight: LiveServer) -> None:
    body = gql(tight, "{ " + "__typename " * 150 + "}")  # 152 tokens

    assert (codes(body), body["data"]) == ([], {"__typename": "Query"})


def test_given_a_document_with_too_many_tokens_then_max_tokens_exceeded(tight: LiveServer) -> None:
    body = refused(tight, "{ " + "viewer " * 250 + "}", token=token(tight))

    assert codes(body) == ["MAX_TOKENS_EXCEEDED"]
    assert body["errors"][0]["extensions"]["maxTokens"] == TIGHT["max_query_tokens"]


@pytest.mark.parametrize(
    "query",
    [
        "{ viewer { userId } }" + "#" * 2100,
        "{ viewer { userId } } # " + "é" * 1100,  # 1,100 characters, 2,200 bytes: the limit is in bytes
        "{ {{{ not even GraphQL " + "x" * 2100,  # refused before parsing, so never a parse error
    ],
    ids=["ascii", "bytes-not-characters", "before-parsing"],
)
def test_given_a_document_over_the_size_limit_then_document_too_large(tight: LiveServer, query: str) -> None:
    body = refused(tight, query, token=token(tight))

    assert codes(body) == ["DOCUMENT_TOO_LARGE"]
    assert body["errors"][0]["extensions"]["maxDocumentBytes"] == TIGHT["max_document_bytes"]


def test_given_a_document_just_under_the_size_limit_then_it_runs(tight: LiveServer) -> None:
    query = "{ viewer { userId } }\n#"
    query += "x" * (TIGHT["max_document_bytes"] - len(query))

    body = gql(tight, query, token=token(tight))

    assert (len(query.encode()), codes(body)) == (TIGHT["max_document_bytes"], [])


def test_given_a_batch_of_operations_when_posted_then_it_is_refused_and_nothing_runs(server: LiveServer) -> None:
    before = calls(server)
    user = token(server)

    response = httpx.post(
        server.url,
        json=[{"query": VIEWER_BALANCE}, {"query": VIEWER_BALANCE}],
        headers={"Authorization": f"Bearer {user}"},
        timeout=30,
    )

    assert (response.status_code, response.json()["errors"][0]["extensions"]["code"]) == (400, "BAD_REQUEST")
    assert calls(server) == before


# The defaults fit what clients really send


def _default_limits() -> Any:
    limits, _ = protections(Settings(jwt_secret="x" * 32))
    assert limits is not None
    return limits


@pytest.mark.parametrize("path", sorted(OPERATIONS.glob("*.graphql")), ids=lambda path: path.stem)
def test_given_default_limits_then_every_frontend_operation_at_the_largest_page_passes_them(path: Path) -> None:
    limits = _default_limits()
    schema = build_schema()._schema
    query = path.read_text()
    document = graphql.parse(query, max_tokens=limits.max_tokens)  # raises past the token limit
    errors = graphql.validate(schema, document, Protection(limits).rules)
    (op,) = [d for d in document.definitions if isinstance(d, graphql.OperationDefinitionNode)]
    cost = operation_cost(schema, document, op, {"first": 100, "last": None}).requested

    assert (errors, len(query.encode()) <= limits.max_document_bytes) == ([], True)
    assert 0 < cost <= limits.max_cost


def test_given_default_limits_when_graphiql_introspects_the_schema_then_it_is_answered(server: LiveServer) -> None:
    body = gql(server, graphql.get_introspection_query(descriptions=True))

    assert (codes(body), body["data"]["__schema"]["queryType"]["name"]) == ([], "Query")


def test_given_a_maximum_cost_above_the_budget_when_loading_settings_then_the_configuration_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="max_query_cost"):
        load_settings(jwt_secret="x" * 32, max_query_cost=2000, rate_limit_points=1000)


# Protections off (the benchmark's comparison side)


def test_given_protections_off_then_no_limit_applies_and_no_cost_is_reported(tmp_path: Path) -> None:
    with live_server(make_settings(tmp_path, protections_enabled=False, **TIGHT)) as off:
        response = post(off, "{ " + " ".join(f"a{i}: __typename" for i in range(40)) + " }")

    body = response.json()
    assert (codes(body), len(body["data"]), "extensions" in body) == ([], 40, False)
    assert "ratelimit" not in response.headers


# Operation deadline


def test_given_an_operation_past_its_deadline_then_it_is_cancelled_with_timeout_and_the_server_goes_on(
    slow: LiveServer,
) -> None:
    user = token(slow)
    slow.provider.faults.latency = 2 * LATENCY

    response = post(slow, VIEWER_BALANCE, token=user)

    body = response.json()
    assert (response.status_code, codes(body), body["data"]) == (504, ["TIMEOUT"], None)
    slow.provider.faults.clear()
    assert gql(slow, VIEWER_BALANCE, token=user)["data"]["viewer"]["balance"]["available"] == 10_000


def test_given_a_redeem_cancelled_mid_provider_call_then_the_key_stays_pending_and_a_retry_makes_the_one_redemption(
    slow: LiveServer,
) -> None:
    user = token(slow)
    reward = reward_to_redeem(slow)
    variables = {
        "input": {"clientMutationId": "slow-1", "rewardId": reward["rewardId"], "faceValue": reward["faceValue"]}
    }
    # The reward lookup is quick; the redeem call takes twice the deadline, which falls inside it.
    slow.provider.faults.slow_down("redeem", 2 * DEADLINE)

    response = post(slow, REDEEM, variables, token=user)

    assert (response.status_code, codes(response.json())) == (504, ["TIMEOUT"])
    # The provider call had started (the reconciler, every 0.1 s here, may already have resent it:
    # exactly one redemption is asserted on the history below).
    assert slow.provider.calls.get("redeem") >= 1
    slow.provider.faults.clear()
    # The call may have reached the provider: the key is kept with its request (for the retry below,
    # or the reconciler, whichever comes first), never released.
    assert idempotency_rows(slow) == 1

    retried = gql(slow, REDEEM, variables, token=user)["data"]["redeem"]
    again = gql(slow, REDEEM, variables, token=user)["data"]["redeem"]

    assert retried["userErrors"] == [], retried
    assert retried["redemption"]["id"] == again["redemption"]["id"]
    history = gql(slow, HISTORY, {"first": 10}, token=user)["data"]["viewer"]["history"]
    assert [edge["node"]["kind"] for edge in history["edges"]] == ["REDEEM", "EARN"]
    assert retried["balance"]["available"] == 10_000 - reward["points"]


@pytest.mark.anyio
async def test_given_an_oversized_or_unparsable_subscription_when_sent_over_a_websocket_then_the_client_gets_a_clear_answer(
    tmp_path: Path,
) -> None:
    from tests.support import ws_connect

    with live_server(make_settings(tmp_path)) as server:
        init = {"authorization": f"Bearer {server.token('ws-limits')}"}
        async with ws_connect(server, init_payload=init) as ws:
            assert (await ws.receive())["type"] == "connection_ack"
            await ws.subscribe("subscription { balanceChanged { available } } " + "#" * 20_000)
            oversized = await ws.receive()
            await ws.subscribe("subscription { balanceChanged { available } }")
            still_open = await ws.receive()
        async with ws_connect(server, init_payload=init) as ws:
            assert (await ws.receive())["type"] == "connection_ack"
            await ws.subscribe("subscription { balanceChanged { available ")
            with pytest.raises(websockets.ConnectionClosedError) as closed:
                await ws.receive()

    assert oversized["type"] == "error"
    assert oversized["payload"][0]["extensions"]["code"] == "DOCUMENT_TOO_LARGE"
    assert still_open["type"] == "next"
    assert closed.value.rcvd.code == 4400 and "Syntax Error" in closed.value.rcvd.reason
