"""GraphQL over HTTP media types and status codes, over real HTTP: application/graphql-response+json when the
client prefers it (request errors get 4xx, results with data 200), application/json (200) otherwise, and the
statuses of other layers (401, 405, 415, CSRF) kept under either."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from giftgraph.view import prefers_graphql_response
from tests.support import LiveServer, live_server, make_settings, operation

GRAPHQL_RESPONSE = "application/graphql-response+json"
PREFERS_GRAPHQL_RESPONSE = {"Accept": f"{GRAPHQL_RESPONSE}, application/json;q=0.9"}
BALANCE = operation("ViewerBalance")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(make_settings(tmp_path_factory.mktemp("http-spec"))) as running:
        yield running


@pytest.fixture(scope="module")
def token(server: LiveServer) -> str:
    return server.token("spec-user")


def send(
    server: LiveServer, query: str, variables: dict[str, Any] | None = None, *, accept: str | None, token: str | None
) -> httpx.Response:
    headers = {"Accept": accept} if accept is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    # A bare Request, sent as built: the client adds no default Accept to it.
    request = httpx.Request("POST", server.url, json={"query": query, "variables": variables or {}}, headers=headers)
    assert accept is not None or "accept" not in request.headers
    with httpx.Client(timeout=30) as client:
        return client.send(request)


def upstream_calls(server: LiveServer) -> int:
    return sum(server.provider.calls.counts.values())


def codes(response: httpx.Response) -> list[str]:
    return [error["extensions"]["code"] for error in response.json()["errors"]]


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("application/json", False),
        (GRAPHQL_RESPONSE, True),
        (f"{GRAPHQL_RESPONSE}, application/json;q=0.9", True),
        (f"application/json, {GRAPHQL_RESPONSE}", True),
        (f"application/json, {GRAPHQL_RESPONSE};q=0.5", False),
        (f"{GRAPHQL_RESPONSE};q=0, application/json", False),
        (f"{GRAPHQL_RESPONSE};q=0.8, */*;q=0.1", True),
        (f"{GRAPHQL_RESPONSE.upper()};q=bogus, application/json", False),
    ],
)
def test_given_an_accept_header_when_negotiated_then_graphql_response_json_only_when_preferred(
    accept: str | None, expected: bool
) -> None:
    assert prefers_graphql_response(accept) is expected


# application/graphql-response+json


def test_given_graphql_response_json_preferred_when_a_query_succeeds_then_200_in_that_media_type(
    server: LiveServer, token: str
) -> None:
    response = send(server, BALANCE, accept=PREFERS_GRAPHQL_RESPONSE["Accept"], token=token)

    assert response.status_code == 200
    assert response.headers["content-type"] == f"{GRAPHQL_RESPONSE}; charset=utf-8"
    assert response.json()["data"]["viewer"]["userId"] == "spec-user"


def test_given_graphql_response_json_preferred_when_the_document_does_not_parse_then_400_without_data(
    server: LiveServer, token: str
) -> None:
    before = upstream_calls(server)

    response = send(server, BALANCE[:-10], accept=GRAPHQL_RESPONSE, token=token)

    assert response.status_code == 400
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    assert "data" not in response.json()
    assert codes(response) == ["GRAPHQL_PARSE_FAILED"]
    assert upstream_calls(server) == before


def test_given_graphql_response_json_preferred_when_the_document_fails_validation_then_422_without_data(
    server: LiveServer, token: str
) -> None:
    before = upstream_calls(server)

    response = send(server, "query { viewer { balance { noSuchField } } }", accept=GRAPHQL_RESPONSE, token=token)

    assert response.status_code == 422
    assert "data" not in response.json()
    assert codes(response) == ["GRAPHQL_VALIDATION_FAILED"]
    assert upstream_calls(server) == before


def test_given_graphql_response_json_preferred_when_variables_do_not_coerce_then_400(server: LiveServer) -> None:
    response = send(server, operation("Catalog"), {"first": "many"}, accept=GRAPHQL_RESPONSE, token=None)

    assert response.status_code == 400
    assert "data" not in response.json()
    assert codes(response) == ["BAD_USER_INPUT"]


def test_given_graphql_response_json_preferred_when_a_field_fails_after_execution_started_then_200_with_data(
    server: LiveServer,
) -> None:
    # Anonymous `viewer` is a field error that nulls the root: data is present (null), so execution happened.
    response = send(server, "{ viewer { userId } }", accept=GRAPHQL_RESPONSE, token=None)

    assert response.status_code == 200
    assert response.json()["data"] is None
    assert codes(response) == ["UNAUTHENTICATED"]


def test_given_graphql_response_json_preferred_when_a_field_fails_beside_others_then_200_with_partial_data(
    server: LiveServer, token: str
) -> None:
    response = send(server, '{ __typename node(id: "garbage") { id } }', accept=GRAPHQL_RESPONSE, token=token)

    assert response.status_code == 200
    assert response.json()["data"] == {"__typename": "Query", "node": None}


# application/json (legacy, the default)


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
def test_given_application_json_or_no_preference_when_the_document_does_not_parse_then_200_application_json(
    server: LiveServer, accept: str | None
) -> None:
    response = send(server, BALANCE[:-10], accept=accept, token=None)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert codes(response) == ["GRAPHQL_PARSE_FAILED"]


def test_given_application_json_when_the_document_fails_validation_then_200(server: LiveServer) -> None:
    response = send(server, "{ noSuchField }", accept="application/json", token=None)

    assert response.status_code == 200
    assert codes(response) == ["GRAPHQL_VALIDATION_FAILED"]


# Other layers keep their statuses


def test_given_graphql_response_json_preferred_when_the_token_is_invalid_then_401_in_that_media_type(
    server: LiveServer,
) -> None:
    response = send(server, BALANCE, accept=GRAPHQL_RESPONSE, token="not-a-jwt")

    assert response.status_code == 401
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    assert codes(response) == ["UNAUTHENTICATED"]
    assert response.headers["cache-control"] == "private, no-store"


def test_given_graphql_response_json_preferred_when_a_mutation_comes_over_get_then_405(
    server: LiveServer, token: str
) -> None:
    before = server.provider.calls.get("redeem")
    variables = {"input": {"clientMutationId": "m", "rewardId": "r", "faceValue": "1"}}

    response = httpx.get(
        server.url,
        params={"query": operation("Redeem"), "variables": json.dumps(variables)},
        headers={**PREFERS_GRAPHQL_RESPONSE, "Authorization": f"Bearer {token}"},
        timeout=30,
    )

    assert response.status_code == 405
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    assert server.provider.calls.get("redeem") == before


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({"Content-Type": "text/plain"}, 400, "CSRF_BLOCKED"),
        ({"Content-Type": "text/plain", "X-GraphQL-CSRF": "1"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
    ],
    ids=["a forged-looking POST", "a non-JSON body"],
)
def test_given_graphql_response_json_preferred_when_the_transport_refuses_then_its_status_is_kept(
    server: LiveServer, headers: dict[str, str], status: int, code: str
) -> None:
    response = httpx.post(
        server.url,
        content=json.dumps({"query": "{ __typename }"}),
        headers={**PREFERS_GRAPHQL_RESPONSE, **headers},
        timeout=30,
    )

    assert response.status_code == status
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    assert codes(response) == [code]


def test_given_graphql_response_json_preferred_when_a_persisted_hash_is_unknown_then_200_so_clients_retry(
    server: LiveServer,
) -> None:
    body = {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "0" * 64}}}

    response = httpx.post(server.url, json=body, headers=PREFERS_GRAPHQL_RESPONSE, timeout=30)

    assert response.status_code == 200
    assert codes(response) == ["PERSISTED_QUERY_NOT_FOUND"]


TWO_OPERATIONS = "query First { catalog(first: 1) { totalCount } } query Second { viewer { userId } }"


@pytest.mark.parametrize(("accept", "status"), [(GRAPHQL_RESPONSE, 400), ("application/json", 200)])
def test_given_two_operations_without_an_operation_name_then_a_request_error_and_neither_runs(
    server: LiveServer, token: str, accept: str, status: int
) -> None:
    before = upstream_calls(server)

    response = send(server, TWO_OPERATIONS, accept=accept, token=token)

    assert response.status_code == status
    assert codes(response) == ["BAD_REQUEST"]
    assert "operationName" in response.json()["errors"][0]["message"]
    assert upstream_calls(server) == before


def test_given_two_operations_and_an_operation_name_then_that_one_runs(server: LiveServer, token: str) -> None:
    response = httpx.post(
        server.url,
        json={"query": TWO_OPERATIONS, "operationName": "Second"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )

    assert response.status_code == 200
    assert set(response.json()["data"]) == {"viewer"}
