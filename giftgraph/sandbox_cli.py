"""`giftgraph sandbox ...`: run the sandbox provider as a REST service, grant points through it, write its OpenAPI."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import click

from giftgraph.settings import SANDBOX_CREDENTIALS_FILE, ConfigurationError, Settings, load_settings

if TYPE_CHECKING:  # imported when a sandbox command runs: `giftgraph --help` stays light
    from providers.sandbox.credentials import SandboxCredentials

CREDENTIALS_FILE = SANDBOX_CREDENTIALS_FILE
DATABASE_FILE = "sandbox-service.db"  # its own ledger: never the embedded sandbox's sandbox.db
SECRET_SETTINGS = {
    "api_key": "GIFTGRAPH_SANDBOX_API_KEY",
    "api_secret": "GIFTGRAPH_SANDBOX_API_SECRET",
    "client_id": "GIFTGRAPH_SANDBOX_CLIENT_ID",
    "client_secret": "GIFTGRAPH_SANDBOX_CLIENT_SECRET",
    "webhook_secret": "GIFTGRAPH_SANDBOX_WEBHOOK_SECRET",
}


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigurationError as exc:
        raise click.ClickException(f"invalid configuration:\n{exc}") from exc


def _configured(settings: Settings) -> dict[str, str]:
    """The credentials set in the environment (secrets unwrapped here, and only here)."""
    values = {
        "api_key": settings.sandbox_api_key,
        "api_secret": settings.sandbox_api_secret,
        "client_id": settings.sandbox_client_id,
        "client_secret": settings.sandbox_client_secret,
        "webhook_secret": settings.sandbox_webhook_secret,
    }
    return {
        name: value if isinstance(value, str) else value.get_secret_value()
        for name, value in values.items()
        if value is not None
    }


def service_credentials(settings: Settings) -> tuple[SandboxCredentials, Path | None]:
    """The service's credentials and the development file they came from (None: all from the environment).

    Production needs every one in the environment; development fills the gaps from a file generated once.
    """
    from providers.sandbox.credentials import CredentialsError, SandboxCredentials, load_or_create

    configured = _configured(settings)
    missing = [SECRET_SETTINGS[name] for name in SECRET_SETTINGS if name not in configured]
    try:
        if not missing:
            return SandboxCredentials(**configured), None
        if settings.is_production:
            raise ConfigurationError(f"{', '.join(missing)} required when GIFTGRAPH_ENV=production")
        path = settings.sandbox_credentials_path
        generated = load_or_create(path)
        return SandboxCredentials(**{**asdict(generated), **configured}), path
    except (CredentialsError, OSError) as exc:
        raise ConfigurationError(f"sandbox credentials: {exc}") from None


@click.group("sandbox")
def sandbox() -> None:
    """The sandbox provider as a standalone REST service."""


@sandbox.command()
@click.option("--host", default=None, help="Interface to bind (default: the host of GIFTGRAPH_SANDBOX_URL).")
@click.option("--port", type=int, default=None, help="Port (default: the port of GIFTGRAPH_SANDBOX_URL, 9000).")
def serve(host: str | None, port: int | None) -> None:
    """Run the sandbox REST service (contract: GET /openapi.json)."""
    import uvicorn

    from giftgraph.logs import configure_logging
    from providers.sandbox.config import SandboxConfig
    from providers.sandbox.service import SandboxServiceConfig, create_sandbox_app

    settings = _settings()
    configure_logging(settings.log_level)
    where = urlsplit(settings.sandbox_url)
    host = host or where.hostname or "127.0.0.1"
    port = port if port is not None else (where.port or 9000)
    try:
        credentials, path = service_credentials(settings)
        app = create_sandbox_app(
            SandboxServiceConfig(
                database_url=f"sqlite+aiosqlite:///{settings.data_dir / DATABASE_FILE}",
                credentials=credentials,
                token_ttl_seconds=settings.sandbox_token_ttl_seconds,
                rate_limit=settings.sandbox_rate_limit,
                webhook_url=settings.sandbox_webhook_url,
                sandbox=SandboxConfig(
                    starting_balance=settings.sandbox_starting_balance,
                    fulfilment_delay=settings.sandbox_fulfilment_delay,
                ),
                latency=settings.sandbox_latency,
                failure_rate=settings.sandbox_failure_rate,
                faults=settings.sandbox_faults,
                fault_seed=settings.sandbox_fault_seed,
                fault_injection=settings.sandbox_fault_injection,
            )
        )
    except (ConfigurationError, ValueError) as exc:
        raise click.ClickException(f"invalid configuration:\n{exc}") from exc
    url = f"http://{host}:{port}"
    _announce(url, credentials, path, webhook_url=settings.sandbox_webhook_url)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=5)


def _announce(url: str, credentials: SandboxCredentials, path: Path | None, *, webhook_url: str | None) -> None:
    """Where the service is and what a gateway needs: the key id and the file, never a secret."""
    secrets_from = f"in {path} (mode 0600)" if path is not None else "in the environment"
    click.echo(f"giftgraph sandbox service on {url} (contract: {url}/openapi.json)")
    click.echo(f"credentials: {secrets_from}; secrets are never printed")
    click.echo("a gateway needs:")
    click.echo("  GIFTGRAPH_PROVIDER=rest")
    click.echo(f"  GIFTGRAPH_PROVIDER_BASE_URL={url}")
    if path is not None:
        click.echo(f"  (from the same GIFTGRAPH_DATA_DIR on loopback it reads {path.name} itself; elsewhere:)")
    click.echo(f"  GIFTGRAPH_PROVIDER_API_KEY={credentials.api_key}")
    click.echo(f"  GIFTGRAPH_PROVIDER_API_SECRET=<api_secret {secrets_from}>")
    click.echo(f"  or GIFTGRAPH_PROVIDER_AUTH=oauth2 GIFTGRAPH_PROVIDER_CLIENT_ID={credentials.client_id}")
    click.echo(f"     GIFTGRAPH_PROVIDER_CLIENT_SECRET=<client_secret {secrets_from}>")
    click.echo(f"  GIFTGRAPH_WEBHOOK_SECRETS='[\"<webhook_secret {secrets_from}>\"]'")
    target = webhook_url or "off (set GIFTGRAPH_SANDBOX_WEBHOOK_URL, e.g. http://127.0.0.1:8000/webhooks/sandbox)"
    click.echo(f"webhooks: {target}")


@sandbox.command()
@click.argument("user_id")
@click.argument("points", type=click.IntRange(min=1))
@click.option("--description", default=None, help="The EARN transaction's description.")
@click.option("--url", default=None, help="The running service (default: GIFTGRAPH_SANDBOX_URL).")
def grant(user_id: str, points: int, description: str | None, url: str | None) -> None:
    """Credit POINTS to USER_ID through the running sandbox service (a points.earned webhook follows)."""
    import httpx

    settings = _settings()
    base_url = (url or settings.sandbox_url).rstrip("/")
    key, secret = _api_key(settings)
    body: dict[str, object] = {"user_id": user_id, "points": points}
    if description is not None:
        body["description"] = description
    try:
        response = httpx.post(f"{base_url}/v1/sandbox/grants", json=body, auth=httpx.BasicAuth(key, secret), timeout=10)
    except httpx.HTTPError as exc:
        raise click.ClickException(
            f"cannot reach the sandbox service at {base_url} ({type(exc).__name__}); "
            "is `giftgraph sandbox serve` running?"
        ) from None
    if response.status_code == 401:
        raise click.ClickException(
            f"the sandbox service at {base_url} refused the credentials "
            f"(GIFTGRAPH_SANDBOX_API_KEY / _API_SECRET or {settings.sandbox_credentials_path})"
        )
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if not response.is_success or not isinstance(payload, dict) or "balance" not in payload:
        detail = payload.get("error", {}).get("message") if isinstance(payload, dict) else None
        raise click.ClickException(
            f"the sandbox service answered {response.status_code}: {detail or 'unexpected body'}"
        )
    balance = payload["balance"]
    click.echo(
        f"granted {points} points to {user_id}: balance {balance['available']} available, {balance['pending']} pending"
    )


def _api_key(settings: Settings) -> tuple[str, str]:
    from providers.sandbox.credentials import CredentialsError, load

    configured = _configured(settings)
    if "api_key" in configured and "api_secret" in configured:
        return configured["api_key"], configured["api_secret"]
    path = settings.sandbox_credentials_path
    try:
        credentials = load(path)
    except CredentialsError as exc:
        raise click.ClickException(
            f"{exc}: set GIFTGRAPH_SANDBOX_API_KEY and GIFTGRAPH_SANDBOX_API_SECRET, "
            "or run from the folder where `giftgraph sandbox serve` runs"
        ) from None
    return configured.get("api_key", credentials.api_key), configured.get("api_secret", credentials.api_secret)


@sandbox.command()
@click.option("--path", type=click.Path(path_type=Path), default=None, help="Default: providers/sandbox/openapi.json.")
@click.option("--check", is_flag=True, help="Exit 1 if the file differs from the generated document; write nothing.")
def openapi(path: Path | None, check: bool) -> None:
    """Write the sandbox service's OpenAPI document (the committed contract)."""
    from providers.sandbox.openapi import DOCUMENT_PATH, document_text

    path = path or DOCUMENT_PATH
    text = document_text()
    if check:
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            click.echo(f"{path} is out of date: run `giftgraph sandbox openapi`", err=True)
            sys.exit(1)
        click.echo(f"{path} is up to date")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    click.echo(f"wrote {path}")
