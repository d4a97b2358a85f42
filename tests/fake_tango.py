"""A fake Tango Card RaaS v2 server (Starlette under uvicorn, loopback) reproducing the documented behaviour.

- HTTP Basic (platform name:key) or OAuth2 bearer tokens from POST /oauth/token, which issues one
  token per `token_window` seconds and answers 400 to a second request inside it (Tango's ~20 h rule).
- GET /catalogs (unpaginated brands with items), GET /accounts/{id} (currentBalance),
  POST /orders (201 new; 200 with the ORIGINAL order for a known externalRefID, even for another
  item), GET /orders?externalRefID= (history, without reward credentials), GET /orders/{id}.
- Errors in Tango's shape {timestamp, requestId, path, httpCode, httpPhrase, errors: [...]} with
  402.001, 422.025/026/027, 503.002, 401.501; a 1 request/second limit answering 429 (configurable).
- `fail_next(...)` scripts failures, `lose_next_order_answer()` commits an order then answers 500,
  `hold_orders` keeps POST /orders waiting at the door (no order if the caller goes).

    with running_fake_tango(rate_limit=None) as tango:
        async with started(make_tango(tango.url)) as provider:
            ...
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from providers.fulfilment import OrderRequest
from providers.http import HttpPolicy
from providers.tango import TangoProvider, build_tango
from tests.servers import ThreadedServer

PLATFORM_NAME, PLATFORM_KEY = "giftgraph-platform", "platform-key-never-logged"
CLIENT_ID, CLIENT_SECRET = "tango-client", "tango-client-secret-never-logged"
ACCOUNT, CUSTOMER = "gg-account-1", "gg-customer-1"
TOKEN_PATH = "/oauth/token"
CARD_CODE, CARD_PIN, CARD_URL = "CODE-SECRET-1234", "PIN-9876", "https://claim.example/SECRET-CLAIM-URL"

PHRASES = {400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 404: "Not Found",
           422: "Unprocessable Entity", 429: "Too Many Requests", 500: "Internal Server Error",
           503: "Service Unavailable"}  # fmt: skip


def default_catalog() -> dict[str, Any]:
    """Two brands: a fixed-value item, a variable-value item, an inactive one and one with a new value type."""
    return {
        "catalogName": "giftgraph catalog",
        "brands": [
            {
                "brandKey": "B000001",
                "brandName": "Coffee Co",
                "description": "Coffee everywhere",
                "terms": "Coffee terms",
                "imageUrls": {"80w-326ppi": "https://img.example/coffee-80.png",
                              "300w-326ppi": "https://img.example/coffee-300.png"},  # fmt: skip
                "status": "active",
                "brandNewField": {"ignored": True},
                "items": [
                    {"utid": "U000001", "rewardName": "Coffee Co $10", "currencyCode": "USD", "status": "active",
                     "valueType": "FIXED_VALUE", "rewardType": "gift card", "faceValue": 10.0,
                     "countries": ["US"], "isWholeAmountValueRequired": False,
                     "redemptionInstructions": "Show the code"},
                    {"utid": "U000002", "rewardName": "Coffee Co EUR", "currencyCode": "EUR", "status": "active",
                     "valueType": "VARIABLE_VALUE", "minValue": 5.0, "maxValue": 100.0,
                     "countries": ["DE", "FR"], "isWholeAmountValueRequired": True},
                    {"utid": "U000003", "rewardName": "Coffee Co $25", "currencyCode": "USD",
                     "status": "inactive", "valueType": "FIXED_VALUE", "faceValue": 25.0, "countries": ["US"]},
                ],  # fmt: skip
            },
            {
                "brandKey": "B000002",
                "brandName": "Books Ltd",
                "description": "Books",
                "imageUrls": {"200w-326ppi": "https://img.example/books-200.png"},
                "status": "active",
                "items": [
                    {"utid": "U000004", "rewardName": "Books GBP", "currencyCode": "GBP", "status": "active",
                     "valueType": "VARIABLE_VALUE", "minValue": 1.0, "maxValue": 500.0, "countries": ["GB"]},
                    {"utid": "U000005", "rewardName": "Books future", "currencyCode": "USD",
                     "status": "SOMETHING_NEW", "valueType": "FIXED_VALUE", "faceValue": 20.0, "countries": ["US"]},
                    {"utid": "U000006", "rewardName": "Books crypto", "currencyCode": "USD", "status": "active",
                     "valueType": "TOKENIZED_VALUE", "countries": ["US"]},
                    {"utid": "U000007", "rewardName": "No currency", "status": "active",
                     "valueType": "FIXED_VALUE", "faceValue": 5.0, "countries": ["US"]},
                ],  # fmt: skip
            },
        ],
    }


@dataclass
class FakeTangoState:
    auth_mode: str = "basic"  # basic | oauth2
    rate_limit: int | None = 1  # requests per rate_window on the API (not the token endpoint); None: off
    rate_window: float = 1.0
    # What the rate limit reads as "now" (once per API request): tests may step it, so whether a request falls
    # inside the window does not depend on how fast the machine is.
    clock: Callable[[], float] = time.monotonic
    token_ttl: int = 86_400
    token_window: float = 72_000.0  # 20 h: a second token inside it is refused with 400
    balance: Decimal = Decimal("1000.00")
    currency: str = "USD"
    catalog: dict[str, Any] = field(default_factory=default_catalog)
    unavailable_utids: set[str] = field(default_factory=set)  # ordering them answers 503.002
    pending_utids: set[str] = field(default_factory=set)  # orders for them stay PENDING
    order_status_override: str | None = None  # answer orders with this status (unknown-enum tests)
    scripted: list[tuple[int, str | None]] = field(default_factory=list)  # next API answers (status, code)
    lose_order_answers: int = 0
    # Seconds a POST /orders waits before Tango looks at it; a caller gone meanwhile leaves no order (the
    # request never got past Tango's front door).
    hold_orders: float = 0.0
    held: int = 0  # POST /orders now waiting in hold_orders
    # When set, GET /catalogs takes the catalog as it is, sets `catalog_taken`, then waits for this to be set.
    catalog_gate: threading.Event | None = None
    catalog_taken: threading.Event = field(default_factory=threading.Event)
    # What happened
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry (monotonic)
    last_token_at: float | None = None
    token_requests: list[dict[str, str]] = field(default_factory=list)
    api_requests: list[tuple[str, str]] = field(default_factory=list)
    rate_limited: int = 0  # 429s sent
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)  # referenceOrderID -> order
    by_ref: dict[str, str] = field(default_factory=dict)  # externalRefID -> referenceOrderID
    _window: list[float] = field(default_factory=list)


class FakeTango:
    def __init__(self, state: FakeTangoState) -> None:
        self.state = state
        self.lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route(TOKEN_PATH, self.token, methods=["POST"]),
                Route("/catalogs", self.catalogs, methods=["GET"]),
                Route("/accounts/{account}", self.account, methods=["GET"]),
                Route("/orders", self.create_order, methods=["POST"]),
                Route("/orders", self.list_orders, methods=["GET"]),
                Route("/orders/{order_id}", self.get_order, methods=["GET"]),
            ]
        )

    # Scripting

    def fail_next(self, status: int, code: str | None = None, times: int = 1) -> None:
        self.state.scripted.extend([(status, code)] * times)

    def lose_next_order_answer(self) -> None:
        """The next new order is committed, then answered 500 (the answer is lost, the order exists)."""
        self.state.lose_order_answers += 1

    # Plumbing

    def _error(self, request: Request, status: int, code: str | None, message: str) -> JSONResponse:
        request_id = secrets.token_hex(8)
        body = {
            "timestamp": datetime.now(UTC).isoformat(),
            "requestId": request_id,
            "path": request.url.path,
            "httpCode": status,
            "httpPhrase": PHRASES.get(status, "Error"),
            "errors": [{"path": "", "code": code, "i18nKey": f"fake.{code}", "message": message}] if code else [],
        }
        return JSONResponse(body, status_code=status, headers={"X-REQUEST-ID": request_id})

    def _gate(self, request: Request) -> JSONResponse | None:
        """Auth, the rate limit and scripted failures, in Tango's order."""
        state = self.state
        state.api_requests.append((request.method, request.url.path))
        header = request.headers.get("Authorization", "")
        if state.auth_mode == "basic":
            expected = "Basic " + base64.b64encode(f"{PLATFORM_NAME}:{PLATFORM_KEY}".encode()).decode()
            if header != expected:
                return self._error(request, 401, "401.501", "Authentication failed")
        else:
            token = header.removeprefix("Bearer ")
            if not header.startswith("Bearer ") or state.tokens.get(token, 0) <= time.monotonic():
                return self._error(request, 401, "401.502", "Invalid or expired token")
        if state.rate_limit is not None:
            now = state.clock()
            state._window = [at for at in state._window if now - at < state.rate_window]
            if len(state._window) >= state.rate_limit:
                state.rate_limited += 1
                return self._error(request, 429, "429.001", "Too many requests")
            state._window.append(now)
        if state.scripted:
            status, code = state.scripted.pop(0)
            return self._error(request, status, code, "scripted failure")
        return None

    async def _held_until_gone(self, request: Request) -> bool:
        """Hold the order at the door for `hold_orders` seconds; True when the caller went away meanwhile."""
        self.state.held += 1
        try:
            deadline = time.monotonic() + self.state.hold_orders
            while time.monotonic() < deadline:
                if await request.is_disconnected():
                    return True
                await asyncio.sleep(0.02)
            return False
        finally:
            self.state.held -= 1

    # Routes

    async def token(self, request: Request) -> JSONResponse:
        state = self.state
        form = dict(parse_qsl((await request.body()).decode()))  # x-www-form-urlencoded, per RFC 6749
        state.token_requests.append(form)
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected or form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        now = time.monotonic()
        if state.last_token_at is not None and now - state.last_token_at < state.token_window:
            return JSONResponse(
                {"error": "invalid_request", "error_description": "token requested too frequently"}, status_code=400
            )
        state.last_token_at = now
        token = secrets.token_urlsafe(24)
        state.tokens[token] = now + state.token_ttl
        return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": state.token_ttl})

    async def catalogs(self, request: Request) -> JSONResponse:
        with self.lock:
            if (refused := self._gate(request)) is not None:
                return refused
            answer, gate = JSONResponse(self.state.catalog), self.state.catalog_gate
        if gate is not None:
            self.state.catalog_taken.set()
            await asyncio.to_thread(gate.wait, 30)
        return answer

    async def account(self, request: Request) -> JSONResponse:
        with self.lock:
            if (refused := self._gate(request)) is not None:
                return refused
            if request.path_params["account"] != ACCOUNT:
                return self._error(request, 404, "404.001", "Account not found")
            return JSONResponse(
                {"accountIdentifier": ACCOUNT, "accountNumber": "A00-000-001", "displayName": "giftgraph",
                 "currencyCode": self.state.currency, "currentBalance": float(self.state.balance),
                 "status": "ACTIVE", "createdAt": "2026-01-01T00:00:00Z"}  # fmt: skip
            )

    def _item(self, utid: str) -> dict[str, Any] | None:
        for brand in self.state.catalog["brands"]:
            for item in brand["items"]:
                if item["utid"] == utid:
                    return {**item, "brandName": brand["brandName"]}
        return None

    async def create_order(self, request: Request) -> JSONResponse:
        body = await request.json()  # read first: watching for a disconnect consumes messages
        if self.state.hold_orders > 0 and await self._held_until_gone(request):
            return self._error(request, 499, None, "Client closed request")
        with self.lock:
            if (refused := self._gate(request)) is not None:
                return refused
            state = self.state
            if body.get("accountIdentifier") != ACCOUNT or body.get("customerIdentifier") != CUSTOMER:
                return self._error(request, 400, "400.001", "Unknown account or customer")
            ref = body.get("externalRefID")
            if ref is not None and ref in state.by_ref:
                # Documented: the ORIGINAL order, whatever the item or amount of this request.
                return JSONResponse(state.orders[state.by_ref[ref]], status_code=200)
            item = self._item(str(body.get("utid")))
            if item is None:
                return self._error(request, 400, "400.002", "Unknown utid")
            amount = Decimal(str(body.get("amount")))
            if item["utid"] in state.unavailable_utids or item["status"] != "active":
                return self._error(request, 503, "503.002", "Item temporarily unavailable")
            if item["valueType"] == "FIXED_VALUE" and amount != Decimal(str(item["faceValue"])):
                return self._error(request, 422, "422.027", "Amount must equal the item's face value")
            if item["valueType"] == "VARIABLE_VALUE":
                if not Decimal(str(item["minValue"])) <= amount <= Decimal(str(item["maxValue"])):
                    return self._error(request, 422, "422.025", "Amount outside the item's range")
                if item.get("isWholeAmountValueRequired") and amount != amount.to_integral_value():
                    return self._error(request, 422, "422.026", "Whole amounts only")
            if amount > state.balance:
                return self._error(request, 402, "402.001", "Insufficient funds")
            state.balance -= amount
            order_id = f"RA{len(state.orders) + 1:06d}"
            status = state.order_status_override or ("PENDING" if item["utid"] in state.pending_utids else "COMPLETE")
            credentials = [
                {"label": "Card Number", "value": CARD_CODE, "type": "text", "credentialType": "cardNumber"},
                {"label": "PIN", "value": CARD_PIN, "type": "text", "credentialType": "cardPin"},
                {"label": "Redemption URL", "value": CARD_URL, "type": "url", "credentialType": "redemptionUrl"},
                {"label": "Expiration Date", "value": "2030-01-31T00:00:00Z", "type": "date",
                 "credentialType": "expirationDate"},  # fmt: skip
            ]
            order = {
                "referenceOrderID": order_id,
                "externalRefID": ref,
                "customerIdentifier": CUSTOMER,
                "accountIdentifier": ACCOUNT,
                "amountCharged": {"value": float(amount), "currencyCode": state.currency, "total": float(amount)},
                "denomination": {"value": float(amount), "currencyCode": item["currencyCode"]},
                "utid": item["utid"],
                "rewardName": item["rewardName"],
                "sendEmail": body.get("sendEmail"),
                "status": status,
                "createdAt": datetime.now(UTC).isoformat(),
                "reward": {"credentials": {}, "credentialList": credentials if status == "COMPLETE" else [],
                           "redemptionInstructions": "Show the code"},  # fmt: skip
            }
            state.orders[order_id] = order
            if ref is not None:
                state.by_ref[ref] = order_id
            if state.lose_order_answers:
                state.lose_order_answers -= 1
                return self._error(request, 500, "500.001", "Internal error")
            return JSONResponse(order, status_code=201)

    async def list_orders(self, request: Request) -> JSONResponse:
        with self.lock:
            if (refused := self._gate(request)) is not None:
                return refused
            ref = request.query_params.get("externalRefID")
            orders = [o for o in self.state.orders.values() if ref is None or o["externalRefID"] == ref]
            # The history leaves reward credentials out: GET /orders/{id} has them.
            summaries = [{k: v for k, v in o.items() if k != "reward"} for o in orders]
            page = {"number": 0, "elementsPerBlock": 10, "resultCount": len(summaries), "totalCount": len(summaries)}
            return JSONResponse({"page": page, "orders": summaries})

    async def get_order(self, request: Request) -> JSONResponse:
        with self.lock:
            if (refused := self._gate(request)) is not None:
                return refused
            order = self.state.orders.get(request.path_params["order_id"])
            if order is None:
                return self._error(request, 404, "404.002", "Order not found")
            return JSONResponse(order)


class RunningFakeTango(ThreadedServer):
    def __init__(self, state: FakeTangoState) -> None:
        self.fake = FakeTango(state)
        super().__init__(self.fake.app, name="the fake Tango", lifespan="off", access_log=False)

    @property
    def state(self) -> FakeTangoState:
        return self.fake.state

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def running_fake_tango(**state: Any) -> Iterator[RunningFakeTango]:
    """The fake on a free loopback port for the block; `state`: FakeTangoState fields (rate_limit=None...)."""
    server = RunningFakeTango(FakeTangoState(**state)).start()
    try:
        yield server
    finally:
        server.stop()


# Building the adapter against the fake
WEBHOOK_SECRET = base64.b64encode(b"tango-webhook-secret-32-bytes!!!").decode()
# No client-side limiter and short retry waits: tests about the rate limit pass their own policy.
FAST = HttpPolicy(rate_limit_per_second=0, retry_base_delay=0.01, retry_max_delay=0.05, call_budget_seconds=5.0)


def make_tango(url: str, *, auth_mode: str = "basic", policy: HttpPolicy = FAST, **overrides: Any) -> TangoProvider:
    values: dict[str, Any] = {
        "base_url": url,
        "auth_mode": auth_mode,
        "platform_name": PLATFORM_NAME,
        "platform_key": PLATFORM_KEY,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "token_url": TOKEN_PATH,
        "account_identifier": ACCOUNT,
        "customer_identifier": CUSTOMER,
        "webhook_secrets": [WEBHOOK_SECRET],
        "policy": policy,
    }
    values.update(overrides)
    return build_tango(**values)


@asynccontextmanager
async def started(provider: TangoProvider) -> AsyncIterator[TangoProvider]:
    await provider.start()
    try:
        yield provider
    finally:
        await provider.aclose()


def order_request(reference: str = "ref0001", reward_id: str = "U000001", face_value: str = "10") -> OrderRequest:
    return OrderRequest(
        reference=reference,
        reward_id=reward_id,
        face_value=Decimal(face_value),
        currency_code="USD" if reward_id in ("U000001", "U000003", "U000005") else "EUR",
        recipient_name="user-1",
    )


def delivery_event(reference: str, order_id: str) -> bytes:
    """The body of Tango's LineItemDeliveryStatus webhook: the order under `reference` was delivered."""
    return json.dumps(
        {
            "eventId": str(uuid.uuid4()),
            "revision": 2,
            "category": "ORDER",
            "eventType": "LineItemDeliveryStatus",
            "eventOccurredAt": datetime.now(UTC).isoformat(),
            "eventData": {"externalRefID": reference, "referenceOrderID": order_id, "status": "COMPLETED"},
        }
    ).encode()
