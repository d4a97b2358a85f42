"""Test support: `giftgraph serve` as a child process that a test can kill (SIGKILL) and start again."""

from __future__ import annotations

import functools
import os
import random
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support import TEST_SECRET

_handed_out: set[int] = set()


@functools.cache
def _ephemeral_ports() -> range:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


def free_port() -> int:
    """A loopback port for a child process to listen on, chosen outside the kernel's ephemeral range.

    A port from bind(0) lies in that range, so between our check and the child's bind any outgoing
    connection (a gateway calling its seller, say) may take it as its source port, and the child then
    fails to start with EADDRINUSE. Outside the range only another listener can take it: ports are
    handed out once per session and checked free.
    """
    ephemeral = _ephemeral_ports()
    candidates = [port for port in range(20000, 65536) if port not in ephemeral and port not in _handed_out]
    for port in random.sample(candidates, min(200, len(candidates))):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise AssertionError("no free loopback port outside the ephemeral range")


def wait_until_answering(
    url: str, process: subprocess.Popen[Any], *, timeout: float = 30, output: Callable[[], str] | None = None
) -> None:
    """Poll `url` until it answers 200; fail at once if `process` exits, quoting `output()` when given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            printed = f":\n{output()}" if output else ""
            raise AssertionError(f"{url}: the process exited early (code {process.returncode}){printed}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer 200 within {timeout:g} s")


def stop_process(process: subprocess.Popen[Any], *, timeout: float = 15) -> None:
    """SIGTERM, so the process shuts down cleanly; SIGKILL if it is still running after `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class GatewayProcess:
    """One data folder, one port, any number of lives: settings come as GIFTGRAPH_* variables only."""

    def __init__(self, data_dir: Path, settings: dict[str, str], *, ready_path: str = "/readyz") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database = data_dir / "giftgraph.db"
        self._ready = f"{self.url}{ready_path}"
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("GIFTGRAPH_")} | {
            "GIFTGRAPH_PORT": str(self.port),
            "GIFTGRAPH_DATA_DIR": str(data_dir),
            "GIFTGRAPH_JWT_SECRET": TEST_SECRET,
            **settings,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir / f"gateway-{self.port}.log"  # every life's output, quoted when one fails to start

    def start(self, *, timeout: float = 40) -> GatewayProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "giftgraph", "serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_until_answering(self._ready, self.process, timeout=timeout, output=self.output)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()  # SIGKILL: no lifespan shutdown, no finally blocks
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=10)

    def query(self, sql: str, *args: Any) -> Any:
        """The first column of the first row, read from the gateway's database file."""
        with sqlite3.connect(self.database) as conn:
            return conn.execute(sql, args).fetchone()[0]
