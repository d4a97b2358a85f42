"""Operating the service over real HTTP: health, readiness, GraphiQL and introspection by mode, request ids,
masked errors, provider outages, and logs that never carry secrets."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import jwt
import pytest
import websockets

from giftgraph.settings import Settings
from providers import EventHub
from providers.base import Balance
from providers.sandbox import SandboxConfig, SandboxProvider
from tests.support import (
    TEST_SECRET,
    LiveServer,
    agql,
    gql,
    live_server,
    live_server_with_provider,
    make_settings,
    operation,
    post,
    reward_to_redeem,
    ws_connect,
)

INTROSPECTION = "query { __schema { queryType { name } } }"
HTML = {"Accept": "text/html"}
HEX_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(make_settings(tmp_path_factory.mktemp("ops"), sandbox_fulfilment_delay=0.2)) as running:
        yield running


@pytest.fixture(scope="module")
def production_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(make_settings(tmp_path_factory.mktemp("ops-prod"), env="production")) as running:
        yield running


@pytest.fixture(scope="module")
def production_server_with_tools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("ops-prod-tools"), env="production", graphiql=True, introspection=True
    )
    with live_server(settings) as running:
        yield running


# Health and readiness


def test_given_a_running_server_when_healthz_is_asked_then_200(server: LiveServer) -> None:
    response = httpx.get(f"{server.base_url}/healthz")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_given_provider_and_database_answer_when_readyz_is_asked_then_200_with_every_check_ok(
    server: LiveServer,
) -> None:
    response = httpx.get(f"{server.base_url}/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"provider": "ok", "database": "ok"}}


def test_given_the_provider_check_fails_when_readyz_is_asked_then_503_naming_the_provider(server: LiveServer) -> None:
    server.provider.faults.fail_next("check")

    response = httpx.get(f"{server.base_url}/readyz")

    assert response.status_code == 503
    assert response.json()["checks"] == {"provider": "unavailable", "database": "ok"}


def test_given_the_provider_check_failed_once_when_readyz_is_asked_again_then_200(server: LiveServer) -> None:
    server.provider.faults.fail_next("check")
    httpx.get(f"{server.base_url}/readyz")

    assert httpx.get(f"{server.base_url}/readyz").status_code == 200


# GraphiQL and introspection by mode


def test_given_development_when_a_browser_gets_graphql_then_graphiql_is_served(server: LiveServer) -> None:
    response = httpx.get(server.url, headers=HTML)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


def test_given_development_when_introspecting_then_the_schema_answers(server: LiveServer) -> None:
    body = gql(server, INTROSPECTION)

    assert body["data"]["__schema"]["queryType"]["name"] == "Query"


def test_given_production_when_a_browser_gets_graphql_then_404(production_server: LiveServer) -> None:
    response = httpx.get(production_server.url, headers=HTML)

    assert response.status_code == 404
    assert "graphiql" not in response.text.lower()


def test_given_production_when_introspecting_then_it_is_refused(production_server: LiveServer) -> None:
    body = gql(production_server, INTROSPECTION)

    assert body.get("data") is None
    assert {e["extensions"]["code"] for e in body["errors"]} == {"GRAPHQL_VALIDATION_FAILED"}
    assert "introspection" in body["errors"][0]["message"]


def test_given_production_when_an_ordinary_query_runs_then_it_answers(production_server: LiveServer) -> None:
    body = gql(production_server, operation("Catalog"), {"first": 2})

    assert "errors" not in body
    assert len(body["data"]["catalog"]["edges"]) == 2


def test_given_production_with_graphiql_turned_on_when_a_browser_gets_graphql_then_graphiql_is_served(
    production_server_with_tools: LiveServer,
) -> None:
    response = httpx.get(production_server_with_tools.url, headers=HTML)

    assert response.status_code == 200
    assert "graphiql" in response.text.lower()


def test_given_production_with_introspection_turned_on_when_introspecting_then_the_schema_answers(
    production_server_with_tools: LiveServer,
) -> None:
    body = gql(production_server_with_tools, INTROSPECTION)

    assert body["data"]["__schema"]["queryType"]["name"] == "Query"


# Request ids


def test_given_no_request_id_when_a_request_is_answered_then_one_is_generated(server: LiveServer) -> None:
    response = post(server, operation("Catalog"), {"first": 1})

    assert HEX_ID.fullmatch(response.headers["X-Request-ID"])


def test_given_two_requests_without_ids_when_answered_then_their_ids_differ(server: LiveServer) -> None:
    first = httpx.get(f"{server.base_url}/healthz").headers["X-Request-ID"]
    second = httpx.get(f"{server.base_url}/healthz").headers["X-Request-ID"]

    assert first != second


def test_given_a_valid_request_id_when_a_request_is_answered_then_it_is_echoed(server: LiveServer) -> None:
    response = post(server, operation("Catalog"), {"first": 1}, headers={"X-Request-ID": "client-req.42_a-b"})

    assert response.headers["X-Request-ID"] == "client-req.42_a-b"


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param("has spaces and !", id="forbidden characters"),
        pytest.param("x" * 65, id="too long"),
        pytest.param("", id="empty"),
    ],
)
def test_given_an_invalid_request_id_when_a_request_is_answered_then_it_is_replaced(
    server: LiveServer, sent: str
) -> None:
    response = post(server, operation("Catalog"), {"first": 1}, headers={"X-Request-ID": sent})

    assert HEX_ID.fullmatch(response.headers["X-Request-ID"])


def test_given_a_refused_request_when_answered_then_it_still_carries_a_request_id(server: LiveServer) -> None:
    response = post(server, operation("ViewerBalance"), headers={"Authorization": "Bearer garbage"})

    assert response.status_code == 401
    assert HEX_ID.fullmatch(response.headers["X-Request-ID"])


@pytest.mark.anyio
async def test_given_a_websocket_when_it_is_accepted_then_the_handshake_carries_the_sent_request_id(
    server: LiveServer,
) -> None:
    async with websockets.connect(
        server.ws_url, subprotocols=["graphql-transport-ws"], additional_headers={"X-Request-ID": "ws-trace-1"}
    ) as ws:
        assert ws.response is not None
        assert ws.response.headers["X-Request-ID"] == "ws-trace-1"


# Unexpected errors are masked and logged with the request id


class ExplodingBalancesProvider(SandboxProvider):
    """The sandbox, except that balance lookups fail with an error no provider adapter should raise."""

    async def get_balances(self, user_ids: Sequence[str]) -> list[Balance]:
        raise RuntimeError("kaboom: internal detail that must not reach the client")


def exploding_provider(settings: Settings, events: EventHub) -> SandboxProvider:
    return ExplodingBalancesProvider(
        database_url=settings.sandbox_database_url,
        events=events,
        config=SandboxConfig(fulfilment_delay=settings.sandbox_fulfilment_delay),
    )


@pytest.fixture(scope="module")
def exploding_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path_factory.mktemp("ops-exploding"))
    with live_server_with_provider(settings, exploding_provider) as running:
        yield running


def test_given_an_unexpected_exception_when_resolving_then_the_client_sees_only_a_masked_error(
    exploding_server: LiveServer,
) -> None:
    response = post(exploding_server, operation("ViewerBalance"), token=exploding_server.token("u1"))

    assert response.status_code == 200
    [error] = response.json()["errors"]
    assert error["message"] == "Internal server error."
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "kaboom" not in response.text and "Traceback" not in response.text


def test_given_an_unexpected_exception_when_resolving_then_the_error_carries_the_responses_request_id(
    exploding_server: LiveServer,
) -> None:
    response = post(exploding_server, operation("ViewerBalance"), token=exploding_server.token("u1"))

    [error] = response.json()["errors"]
    assert error["extensions"]["requestId"] == response.headers["X-Request-ID"]


def test_given_a_client_request_id_and_an_unexpected_exception_when_resolving_then_the_error_carries_it(
    exploding_server: LiveServer,
) -> None:
    response = post(
        exploding_server,
        operation("ViewerBalance"),
        token=exploding_server.token("u1"),
        headers={"X-Request-ID": "trace-me-123"},
    )

    assert response.json()["errors"][0]["extensions"]["requestId"] == "trace-me-123"


def test_given_an_unexpected_exception_when_resolving_then_the_log_has_the_traceback_with_the_request_id(
    exploding_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = post(exploding_server, operation("ViewerBalance"), token=exploding_server.token("u1"))

    request_id = response.headers["X-Request-ID"]
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == request_id and r.exc_info]
    assert len(logged) == 1
    exc_type, exc, _ = logged[0].exc_info  # type: ignore[misc]
    assert exc_type is RuntimeError and "kaboom" in str(exc)


async def _first_balance_event(server: LiveServer) -> tuple[str, dict[str, Any]]:
    """The handshake's X-Request-ID and the first message of a balanceChanged subscription."""
    async with ws_connect(server, init_payload={"authorization": f"Bearer {server.token('u1')}"}) as ws:
        assert (await ws.receive())["type"] == "connection_ack"
        await ws.subscribe(operation("BalanceChanged"))
        return ws.ws.response.headers["X-Request-ID"], await ws.receive()


@pytest.mark.anyio
async def test_given_an_unexpected_exception_in_a_subscription_when_it_starts_then_the_error_is_masked(
    exploding_server: LiveServer,
) -> None:
    _, message = await _first_balance_event(exploding_server)

    [error] = message["payload"]["errors"]
    assert error["message"] == "Internal server error."
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "kaboom" not in str(message)


@pytest.mark.anyio
async def test_given_an_unexpected_exception_in_a_subscription_when_it_starts_then_it_is_logged_with_the_connections_id(
    exploding_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        request_id, message = await _first_balance_event(exploding_server)

    assert message["payload"]["errors"][0]["extensions"]["requestId"] == request_id
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == request_id and r.exc_info]
    assert [r.exc_info[0] for r in logged] == [RuntimeError]  # type: ignore[index]


# Provider outages are PROVIDER_UNAVAILABLE, never a 500


@pytest.fixture
def fresh_server(tmp_path: Any) -> Iterator[LiveServer]:
    with live_server(make_settings(tmp_path)) as running:
        yield running


def test_given_a_cold_catalog_cache_and_a_failing_provider_when_the_catalog_is_queried_then_provider_unavailable(
    fresh_server: LiveServer,
) -> None:
    fresh_server.provider.faults.fail_next("list_rewards", 5)

    response = post(fresh_server, operation("Catalog"), {"first": 5})

    assert response.status_code == 200
    assert [e["extensions"]["code"] for e in response.json()["errors"]] == ["PROVIDER_UNAVAILABLE"]


def test_given_balance_lookups_failing_when_the_viewer_balance_is_queried_then_provider_unavailable(
    fresh_server: LiveServer,
) -> None:
    fresh_server.provider.faults.fail_next("get_balances", 5)

    response = post(fresh_server, operation("ViewerBalance"), token=fresh_server.token("u1"))

    assert response.status_code == 200
    assert [e["extensions"]["code"] for e in response.json()["errors"]] == ["PROVIDER_UNAVAILABLE"]


# Logs never carry secrets


SECRET_LAST_SUBSCRIPTION = """
subscription { redemptionUpdated { id status giftCard { expiresAt claimUrl pin code } } }
"""


async def _redeem_and_watch_fulfilment(server: LiveServer, user_id: str, token: str) -> dict[str, Any]:
    """Redeem while subscribed (token in connection_init), then refetch the card over HTTP; returns the card."""
    async with ws_connect(server, init_payload={"authorization": f"Bearer {token}"}) as ws:
        assert (await ws.receive())["type"] == "connection_ack"
        op = await ws.subscribe(SECRET_LAST_SUBSCRIPTION)
        while server.services.events.subscriber_count(user_id) < 1:
            await asyncio.sleep(0.01)
        reward = reward_to_redeem(server)
        variables = {
            "input": {
                "clientMutationId": uuid.uuid4().hex,
                "rewardId": reward["rewardId"],
                "faceValue": reward["faceValue"],
            }
        }
        async with httpx.AsyncClient() as client:
            redeemed = await agql(client, server, operation("Redeem"), variables, token=token)
            redemption_id = redeemed["data"]["redeem"]["redemption"]["id"]
            event: dict[str, Any] = {"status": "PENDING"}
            while event["status"] == "PENDING":
                message = await ws.receive()
                assert message["id"] == op, message
                event = message["payload"]["data"]["redemptionUpdated"]
            refetched = await agql(client, server, operation("Redemption"), {"id": redemption_id}, token=token)
    card = refetched["data"]["node"]["giftCard"]
    assert card["code"] and event["giftCard"]["code"] == card["code"], (event, card)
    return card


@pytest.mark.anyio
async def test_given_debug_logging_when_a_user_redeems_and_subscribes_then_no_token_secret_or_card_is_logged(
    server: LiveServer, debug_log: io.StringIO
) -> None:
    token = server.token("log-user")

    card = await _redeem_and_watch_fulfilment(server, "log-user", token)

    logged = debug_log.getvalue()
    assert "FULFILLED" in logged  # the flow was logged at all
    signature = token.rsplit(".", 1)[1]
    leaks = {
        "token": token in logged,
        "token signature (or its tail)": signature in logged or signature[-12:] in logged,
        "JWT secret": TEST_SECRET in logged,
        "gift card code (or its tail)": card["code"][-9:] in logged,
        "gift card pin": re.search(rf"\b{card['pin']}\b", logged) is not None,
        "claim URL": card["claimUrl"] in logged,
        "claim URL token": card["claimUrl"].rsplit("/", 1)[1] in logged,
    }
    assert [name for name, leaked in leaks.items() if leaked] == []


@pytest.mark.anyio
async def test_given_debug_logging_when_a_websocket_handshake_carries_credentials_then_they_are_not_logged(
    server: LiveServer, debug_log: io.StringIO
) -> None:
    credentials = "dXNlcjpzM2NyZXQtcGFzc3dvcmQ="
    async with websockets.connect(
        server.ws_url,
        subprotocols=["graphql-transport-ws"],
        additional_headers={"Authorization": f"Basic {credentials}", "Cookie": "session=c00kie-value-42"},
    ):
        pass

    logged = debug_log.getvalue()
    assert "authorization" in logged.lower()  # the handshake was traced at all
    assert credentials not in logged and "c00kie-value-42" not in logged


def test_given_debug_logging_when_an_invalid_token_is_refused_then_it_is_not_logged(
    server: LiveServer, debug_log: io.StringIO
) -> None:
    forged = jwt.encode({"sub": "u1", "exp": 4_102_444_800}, "a-different-secret-0123456789-abcdef", algorithm="HS256")

    response = post(server, operation("ViewerBalance"), headers={"Authorization": f"Bearer {forged}"})

    assert response.status_code == 401
    assert forged.rsplit(".", 1)[1] not in debug_log.getvalue()
