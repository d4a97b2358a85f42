"""`giftgraph serve` as a user runs it: a real process, environment settings, a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.processes import free_port, stop_process, wait_until_answering
from tests.support import TEST_SECRET, without_extensions


@pytest.fixture
def served(tmp_path: Path):
    port = free_port()
    env = {
        **os.environ,
        "GIFTGRAPH_PORT": str(port),
        "GIFTGRAPH_DATA_DIR": str(tmp_path / "data"),
        "GIFTGRAPH_SANDBOX_FULFILMENT_DELAY": "0.1",
    }
    env.pop("GIFTGRAPH_JWT_SECRET", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "giftgraph", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(f"{base_url}/healthz", process, output=process.stdout.read)
        yield base_url, env, process
    finally:
        stop_process(process)
        if process.stdout:
            process.stdout.close()


def test_given_a_fresh_data_dir_when_serve_starts_then_graphiql_readiness_and_a_dev_token_work(served) -> None:
    base_url, env, _ = served

    graphiql = httpx.get(f"{base_url}/graphql", headers={"Accept": "text/html"})
    assert graphiql.status_code == 200 and "graphiql" in graphiql.text.lower()
    assert httpx.get(f"{base_url}/readyz").json()["status"] == "ok"

    token = subprocess.run(
        [sys.executable, "-m", "giftgraph", "token", "cli-user"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    body = httpx.post(
        f"{base_url}/graphql",
        json={"query": "{ viewer { userId balance { available } } }"},
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    assert without_extensions(body) == {"data": {"viewer": {"userId": "cli-user", "balance": {"available": 10_000}}}}


def test_given_a_running_server_when_sigterm_arrives_then_it_exits_cleanly(served) -> None:
    _, _, process = served

    process.send_signal(signal.SIGTERM)

    # uvicorn shuts down gracefully, then re-raises the signal so supervisors see why it stopped.
    assert process.wait(timeout=15) in (0, -signal.SIGTERM)
    output = process.stdout.read() if process.stdout else ""
    assert "Application shutdown complete" in output
    assert "Traceback" not in output


def test_given_production_without_a_secret_when_serve_starts_then_it_refuses_with_a_clear_message(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "GIFTGRAPH_ENV": "production", "GIFTGRAPH_DATA_DIR": str(tmp_path)}
    env.pop("GIFTGRAPH_JWT_SECRET", None)

    result = subprocess.run(
        [sys.executable, "-m", "giftgraph", "serve"], env=env, capture_output=True, text=True, timeout=30
    )

    assert result.returncode != 0
    assert "GIFTGRAPH_JWT_SECRET" in result.stderr
    assert TEST_SECRET not in result.stderr
