"""The sandbox service's port routes: each one reads its input strictly, calls the SandboxProvider, and answers
with the wire models of providers/rest/contract.py (or a contract error: input problems are 400, never 500).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from providers.base import RedeemRequest, TransactionKind
from providers.errors import (
    IdempotencyConflict,
    InsufficientPoints,
    InvalidFaceValue,
    ProviderError,
    ProviderUnavailable,
    RewardNotFound,
    RewardUnavailable,
)
from providers.rest.contract import (
    ERROR_CODES,
    IDEMPOTENCY_HEADER,
    MAX_BATCH,
    MAX_PAGE,
    BalanceBatchWire,
    BalanceWire,
    RedeemRequestWire,
    RedeemResultWire,
    RedemptionBatchWire,
    RedemptionWire,
    RewardBatchWire,
    RewardPageWire,
    RewardWire,
    TransactionBatchWire,
    TransactionPageWire,
    TransactionWire,
    error_body,
)
from providers.sandbox.provider import SandboxProvider

logger = logging.getLogger(__name__)

DEFAULT_PAGE = 20
MAX_ID_LENGTH = 255
MAX_POSITION = 2**63 - 1  # SQLite's INTEGER
MAX_POINTS = 1_000_000_000  # far beyond any real balance, far below SQLite's limit
MAX_BODY_BYTES = 64 * 1024
IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")  # printable ASCII
TRUE, FALSE = ("true", "1"), ("false", "0")

# Most specific first: a subclass added later (e.g. a timeout under ProviderUnavailable) still maps.
PROVIDER_ERROR_CODES: tuple[tuple[type[ProviderError], str], ...] = (
    (InsufficientPoints, "insufficient_points"),
    (RewardNotFound, "reward_not_found"),
    (RewardUnavailable, "reward_unavailable"),
    (InvalidFaceValue, "invalid_face_value"),
    (IdempotencyConflict, "idempotency_conflict"),
    (ProviderUnavailable, "unavailable"),
    (ProviderError, "invalid_request"),  # e.g. an unknown cursor
)

Handler = Callable[[Request], Awaitable[Response]]


class InvalidRequest(Exception):
    """The request's input breaks the contract: 400 invalid_request with this message."""


def error_response(code: str, message: str, *, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=ERROR_CODES[code], headers=headers)


def wire(model: BaseModel, *, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


def contract_errors(handler: Handler) -> Handler:
    """The handler's answer, with its failures turned into contract errors (never a bare 500 page)."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except InvalidRequest as exc:
            return error_response("invalid_request", str(exc))
        except ProviderError as exc:
            code = next(code for kind, code in PROVIDER_ERROR_CODES if isinstance(exc, kind))
            return error_response(code, exc.message)
        except Exception:
            # The trace names the route only; request bodies (and so gift cards) are never logged.
            logger.exception("sandbox service: %s %s failed", request.method, request.url.path)
            return error_response("internal_error", "internal error")

    guarded.__name__ = handler.__name__
    return guarded


# Input


def provider_of(request: Request) -> SandboxProvider:
    return request.app.state.sandbox


def one(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise InvalidRequest(f"{name} may be given once")
    return values[0] if values else None


def integer(request: Request, name: str, *, default: int | None, low: int, high: int) -> int | None:
    raw = one(request, name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"[0-9]{1,19}", raw):
        raise InvalidRequest(f"{name} must be an integer from {low} to {high}")
    value = int(raw)
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be an integer from {low} to {high}")
    return value


def identifier(value: str, name: str) -> str:
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise InvalidRequest(f"{name} must be 1 to {MAX_ID_LENGTH} characters")
    return value


def identifiers(request: Request, name: str) -> list[str]:
    values = request.query_params.getlist(name)
    if len(values) > MAX_BATCH:
        raise InvalidRequest(f"at most {MAX_BATCH} {name} values per request")
    return [identifier(value, name) for value in values]


def boolean(request: Request, name: str, *, default: bool) -> bool:
    raw = one(request, name)
    if raw is None or raw == "":
        return default
    if raw.lower() in TRUE:
        return True
    if raw.lower() in FALSE:
        return False
    raise InvalidRequest(f"{name} must be true or false")


async def json_body(request: Request, model: type[Any]) -> Any:
    """The body validated by a pydantic model; a 400 naming the failing fields (never echoing their values)."""
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise InvalidRequest(f"the body must not exceed {MAX_BODY_BYTES} bytes")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        )
        raise InvalidRequest(f"invalid body: {problems}") from None


# Port routes


async def health(request: Request) -> Response:
    await provider_of(request).check()
    return JSONResponse({"status": "ok"})


async def list_rewards(request: Request) -> Response:
    cursor = one(request, "cursor")
    limit = integer(request, "limit", default=DEFAULT_PAGE, low=1, high=MAX_PAGE)
    assert limit is not None
    page = await provider_of(request).list_rewards(cursor=cursor or None, limit=limit)
    return wire(RewardPageWire(items=[RewardWire.of(r) for r in page.items], next_cursor=page.next_cursor))


async def get_rewards(request: Request) -> Response:
    ids = identifiers(request, "id")
    found = await provider_of(request).get_rewards(ids)
    return wire(RewardBatchWire(items=[None if r is None else RewardWire.of(r) for r in found]))


async def get_balances(request: Request) -> Response:
    user_ids = identifiers(request, "user_id")
    balances = await provider_of(request).get_balances(user_ids)
    return wire(BalanceBatchWire(items=[BalanceWire.of(b) for b in balances]))


async def list_transactions(request: Request) -> Response:
    user_id = identifier(one(request, "user_id") or "", "user_id")
    kinds: frozenset[TransactionKind] | None = None
    raw_kinds = request.query_params.getlist("kind")
    if raw_kinds:
        try:
            kinds = frozenset(TransactionKind(kind) for kind in raw_kinds)
        except ValueError:
            expected = ", ".join(kind.value for kind in TransactionKind)
            raise InvalidRequest(f"kind must be one of {expected}") from None
    page = await provider_of(request).list_transactions(
        user_id,
        kinds=kinds,
        older_than=integer(request, "older_than", default=None, low=0, high=MAX_POSITION),
        newer_than=integer(request, "newer_than", default=None, low=0, high=MAX_POSITION),
        limit=integer(request, "limit", default=DEFAULT_PAGE, low=0, high=MAX_PAGE) or 0,
        from_oldest=boolean(request, "from_oldest", default=False),
    )
    return wire(
        TransactionPageWire(
            items=[TransactionWire.of(tx) for tx in page.items], total_count=page.total_count, has_more=page.has_more
        )
    )


async def get_transactions(request: Request) -> Response:
    ids = identifiers(request, "id")
    found = await provider_of(request).get_transactions(ids)
    return wire(TransactionBatchWire(items=[None if tx is None else TransactionWire.of(tx) for tx in found]))


async def get_redemptions(request: Request) -> Response:
    ids = identifiers(request, "id")
    found = await provider_of(request).get_redemptions(ids)
    return wire(RedemptionBatchWire(items=[None if r is None else RedemptionWire.of(r) for r in found]))


async def redeem(request: Request) -> Response:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None or not IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidRequest(f"the {IDEMPOTENCY_HEADER} header is required: 1 to 255 printable ASCII characters")
    body: RedeemRequestWire = await json_body(request, RedeemRequestWire)
    if body.points > MAX_POINTS:
        raise InvalidRequest(f"points must not exceed {MAX_POINTS}")
    result = await provider_of(request).redeem(
        RedeemRequest(
            user_id=body.user_id,
            reward_id=body.reward_id,
            face_value=body.face_value,
            points=body.points,
            idempotency_key=key,
        )
    )
    answer = RedeemResultWire(
        redemption=RedemptionWire.of(result.redemption),
        balance=BalanceWire.of(result.balance),
        replayed=result.replayed,
    )
    return wire(answer, status=200 if result.replayed else 201)


# (path, method, port operation, handler): the service's routes and the OpenAPI document both read this.
PORT_ROUTES: tuple[tuple[str, str, str, Handler], ...] = (
    ("/v1/health", "GET", "check", health),
    ("/v1/rewards", "GET", "list_rewards", list_rewards),
    ("/v1/rewards/batch", "GET", "get_rewards", get_rewards),
    ("/v1/balances", "GET", "get_balances", get_balances),
    ("/v1/transactions", "GET", "list_transactions", list_transactions),
    ("/v1/transactions/batch", "GET", "get_transactions", get_transactions),
    ("/v1/redemptions/batch", "GET", "get_redemptions", get_redemptions),
    ("/v1/redemptions", "POST", "redeem", redeem),
)
