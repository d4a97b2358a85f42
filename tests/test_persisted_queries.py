"""Persisted queries over real HTTP and WebSockets: Apollo's APQ protocol (hash, PersistedQueryNotFound, the
retry with the text), GETs by hash that HTTP caches may keep, the production safelist, and the manifest."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from click.testing import CliRunner, Result

from giftgraph.app import create_app
from giftgraph.cli import main as cli
from giftgraph.persisted import PersistedQueries, Resolved, build_manifest, manifest_text, sha256_hex
from giftgraph.settings import ConfigurationError
from tests.support import (
    OPERATIONS,
    LiveServer,
    WsClient,
    live_server,
    make_settings,
    operation,
    post,
    reward_to_redeem,
    without_extensions,
    ws_connect,
)

MANIFEST = OPERATIONS.parent / "persisted-operations.json"
MANIFEST_IDS = {entry["name"]: entry["id"] for entry in json.loads(MANIFEST.read_text())["operations"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("apq"), persisted_queries="apq", persisted_queries_manifest=MANIFEST
    )
    with live_server(settings) as running:
        yield running


@pytest.fixture(scope="module")
def safelist_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("safelist"), persisted_queries="safelist", persisted_queries_manifest=MANIFEST
    )
    with live_server(settings) as running:
        yield running


@pytest.fixture(scope="module")
def off_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(make_settings(tmp_path_factory.mktemp("apq-off"), persisted_queries="off")) as running:
        yield running


def persisted(sha256: str, *, version: int = 1) -> dict[str, Any]:
    return {"persistedQuery": {"version": version, "sha256Hash": sha256}}


def unregistered_balance_query() -> str:
    """A viewer query (it asks the provider for balances) no server has seen: the comment makes its hash new."""
    return f"# {uuid.uuid4().hex}\nquery MyBalance {{ viewer {{ balance {{ available }} }} }}\n"


def bearer(server: LiveServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token(f'user-{uuid.uuid4().hex[:8]}')}"}


def post_persisted(
    server: LiveServer,
    sha256: str,
    *,
    query: str | None = None,
    variables: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    version: int = 1,
) -> httpx.Response:
    body: dict[str, Any] = {"variables": variables or {}, "extensions": persisted(sha256, version=version)}
    if query is not None:
        body["query"] = query
    return httpx.post(server.url, json=body, headers=headers or {}, timeout=30)


def get_persisted(
    server: LiveServer, sha256: str, *, variables: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    params = {"extensions": json.dumps(persisted(sha256))}
    if variables is not None:
        params["variables"] = json.dumps(variables)
    return httpx.get(server.url, params=params, headers=headers or {}, timeout=30)


def signed_in(server: LiveServer) -> dict[str, Any]:
    """A connection_init payload for a new user."""
    return {"authorization": bearer(server)["Authorization"]}


async def subscribe_by_hash(ws: WsClient, op_id: str, name: str) -> None:
    message = {"id": op_id, "type": "subscribe", "payload": {"extensions": persisted(MANIFEST_IDS[name])}}
    await ws.ws.send(json.dumps(message))


def manifest_command(*args: str) -> Result:
    return CliRunner().invoke(cli, ["persisted-operations", *args])


def upstream_calls(server: LiveServer) -> int:
    return sum(server.provider.calls.counts.values())


def error_codes(response: httpx.Response) -> list[str]:
    return [error["extensions"]["code"] for error in response.json().get("errors", ())]


# Automatic persisted queries (APQ)


def test_given_an_unknown_hash_without_text_when_sent_then_persisted_query_not_found_and_nothing_upstream(
    server: LiveServer,
) -> None:
    query = unregistered_balance_query()
    before = upstream_calls(server)

    response = post_persisted(server, sha256_hex(query), headers=bearer(server))

    assert response.status_code == 200  # Apollo clients retry on this error, and give up on error statuses
    assert response.json()["errors"] == [
        {"message": "PersistedQueryNotFound", "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}
    ]
    assert upstream_calls(server) == before


def test_given_an_unknown_hash_when_sent_anonymously_then_no_cache_may_keep_the_miss(server: LiveServer) -> None:
    response = get_persisted(server, sha256_hex(unregistered_balance_query()))

    assert error_codes(response) == ["PERSISTED_QUERY_NOT_FOUND"]
    assert response.headers["cache-control"] == "private, no-cache, must-revalidate"


def test_given_the_retry_with_text_and_hash_when_sent_then_it_runs_and_the_hash_alone_works_afterwards(
    server: LiveServer,
) -> None:
    query = unregistered_balance_query()
    headers = bearer(server)
    assert error_codes(post_persisted(server, sha256_hex(query), headers=headers)) == ["PERSISTED_QUERY_NOT_FOUND"]

    registered = post_persisted(server, sha256_hex(query), query=query, headers=headers)
    before = server.provider.calls.get("get_balances")
    by_hash = post_persisted(server, sha256_hex(query), headers=headers)

    assert without_extensions(registered.json()) == {"data": {"viewer": {"balance": {"available": 10_000}}}}
    assert without_extensions(by_hash.json()) == without_extensions(registered.json())
    assert server.provider.calls.get("get_balances") == before + 1


def test_given_a_registered_hash_when_sent_over_get_with_variables_then_it_runs(server: LiveServer) -> None:
    query = f"# {uuid.uuid4().hex}\nquery Page($first: Int) {{ catalog(first: $first) {{ edges {{ cursor }} }} }}\n"
    post_persisted(server, sha256_hex(query), query=query, variables={"first": 1})

    response = get_persisted(server, sha256_hex(query), variables={"first": 3})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")  # not GraphiQL, though Accept is */*
    assert len(response.json()["data"]["catalog"]["edges"]) == 3


def test_given_text_that_does_not_match_the_hash_when_sent_then_refused_unrun_and_unregistered(
    server: LiveServer,
) -> None:
    query, other = unregistered_balance_query(), unregistered_balance_query()
    headers = bearer(server)
    before = upstream_calls(server)

    response = post_persisted(server, sha256_hex(other), query=query, headers=headers)

    assert response.status_code == 400
    assert error_codes(response) == ["PERSISTED_QUERY_HASH_MISMATCH"]
    assert upstream_calls(server) == before
    assert error_codes(post_persisted(server, sha256_hex(other), headers=headers)) == ["PERSISTED_QUERY_NOT_FOUND"]


@pytest.mark.parametrize(
    "extensions",
    [
        persisted("ab" * 32, version=2),
        {"persistedQuery": {"version": 1, "sha256Hash": "not-a-sha256"}},
        {"persistedQuery": "ab" * 32},
    ],
    ids=["an unsupported version", "a hash that is not SHA-256 hex", "not an object"],
)
def test_given_a_malformed_persisted_query_extension_when_sent_then_400_bad_request(
    server: LiveServer, extensions: dict[str, Any]
) -> None:
    response = httpx.post(server.url, json={"extensions": extensions}, timeout=30)

    assert response.status_code == 400
    assert error_codes(response) == ["BAD_REQUEST"]


def test_given_text_that_fails_validation_when_registered_then_its_hash_is_not_kept(server: LiveServer) -> None:
    query = f"# {uuid.uuid4().hex}\nquery Broken {{ noSuchField }}\n"

    first = post_persisted(server, sha256_hex(query), query=query)

    assert error_codes(first) == ["GRAPHQL_VALIDATION_FAILED"]
    assert error_codes(post_persisted(server, sha256_hex(query))) == ["PERSISTED_QUERY_NOT_FOUND"]


def test_given_the_manifest_when_apq_starts_then_the_frontends_operations_answer_by_hash_at_once(
    server: LiveServer,
) -> None:
    response = get_persisted(server, MANIFEST_IDS["Catalog"], variables={"first": 2})

    assert "errors" not in response.json()
    assert len(response.json()["data"]["catalog"]["edges"]) == 2


def test_given_an_anonymous_get_by_hash_when_it_succeeds_then_shared_caches_may_keep_it(server: LiveServer) -> None:
    response = get_persisted(server, MANIFEST_IDS["Catalog"], variables={"first": 1})

    assert response.status_code == 200
    assert response.headers["cache-control"] == f"public, max-age={server.settings.persisted_queries_max_age}"
    vary = {value.strip().lower() for value in response.headers["vary"].split(",")}
    assert {"accept", "authorization"} <= vary
    # Nothing a shared cache would show other clients about this one's budget; the cost is everyone's.
    assert "ratelimit" not in response.headers and "ratelimit-policy" in response.headers
    assert set(response.json()["extensions"]["cost"]) == {"requestedQueryCost", "actualQueryCost"}


def test_given_an_authenticated_get_by_hash_when_it_succeeds_then_no_cache_may_keep_it(server: LiveServer) -> None:
    response = get_persisted(server, MANIFEST_IDS["ViewerBalance"], headers=bearer(server))

    assert response.json()["data"]["viewer"]["balance"]["available"] == 10_000
    assert response.headers["cache-control"] == "private, no-store"


@pytest.mark.parametrize(
    "send",
    [
        lambda s: httpx.get(s.url, params={"query": "{ __typename }"}, timeout=30),
        lambda s: post_persisted(s, MANIFEST_IDS["Catalog"], variables={"first": 1}),
        lambda s: get_persisted(s, "ab" * 32, variables={"first": 1}),
        lambda s: get_persisted(s, MANIFEST_IDS["Catalog"], variables={"first": "many"}),
        lambda s: get_persisted(s, MANIFEST_IDS["ViewerBalance"]),
    ],
    ids=["a GET with the text", "a POST by hash", "a GET by an unknown hash", "bad variables", "a field error"],
)
def test_given_an_anonymous_request_that_is_not_a_successful_get_by_hash_then_it_is_not_marked_public(
    server: LiveServer, send: Any
) -> None:
    response = send(server)

    assert "public" not in response.headers.get("cache-control", "")


def test_given_a_mutation_named_by_hash_when_sent_over_get_then_405_and_nothing_redeemed(server: LiveServer) -> None:
    reward = reward_to_redeem(server)
    variables = {"input": {"clientMutationId": uuid.uuid4().hex, **{k: reward[k] for k in ("rewardId", "faceValue")}}}
    before = server.provider.calls.get("redeem")

    response = get_persisted(server, MANIFEST_IDS["Redeem"], variables=variables, headers=bearer(server))

    assert response.status_code == 405
    assert error_codes(response) == ["METHOD_NOT_ALLOWED"]
    assert server.provider.calls.get("redeem") == before


def test_given_the_apq_cache_is_full_when_a_new_query_is_registered_then_the_least_recent_is_forgotten() -> None:
    first, second = "query A { __typename }", "query B { __typename }"
    store = PersistedQueries("apq", cache_chars=len(first) + len(second) - 1)

    for query in (first, second):
        store.remember(store.resolve(query, persisted(sha256_hex(query))))

    assert store.resolve(None, persisted(sha256_hex(second))) == Resolved(second, sha256_hex(second), hash_only=True)
    with pytest.raises(Exception, match="PersistedQueryNotFound"):
        store.resolve(None, persisted(sha256_hex(first)))


def test_given_persisted_queries_off_when_a_hash_is_sent_then_persisted_query_not_supported(
    off_server: LiveServer,
) -> None:
    response = post_persisted(off_server, MANIFEST_IDS["Catalog"])

    assert response.status_code == 200
    assert response.json()["errors"] == [
        {"message": "PersistedQueryNotSupported", "extensions": {"code": "PERSISTED_QUERY_NOT_SUPPORTED"}}
    ]


def test_given_persisted_queries_off_when_ordinary_text_is_sent_then_it_runs(off_server: LiveServer) -> None:
    assert without_extensions(post(off_server, "{ __typename }").json()) == {"data": {"__typename": "Query"}}


# Safelist


def test_given_a_safelist_when_a_registered_operations_exact_text_is_sent_then_it_runs(
    safelist_server: LiveServer,
) -> None:
    body = post(safelist_server, operation("Catalog"), {"first": 2}).json()

    assert "errors" not in body
    assert len(body["data"]["catalog"]["edges"]) == 2


def test_given_a_safelist_when_a_registered_operation_is_named_by_hash_over_get_then_it_runs(
    safelist_server: LiveServer,
) -> None:
    response = get_persisted(safelist_server, MANIFEST_IDS["ViewerBalance"], headers=bearer(safelist_server))

    assert response.json()["data"]["viewer"]["balance"]["available"] == 10_000


def test_given_a_safelist_when_other_text_is_sent_then_refused_and_nothing_upstream(
    safelist_server: LiveServer,
) -> None:
    headers = bearer(safelist_server)
    before = upstream_calls(safelist_server)

    response = post(safelist_server, unregistered_balance_query(), headers=headers)

    assert response.status_code == 400
    assert error_codes(response) == ["PERSISTED_QUERY_NOT_ALLOWED"]
    assert upstream_calls(safelist_server) == before
    # The same request through the list reaches the provider: the refusal above is what kept it away.
    post(safelist_server, operation("ViewerBalance"), headers=headers)
    assert upstream_calls(safelist_server) == before + 1


def test_given_a_safelist_when_registered_text_is_changed_by_a_byte_then_it_is_refused(
    safelist_server: LiveServer,
) -> None:
    response = post(safelist_server, operation("Catalog") + " ", {"first": 1})

    assert error_codes(response) == ["PERSISTED_QUERY_NOT_ALLOWED"]


def test_given_a_safelist_when_an_apq_registration_is_attempted_then_refused_and_not_registered(
    safelist_server: LiveServer,
) -> None:
    query = unregistered_balance_query()
    headers = bearer(safelist_server)
    before = upstream_calls(safelist_server)

    registration = post_persisted(safelist_server, sha256_hex(query), query=query, headers=headers)
    by_hash = post_persisted(safelist_server, sha256_hex(query), headers=headers)

    assert error_codes(registration) == ["PERSISTED_QUERY_NOT_ALLOWED"]
    assert error_codes(by_hash) == ["PERSISTED_QUERY_NOT_ALLOWED"]  # not NOT_FOUND: resending cannot help
    assert upstream_calls(safelist_server) == before


@pytest.mark.anyio
async def test_given_a_safelist_when_subscribing_with_registered_text_or_hash_then_events_arrive(
    safelist_server: LiveServer,
) -> None:
    async with ws_connect(safelist_server, init_payload=signed_in(safelist_server)) as ws:
        assert (await ws.receive())["type"] == "connection_ack"
        by_text = await ws.subscribe(operation("BalanceChanged"))
        first = await ws.receive()
        await subscribe_by_hash(ws, "by-hash", "BalanceChanged")
        second = await ws.receive()

    assert (first["id"], first["type"]) == (by_text, "next")
    assert (second["id"], second["type"]) == ("by-hash", "next")
    assert second["payload"]["data"]["balanceChanged"]["available"] == 10_000


@pytest.mark.anyio
async def test_given_a_safelist_when_subscribing_with_other_text_then_an_error_and_nothing_upstream(
    safelist_server: LiveServer,
) -> None:
    before = upstream_calls(safelist_server)
    async with ws_connect(safelist_server, init_payload=signed_in(safelist_server)) as ws:
        assert (await ws.receive())["type"] == "connection_ack"
        op = await ws.subscribe("subscription { balanceChanged { available } }")
        message = await ws.receive()

    assert (message["id"], message["type"]) == (op, "error")
    assert [error["extensions"]["code"] for error in message["payload"]] == ["PERSISTED_QUERY_NOT_ALLOWED"]
    assert upstream_calls(safelist_server) == before


@pytest.mark.anyio
async def test_given_a_safelist_when_a_client_asks_for_the_legacy_graphql_ws_protocol_then_it_is_not_offered(
    safelist_server: LiveServer,
) -> None:
    # graphql-ws has no place for persisted queries: offering it would open a way around the list.
    async with websockets.connect(safelist_server.ws_url, subprotocols=["graphql-ws"]) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)

    assert ws.subprotocol is None
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4406


@pytest.mark.anyio
async def test_given_apq_when_subscribing_by_a_manifest_hash_then_events_arrive(server: LiveServer) -> None:
    async with ws_connect(server, init_payload=signed_in(server)) as ws:
        assert (await ws.receive())["type"] == "connection_ack"
        await subscribe_by_hash(ws, "1", "BalanceChanged")
        message = await ws.receive()

    assert message["type"] == "next"
    assert message["payload"]["data"]["balanceChanged"]["available"] == 10_000


def test_given_safelist_mode_without_a_manifest_when_the_app_is_built_then_it_refuses_clearly(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, persisted_queries="safelist", persisted_queries_manifest=tmp_path / "missing.json"
    )

    with pytest.raises(ConfigurationError, match="giftgraph persisted-operations"):
        create_app(settings)


def test_given_a_manifest_whose_id_is_not_its_bodys_hash_when_the_app_is_built_then_it_refuses(tmp_path: Path) -> None:
    manifest = json.loads(MANIFEST.read_text())
    manifest["operations"][0]["body"] += "\nquery Extra { __typename }\n"
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(manifest))

    with pytest.raises(ConfigurationError, match="SHA-256"):
        create_app(make_settings(tmp_path, persisted_queries="safelist", persisted_queries_manifest=path))


# The manifest and its command


def test_given_the_committed_manifest_when_checked_against_the_operations_then_it_is_up_to_date() -> None:
    result = manifest_command("--operations", str(OPERATIONS), "--path", str(MANIFEST), "--check")

    assert result.exit_code == 0, "graphql/persisted-operations.json is stale: run `giftgraph persisted-operations`"


def test_given_the_manifest_when_read_then_it_lists_every_operation_file_by_the_hash_of_its_text() -> None:
    entries = json.loads(MANIFEST.read_text())["operations"]
    files = {path.stem: path.read_text() for path in OPERATIONS.glob("*.graphql")}

    assert {entry["name"]: entry["body"] for entry in entries} == files
    assert all(entry["id"] == sha256_hex(entry["body"]) for entry in entries)
    assert {entry["name"]: entry["type"] for entry in entries}["Redeem"] == "mutation"


def test_given_an_operation_changed_when_checked_then_the_command_fails_and_writing_brings_it_up_to_date(
    tmp_path: Path,
) -> None:
    operations = tmp_path / "operations"
    operations.mkdir()
    (operations / "Ping.graphql").write_text("query Ping { __typename }\n")
    path = tmp_path / "manifest.json"
    options = ("--operations", str(operations), "--path", str(path))
    manifest_command(*options)
    (operations / "Ping.graphql").write_text("query Ping { __typename viewer { userId } }\n")

    stale = manifest_command(*options, "--check")
    manifest_command(*options)
    fresh = manifest_command(*options, "--check")

    assert stale.exit_code == 1 and "out of date" in stale.output
    assert fresh.exit_code == 0
    assert path.read_text() == manifest_text(build_manifest(operations))


def test_given_a_file_with_two_operations_when_the_manifest_is_built_then_the_command_names_the_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "Two.graphql").write_text("query A { __typename }\nquery B { __typename }\n")

    result = manifest_command("--operations", str(tmp_path), "--path", str(tmp_path / "m.json"))

    assert result.exit_code == 1
    assert "Two.graphql" in result.output and "exactly one operation" in result.output
