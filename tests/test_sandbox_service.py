"""The sandbox REST service (`giftgraph sandbox serve`) over real HTTP on loopback: the contract's routes,
statuses and error codes, authentication, the rate limit, and what each injected fault looks like to a client.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from providers.base import RewardAvailability
from providers.rest.contract import (
    ERROR_CODES,
    BalanceBatchWire,
    RedeemResultWire,
    RedemptionBatchWire,
    RewardBatchWire,
    RewardPageWire,
    TransactionBatchWire,
    TransactionPageWire,
)
from providers.sandbox import SandboxConfig, failing_reward_ids
from providers.sandbox.store import MAX_BALANCE
from tests.sandbox_service import SandboxService, running_sandbox_service
from tests.support import eventually

USER = "svc-user"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxService]:
    with running_sandbox_service(tmp_path_factory.mktemp("sandbox-service")) as running:
        yield running


@pytest.fixture(autouse=True)
def no_faults_left(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "service" in request.fixturenames:
        request.getfixturevalue("service").clear_faults()


@pytest.fixture(scope="module")
def client(service: SandboxService) -> Iterator[httpx.Client]:
    with service.client(timeout=httpx.Timeout(5.0, read=2.0)) as http:
        yield http


@pytest.fixture(scope="module")
def anonymous(service: SandboxService) -> Iterator[httpx.Client]:
    """A client without credentials (building one per call costs more than the call)."""
    with httpx.Client(base_url=service.url, timeout=5.0) as http:
        yield http


def redeemable(service: SandboxService) -> dict[str, Any]:
    """A redeem body for an AVAILABLE reward the sandbox fulfils, at a face value it allows."""
    failing = failing_reward_ids(service.provider.catalog)
    for reward in service.provider.catalog:
        if reward.availability is RewardAvailability.AVAILABLE and reward.id not in failing:
            return {"reward_id": reward.id, "face_value": str(reward.denomination.min_value), "points": 100}
    raise LookupError("no redeemable reward")


def redeem(client: httpx.Client, key: str | None, body: dict[str, Any]) -> httpx.Response:
    headers = {} if key is None else {"Idempotency-Key": key}
    return client.post("/v1/redemptions", json=body, headers=headers)


def assert_error(response: httpx.Response, code: str) -> None:
    assert response.status_code == ERROR_CODES[code], response.text
    assert response.json()["error"]["code"] == code


# The contract's routes


def test_given_credentials_when_walking_the_catalog_then_pages_chain_and_batches_keep_the_order(
    client: httpx.Client, service: SandboxService
) -> None:
    first = RewardPageWire.model_validate(client.get("/v1/rewards", params={"limit": 3}).json())
    second = RewardPageWire.model_validate(
        client.get("/v1/rewards", params={"limit": 3, "cursor": first.next_cursor}).json()
    )
    batch = RewardBatchWire.model_validate(
        client.get("/v1/rewards/batch", params={"id": [second.items[0].id, "nope", first.items[0].id]}).json()
    )

    assert [r.id for r in first.items + second.items] == [r.id for r in service.provider.catalog[:6]]
    assert [None if r is None else r.id for r in batch.items] == [second.items[0].id, None, first.items[0].id]
    assert client.get("/v1/health").json() == {"status": "ok"}


def test_given_a_new_user_when_redeeming_then_201_then_the_same_key_replays_with_200(
    client: httpx.Client, service: SandboxService
) -> None:
    body = {"user_id": f"{USER}-replay", **redeemable(service)}

    created = redeem(client, "replay-1", body)
    replayed = redeem(client, "replay-1", body)

    assert created.status_code == 201 and replayed.status_code == 200
    first, again = RedeemResultWire.model_validate(created.json()), RedeemResultWire.model_validate(replayed.json())
    assert (first.replayed, again.replayed) == (False, True)
    assert again.redemption.id == first.redemption.id and first.balance.available == 10_000 - 100
    assert service.stats()["redemptions_by_key"]["replay-1"] == 1


def test_given_redemptions_when_reading_balances_history_and_batches_then_port_semantics_hold(
    client: httpx.Client, service: SandboxService
) -> None:
    user = f"{USER}-history"
    made = RedeemResultWire.model_validate(redeem(client, "history-1", {"user_id": user, **redeemable(service)}).json())

    balances = BalanceBatchWire.model_validate(client.get("/v1/balances", params={"user_id": [user, "other"]}).json())
    history = TransactionPageWire.model_validate(
        client.get("/v1/transactions", params={"user_id": user, "kind": ["REDEEM", "EARN"], "limit": 1}).json()
    )
    older = TransactionPageWire.model_validate(
        client.get("/v1/transactions", params={"user_id": user, "older_than": history.items[0].position}).json()
    )
    oldest = TransactionPageWire.model_validate(
        client.get("/v1/transactions", params={"user_id": user, "limit": 1, "from_oldest": "true"}).json()
    )
    transactions = TransactionBatchWire.model_validate(
        client.get("/v1/transactions/batch", params={"id": [history.items[0].id, "tx_none"]}).json()
    )
    redemptions = RedemptionBatchWire.model_validate(
        client.get("/v1/redemptions/batch", params={"id": ["rd_none", made.redemption.id]}).json()
    )

    assert [b.user_id for b in balances.items] == [user, "other"] and balances.items[0].pending == 100
    assert (history.total_count, history.has_more, history.items[0].kind) == (2, True, "REDEEM")
    assert [tx.kind for tx in older.items] == ["EARN"] and oldest.items[0].kind == "EARN"
    assert transactions.items[0] is not None and transactions.items[1] is None
    assert redemptions.items[0] is None and redemptions.items[1] is not None
    assert redemptions.items[1].id == made.redemption.id


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"points": 10**9}, "insufficient_points"),
        ({"reward_id": "rw_does_not_exist"}, "reward_not_found"),
        ({"face_value": "0.01"}, "invalid_face_value"),
    ],
)
def test_given_a_redemption_the_provider_refuses_when_posted_then_its_contract_error(
    client: httpx.Client, service: SandboxService, change: dict[str, Any], code: str
) -> None:
    body = {"user_id": f"{USER}-refused", **redeemable(service), **change}

    assert_error(redeem(client, f"refused-{code}", body), code)


def test_given_an_unavailable_reward_when_redeemed_then_422_reward_unavailable(
    client: httpx.Client, service: SandboxService
) -> None:
    reward = next(r for r in service.provider.catalog if r.availability is RewardAvailability.OUT_OF_STOCK)
    body = {"user_id": USER, "reward_id": reward.id, "face_value": str(reward.denomination.min_value), "points": 1}

    assert_error(redeem(client, "unavailable-1", body), "reward_unavailable")


def test_given_a_used_key_when_redeeming_something_else_then_409_and_nothing_new(
    client: httpx.Client, service: SandboxService
) -> None:
    body = {"user_id": f"{USER}-conflict", **redeemable(service)}
    redeem(client, "conflict-1", body)

    assert_error(redeem(client, "conflict-1", {**body, "points": 101}), "idempotency_conflict")
    assert service.stats()["redemptions_by_key"]["conflict-1"] == 1


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/rewards", {"limit": "0"}),
        ("/v1/rewards", {"limit": "101"}),
        ("/v1/rewards", {"limit": "ten"}),
        ("/v1/rewards", {"limit": ["1", "2"]}),
        ("/v1/rewards", {"cursor": "not-a-reward"}),
        ("/v1/rewards/batch", {"id": [f"rw_{n}" for n in range(101)]}),
        ("/v1/rewards/batch", {"id": ""}),
        ("/v1/balances", {"user_id": "x" * 256}),
        ("/v1/transactions", {}),
        ("/v1/transactions", {"user_id": "u", "kind": "BONUS"}),
        ("/v1/transactions", {"user_id": "u", "older_than": "-1"}),
        ("/v1/transactions", {"user_id": "u", "newer_than": str(2**64)}),
        ("/v1/transactions", {"user_id": "u", "from_oldest": "maybe"}),
        ("/v1/redemptions/batch", {"id": [f"rd_{n}" for n in range(101)]}),
    ],
)
def test_given_bad_query_input_when_sent_then_400_invalid_request(
    client: httpx.Client, path: str, params: dict[str, Any]
) -> None:
    assert_error(client.get(path, params=params), "invalid_request")


@pytest.mark.parametrize(
    ("key", "content"),
    [
        (None, None),  # no Idempotency-Key
        ("", None),
        ("k" * 256, None),
        ("caf\u00e9", None),
        ("bad-json", b"{"),
        ("not-an-object", b"[1, 2]"),
        ("bad-decimal", {"face_value": "ten"}),
        ("nan", {"face_value": "NaN"}),
        ("zero-points", {"points": 0}),
        ("huge-points", {"points": 10**30}),
        ("missing-user", {"user_id": None}),
    ],
)
def test_given_bad_redeem_input_when_posted_then_400_invalid_request_and_no_redemption(
    client: httpx.Client, service: SandboxService, key: str | None, content: Any
) -> None:
    body = {"user_id": f"{USER}-bad", **redeemable(service)}
    headers: dict[str, Any] = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key.encode("utf-8")  # bytes: httpx would refuse a non-ASCII str
    if isinstance(content, dict):
        raw = json.dumps({key: value for key, value in {**body, **content}.items() if value is not None}).encode()
    else:
        raw = content if content is not None else json.dumps(body).encode()

    response = client.post("/v1/redemptions", content=raw, headers=headers)

    assert_error(response, "invalid_request")
    assert key is None or key not in service.stats()["redemptions_by_key"]


def test_given_an_unknown_route_or_method_then_json_errors_not_pages(client: httpx.Client) -> None:
    missing = client.get("/v1/nothing-here")
    wrong_method = client.delete("/v1/rewards")

    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"


# Authentication


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        {"Authorization": "Bearer unknown-token"},
        {"Authorization": "Digest whatever"},
    ],
)
def test_given_no_or_malformed_credentials_when_calling_v1_then_401_authentication_failed(
    anonymous: httpx.Client, headers: dict[str, str]
) -> None:
    response = anonymous.get("/v1/rewards", headers=headers)

    assert_error(response, "authentication_failed")
    assert "Basic" in response.headers["WWW-Authenticate"]


def test_given_a_wrong_key_or_a_wrong_secret_when_calling_then_both_are_refused_alike(
    service: SandboxService, anonymous: httpx.Client
) -> None:
    key, secret = service.credentials.api_key, service.credentials.api_secret

    wrong_secret = anonymous.get("/v1/health", headers=_basic(key, secret + "x"))
    wrong_key = anonymous.get("/v1/health", headers=_basic(key + "x", secret))
    client_pair = anonymous.get(  # the OAuth client's pair is for the token endpoint, not Basic on /v1
        "/v1/health", headers=_basic(service.credentials.client_id, service.credentials.client_secret)
    )

    assert wrong_secret.json() == wrong_key.json() == client_pair.json()
    assert wrong_secret.status_code == wrong_key.status_code == client_pair.status_code == 401
    assert secret not in wrong_secret.text


def _token(http: httpx.Client, **kwargs: Any) -> httpx.Response:
    return http.post("/oauth/token", **kwargs)


def test_given_client_credentials_in_the_form_or_by_basic_when_asking_for_a_token_then_a_bearer_token_works(
    service: SandboxService, anonymous: httpx.Client
) -> None:
    creds = service.credentials
    by_form = _token(
        anonymous,
        data={"grant_type": "client_credentials", "client_id": creds.client_id, "client_secret": creds.client_secret},
    )
    by_basic = _token(anonymous, data={"grant_type": "client_credentials"}, auth=(creds.client_id, creds.client_secret))

    for response in (by_form, by_basic):
        assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
        token = response.json()
        assert token["token_type"] == "Bearer" and token["expires_in"] == 3600
        use = anonymous.get("/v1/health", headers={"Authorization": f"Bearer {token['access_token']}"})
        assert use.json() == {"status": "ok"}
    assert by_form.json()["access_token"] != by_basic.json()["access_token"]


@pytest.mark.parametrize(
    ("data", "auth", "status", "error"),
    [
        ({"grant_type": "client_credentials", "client_id": "no", "client_secret": "x"}, None, 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, ("nobody", "x"), 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, None, 401, "invalid_client"),
        ({"grant_type": "password", "client_id": "a", "client_secret": "b"}, None, 400, "unsupported_grant_type"),
        ({"client_id": "a", "client_secret": "b"}, None, 400, "invalid_request"),
    ],
)
def test_given_a_bad_token_request_then_the_rfc_6749_error_shape(
    anonymous: httpx.Client, data: dict[str, str], auth: tuple[str, str] | None, status: int, error: str
) -> None:
    response = _token(anonymous, data=data, auth=auth)

    assert response.status_code == status and response.json() == {"error": error}


def test_given_a_token_past_its_lifetime_when_used_then_401(tmp_path: Path) -> None:
    now = [1000.0]
    with (
        running_sandbox_service(tmp_path, token_ttl_seconds=60, clock=lambda: now[0]) as service,
        httpx.Client(base_url=service.url) as http,
    ):
        creds = service.credentials
        pair = (creds.client_id, creds.client_secret)
        token = _token(http, data={"grant_type": "client_credentials"}, auth=pair).json()
        bearer = {"Authorization": f"Bearer {token['access_token']}"}

        now[0] += 59
        still_valid = http.get("/v1/health", headers=bearer)
        now[0] += 1
        expired = http.get("/v1/health", headers=bearer)

    assert token["expires_in"] == 60 and still_valid.status_code == 200
    assert_error(expired, "authentication_failed")
    assert 'error="invalid_token"' in expired.headers["WWW-Authenticate"]


# Rate limit


def test_given_a_credential_over_its_rate_when_calling_then_429_with_an_integer_retry_after(tmp_path: Path) -> None:
    with running_sandbox_service(tmp_path, rate_limit="3/minute") as service, service.client() as client:
        answers = [client.get("/v1/health") for _ in range(4)]
        admin = service.stats()  # admin routes are test tooling: never limited
        creds = service.credentials
        token = _token(client, data={"grant_type": "client_credentials"}, auth=(creds.client_id, creds.client_secret))
        bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
        other_credential = client.get("/v1/health", headers=bearer, auth=None)

    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert_error(answers[3], "rate_limited")
    assert 1 <= int(answers[3].headers["Retry-After"]) <= 60
    assert admin["calls"]["check"] == 3  # the refused call never reached the provider
    assert other_credential.status_code == 200  # the limit is per credential


def test_given_repeated_wrong_secrets_from_one_address_then_429_not_endless_guessing(tmp_path: Path) -> None:
    with running_sandbox_service(tmp_path, rate_limit="3/minute") as service:
        with httpx.Client(base_url=service.url) as http:
            answers = [http.get("/v1/health", headers=_basic(service.credentials.api_key, "guess")) for _ in range(4)]

    assert [a.status_code for a in answers] == [401, 401, 401, 429]


# Faults, as a client sees them


def test_given_error_faults_when_called_then_each_status_and_body_as_a_provider_or_proxy_sends_it(
    client: httpx.Client, service: SandboxService
) -> None:
    for kind in ("error_500", "error_502", "error_503", "error_504"):
        service.fault("list_rewards", kind)
    service.fault("list_rewards", "rate_limit_429", seconds=7)

    answers = [client.get("/v1/rewards") for _ in range(5)]

    assert [a.status_code for a in answers] == [500, 502, 503, 504, 429]
    assert answers[0].json()["error"]["code"] == "internal_error"
    assert answers[2].json()["error"]["code"] == "unavailable"
    assert answers[1].headers["content-type"].startswith("text/html")  # a proxy's page
    assert answers[4].headers["Retry-After"] == "7" and answers[4].json()["error"]["code"] == "rate_limited"
    assert client.get("/v1/rewards").status_code == 200  # each fault was used once


def test_given_a_latency_fault_when_called_then_the_answer_is_late_but_right(
    client: httpx.Client, service: SandboxService
) -> None:
    service.fault("get_rewards", "latency", seconds=0.3)

    started = time.monotonic()
    response = client.get("/v1/rewards/batch", params={"id": "rw_0001"})

    assert time.monotonic() - started >= 0.3 and response.status_code == 200


def test_given_a_hang_when_the_client_times_out_then_a_read_timeout_and_the_service_still_answers_others(
    service: SandboxService,
) -> None:
    service.fault("list_rewards", "hang", seconds=30)

    with service.client(timeout=httpx.Timeout(5.0, read=0.3)) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            impatient.get("/v1/rewards")
        started = time.monotonic()
        assert impatient.get("/v1/rewards").status_code == 200
    assert time.monotonic() - started < 5  # not stuck behind the 30 s hang; the margin is for loaded machines


def test_given_a_reset_when_called_then_the_connection_drops_before_any_body(
    client: httpx.Client, service: SandboxService
) -> None:
    body = {"user_id": f"{USER}-reset", **redeemable(service)}
    service.fault("redeem", "reset")

    with pytest.raises(httpx.RemoteProtocolError):
        redeem(client, "reset-1", body)

    assert "reset-1" not in service.stats()["redemptions_by_key"]  # dropped before the provider saw it


def test_given_truncated_or_malformed_faults_then_a_200_whose_body_is_not_the_contract(
    client: httpx.Client, service: SandboxService
) -> None:
    service.fault("list_rewards", "truncated")
    service.fault("list_rewards", "malformed")

    truncated = client.get("/v1/rewards")
    malformed = client.get("/v1/rewards")

    assert truncated.status_code == 200 and int(truncated.headers["content-length"]) == len(truncated.content)
    with pytest.raises(json.JSONDecodeError):
        truncated.json()
    assert malformed.status_code == 200 and isinstance(malformed.json(), dict)
    with pytest.raises(ValidationError):
        RewardPageWire.model_validate(malformed.json())


def test_given_lost_after_commit_when_redeeming_then_the_provider_committed_and_a_retry_replays_it(
    client: httpx.Client, service: SandboxService
) -> None:
    body = {"user_id": f"{USER}-lost", **redeemable(service)}
    before = service.stats()
    service.fault("redeem", "lost_after_commit")

    with pytest.raises(httpx.RemoteProtocolError):
        redeem(client, "lost-1", body)
    committed = service.stats()
    retry = redeem(client, "lost-1", body)
    after = service.stats()

    assert committed["redemptions_by_key"]["lost-1"] == 1
    assert committed["redeem_transactions"] == before["redeem_transactions"] + 1
    assert retry.status_code == 200 and retry.json()["replayed"] is True
    assert after["redemptions"] == committed["redemptions"]
    assert after["redeem_transactions"] == committed["redeem_transactions"]


def test_given_hang_after_commit_when_the_client_gives_up_then_the_redemption_exists_and_replays(
    service: SandboxService,
) -> None:
    body = {"user_id": f"{USER}-hang-commit", **redeemable(service)}
    service.fault("redeem", "hang_after_commit", seconds=30)

    with service.client(timeout=httpx.Timeout(5.0, read=0.3)) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            redeem(impatient, "hang-commit-1", body)
        retry = redeem(impatient, "hang-commit-1", body)

    assert service.stats()["redemptions_by_key"]["hang-commit-1"] == 1
    assert retry.status_code == 200 and retry.json()["replayed"] is True


def test_given_a_fault_for_one_operation_then_other_operations_and_admin_routes_are_untouched(
    client: httpx.Client, service: SandboxService
) -> None:
    service.fault("get_balances", "error_500", times=2)
    service.fault("*", "error_503")

    health = client.get("/v1/health")  # takes the `*` fault
    rewards = client.get("/v1/rewards")
    stats = service.stats()  # admin: no fault applies
    balances = [client.get("/v1/balances", params={"user_id": "u"}).status_code for _ in range(3)]

    assert health.status_code == 503 and rewards.status_code == 200
    assert "calls" in stats and balances == [500, 500, 200]


@pytest.mark.parametrize(
    "body",
    [
        {"operation": "redeem", "fault": "explode"},
        {"operation": "delete_everything", "fault": "error_500"},
        {"operation": "redeem", "fault": "error_500", "times": 0},
        {"operation": "redeem", "fault": "hang", "seconds": -1},
        {"operation": "redeem"},
    ],
)
def test_given_a_bad_fault_when_scheduled_then_400_and_nothing_scheduled(
    client: httpx.Client, body: dict[str, Any]
) -> None:
    response = client.post("/v1/sandbox/faults", json=body)

    assert_error(response, "invalid_request")
    assert client.delete("/v1/sandbox/faults").json() == {"faults": []}


def test_given_start_time_faults_when_configured_then_latency_and_random_503s_apply_to_port_calls(
    tmp_path: Path,
) -> None:
    with running_sandbox_service(tmp_path, latency=0.02, failure_rate=0.5, fault_seed=3) as service:
        with service.client() as client:
            started = time.monotonic()
            statuses = [client.get("/v1/health").status_code for _ in range(12)]
            elapsed = time.monotonic() - started
            stats = service.stats()

    assert set(statuses) == {200, 503} and elapsed >= 12 * 0.02
    assert stats["calls"]["check"] == statuses.count(200)


# Admin routes


def test_given_a_grant_then_an_earn_transaction_and_a_higher_balance(
    client: httpx.Client, service: SandboxService
) -> None:
    user = f"{USER}-grant"

    granted = client.post("/v1/sandbox/grants", json={"user_id": user, "points": 250, "description": "Promo"})
    history = client.get("/v1/transactions", params={"user_id": user, "limit": 1}).json()

    assert granted.status_code == 200
    assert granted.json()["balance"]["available"] == 10_000 + 250
    assert history["items"][0]["kind"] == "EARN" and history["items"][0]["description"] == "Promo"
    assert history["items"][0]["id"] == granted.json()["transaction"]["id"]
    assert_error(client.post("/v1/sandbox/grants", json={"user_id": user, "points": -5}), "invalid_request")


def test_given_grants_up_to_graphql_int_then_one_more_point_is_refused_counting_pending_points(tmp_path: Path) -> None:
    user = "capped"
    # Fulfilment never comes during the test: the redemption's points stay pending.
    with (
        running_sandbox_service(tmp_path, sandbox=SandboxConfig(fulfilment_delay=3600)) as service,
        service.client(timeout=5.0) as client,
    ):

        def grant(points: int) -> httpx.Response:
            return client.post("/v1/sandbox/grants", json={"user_id": user, "points": points})

        assert grant(1_000_000_000).status_code == grant(1_000_000_000).status_code == 200
        assert redeem(client, "capped-1", {**redeemable(service), "user_id": user}).status_code == 201
        available = 10_000 + 2_000_000_000 - 100
        assert grant(MAX_BALANCE - available - 100).status_code == 200  # up to the limit, pending included
        refused = grant(1)
        balance = client.get("/v1/balances", params={"user_id": user}).json()["items"][0]
        earned = client.get("/v1/transactions", params={"user_id": user, "kind": "EARN", "limit": 0}).json()

    assert_error(refused, "invalid_request")
    assert str(MAX_BALANCE) in refused.json()["error"]["message"]
    assert (balance["available"], balance["pending"]) == (MAX_BALANCE - 100, 100)
    assert earned["total_count"] == 4  # the welcome bonus and three grants: the refused one left nothing


def test_given_an_availability_change_then_the_catalog_shows_it(client: httpx.Client, service: SandboxService) -> None:
    reward_id = service.provider.catalog[-1].id

    changed = client.put(f"/v1/sandbox/rewards/{reward_id}/availability", json={"availability": "DISCONTINUED"})
    looked_up = client.get("/v1/rewards/batch", params={"id": reward_id}).json()["items"][0]
    unknown = client.put("/v1/sandbox/rewards/rw_nope/availability", json={"availability": "AVAILABLE"})
    invalid = client.put(f"/v1/sandbox/rewards/{reward_id}/availability", json={"availability": "SOLD"})

    assert changed.status_code == 200 and changed.json()["availability"] == "DISCONTINUED"
    assert looked_up["availability"] == "DISCONTINUED"
    assert_error(unknown, "reward_not_found")
    assert_error(invalid, "invalid_request")


def test_given_any_request_then_a_request_id_comes_back_and_the_log_line_carries_no_secret(
    service: SandboxService, client: httpx.Client, anonymous: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"user_id": f"{USER}-logs", **redeemable(service)}
    creds = service.credentials
    with caplog.at_level(logging.DEBUG):
        made = redeem(client, "logs-1", body)
        token = _token(
            anonymous, data={"grant_type": "client_credentials"}, auth=(creds.client_id, creds.client_secret)
        ).json()["access_token"]

        def fetch() -> httpx.Response:
            return anonymous.get(
                "/v1/redemptions/batch",
                params={"id": made.json()["redemption"]["id"]},
                headers={"Authorization": f"Bearer {token}", "X-Request-ID": "trace-me-1"},
            )

        # Fulfilment (0.3 s here; longer on a loaded machine) makes the card.
        eventually(lambda: fetch().json()["items"][0]["gift_card"] is not None)
        fetched = fetch()

    card = fetched.json()["items"][0]["gift_card"]
    assert card is not None and fetched.headers["X-Request-ID"] == "trace-me-1"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "sandbox GET /v1/redemptions/batch 200" in logged
    assert "trace-me-1" in [getattr(record, "request_id", None) for record in caplog.records]
    for secret in (creds.api_secret, creds.client_secret, token, card["code"], card["pin"], card["claim_url"]):
        assert secret not in logged
    assert "Authorization" not in logged and "Basic " not in logged


def test_given_oversized_bodies_then_400_before_they_are_held_in_memory(
    client: httpx.Client, anonymous: httpx.Client
) -> None:
    huge = b"x" * (1024 * 1024 + 1)
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    redeem_answer = client.post("/v1/redemptions", content=huge, headers={"Idempotency-Key": "huge-1"})
    # Small enough to be sent whole before the answer (the service stops reading at 8 KiB).
    token_answer = anonymous.post("/oauth/token", content=b"x" * 9000, headers=form)

    assert_error(redeem_answer, "invalid_request")
    assert token_answer.status_code == 400 and token_answer.json() == {"error": "invalid_request"}
