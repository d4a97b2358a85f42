"""POST /webhooks/loyalty over real HTTP: the loyalty system's signed `points.earned`, credited once to the ledger.

The gateway runs GIFTGRAPH_PROVIDER=tremendous against the fake Tremendous (tests/fake_tremendous.py), so
its points live in giftgraph's ledger. What was recorded is read from the gateway's own database: the EARN
transaction and the webhook id it claimed. A refused delivery records neither, so the same id, delivered
again with a valid body, is credited.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
from standardwebhooks.webhooks import Webhook

from providers.ledger.store import MAX_POINTS
from tests.fake_tremendous import FakeTremendous, running_fake_tremendous
from tests.support import LiveServer, gql, live_server, make_settings, operation, run_on_server_loop

SECRET = "whsec_" + base64.b64encode(b"giftgraph-loyalty-test-secret-01").decode()
START = 5_000  # points every user starts with in this gateway's ledger
VIEWER_BALANCE = operation("ViewerBalance")
HISTORY = operation("History")


def gateway_settings(data_dir: Path, fake: FakeTremendous, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "provider": "tremendous",
        "tremendous_base_url": fake.url,
        "tremendous_api_key": fake.api_key,
        "tremendous_rate_limit_per_second": 0,
        "ledger_starting_balance": START,
        "loyalty_webhook_secrets": [SECRET],
        "reconcile_interval_seconds": 3600,
    }
    values.update(overrides)
    return make_settings(data_dir, **values)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeTremendous]:
    with running_fake_tremendous() as running:
        yield running


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, fake: FakeTremendous) -> Iterator[LiveServer]:
    with live_server(gateway_settings(tmp_path_factory.mktemp("loyalty"), fake)) as running:
        yield running


# Sending, as the loyalty system does


def signed(body: bytes, *, webhook_id: str | None = None, at: int | None = None) -> dict[str, str]:
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    at = int(time.time()) if at is None else at
    signature = Webhook(SECRET).sign(webhook_id, datetime.fromtimestamp(at, tz=UTC), body.decode())
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(at),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def earned(user_id: str, points: Any, **data: Any) -> bytes:
    return event("points.earned", {"user_id": user_id, "points": points, **data})


def event(event_type: str, data: Any) -> bytes:
    return json.dumps({"type": event_type, "timestamp": datetime.now(UTC).isoformat(), "data": data}).encode()


def deliver(gateway: LiveServer, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{gateway.base_url}/webhooks/loyalty", content=body, headers=headers, timeout=30)


def new_user() -> str:
    return f"loyal-{uuid.uuid4().hex[:10]}"


# What the gateway recorded


def query(gateway: LiveServer, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    async def run() -> list[tuple[Any, ...]]:
        async with gateway.app.state.engine.connect() as conn:
            return [tuple(row) for row in await conn.execute(sqlalchemy.text(sql), params)]

    return run_on_server_loop(gateway, run())


def earns(gateway: LiveServer, user_id: str) -> list[tuple[int, str, str]]:
    """(points, source, reason) of the user's transactions other than the welcome bonus, oldest first."""
    return query(
        gateway,
        "SELECT points, source, reason FROM ledger_transactions"
        " WHERE user_id = :user_id AND source != 'ledger:enrolment' ORDER BY position",
        user_id=user_id,
    )


def claimed(gateway: LiveServer, webhook_id: str) -> bool:
    return bool(query(gateway, "SELECT 1 FROM ledger_grant_events WHERE event_id = :id", id=webhook_id))


def balance(gateway: LiveServer, user_id: str) -> int:
    return gql(gateway, VIEWER_BALANCE, token=gateway.token(user_id))["data"]["viewer"]["balance"]["available"]


def nothing_recorded(gateway: LiveServer, user_id: str, webhook_id: str) -> bool:
    return earns(gateway, user_id) == [] and not claimed(gateway, webhook_id)


# Processed


def test_given_a_points_earned_event_then_200_processed_and_the_credit_is_audited_with_its_source_and_reason(
    gateway: LiveServer,
) -> None:
    user_id = new_user()
    body = earned(user_id, 700, reason="  Order #1  ")
    headers = signed(body)

    response = deliver(gateway, body, headers)

    assert (response.status_code, response.json()) == (200, {"status": "processed"})
    assert earns(gateway, user_id) == [(700, "webhook:loyalty", "Order #1")]
    assert claimed(gateway, headers["webhook-id"])
    history = gql(gateway, HISTORY, {"first": 1}, token=gateway.token(user_id))["data"]["viewer"]["history"]
    (latest,) = [edge["node"] for edge in history["edges"]]
    assert (latest["kind"], latest["points"], latest["description"]) == ("EARN", 700, "Order #1")
    assert latest["balanceAfter"] == START + 700


def test_given_an_event_without_a_reason_then_it_is_audited_as_points_earned(gateway: LiveServer) -> None:
    user_id = new_user()
    body = earned(user_id, 5)

    assert deliver(gateway, body, signed(body)).status_code == 200
    assert earns(gateway, user_id) == [(5, "webhook:loyalty", "Points earned")]


@pytest.mark.parametrize("points", [1, 1_000_000_000])
def test_given_the_smallest_and_the_largest_credit_of_one_event_then_both_are_processed(
    gateway: LiveServer, points: int
) -> None:
    user_id = new_user()
    body = earned(user_id, points, reason="edge")

    assert deliver(gateway, body, signed(body)).json() == {"status": "processed"}
    assert balance(gateway, user_id) == START + points


def test_given_the_same_event_id_twice_then_200_duplicate_and_one_credit(gateway: LiveServer) -> None:
    user_id = new_user()
    body = earned(user_id, 40, reason="Order #2")
    headers = signed(body)

    answers = [deliver(gateway, body, headers) for _ in range(2)]

    assert [(a.status_code, a.json()) for a in answers] == [
        (200, {"status": "processed"}),
        (200, {"status": "duplicate"}),
    ]
    assert earns(gateway, user_id) == [(40, "webhook:loyalty", "Order #2")]


# Refused: nothing recorded, and the id stays free for a valid delivery


def test_given_a_timestamp_outside_the_tolerance_then_401_and_nothing_recorded(gateway: LiveServer) -> None:
    user_id = new_user()
    body = earned(user_id, 10, reason="late")
    stale = signed(body, at=int(time.time()) - 3600)  # the tolerance is 300 s: far outside, whatever the load

    response = deliver(gateway, body, stale)
    fresh = deliver(gateway, body, signed(body, webhook_id=stale["webhook-id"]))

    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_signature"
    assert fresh.json() == {"status": "processed"}
    assert earns(gateway, user_id) == [(10, "webhook:loyalty", "late")]


BAD_DATA: dict[str, dict[str, Any]] = {
    "no user id": {"points": 5},
    "no points": {"user_id": "{user}"},
    "points as a string": {"user_id": "{user}", "points": "5"},
    "points as a boolean": {"user_id": "{user}", "points": True},
    "points as a float": {"user_id": "{user}", "points": 5.0},
    "points null": {"user_id": "{user}", "points": None},
    "zero points": {"user_id": "{user}", "points": 0},
    "negative points": {"user_id": "{user}", "points": -5},
    "points over one event's cap": {"user_id": "{user}", "points": 1_000_000_001},
    "points past any integer column": {"user_id": "{user}", "points": 10**30},
    "an empty user id": {"user_id": "", "points": 5},
    "a blank user id": {"user_id": "   ", "points": 5},
    "a user id over 255 characters": {"user_id": "u" * 256, "points": 5},
    "a numeric user id": {"user_id": 42, "points": 5},
    "an empty reason": {"user_id": "{user}", "points": 5, "reason": ""},
    "a blank reason": {"user_id": "{user}", "points": 5, "reason": " \t\n"},
    "a null reason": {"user_id": "{user}", "points": 5, "reason": None},
    "a reason over 500 characters": {"user_id": "{user}", "points": 5, "reason": "r" * 501},
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_given_a_points_earned_event_with_bad_data_then_400_and_nothing_recorded(
    gateway: LiveServer, case: str
) -> None:
    user_id = new_user()
    data = {key: user_id if value == "{user}" else value for key, value in BAD_DATA[case].items()}
    body = event("points.earned", data)
    headers = signed(body)

    response = deliver(gateway, body, headers)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_event"
    assert nothing_recorded(gateway, user_id, headers["webhook-id"])
    good = earned(user_id, 3, reason="corrected")
    assert deliver(gateway, good, signed(good, webhook_id=headers["webhook-id"])).json() == {"status": "processed"}


def test_given_a_refused_body_then_the_warning_names_the_field_and_never_its_value(
    gateway: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    body = earned(new_user(), "5", reason="  ")
    headers = signed(body)
    caplog.set_level(logging.INFO, logger="giftgraph.loyalty")

    assert deliver(gateway, body, headers).status_code == 400

    (warning,) = [r for r in caplog.records if r.name == "giftgraph.loyalty" and r.levelno >= logging.WARNING]
    assert (warning.webhook_id, warning.fields) == (headers["webhook-id"], ["points", "reason"])
    assert "'5'" not in f"{warning.getMessage()} {warning.__dict__}"


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b"{}", b'{"type": "points.earned"}', b'{"type": "points.earned", "data": null}'],
    ids=["not json", "a list", "no type", "no data", "null data"],
)
def test_given_a_body_that_is_not_an_event_then_400_and_nothing_recorded(gateway: LiveServer, body: bytes) -> None:
    headers = signed(body)

    response = deliver(gateway, body, headers)

    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_event"
    assert not claimed(gateway, headers["webhook-id"])


@pytest.mark.parametrize("event_type", ["loyalty.tier_changed", "points.spent", "POINTS.EARNED"])
def test_given_another_event_type_then_200_ignored_and_nothing_recorded(gateway: LiveServer, event_type: str) -> None:
    user_id = new_user()
    body = event(event_type, {"user_id": user_id, "points": 50})
    headers = signed(body)

    response = deliver(gateway, body, headers)

    assert (response.status_code, response.json()) == (200, {"status": "ignored"})
    assert nothing_recorded(gateway, user_id, headers["webhook-id"])


# The points limit of an account


def test_given_a_credit_past_the_points_limit_then_422_nothing_recorded_and_a_redelivery_is_weighed_again(
    gateway: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    user_id = new_user()
    ledger = gateway.provider.ledger
    run_on_server_loop(gateway, ledger.grant(user_id, MAX_POINTS - START - 100, reason="setup", source="cli:test"))
    body = earned(user_id, 101, reason="one too many")
    headers = signed(body)
    caplog.set_level(logging.INFO, logger="giftgraph.loyalty")

    refused = deliver(gateway, body, headers)

    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "points_limit_exceeded"
    assert str(MAX_POINTS) in refused.json()["error"]["message"]
    assert balance(gateway, user_id) == MAX_POINTS - 100
    assert not claimed(gateway, headers["webhook-id"])
    assert [points for points, *_ in earns(gateway, user_id)] == [MAX_POINTS - START - 100]
    (warning,) = [r for r in caplog.records if r.name == "giftgraph.loyalty" and r.levelno == logging.WARNING]
    assert (warning.webhook_id, warning.user_id, warning.points) == (headers["webhook-id"], user_id, 101)
    assert SECRET[6:] not in f"{warning.getMessage()} {warning.__dict__}"
    assert headers["webhook-signature"] not in f"{warning.getMessage()} {warning.__dict__}"

    # Given the balance has since gone down by one, when the sender retries the same delivery, then it fits.
    run_on_server_loop(gateway, ledger.grant(user_id, -1, reason="correction", source="cli:test"))
    retried = deliver(gateway, body, headers)

    assert retried.json() == {"status": "processed"}
    assert balance(gateway, user_id) == MAX_POINTS
    assert deliver(gateway, body, headers).json() == {"status": "duplicate"}


# Not configured


def test_given_no_loyalty_secret_then_404(tmp_path: Path, fake: FakeTremendous) -> None:
    user_id = new_user()
    body = earned(user_id, 5)

    with live_server(gateway_settings(tmp_path, fake, loyalty_webhook_secrets=[])) as bare:
        response = deliver(bare, body, signed(body))
        recorded = earns(bare, user_id)

    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert recorded == []


def test_given_a_provider_that_keeps_its_own_points_then_404(tmp_path: Path) -> None:
    body = earned(new_user(), 5)

    with live_server(make_settings(tmp_path, loyalty_webhook_secrets=[SECRET])) as sandbox:
        response = deliver(sandbox, body, signed(body))

    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
