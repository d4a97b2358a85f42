"""Test support: the sandbox REST service (`giftgraph sandbox serve`) under uvicorn in a thread, on a free
loopback port, with helpers over its admin routes (faults, stats, grants).

    with running_sandbox_service(tmp_path, webhook_url=...) as sandbox:
        sandbox.fault("redeem", "lost_after_commit")
        ... call sandbox.url with sandbox.credentials ...
        assert sandbox.stats()["redemptions"] == 1
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from providers.sandbox.config import SandboxConfig
from providers.sandbox.credentials import SandboxCredentials, load_or_create
from providers.sandbox.provider import SandboxProvider
from providers.sandbox.service import SandboxServiceConfig, create_sandbox_app
from providers.sandbox.webhook_sender import WebhookSender
from tests.servers import ThreadedServer

CREDENTIALS_FILE = "sandbox-credentials.json"
DATABASE_FILE = "sandbox-service.db"
# Tests send bursts (concurrency, retries); those about the rate limit pass their own.
TEST_RATE_LIMIT = "1000/second"
TEST_FULFILMENT_DELAY = 0.3


def sandbox_service_config(tmp_path: Path, **overrides: Any) -> SandboxServiceConfig:
    """The service's config for a test: its own database and (shared, 0600) credentials file in tmp_path."""
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / DATABASE_FILE}",
        "credentials": load_or_create(tmp_path / CREDENTIALS_FILE),
        "rate_limit": TEST_RATE_LIMIT,
        "sandbox": SandboxConfig(fulfilment_delay=TEST_FULFILMENT_DELAY),
    }
    values.update(overrides)
    return SandboxServiceConfig(**values)


class SandboxService(ThreadedServer):
    """The running service: where it is, who may call it, and its admin routes as methods."""

    def __init__(self, config: SandboxServiceConfig) -> None:
        self.config = config
        self.app = create_sandbox_app(config)
        super().__init__(self.app, name="the sandbox service", access_log=False, graceful_shutdown=2)
        self._admin_client: httpx.Client | None = None

    def start(self) -> SandboxService:
        super().start()
        # One client for the admin helpers: building an httpx client costs more than the call.
        self._admin_client = self.client()
        return self

    def stop(self) -> None:
        if self._admin_client is not None:
            self._admin_client.close()
            self._admin_client = None
        super().stop()

    # Where and who

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def credentials(self) -> SandboxCredentials:
        return self.config.credentials

    @property
    def auth(self) -> httpx.BasicAuth:
        return httpx.BasicAuth(self.credentials.api_key, self.credentials.api_secret)

    @property
    def provider(self) -> SandboxProvider:
        return self.app.state.sandbox

    @property
    def webhooks(self) -> WebhookSender | None:
        return self.app.state.webhooks

    def client(self, **kwargs: Any) -> httpx.Client:
        """A synchronous client with the API key, for this service."""
        kwargs.setdefault("timeout", 10)
        return httpx.Client(base_url=self.url, auth=self.auth, **kwargs)

    # Admin routes

    def fault(self, operation: str, kind: str, times: int = 1, seconds: float | None = None) -> None:
        """Schedule `kind` for the next `times` calls of `operation` (a port method name, or "*")."""
        body: dict[str, Any] = {"operation": operation, "fault": kind, "times": times}
        if seconds is not None:
            body["seconds"] = seconds
        self._admin("POST", "/v1/sandbox/faults", json=body)

    def clear_faults(self) -> None:
        self._admin("DELETE", "/v1/sandbox/faults")

    def pending_faults(self) -> list[dict[str, Any]]:
        """The scheduled faults not spent yet: [{"operation", "fault", "times", "seconds"}]."""

        async def pending() -> list[dict[str, Any]]:
            return self.app.state.faults.pending()

        return self.run(pending())

    def stats(self) -> dict[str, Any]:
        """{"calls": {operation: n}, "redemptions": n, "redeem_transactions": n, "redemptions_by_key": {key: n}}."""
        return self._admin("GET", "/v1/sandbox/stats")

    def grant(self, user_id: str, points: int, description: str | None = None) -> dict[str, Any]:
        """Credit points (and send points.earned when webhooks are on); {"transaction", "balance"}."""
        body: dict[str, Any] = {"user_id": user_id, "points": points}
        if description is not None:
            body["description"] = description
        return self._admin("POST", "/v1/sandbox/grants", json=body)

    def set_availability(self, reward_id: str, availability: str) -> dict[str, Any]:
        return self._admin("PUT", f"/v1/sandbox/rewards/{reward_id}/availability", json={"availability": availability})

    def _admin(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._admin_client is None:
            raise RuntimeError("the sandbox service is not running")
        response = self._admin_client.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()


@contextmanager
def running_sandbox_service(tmp_path: Path, **config_overrides: Any) -> Iterator[SandboxService]:
    """The service on a free loopback port for the duration of the block (config_overrides: SandboxServiceConfig
    fields, e.g. webhook_url=, rate_limit=, token_ttl_seconds=, latency=, failure_rate=, sandbox=SandboxConfig(...))."""
    service = SandboxService(sandbox_service_config(tmp_path, **config_overrides)).start()
    try:
        yield service
    finally:
        service.stop()
