"""Fault injection for the sandbox service: what a network and a struggling provider do to a client.

Faults are scheduled per port operation (or `*`, every operation) through the admin route, and
latency plus a random 503 rate can be set at start. Each port route is an `InjectedOperation`:
it takes the next scheduled fault, then answers, answers late, answers badly, or never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Message, Receive, Scope, Send

from providers.rest.contract import error_body
from providers.sandbox.config import OPERATIONS

logger = logging.getLogger(__name__)

ANY_OPERATION = "*"
FAULT_KINDS = (
    "latency",  # answer after `seconds`
    "error_500",
    "error_502",  # a proxy's page, not the contract's JSON
    "error_503",
    "error_504",  # a proxy's page, not the contract's JSON
    "rate_limit_429",  # with Retry-After: `seconds`
    "hang",  # wait `seconds` or until the client gives up, then do the work and answer
    "reset",  # drop the connection before any body: the client never gets a response
    "truncated",  # do the work, answer 200 with the JSON body cut in half
    "malformed",  # do the work, answer 200 with valid JSON of the wrong shape
    "lost_after_commit",  # do the work (commit), then drop the connection
    "hang_after_commit",  # do the work (commit), then wait `seconds` or until the client gives up
)
DEFAULT_SECONDS = {"latency": 0.5, "rate_limit_429": 1.0, "hang": 30.0, "hang_after_commit": 30.0}
MAX_SECONDS = 300.0
MAX_TIMES = 10_000
# The Content-Length announced when a connection is dropped: more than will ever come.
DROPPED_LENGTH = 4096
MALFORMED_BODY = {"items": "not-a-list", "unexpected": True}
MAX_REQUEST_BYTES = 1024 * 1024  # read into memory before any handler runs: bounded

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    seconds: float


@dataclass(slots=True)
class ScheduledFault:
    operation: str
    kind: str
    remaining: int
    seconds: float

    def describe(self) -> dict[str, object]:
        return {"operation": self.operation, "fault": self.kind, "times": self.remaining, "seconds": self.seconds}


class FaultPlan:
    """Faults waiting for their operation, first scheduled first served; plus start-time latency and 503 rate."""

    def __init__(self, *, latency: float = 0.0, failure_rate: float = 0.0, seed: int | None = None) -> None:
        if latency < 0 or not math.isfinite(latency):
            raise ValueError("latency must be a finite number of seconds, not negative")
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError("failure_rate must be between 0 and 1")
        self.latency = latency
        self.failure_rate = failure_rate
        self._rng = random.Random(seed)
        self._scheduled: list[ScheduledFault] = []

    def schedule(self, operation: str, kind: str, *, times: int = 1, seconds: float | None = None) -> ScheduledFault:
        if operation != ANY_OPERATION and operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; expected one of {sorted(OPERATIONS)} or '*'")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if isinstance(times, bool) or not isinstance(times, int) or not 1 <= times <= MAX_TIMES:
            raise ValueError(f"times must be an integer from 1 to {MAX_TIMES}")
        if seconds is None:
            seconds = DEFAULT_SECONDS.get(kind, 0.0)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= MAX_SECONDS:
            raise ValueError(f"seconds must be a number from 0 to {MAX_SECONDS:g}")
        scheduled = ScheduledFault(operation=operation, kind=kind, remaining=times, seconds=float(seconds))
        self._scheduled.append(scheduled)
        return scheduled

    def clear(self) -> None:
        """Drop every scheduled fault (start-time latency and failure rate stay)."""
        self._scheduled.clear()

    def pending(self) -> list[dict[str, object]]:
        return [scheduled.describe() for scheduled in self._scheduled]

    def take(self, operation: str) -> Fault | None:
        """The fault this call of `operation` suffers, if any (scheduled first, then the random 503s)."""
        for scheduled in self._scheduled:
            if scheduled.operation in (operation, ANY_OPERATION):
                scheduled.remaining -= 1
                if scheduled.remaining <= 0:
                    self._scheduled.remove(scheduled)
                return Fault(kind=scheduled.kind, seconds=scheduled.seconds)
        if self.failure_rate > 0 and self._rng.random() < self.failure_rate:
            return Fault(kind="error_503", seconds=0.0)
        return None


class InjectedOperation:
    """The ASGI endpoint of one port operation: the handler's answer, unless a fault was scheduled for it."""

    def __init__(self, operation: str, handler: Handler, plan: FaultPlan) -> None:
        self.operation = operation
        self.handler = handler
        self.plan = plan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await _read_body(receive, MAX_REQUEST_BYTES)
        except _BodyTooLarge:
            too_large = error_body("invalid_request", f"the body must not exceed {MAX_REQUEST_BYTES} bytes")
            await JSONResponse(too_large, status_code=400, headers={"Connection": "close"})(scope, receive, send)
            return
        if body is None:
            return  # the client left before sending its request
        replay = _replaying(body, receive)
        request = Request(scope, replay)
        if self.plan.latency > 0:
            await asyncio.sleep(self.plan.latency)
        fault = self.plan.take(self.operation)
        if fault is None:
            await (await self.handler(request))(scope, replay, send)
            return
        logger.info("sandbox fault %s injected into %s", fault.kind, self.operation)
        kind = fault.kind
        if kind == "latency":
            await asyncio.sleep(fault.seconds)
        elif kind == "hang":
            await _until_disconnected(receive, fault.seconds)
        elif kind == "reset":
            await _drop_connection(send)
            return
        elif kind.startswith("error_") or kind == "rate_limit_429":
            await _failure(kind, fault.seconds)(scope, replay, send)
            return
        response = await self.handler(request)  # the provider does the work, whatever happens to the answer
        if kind == "truncated":
            cut = response.body[: max(1, len(response.body) // 2)]
            response = Response(cut, status_code=200, media_type="application/json")
        elif kind == "malformed":
            response = JSONResponse(MALFORMED_BODY, status_code=200)
        elif kind == "lost_after_commit":
            await _drop_connection(send)
            return
        elif kind == "hang_after_commit":
            await _until_disconnected(receive, fault.seconds)
        await response(scope, replay, send)


def _failure(kind: str, seconds: float) -> Response:
    if kind == "error_500":
        return JSONResponse(error_body("internal_error", "injected fault: internal error"), status_code=500)
    if kind == "error_503":
        return JSONResponse(error_body("unavailable", "injected fault: unavailable"), status_code=503)
    if kind == "rate_limit_429":
        return JSONResponse(
            error_body("rate_limited", "injected fault: rate limited"),
            status_code=429,
            headers={"Retry-After": str(max(0, math.ceil(seconds)))},
        )
    # 502 and 504 come from proxies in front of a provider: an HTML page, not the provider's JSON.
    status = int(kind.removeprefix("error_"))
    title = {502: "502 Bad Gateway", 504: "504 Gateway Timeout"}[status]
    page = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
    return PlainTextResponse(page, status_code=status, media_type="text/html")


class _BodyTooLarge(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body; None when the client disconnected first."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A receive channel that hands the buffered body to the handler, then reports the real disconnect."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _until_disconnected(receive: Receive, seconds: float) -> None:
    """Wait `seconds`, or less if the client gives up first (so a stopping server is not held up)."""

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(disconnected(), seconds)


async def _drop_connection(send: Send) -> None:
    """Start a response and return before its body: the server closes the connection mid-message.

    ASGI has no "close the socket" message; uvicorn closes the connection of an app that returns
    without completing its response (logging "ASGI callable returned without completing response."),
    and the client sees the connection end before any body arrives (httpx: RemoteProtocolError).
    """
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(DROPPED_LENGTH).encode())],
        }
    )
