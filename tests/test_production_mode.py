"""Production mode over real HTTP and WebSocket: no "Did you mean ...?" hints, no introspection by
`__type`, validation and user-input messages still shown, unexpected errors still masked.

GraphiQL and `__schema` introspection by mode are in tests/test_operations_http.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from giftgraph.settings import Settings
from providers import EventHub
from providers.sandbox import SandboxConfig, SandboxProvider
from tests.support import (
    LiveServer,
    gql,
    live_server,
    live_server_with_provider,
    make_settings,
    operation,
    post,
    ws_connect,
)


class Mistake(NamedTuple):
    """A document (and variables) with a near miss, what the error must still say, and the hint."""

    query: str
    variables: dict[str, Any]
    kept: str  # the part of the message that must survive
    hint: str  # the suggestion graphql-core adds in development


MISTAKES: dict[str, Mistake] = {
    "a misspelt field": Mistake(
        "{ catalog(first: 1) { nodes { nme } } }", {}, "Cannot query field 'nme' on type 'Reward'.", "'name'"
    ),
    "a misspelt argument": Mistake(
        "{ catalog(frist: 1) { totalCount } }", {}, "Unknown argument 'frist' on field 'Query.catalog'.", "'first'"
    ),
    "a misspelt enum value": Mistake(
        "{ catalog(first: 1, sort: NAMEE) { totalCount } }",
        {},
        "Value 'NAMEE' does not exist in 'CatalogSort'",
        "'NAME'",
    ),
    "a misspelt type": Mistake(
        "query ($f: CatalogFiltr) { catalog(first: 1, filter: $f) { totalCount } }",
        {},
        "Unknown type 'CatalogFiltr'.",
        "'CatalogFilter'",
    ),
    "a misspelt input field in variables": Mistake(
        "query ($f: CatalogFilter) { catalog(first: 1, filter: $f) { totalCount } }",
        {"f": {"serch": "gift"}},
        "not to include unknown field 'serch'.",
        "'search'",
    ),
    "a field of an implementation asked on the interface": Mistake(
        '{ node(id: "x") { kind } }', {}, "Cannot query field 'kind' on type 'Node'.", "'Transaction'"
    ),
}


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(make_settings(tmp_path_factory.mktemp("prod-mode"), env="production")) as running:
        yield running


@pytest.fixture(scope="module")
def development(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(make_settings(tmp_path_factory.mktemp("dev-mode"))) as running:
        yield running


@pytest.fixture(scope="module")
def production_with_suggestions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path_factory.mktemp("prod-suggestions"), env="production", field_suggestions=True)
    with live_server(settings) as running:
        yield running


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    assert body.get("data") is None, body
    [error] = body["errors"]
    return error


# Suggestions


@pytest.mark.parametrize("case", list(MISTAKES))
def test_given_production_when_a_near_miss_is_sent_then_the_message_stays_without_a_suggestion(
    production: LiveServer, case: str
) -> None:
    mistake = MISTAKES[case]

    response = post(production, mistake.query, mistake.variables)

    error = only_error(response.json())
    assert mistake.kept in error["message"]
    assert "Did you mean" not in response.text
    assert mistake.hint not in error["message"]
    assert error["extensions"]["code"] in {"GRAPHQL_VALIDATION_FAILED", "BAD_USER_INPUT"}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_given_development_when_a_near_miss_is_sent_then_the_message_suggests_the_right_name(
    development: LiveServer, case: str
) -> None:
    mistake = MISTAKES[case]

    error = only_error(gql(development, mistake.query, mistake.variables))

    assert mistake.kept in error["message"]
    assert "Did you mean" in error["message"] and mistake.hint in error["message"]


def test_given_production_with_suggestions_turned_on_when_a_near_miss_is_sent_then_it_is_suggested(
    production_with_suggestions: LiveServer,
) -> None:
    mistake = MISTAKES["a misspelt field"]

    error = only_error(gql(production_with_suggestions, mistake.query))

    assert "Did you mean 'name'?" in error["message"]


@pytest.mark.anyio
async def test_given_production_when_a_subscription_has_a_near_miss_then_the_error_has_no_suggestion(
    production: LiveServer,
) -> None:
    async with ws_connect(production, init_payload={"authorization": f"Bearer {production.token('ws-u1')}"}) as ws:
        assert (await ws.receive())["type"] == "connection_ack"
        await ws.subscribe("subscription { balanceChanged { availble } }")
        message = await ws.receive()

    assert message["type"] == "error"
    [error] = message["payload"]
    assert "Cannot query field 'availble' on type 'PointBalance'." in error["message"]
    assert "Did you mean" not in error["message"]


def test_given_the_settings_when_field_suggestions_are_not_configured_then_they_follow_the_mode(tmp_path: Path) -> None:
    assert make_settings(tmp_path).field_suggestions_enabled is True
    assert make_settings(tmp_path, env="production").field_suggestions_enabled is False
    assert make_settings(tmp_path, field_suggestions=False).field_suggestions_enabled is False


# Introspection, every way in


def test_given_production_when_a_type_is_introspected_with_dunder_type_then_it_is_refused(
    production: LiveServer,
) -> None:
    body = gql(production, '{ __type(name: "Redemption") { fields { name } } }')

    assert body["data"] is None
    assert {error["extensions"]["code"] for error in body["errors"]} == {"GRAPHQL_VALIDATION_FAILED"}
    assert "introspection has been disabled" in body["errors"][0]["message"]
    assert "giftCard" not in str(body)


def test_given_production_when_a_query_asks_for_typename_then_it_answers(production: LiveServer) -> None:
    # Clients (Apollo, urql) add __typename everywhere: it is not introspection.
    body = gql(production, "{ catalog(first: 1) { __typename nodes { __typename id } } }")

    assert "errors" not in body
    assert body["data"]["catalog"]["__typename"] == "RewardConnection"


# Messages clients need still arrive; unexpected errors stay masked


def test_given_production_when_a_page_is_too_large_then_the_user_input_message_is_shown(production: LiveServer) -> None:
    error = only_error(gql(production, operation("Catalog"), {"first": 1000}))

    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "100" in error["message"]


def test_given_production_when_a_variable_has_the_wrong_type_then_the_message_names_it(production: LiveServer) -> None:
    error = only_error(gql(production, operation("Catalog"), {"first": "ten"}))

    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "$first" in error["message"]


class ExplodingHistoryProvider(SandboxProvider):
    """The sandbox, except that history fails with an error no provider adapter should raise."""

    async def list_transactions(self, user_id: str, **kwargs: Any) -> Any:
        raise KeyError("sandbox_ledger.position: internal detail")


def exploding_history(settings: Settings, events: EventHub) -> SandboxProvider:
    return ExplodingHistoryProvider(
        database_url=settings.sandbox_database_url,
        events=events,
        config=SandboxConfig(fulfilment_delay=settings.sandbox_fulfilment_delay),
    )


def test_given_production_when_a_resolver_fails_unexpectedly_then_the_error_is_masked(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, env="production")
    with live_server_with_provider(settings, exploding_history) as server:
        response = post(server, operation("History"), {"first": 5}, token=server.token("u1"))

    [error] = response.json()["errors"]
    assert error["message"] == "Internal server error."
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "sandbox_ledger" not in response.text and "KeyError" not in response.text
