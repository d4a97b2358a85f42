"""Test support: `giftgraph serve` as a child process that a test can kill (SIGKILL) and start again."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support import TEST_SECRET


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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

    def start(self, *, timeout: float = 40) -> GatewayProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "giftgraph", "serve"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the gateway exited early"
            try:
                if httpx.get(self._ready, timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("the gateway did not become ready")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()  # SIGKILL: no lifespan shutdown, no finally blocks
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def query(self, sql: str, *args: Any) -> Any:
        """The first column of the first row, read from the gateway's database file."""
        with sqlite3.connect(self.database) as conn:
            return conn.execute(sql, args).fetchone()[0]
