"""The sandbox service's credentials: API key, OAuth2 client and webhook secret, generated once in development.

The file (mode 0600) is shared by the sandbox service and a gateway started from the same data folder,
so neither needs a secret on its command line or in its logs.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

WEBHOOK_SECRET_PREFIX = "whsec_"
WEBHOOK_SECRET_BYTES = 32
FILE_MODE = 0o600


class CredentialsError(ValueError):
    """The credentials file cannot be read or does not hold every credential."""


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: "whsec_" and the base64 of 32 random bytes."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(WEBHOOK_SECRET_BYTES)).decode()


@dataclass(frozen=True)
class SandboxCredentials:
    """Who may call the sandbox service, and the key its webhooks are signed with; repr() hides every secret."""

    api_key: str
    api_secret: str = field(repr=False)
    client_id: str
    client_secret: str = field(repr=False)
    webhook_secret: str = field(repr=False)

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not isinstance(value, str) or not value.strip():
                raise CredentialsError(f"sandbox credential {item.name} must be a non-empty string")
        if ":" in self.api_key or ":" in self.client_id:
            raise CredentialsError("sandbox api_key and client_id must not contain ':' (HTTP Basic separator)")
        if not self.webhook_secret.startswith(WEBHOOK_SECRET_PREFIX):
            raise CredentialsError(f"the sandbox webhook secret must start with {WEBHOOK_SECRET_PREFIX}")

    @classmethod
    def generate(cls) -> SandboxCredentials:
        return cls(
            api_key=f"sk_sandbox_{secrets.token_hex(8)}",
            api_secret=secrets.token_urlsafe(32),
            client_id=f"client_sandbox_{secrets.token_hex(8)}",
            client_secret=secrets.token_urlsafe(32),
            webhook_secret=new_webhook_secret(),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> SandboxCredentials:
        try:
            data = json.loads(text)
        except ValueError:
            raise CredentialsError("the sandbox credentials file is not JSON") from None
        if not isinstance(data, dict):
            raise CredentialsError("the sandbox credentials file must hold a JSON object")
        names = [item.name for item in fields(cls)]
        missing = [name for name in names if name not in data]
        if missing:
            raise CredentialsError(f"the sandbox credentials file lacks {', '.join(missing)}")
        return cls(**{name: data[name] for name in names})


def load(path: Path) -> SandboxCredentials:
    """The credentials in `path`; CredentialsError when it is missing or invalid (messages never quote secrets)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CredentialsError(f"no sandbox credentials file at {path}") from None
    except OSError as exc:
        raise CredentialsError(f"cannot read {path}: {exc.strerror}") from None
    return SandboxCredentials.from_json(text)


def load_or_create(path: Path) -> SandboxCredentials:
    """Development credentials: read from `path`, or generated and written there once (mode 0600)."""
    if path.exists():
        return load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    credentials = SandboxCredentials.generate()
    # Written to a private temporary file, then linked into place: the link fails if another
    # process won the race, and nobody ever reads a half-written file.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(credentials.to_json())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return load(path)
    finally:
        temporary.unlink(missing_ok=True)
    return credentials
