"""Browser protections over real HTTP: POSTs a page could forge without a preflight are refused before they
reach anything, GETs cannot mutate, and CORS answers only for the configured origins (WebSockets too)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import websockets

from tests.support import LiveServer, live_server, make_settings, operation, post, without_extensions

ALLOWED_ORIGIN = "https://app.example.com"
OTHER_ORIGIN = "https://evil.example.net"
CATALOG_BODY = json.dumps({"query": operation("Catalog"), "variables": {"first": 1}}).encode()

# Bodies a browser can send from any page without a preflight.
SIMPLE_REQUESTS = {
    "text/plain": ("text/plain;charset=UTF-8", CATALOG_BODY),
    "a form encoding": ("application/x-www-form-urlencoded", b"query=%7B+__typename+%7D"),
    "multipart/form-data": (
        "multipart/form-data; boundary=x",
        b'--x\r\nContent-Disposition: form-data; name="query"\r\n\r\n{ __typename }\r\n--x--\r\n',
    ),
    "no content type": (None, CATALOG_BODY),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # A catalog that is always stale: every Catalog query that runs asks the provider, so "nothing upstream" shows.
    settings = make_settings(tmp_path_factory.mktemp("csrf"), catalog_volatile_ttl=0.001)
    with live_server(settings) as running:
        yield running


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("cors"), cors_origins=[ALLOWED_ORIGIN + "/"], csrf_headers=["X-Custom-CSRF"]
    )
    with live_server(settings) as running:
        yield running


def upstream_calls(server: LiveServer) -> int:
    return sum(server.provider.calls.counts.values())


def send_raw(server: LiveServer, content_type: str | None, body: bytes, **headers: str) -> httpx.Response:
    all_headers = {name.replace("_", "-"): value for name, value in headers.items()}
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    with httpx.Client(timeout=30) as client:
        response = client.post(server.url, content=body, headers=all_headers)
    assert content_type is not None or "content-type" not in response.request.headers
    return response


def error_codes(response: httpx.Response) -> list[str]:
    return [error["extensions"]["code"] for error in response.json()["errors"]]


def preflight(server: LiveServer, origin: str, headers: str) -> httpx.Response:
    return httpx.options(
        server.url,
        headers={"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": headers},
        timeout=30,
    )


# CSRF


@pytest.mark.parametrize("case", list(SIMPLE_REQUESTS))
def test_given_a_post_a_browser_sends_without_preflight_when_it_has_no_csrf_header_then_400_and_nothing_upstream(
    server: LiveServer, case: str
) -> None:
    content_type, body = SIMPLE_REQUESTS[case]
    before = upstream_calls(server)

    response = send_raw(server, content_type, body)

    assert response.status_code == 400
    assert error_codes(response) == ["CSRF_BLOCKED"]
    assert "X-GraphQL-CSRF" in response.json()["errors"][0]["message"]
    assert upstream_calls(server) == before


@pytest.mark.parametrize("header", ["X-GraphQL-CSRF", "Apollo-Require-Preflight"])
@pytest.mark.parametrize("case", ["text/plain", "no content type"])
def test_given_a_simple_post_with_a_csrf_header_when_sent_then_it_passes_the_csrf_check(
    server: LiveServer, case: str, header: str
) -> None:
    content_type, body = SIMPLE_REQUESTS[case]

    response = send_raw(server, content_type, body, **{header: "1"})

    # Past the CSRF check, the body is still not JSON: the content-type check answers.
    assert response.status_code == 415
    assert error_codes(response) == ["UNSUPPORTED_MEDIA_TYPE"]


def test_given_a_csrf_header_with_an_empty_value_when_sent_then_it_does_not_count(server: LiveServer) -> None:
    response = send_raw(server, "text/plain", CATALOG_BODY, **{"X-GraphQL-CSRF": ""})

    assert error_codes(response) == ["CSRF_BLOCKED"]


def test_given_a_simple_post_with_a_bearer_token_when_sent_then_it_is_not_treated_as_forged(
    server: LiveServer,
) -> None:
    # Authorization is not CORS-safelisted: a page can only send it after a preflight that CORS allowed.
    response = send_raw(server, "text/plain", CATALOG_BODY, Authorization=f"Bearer {server.token('u1')}")

    assert error_codes(response) == ["UNSUPPORTED_MEDIA_TYPE"]


def test_given_a_json_post_without_any_csrf_header_when_sent_then_it_runs_and_reaches_the_provider(
    server: LiveServer,
) -> None:
    before = server.provider.calls.get("list_rewards")

    response = send_raw(server, "application/json", CATALOG_BODY)

    assert response.status_code == 200
    assert len(response.json()["data"]["catalog"]["edges"]) == 1
    assert server.provider.calls.get("list_rewards") > before


def test_given_a_get_query_without_any_csrf_header_when_sent_then_it_runs(server: LiveServer) -> None:
    response = httpx.get(server.url, params={"query": "{ __typename }"}, timeout=30)

    assert without_extensions(response.json()) == {"data": {"__typename": "Query"}}


def test_given_a_mutation_over_get_without_any_header_when_sent_then_405_and_nothing_redeemed(
    server: LiveServer,
) -> None:
    before = server.provider.calls.get("redeem")
    variables = {"input": {"clientMutationId": "x", "rewardId": "x", "faceValue": "1"}}

    response = httpx.get(
        server.url,
        params={"query": operation("Redeem"), "variables": json.dumps(variables)},
        headers={"Authorization": f"Bearer {server.token('u1')}"},
        timeout=30,
    )

    assert response.status_code == 405
    assert server.provider.calls.get("redeem") == before


def test_given_configured_csrf_headers_when_only_a_default_one_is_sent_then_it_no_longer_counts(
    cors_server: LiveServer,
) -> None:
    refused = send_raw(cors_server, "text/plain", CATALOG_BODY, **{"X-GraphQL-CSRF": "1"})
    accepted = send_raw(cors_server, "text/plain", CATALOG_BODY, **{"X-Custom-CSRF": "1"})

    assert error_codes(refused) == ["CSRF_BLOCKED"]
    assert error_codes(accepted) == ["UNSUPPORTED_MEDIA_TYPE"]


# CORS


def test_given_an_allowed_origin_when_it_preflights_a_post_then_the_headers_it_needs_are_allowed(
    cors_server: LiveServer,
) -> None:
    response = preflight(cors_server, ALLOWED_ORIGIN, "authorization, content-type, x-custom-csrf")

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = {value.strip().lower() for value in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-custom-csrf"} <= allowed
    assert "access-control-allow-credentials" not in response.headers


def test_given_another_origin_when_it_preflights_a_post_then_it_is_refused_without_cors_headers(
    cors_server: LiveServer,
) -> None:
    before = upstream_calls(cors_server)

    response = preflight(cors_server, OTHER_ORIGIN, "authorization, content-type")

    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers
    assert upstream_calls(cors_server) == before


def test_given_an_allowed_origin_when_it_posts_then_the_answer_may_be_read_by_its_page(cors_server: LiveServer) -> None:
    response = post(cors_server, "{ __typename }", headers={"Origin": ALLOWED_ORIGIN})

    assert without_extensions(response.json()) == {"data": {"__typename": "Query"}}
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "x-request-id" in response.headers["access-control-expose-headers"].lower()


def test_given_another_origin_when_it_posts_then_the_answer_carries_no_cors_headers(cors_server: LiveServer) -> None:
    response = post(cors_server, "{ __typename }", headers={"Origin": OTHER_ORIGIN})

    assert "access-control-allow-origin" not in response.headers


def test_given_no_configured_origins_when_any_origin_preflights_then_no_cors_headers(server: LiveServer) -> None:
    response = preflight(server, ALLOWED_ORIGIN, "authorization, content-type")

    assert not any(name.startswith("access-control-") for name in response.headers)


@pytest.mark.anyio
async def test_given_an_allowed_origin_when_it_opens_a_websocket_then_the_handshake_succeeds(
    cors_server: LiveServer,
) -> None:
    async with websockets.connect(
        cors_server.ws_url, subprotocols=["graphql-transport-ws"], origin=ALLOWED_ORIGIN
    ) as ws:
        assert ws.subprotocol == "graphql-transport-ws"


@pytest.mark.anyio
async def test_given_another_origin_when_it_opens_a_websocket_then_the_handshake_is_refused(
    cors_server: LiveServer,
) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(cors_server.ws_url, subprotocols=["graphql-transport-ws"], origin=OTHER_ORIGIN):
            pass

    assert refused.value.response.status_code == 403
