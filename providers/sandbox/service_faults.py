"""Fault injection for the sandbox service: what a network and a struggling provider do to a client.

Faults come three ways: a share of calls per operation set at start (`rates`, plus latency and a 503 rate),
faults scheduled per port operation (or `*`) through the admin route, and one request's own fault in the
X-Sandbox-Fault header. Each port route is an `InjectedOperation`: it takes this call's fault, then answers,
answers late, answers badly, or never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Message, Receive, Scope, Send

from providers.rest.contract import error_body
from providers.sandbox.config import (
    ANY_OPERATION,
    DEFAULT_SECONDS,
    FAULT_KINDS,
    MAX_SECONDS,
    OPERATIONS,
    FaultRates,
    check_fault_rates,
)

__all__ = [
    "ANY_OPERATION",
    "FAULT_HEADER",
    "FAULT_KINDS",
    "MAX_SECONDS",
    "MAX_TIMES",
    "NO_FAULT",
    "Fault",
    "FaultPlan",
    "InjectedOperation",
    "keep_transport",
    "parse_fault_header",
]

logger = logging.getLogger(__name__)

FAULT_HEADER = "X-Sandbox-Fault"  # `<kind>[; seconds=<n>]`: this request's fault, whatever else is scheduled
NO_FAULT = "none"  # in the header: this request answers normally (no scheduled or random fault either)
MAX_TIMES = 10_000
# The Content-Length announced when the body is cut after the headers: more than will ever come.
DROPPED_LENGTH = 4096
MALFORMED_BODY = {"items": "not-a-list", "unexpected": True}
MAX_REQUEST_BYTES = 1024 * 1024  # read into memory before any handler runs: bounded
# Where `keep_transport` leaves the server's transport in the scope, for the faults that close the connection.
TRANSPORT_KEY = "giftgraph.sandbox.transport"
DISCONNECT_WAIT = 5.0  # seconds to let the server notice a connection we closed
_SECONDS = re.compile(r"[0-9]{1,3}(\.[0-9]{1,6})?")

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
    """Which fault each call suffers: scheduled ones first come first served, then the start-time rates.

    `rates` maps an operation (or "*") to the share of its calls that suffer each kind, drawn from a random
    source seeded with `seed` (the same seed, the same faults in the same order of calls). With `enabled`
    off the service answers every call normally: no start-time faults are accepted, none can be scheduled,
    and the X-Sandbox-Fault header is ignored.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        failure_rate: float = 0.0,
        rates: FaultRates | None = None,
        seed: int | None = None,
        enabled: bool = True,
    ) -> None:
        if latency < 0 or not math.isfinite(latency):
            raise ValueError("latency must be a finite number of seconds, not negative")
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError("failure_rate must be between 0 and 1")
        checked = check_fault_rates(rates or {})
        if failure_rate > 0:  # the older setting: a share of every operation's calls answered 503
            shared = checked.setdefault(ANY_OPERATION, {})
            shared["error_503"] = shared.get("error_503", 0.0) + failure_rate
            checked = check_fault_rates(checked)
        if not enabled and (latency > 0 or any(rate > 0 for kinds in checked.values() for rate in kinds.values())):
            raise ValueError("fault injection is off: start-time latency, failure rate and fault rates must be unset")
        self.enabled = enabled
        self.latency = latency
        self.failure_rate = failure_rate
        # Per operation, the (kind, rate) pairs one draw chooses from: its own, then those of "*".
        self._rates = {
            operation: [
                (kind, rate)
                for table in (checked.get(operation, {}), checked.get(ANY_OPERATION, {}))
                for kind, rate in table.items()
                if rate > 0
            ]
            for operation in OPERATIONS
        }
        self._rng = random.Random(seed)
        self._scheduled: list[ScheduledFault] = []

    def schedule(self, operation: str, kind: str, *, times: int = 1, seconds: float | None = None) -> ScheduledFault:
        if not self.enabled:
            raise ValueError("fault injection is off for this service")
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
        """Drop every scheduled fault (start-time latency and rates stay)."""
        self._scheduled.clear()

    def pending(self) -> list[dict[str, object]]:
        return [scheduled.describe() for scheduled in self._scheduled]

    def take(self, operation: str) -> Fault | None:
        """The fault this call of `operation` suffers, if any (scheduled first, then one draw over the rates)."""
        for scheduled in self._scheduled:
            if scheduled.operation in (operation, ANY_OPERATION):
                scheduled.remaining -= 1
                if scheduled.remaining <= 0:
                    self._scheduled.remove(scheduled)
                return Fault(kind=scheduled.kind, seconds=scheduled.seconds)
        rates = self._rates.get(operation)
        if not rates:
            return None
        draw = self._rng.random()
        for kind, rate in rates:
            draw -= rate
            if draw < 0:
                return Fault(kind=kind, seconds=DEFAULT_SECONDS.get(kind, 0.0))
        return None


def parse_fault_header(value: str) -> Fault | None:
    """The fault an X-Sandbox-Fault header asks for (`<kind>[; seconds=<n>]`); None for `none`.

    ValueError when it names no known fault or carries anything else.
    """
    kind, _, parameters = value.partition(";")
    kind = kind.strip()
    if kind == NO_FAULT and not parameters.strip():
        return None
    if kind not in FAULT_KINDS:
        raise ValueError(
            f"{FAULT_HEADER}: unknown fault {kind[:64]!r}; expected {NO_FAULT} or one of {', '.join(FAULT_KINDS)}"
        )
    seconds = DEFAULT_SECONDS.get(kind, 0.0)
    for parameter in filter(None, (part.strip() for part in parameters.split(";"))):
        name, _, raw = parameter.partition("=")
        if name.strip().lower() != "seconds" or not _SECONDS.fullmatch(raw.strip()):
            raise ValueError(f"{FAULT_HEADER}: the only parameter is seconds=<number from 0 to {MAX_SECONDS:g}>")
        seconds = float(raw)
        if seconds > MAX_SECONDS:
            raise ValueError(f"{FAULT_HEADER}: seconds must be a number from 0 to {MAX_SECONDS:g}")
    return Fault(kind=kind, seconds=seconds)


def keep_transport(scope: Scope, send: Send) -> None:
    """Keep the server's transport in the scope, so that a fault can close the connection without an answer.

    ASGI has no message for that. Under uvicorn, the `send` the server hands the app is a method of the
    request's cycle, which holds the connection's transport; under another server nothing is kept and
    those faults cut the answer after its headers instead.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if callable(getattr(transport, "close", None)) and callable(getattr(transport, "is_closing", None)):
        scope[TRANSPORT_KEY] = transport


class InjectedOperation:
    """The ASGI endpoint of one port operation: the handler's answer, unless this call suffers a fault."""

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
        try:
            fault = self._fault(request)
        except ValueError as exc:
            await JSONResponse(error_body("invalid_request", str(exc)), status_code=400)(scope, replay, send)
            return
        if self.plan.latency > 0:
            await asyncio.sleep(self.plan.latency)
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
            await _close_connection(scope, receive, send)
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
            await _close_connection(scope, receive, send)
            return
        elif kind == "cut_after_headers":
            await _cut_after_headers(send)
            return
        elif kind == "hang_after_commit":
            await _until_disconnected(receive, fault.seconds)
        await response(scope, replay, send)

    def _fault(self, request: Request) -> Fault | None:
        """The request's own fault when it names one in X-Sandbox-Fault (fault injection on), else the plan's."""
        asked = request.headers.getlist(FAULT_HEADER) if self.plan.enabled else []
        if len(asked) > 1:
            raise ValueError(f"{FAULT_HEADER} may be given once")
        if asked:
            return parse_fault_header(asked[0])  # the scheduled faults wait for the calls that name none
        return self.plan.take(self.operation)


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


async def _close_connection(scope: Scope, receive: Receive, send: Send) -> None:
    """Close the connection before any response byte: the client learns nothing (a connection error).

    The client sees the connection end where it awaited a status line (httpx: RemoteProtocolError, "Server
    disconnected without sending a response"; aiohttp: ServerDisconnectedError), as after a reset.
    """
    transport = scope.get(TRANSPORT_KEY)
    if transport is None:
        logger.warning("sandbox fault: no transport to close under this server; cutting the answer after its headers")
        await _cut_after_headers(send)
        return
    transport.close()
    # Returned before the server saw the connection go, the app would be answered for with a 500 it cannot send.
    await _until_disconnected(receive, DISCONNECT_WAIT)


async def _cut_after_headers(send: Send) -> None:
    """Start a 200 and return before its body: the server closes the connection mid-message.

    uvicorn closes the connection of an app that returns without completing its response (logging "ASGI
    callable returned without completing response."); the client has a status line and headers, then the
    connection ends before the announced body (httpx: RemoteProtocolError while reading the body).
    """
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(DROPPED_LENGTH).encode())],
        }
    )
