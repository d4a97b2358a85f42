"""The sandbox provider: a deterministic catalog and an SQLite ledger behind the provider port, embedded in
the gateway or served over HTTP on its own (`SandboxServiceConfig`, `create_sandbox_app`: imported lazily,
so the embedded sandbox never loads Starlette).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from providers.sandbox.catalog import build_catalog, failing_reward_ids, is_failing
from providers.sandbox.config import SandboxConfig, SandboxFaults
from providers.sandbox.credentials import SandboxCredentials, load_or_create
from providers.sandbox.provider import SandboxProvider

if TYPE_CHECKING:
    from providers.sandbox.service import SandboxServiceConfig, create_sandbox_app

__all__ = [
    "SandboxConfig",
    "SandboxCredentials",
    "SandboxFaults",
    "SandboxProvider",
    "SandboxServiceConfig",
    "build_catalog",
    "create_sandbox_app",
    "failing_reward_ids",
    "is_failing",
    "load_or_create",
]

_SERVICE = ("SandboxServiceConfig", "create_sandbox_app")


def __getattr__(name: str) -> Any:
    if name in _SERVICE:
        from providers.sandbox import service

        return getattr(service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
