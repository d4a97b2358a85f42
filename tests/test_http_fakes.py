"""Fakes at the provider boundary for the tests/test_http_* files (no tests here).

- `ScriptedProvider`: an httpx.MockTransport handler answering as the REST contract does, from a
  script of answers (responses or exceptions), recording every request it saw.
- `FakeClock`: a clock whose `sleep` advances it, so retry waits are measured, not slept.
- `raw_server`: a raw asyncio server on a loopback port that misbehaves at the socket level
  (hangs, drops the connection, cuts a body short, answers bytes that are not HTTP): what real
  timeouts, resets and garbled answers look like.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from providers.http import ApiKeyAuth, HttpPolicy, ProviderHttpClient

BASE_URL = "http://provider.test"
API_KEY, API_SECRET = "key-123", "api-secret-do-not-log"

# Policy for tests: no limiter, no waiting beyond what a test asks for.
FAST = HttpPolicy(rate_limit_per_second=0, retry_base_delay=0.01, retry_max_delay=0.05, call_budget_seconds=5.0)


def error(status: int, code: str | None = None, **headers: str) -> httpx.Response:
    """An error answer in the contract's shape: {"error": {"code", "message"}}."""
    body = {"error": {"code": code, "message": "from the fake"}} if code else {"detail": "no code"}
    return httpx.Response(status, json=body, headers=headers)


def ok(body: Any = None, status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"status": "ok"} if body is None else body, headers=headers)


Answer = httpx.Response | BaseException | Callable[[httpx.Request], Awaitable[httpx.Response] | httpx.Response]


@dataclass
class ScriptedProvider:
    """Answers requests with the script in order, then repeats the last answer."""

    script: Sequence[Answer]
    requests: list[httpx.Request] = field(default_factory=list)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.script[min(len(self.requests), len(self.script)) - 1]
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            result = answer(request)
            return await result if isinstance(result, Awaitable) else result
        # A fresh copy each time: a Response's stream can be read once.
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


class FakeClock:
    """time.monotonic and asyncio.sleep stand-ins: sleeping moves the clock, instantly."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(float(seconds))
        self.now += seconds
        await asyncio.sleep(0)


def make_client(
    transport: httpx.AsyncBaseTransport,
    *,
    policy: HttpPolicy = FAST,
    clock: FakeClock | None = None,
    auth: httpx.Auth | None = None,
    base_url: str = BASE_URL,
    **kwargs: Any,
) -> ProviderHttpClient:
    extra: dict[str, Any] = {}
    if clock is not None:
        extra = {"clock": clock, "sleep": clock.sleep}
    return ProviderHttpClient(
        provider="fake",
        base_url=base_url,
        auth=auth or ApiKeyAuth(API_KEY, API_SECRET),
        policy=policy,
        transport=transport,
        **extra,
        **kwargs,
    )


@asynccontextmanager
async def started(client: ProviderHttpClient) -> AsyncIterator[ProviderHttpClient]:
    await client.start()
    try:
        yield client
    finally:
        await client.aclose()


# A raw server: what a hung, reset or truncating provider looks like on the wire.

OK_BODY = json.dumps({"status": "ok"}).encode()
JSON_200 = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"

# Answers no HTTP parser accepts, each sent whole once the request has been read.
GARBAGE: dict[str, bytes] = {
    "not_http": b"HELLO THERE\r\n\r\n",
    "garbage_status": b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\n{}",
    "garbage_header": b"HTTP/1.1 200 OK\r\nContent-Type application/json\r\nContent-Length: 2\r\n\r\n{}",
    "long_header": JSON_200 + b"X-Padding: " + b"a" * 200_000 + b"\r\nContent-Length: 2\r\n\r\n{}",
    "bad_chunk": JSON_200 + b"Transfer-Encoding: chunked\r\n\r\nZZ\r\nab\r\n0\r\n\r\n",
}
# The head first, alone: the garbled chunk comes while the client reads the body.
LATE_BAD_CHUNK = (JSON_200 + b"Transfer-Encoding: chunked\r\n\r\n", b"2\r\n{}\r\nZZ\r\nab\r\n0\r\n\r\n")


@dataclass
class RawServer:
    url: str
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)


@asynccontextmanager
async def raw_server(behaviour: str) -> AsyncIterator[RawServer]:
    """behaviour: "hang" (read the request, never answer), "drop" (read it, close without answering),
    "truncate" (200 with Content-Length larger than the bytes sent, then close), "ok" (a proper answer),
    a key of GARBAGE (answer those bytes, then close), "late_bad_chunk" (a good head, then a garbled chunk)."""
    server_state = RawServer(url="")
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_state.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.lower().split(b"\r\n")
            length = next((int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length")), 0)
            server_state.requests.append(head + (await reader.readexactly(length) if length else b""))
            if behaviour == "hang":
                await asyncio.sleep(3600)
            elif behaviour == "truncate":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
                writer.write(OK_BODY[:5])
                await writer.drain()
            elif behaviour in GARBAGE:
                writer.write(GARBAGE[behaviour])
                await writer.drain()
            elif behaviour == "late_bad_chunk":
                head, body = LATE_BAD_CHUNK
                writer.write(head)
                await writer.drain()
                await asyncio.sleep(0.05)  # usually the client has the head, and is reading the body, by then
                writer.write(body)
                await writer.drain()
            elif behaviour == "ok":
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Request-ID: raw-1\r\n"
                    + f"Content-Length: {len(OK_BODY)}\r\n\r\n".encode()
                    + OK_BODY
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def track(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Awaitable[None]:
        task = asyncio.ensure_future(handle(reader, writer))
        handlers.add(task)
        task.add_done_callback(handlers.discard)
        return task

    server = await asyncio.start_server(track, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server_state.url = f"http://127.0.0.1:{port}"
    try:
        yield server_state
    finally:
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


def closed_port_url() -> str:
    """A loopback URL nobody listens on: connecting is refused (free_port's ports go to no one else)."""
    from tests.processes import free_port

    return f"http://127.0.0.1:{free_port()}"
