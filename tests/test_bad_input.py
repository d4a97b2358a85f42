"""Bad input over real HTTP: each gets a clear GraphQL or HTTP error with a code, never a 500, and changes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from resolvers.ids import encode_global_id
from tests.support import LiveServer, gql, live_server, make_settings, operation, post, reward_to_redeem

USER = "bad-input-user"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(make_settings(tmp_path_factory.mktemp("bad-input"), sandbox_fulfilment_delay=0.2)) as running:
        yield running


@pytest.fixture(scope="module")
def token(server: LiveServer) -> str:
    return server.token(USER)


def redeem_variables(server: LiveServer, **overrides: Any) -> dict[str, Any]:
    reward = reward_to_redeem(server)
    values = {"clientMutationId": "bad-input-key", "rewardId": reward["rewardId"], "faceValue": reward["faceValue"]}
    values.update(overrides)
    return {"input": values}


def redeem_body(server: LiveServer, **overrides: Any) -> dict[str, Any]:
    return {"query": operation("Redeem"), "variables": redeem_variables(server, **overrides)}


def send(server: LiveServer, token: str, *, content: bytes, content_type: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    return httpx.post(server.url, content=content, headers=headers, timeout=30)


def send_json(server: LiveServer, token: str, body: object) -> httpx.Response:
    return send(server, token, content=json.dumps(body).encode(), content_type="application/json")


def redeem_with(server: LiveServer, token: str, **overrides: Any) -> httpx.Response:
    return post(server, operation("Redeem"), redeem_variables(server, **overrides), token=token)


@dataclass(frozen=True)
class BadRequest:
    send: Callable[[LiveServer, str], httpx.Response]
    status: int
    code: str


CASES: dict[str, BadRequest] = {
    "malformed JSON": BadRequest(
        lambda s, t: send(s, t, content=json.dumps(redeem_body(s)).encode()[:-20], content_type="application/json"),
        400,
        "BAD_REQUEST",
    ),
    "JSON that is not an object": BadRequest(lambda s, t: send_json(s, t, operation("Redeem")), 400, "BAD_REQUEST"),
    "bytes that are not UTF-8": BadRequest(
        lambda s, t: send(s, t, content=b"\xff\xfe\xfd{", content_type="application/json"), 400, "BAD_REQUEST"
    ),
    "a non-JSON content type": BadRequest(
        lambda s, t: send(s, t, content=json.dumps(redeem_body(s)).encode(), content_type="text/plain"),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
    "a form-encoded body": BadRequest(
        lambda s, t: send(
            s, t, content=b"query=mutation+%7B+__typename+%7D", content_type="application/x-www-form-urlencoded"
        ),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
    "a query that does not parse": BadRequest(
        lambda s, t: post(s, operation("Redeem")[:-40], redeem_variables(s), token=t), 200, "GRAPHQL_PARSE_FAILED"
    ),
    "an unknown field": BadRequest(
        lambda s, t: post(
            s,
            "mutation Redeem($input: RedeemInput!) { redeem(input: $input) { clientMutationId pointsBack } }",
            redeem_variables(s),
            token=t,
        ),
        200,
        "GRAPHQL_VALIDATION_FAILED",
    ),
    "a faceValue that is not a number": BadRequest(
        lambda s, t: redeem_with(s, t, faceValue="ten dollars"), 200, "BAD_USER_INPUT"
    ),
    "a clientMutationId that is not a string": BadRequest(
        lambda s, t: redeem_with(s, t, clientMutationId={"key": 1}), 200, "BAD_USER_INPUT"
    ),
    "an input missing a required field": BadRequest(
        lambda s, t: post(s, operation("Redeem"), {"input": {"clientMutationId": "k"}}, token=t), 200, "BAD_USER_INPUT"
    ),
    "no query": BadRequest(
        lambda s, t: send_json(s, t, {"variables": redeem_variables(s)}), 400, "BAD_REQUEST"
    ),
    "variables that are not an object": BadRequest(
        lambda s, t: send_json(s, t, {"query": operation("Redeem"), "variables": [redeem_variables(s)]}),
        400,
        "BAD_REQUEST",
    ),
    "an unknown operationName": BadRequest(
        lambda s, t: send_json(s, t, {**redeem_body(s), "operationName": "Nope"}), 400, "BAD_REQUEST"
    ),
    "a mutation over GET": BadRequest(
        lambda s, t: httpx.get(
            s.url,
            params={"query": operation("Redeem"), "variables": json.dumps(redeem_variables(s))},
            headers={"Authorization": f"Bearer {t}", "Accept": "application/json"},
            timeout=30,
        ),
        405,
        "METHOD_NOT_ALLOWED",
    ),
    "a PUT": BadRequest(
        lambda s, t: httpx.put(s.url, json=redeem_body(s), headers={"Authorization": f"Bearer {t}"}, timeout=30),
        405,
        "METHOD_NOT_ALLOWED",
    ),
    "an oversized first": BadRequest(
        lambda s, t: post(s, operation("History"), {"first": 1000}, token=t), 200, "BAD_USER_INPUT"
    ),
    "a negative first": BadRequest(
        lambda s, t: post(s, operation("Catalog"), {"first": -1}, token=t), 200, "BAD_USER_INPUT"
    ),
    "both first and last": BadRequest(
        lambda s, t: post(s, operation("History"), {"first": 5, "last": 5}, token=t), 200, "BAD_USER_INPUT"
    ),
    "a malformed cursor": BadRequest(
        lambda s, t: post(s, operation("History"), {"first": 5, "after": "not-a-cursor"}, token=t),
        200,
        "BAD_USER_INPUT",
    ),
    "a rewardId that is a transaction's id": BadRequest(
        lambda s, t: redeem_with(s, t, rewardId=encode_global_id("Transaction", "1")), 200, "BAD_USER_INPUT"
    ),
    "a rewardId that is a redemption's id": BadRequest(
        lambda s, t: redeem_with(s, t, rewardId=encode_global_id("Redemption", "1")), 200, "BAD_USER_INPUT"
    ),
    "a malformed rewardId": BadRequest(
        lambda s, t: redeem_with(s, t, rewardId="!!not-an-id!!"), 200, "BAD_USER_INPUT"
    ),
    "a malformed node id": BadRequest(
        lambda s, t: post(s, operation("Redemption"), {"id": "%%%"}, token=t), 200, "BAD_USER_INPUT"
    ),
    "an empty clientMutationId": BadRequest(
        lambda s, t: redeem_with(s, t, clientMutationId=""), 200, "BAD_USER_INPUT"
    ),
    "a 10,000-character clientMutationId": BadRequest(
        lambda s, t: redeem_with(s, t, clientMutationId="k" * 10_000), 200, "BAD_USER_INPUT"
    ),
    "a clientMutationId with a control character": BadRequest(
        lambda s, t: redeem_with(s, t, clientMutationId="key\n1"), 200, "BAD_USER_INPUT"
    ),
    "a clientMutationId that is not ASCII": BadRequest(
        lambda s, t: redeem_with(s, t, clientMutationId="clé"), 200, "BAD_USER_INPUT"
    ),
}


def error_codes(response: httpx.Response) -> list[str]:
    return [error.get("extensions", {}).get("code") for error in response.json().get("errors") or ()]


def account_state(server: LiveServer, token: str) -> dict[str, Any]:
    balance = gql(server, operation("ViewerBalance"), token=token)["data"]["viewer"]["balance"]
    history = gql(server, operation("History"), {"first": 1}, token=token)["data"]["viewer"]["history"]
    return {
        "available": balance["available"],
        "pending": balance["pending"],
        "transactions": history["totalCount"],
        "provider redeems": server.provider.calls.get("redeem"),
    }


@pytest.mark.parametrize("case", list(CASES))
def test_given_bad_input_when_sent_then_a_clear_error_with_a_code_and_no_500(
    server: LiveServer, token: str, case: str
) -> None:
    bad = CASES[case]

    response = bad.send(server, token)

    assert response.status_code == bad.status
    assert response.headers["content-type"].startswith("application/json")
    assert bad.code in error_codes(response), response.text
    assert all(error["message"] for error in response.json()["errors"])


@pytest.mark.parametrize("case", list(CASES))
def test_given_bad_input_when_sent_then_the_account_is_unchanged(server: LiveServer, token: str, case: str) -> None:
    before = account_state(server, token)

    CASES[case].send(server, token)

    assert account_state(server, token) == before


def test_given_a_mutation_over_get_when_refused_then_allow_names_post(server: LiveServer, token: str) -> None:
    response = CASES["a mutation over GET"].send(server, token)

    assert response.headers["Allow"] == "POST"


def test_given_a_redeem_refused_for_a_malformed_reward_id_when_retried_fixed_with_the_same_key_then_it_succeeds(
    server: LiveServer,
) -> None:
    token = server.token("bad-input-retry-user")
    refused = redeem_with(server, token, clientMutationId="retry-after-fix", rewardId="!!not-an-id!!")
    assert error_codes(refused) == ["BAD_USER_INPUT"]

    body = redeem_with(server, token, clientMutationId="retry-after-fix").json()

    assert body["data"]["redeem"]["userErrors"] == []
    assert body["data"]["redeem"]["redemption"]["status"] in ("PENDING", "FULFILLED")
