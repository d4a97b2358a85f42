"""Test support: an ASGI app under uvicorn in a daemon thread, on a free loopback port.

The gateway (tests.support.LiveServer), the sandbox service and the fake sellers all run this way.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Literal, Self

import uvicorn


class ThreadedServer:
    def __init__(
        self,
        app: Any,
        *,
        name: str,
        lifespan: Literal["on", "off"] = "on",
        access_log: bool = True,
        graceful_shutdown: float | None = None,
    ) -> None:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_config=None,
            lifespan=lifespan,
            access_log=access_log,
            timeout_graceful_shutdown=graceful_shutdown,  # a hung fault must not hold a test up
        )
        self._name = name
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name=name)
        self.port = 0

    def start(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self._name} did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.should_exit = True
            self._thread.join(timeout=20)

    def run(self, coro: Any, *, timeout: float = 30) -> Any:
        """Run a coroutine on the server's own event loop (where its app's engines and clients live)."""
        loop = self._server.servers[0].get_loop()
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)
