"""A fake Tremendous REST v2 on loopback, reproducing its documented behaviour for the adapter's tests.

Bearer API key (401 otherwise), GET /products with comma-separated `country`/`currency` filters,
POST /orders idempotent by `external_id` (same payload: the existing order, 201; other parameters: 409),
402 when the balance is short, GET /orders?external_id=, GET /orders/{id}, GET /rewards/{id},
GET /funding_sources with meta.available_cents, a 10 requests/s window answering 429 with the singular
`{"error": ...}` body (on `clock`, injectable), and error bodies `{"errors": {"message", "payload"}}`.
Knobs: `async_orders` (202 + PENDING, then `complete_pending()`), `order_status` (any string, unknown
ones included), `inject(status, body, times)` for the next responses, `lose_order_answers(...)` (orders
processed, then answered otherwise), `hold_orders` (POST /orders wait at the door). Rewards are LINK-delivered: the
fake returns `delivery.link` (a claim URL) and no code or pin, as Tremendous does.

    with running_fake_tremendous() as fake:
        fake.state.balance_cents = 0
        ... build_tremendous(base_url=fake.url, api_key=fake.api_key, ...) ...
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.servers import ThreadedServer

API_KEY = "TEST_fake-tremendous-key"
PREFIX = "/api/v2"

PRODUCTS: list[dict[str, Any]] = [
    {  # fixed values: every sku min == max
        "id": "AMZN-US",
        "name": "Amazon.com",
        "description": "Amazon gift card",
        "category": "merchant_card",
        "subcategory": "shopping",
        "disclosure": "Restrictions apply.",
        "skus": [{"min": 25, "max": 25}, {"min": 10, "max": 10}, {"min": 50, "max": 50}],
        "currency_codes": ["USD"],
        "countries": [{"abbr": "US"}],
        "images": [
            {"src": "https://img.example/amzn-logo.png", "type": "logo"},
            {"src": "https://img.example/amzn-card.png", "type": "card"},
        ],
        "usage_instructions": "Redeem at amazon.com",
        "some_future_field": {"nested": True},
    },
    {  # variable: a range
        "id": "VISA-INTL",
        "name": "Virtual Visa",
        "description": "Prepaid Visa",
        "category": "visa_card",
        "skus": [{"min": 5, "max": 2000, "currency_code": "EUR"}, {"min": 5, "max": 1000, "currency_code": "USD"}],
        "currency_codes": ["EUR", "USD"],
        "countries": [{"abbr": "US"}, {"abbr": "DE"}, {"abbr": "FR"}],
        "images": [],
    },
    {  # listed, but with a status the API may grow: not available
        "id": "OLD-BRAND",
        "name": "Old Brand",
        "skus": [{"min": 10, "max": 100}],
        "currency_codes": ["CAD"],
        "countries": [{"abbr": "CA"}],
        "status": "TEMPORARILY_SUSPENDED",
    },
]


def _errors(status: int, message: str, payload: dict[str, Any] | None = None) -> JSONResponse:
    return JSONResponse({"errors": {"message": message, "payload": payload or {}}}, status_code=status)


@dataclass
class FakeTremendousState:
    api_key: str = API_KEY
    balance_cents: int = 100_000
    rate_limit_per_second: int = 10
    async_orders: bool = False
    order_status: str = "EXECUTED"  # what a new, synchronous order reports (any string)
    # Seconds a POST /orders waits before Tremendous looks at it; a caller gone meanwhile leaves no order
    # (the request never got past Tremendous' front door).
    hold_orders: float = 0.0
    held: int = 0  # POST /orders now waiting in hold_orders
    products: list[dict[str, Any]] = field(default_factory=lambda: json.loads(json.dumps(PRODUCTS)))
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    payloads: dict[str, Any] = field(default_factory=dict)  # external_id -> the first request's parameters
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of every request
    queries: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (path, query parameters) of each
    authorizations: list[str] = field(default_factory=list)
    rate_limited: int = 0  # 429s sent
    # What the rate-limit window reads as "now": tests may freeze it, so a burst is one instant however slow
    # the machine.
    clock: Callable[[], float] = time.monotonic
    injected: deque[tuple[int, Any]] = field(default_factory=deque)
    # Answers that replace the next POST /orders' own AFTER Tremendous processed it (the order committed, or
    # replayed): the answer is lost on the way back. See `lose_order_answers`.
    lost_order_answers: deque[tuple[int, Any]] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _window: deque[float] = field(default_factory=deque)

    def reset(self) -> None:
        """Back to a fresh state in place (the running app holds this object): lets tests share one server."""
        fresh = FakeTremendousState()
        with self.lock:
            for attribute in fields(self):
                if attribute.name != "lock":
                    setattr(self, attribute.name, getattr(fresh, attribute.name))

    def inject(self, status: int, body: Any, times: int = 1) -> None:
        with self.lock:
            self.injected.extend([(status, body)] * times)

    def lose_order_answers(self, status: int, body: Any, times: int = 1) -> None:
        """The next `times` POST /orders are processed as usual, then answered `status` instead: the order exists."""
        with self.lock:
            self.lost_order_answers.extend([(status, body)] * times)

    def complete_pending(self) -> None:
        """Asynchronous orders are executed and their links delivered (what REWARDS.DELIVERY.SUCCEEDED announces)."""
        with self.lock:
            for order in self.orders.values():
                if order["status"] == "PENDING":
                    order["status"] = "EXECUTED"
                    for reward in order["rewards"]:
                        reward["delivery"].update(status="SUCCEEDED", link=_claim_link())

    def post_orders(self) -> int:
        return sum(1 for method, path in self.requests if method == "POST" and path.endswith("/orders"))

    def admit(self, now: float) -> bool:
        """The 10 requests/s window: True when this request is within the limit."""
        with self.lock:
            while self._window and self._window[0] <= now - 1.0:
                self._window.popleft()
            if len(self._window) >= self.rate_limit_per_second:
                self.rate_limited += 1
                return False
            self._window.append(now)
            return True


def _claim_link() -> str:
    return f"https://testflight.tremendous.com/rewards/payout/{secrets.token_urlsafe(12)}"


def _new_id() -> str:
    return secrets.token_hex(6).upper()


def create_fake_tremendous_app(state: FakeTremendousState) -> Starlette:
    async def guard(request: Request) -> JSONResponse | None:
        state.requests.append((request.method, request.url.path))
        state.queries.append((request.url.path, dict(request.query_params)))
        if not state.admit(state.clock()):
            return JSONResponse({"error": {"message": "Too many requests", "payload": {}}}, status_code=429)
        authorization = request.headers.get("authorization", "")
        state.authorizations.append(authorization)
        if authorization != f"Bearer {state.api_key}":
            return _errors(401, "Unauthorized: the API key is invalid")
        with state.lock:
            injected = state.injected.popleft() if state.injected else None
        if injected is not None:
            return JSONResponse(injected[1], status_code=injected[0])
        return None

    async def products(request: Request) -> JSONResponse:
        if (refused := await guard(request)) is not None:
            return refused
        countries = {c.upper() for c in request.query_params.get("country", "").split(",") if c}
        currencies = {c.upper() for c in request.query_params.get("currency", "").split(",") if c}
        listed = [
            p
            for p in state.products
            if (not countries or countries & {c["abbr"] for c in p["countries"]})
            and (not currencies or currencies & set(p["currency_codes"]))
        ]
        return JSONResponse({"products": listed})

    async def funding_sources(request: Request) -> JSONResponse:
        if (refused := await guard(request)) is not None:
            return refused
        return JSONResponse(
            {
                "funding_sources": [
                    {"id": "CC-FS-7", "method": "credit_card", "meta": {"last4": "4242"}},
                    {
                        "id": "BAL-FS-1",
                        "method": "balance",
                        "meta": {"available_cents": state.balance_cents, "pending_cents": 0},
                    },
                ]
            }
        )

    async def create_order(request: Request) -> JSONResponse:
        if state.hold_orders > 0:
            await request.body()  # read (and keep) first: watching for a disconnect consumes messages
            state.held += 1
            try:
                deadline = time.monotonic() + state.hold_orders
                while time.monotonic() < deadline:
                    if await request.is_disconnected():
                        return _errors(499, "Client closed request")
                    await asyncio.sleep(0.02)
            finally:
                state.held -= 1
        if (refused := await guard(request)) is not None:
            return refused
        try:
            body = json.loads(await request.body())
            reward = body["reward"]
            product_ids = reward["products"]
            value = reward["value"]
            denomination = Decimal(str(value["denomination"]))
            currency = value["currency_code"]
            funding = body["payment"]["funding_source_id"]
        except (ValueError, KeyError, TypeError, InvalidOperation):
            return _errors(400, "Bad request", {"reward": ["is invalid"]})
        external_id = body.get("external_id")
        parameters = {"payment": body["payment"], "reward": reward}
        with state.lock:
            if external_id is not None and external_id in state.payloads:
                first_parameters, order_id = state.payloads[external_id]
                if first_parameters != parameters:
                    return _errors(
                        409,
                        "external_id was already used with other parameters",
                        {"external_id": ["has already been taken"]},
                    )
                return answered(JSONResponse({"order": state.orders[order_id]}, status_code=201))
        if funding.lower() not in ("balance", "bal-fs-1"):
            return _errors(400, "Funding source not found", {"payment": {"funding_source_id": ["is invalid"]}})
        product = next((p for p in state.products if [p["id"]] == product_ids), None)
        if product is None:
            return _errors(400, "Product not available", {"reward": {"products": ["are not available"]}})
        skus = [s for s in product["skus"] if s.get("currency_code", currency) == currency]
        if currency not in product["currency_codes"] or not any(
            Decimal(str(s["min"])) <= denomination <= Decimal(str(s["max"])) for s in skus
        ):
            return _errors(400, "Invalid denomination", {"reward": {"value": {"denomination": ["is invalid"]}}})
        cents = int(denomination * 100)
        with state.lock:
            if cents > state.balance_cents:
                return _errors(402, "Insufficient funds in the funding source", {})
            state.balance_cents -= cents
            order_id = _new_id()
            pending = state.async_orders
            order = {
                "id": order_id,
                "external_id": external_id,
                "created_at": datetime.now(UTC).isoformat(),
                "status": "PENDING" if pending else state.order_status,
                "channel": "API",
                "payment": {"subtotal": float(denomination), "total": float(denomination), "fees": 0.0},
                "rewards": [
                    {
                        "id": _new_id(),
                        "order_id": order_id,
                        "created_at": datetime.now(UTC).isoformat(),
                        "value": {"denomination": float(denomination), "currency_code": currency},
                        "recipient": reward.get("recipient", {}),
                        "delivery": {
                            "method": reward.get("delivery", {}).get("method", "EMAIL"),
                            "status": "PENDING" if pending else "SUCCEEDED",
                            **({} if pending else {"link": _claim_link()}),
                        },
                        "products": product_ids,
                    }
                ],
            }
            state.orders[order_id] = order
            if external_id is not None:
                state.payloads[external_id] = (parameters, order_id)
        return answered(JSONResponse({"order": order}, status_code=202 if pending else 200))

    def answered(response: JSONResponse) -> JSONResponse:
        """The answer to an order Tremendous processed, unless a test made it get lost on the way back."""
        try:
            lost = state.lost_order_answers.popleft()  # no lock: it may be held here; deque.popleft is atomic
        except IndexError:
            return response
        return JSONResponse(lost[1], status_code=lost[0])

    async def list_orders(request: Request) -> JSONResponse:
        if (refused := await guard(request)) is not None:
            return refused
        external_id = request.query_params.get("external_id")
        offset = int(request.query_params.get("offset", "0"))
        limit = min(int(request.query_params.get("limit", "10")), 500)
        with state.lock:
            matching = [o for o in state.orders.values() if external_id is None or o["external_id"] == external_id]
        return JSONResponse({"orders": matching[offset : offset + limit], "total_count": len(matching)})

    async def get_order(request: Request) -> JSONResponse:
        if (refused := await guard(request)) is not None:
            return refused
        order = state.orders.get(request.path_params["order_id"])
        if order is None:
            return _errors(404, "Record not found")
        return JSONResponse({"order": order})

    async def get_reward(request: Request) -> JSONResponse:
        if (refused := await guard(request)) is not None:
            return refused
        reward_id = request.path_params["reward_id"]
        for order in state.orders.values():
            for reward in order["rewards"]:
                if reward["id"] == reward_id:
                    return JSONResponse({"reward": reward})
        return _errors(404, "Record not found")

    return Starlette(
        routes=[
            Route(f"{PREFIX}/products", products),
            Route(f"{PREFIX}/funding_sources", funding_sources),
            Route(f"{PREFIX}/orders", create_order, methods=["POST"]),
            Route(f"{PREFIX}/orders", list_orders, methods=["GET"]),
            Route(f"{PREFIX}/orders/{{order_id}}", get_order),
            Route(f"{PREFIX}/rewards/{{reward_id}}", get_reward),
        ]
    )


class FakeTremendous(ThreadedServer):
    """The fake under uvicorn in a thread, on a free loopback port."""

    def __init__(self, state: FakeTremendousState | None = None) -> None:
        self.state = state or FakeTremendousState()
        super().__init__(
            create_fake_tremendous_app(self.state),
            name="the fake Tremendous",
            lifespan="off",
            access_log=False,
            graceful_shutdown=2,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PREFIX}"

    @property
    def api_key(self) -> str:
        return self.state.api_key


@contextmanager
def running_fake_tremendous(state: FakeTremendousState | None = None) -> Iterator[FakeTremendous]:
    fake = FakeTremendous(state).start()
    try:
        yield fake
    finally:
        fake.stop()
