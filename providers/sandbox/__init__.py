"""The embedded sandbox provider: a deterministic catalog and an SQLite ledger behind the provider port."""

from providers.sandbox.catalog import build_catalog, failing_reward_ids, is_failing
from providers.sandbox.config import SandboxConfig, SandboxFaults
from providers.sandbox.provider import SandboxProvider

__all__ = [
    "SandboxConfig",
    "SandboxFaults",
    "SandboxProvider",
    "build_catalog",
    "failing_reward_ids",
    "is_failing",
]
