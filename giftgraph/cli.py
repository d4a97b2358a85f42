"""The `giftgraph` command: serve, token, export-schema, persisted-operations, `sandbox ...` and `points ...`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from giftgraph.points_cli import points
from giftgraph.sandbox_cli import sandbox
from giftgraph.settings import ConfigurationError, Settings, load_settings

DEFAULT_SCHEMA_PATH = Path("graphql/schema.graphql")
DEFAULT_OPERATIONS_DIR = Path("graphql/operations")
DEFAULT_MANIFEST_PATH = Path("graphql/persisted-operations.json")


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigurationError as exc:
        raise click.ClickException(f"invalid configuration:\n{exc}") from exc


@click.group()
def main() -> None:
    """giftgraph: a GraphQL API for rewards and gift cards."""


@main.command()
@click.option("--host", default=None, help="Interface to bind (GIFTGRAPH_HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (GIFTGRAPH_PORT, default 8000).")
def serve(host: str | None, port: int | None) -> None:
    """Run the API server (GraphiQL at /graphql in development)."""
    import uvicorn

    from giftgraph.app import create_app
    from giftgraph.logs import configure_logging

    settings = _settings(host=host, port=port)
    configure_logging(settings.log_level)
    try:
        app = create_app(settings)
    except ConfigurationError as exc:
        raise click.ClickException(f"invalid configuration:\n{exc}") from exc
    click.echo(
        f"giftgraph ({settings.env}, provider={settings.provider}) on http://{settings.host}:{settings.port}/graphql"
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None)


@main.command()
@click.argument("user_id")
@click.option("--ttl", type=int, default=None, help="Lifetime in seconds (default: GIFTGRAPH_DEV_TOKEN_TTL_SECONDS).")
def token(user_id: str, ttl: int | None) -> None:
    """Print a development bearer token for USER_ID."""
    from giftgraph.auth import issue_token, user_id_error

    if (error := user_id_error(user_id)) is not None:
        raise click.BadParameter(error, param_hint="USER_ID")
    try:
        click.echo(issue_token(_settings(), user_id, ttl_seconds=ttl))
    except ConfigurationError as exc:  # e.g. JWKS mode: tokens come from the identity provider
        raise click.ClickException(str(exc)) from exc


@main.command("export-schema")
@click.option("--path", type=click.Path(path_type=Path), default=DEFAULT_SCHEMA_PATH, show_default=True)
@click.option("--check", is_flag=True, help="Exit 1 if the file differs from the live schema instead of writing.")
def export_schema(path: Path, check: bool) -> None:
    """Write the live schema's SDL (the public contract) to a file."""
    from schema import print_sdl

    sdl = print_sdl()
    if check:
        if not path.exists() or path.read_text() != sdl:
            click.echo(f"{path} is out of date: run `giftgraph export-schema`", err=True)
            sys.exit(1)
        click.echo(f"{path} is up to date")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sdl)
    click.echo(f"wrote {path}")


@main.command("persisted-operations")
@click.option(
    "--operations",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=DEFAULT_OPERATIONS_DIR,
    show_default=True,
    help="Folder of .graphql operation files, one operation each.",
)
@click.option("--path", type=click.Path(path_type=Path), default=DEFAULT_MANIFEST_PATH, show_default=True)
@click.option("--check", is_flag=True, help="Exit 1 if the file differs from the operations instead of writing.")
def persisted_operations(operations: Path, path: Path, check: bool) -> None:
    """Write the persisted-operations manifest (the safelist) from the operation files."""
    from giftgraph.persisted import ManifestError, build_manifest, manifest_text

    try:
        text = manifest_text(build_manifest(operations))
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from exc
    if check:
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            click.echo(f"{path} is out of date: run `giftgraph persisted-operations`", err=True)
            sys.exit(1)
        click.echo(f"{path} is up to date")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    click.echo(f"wrote {path}")


main.add_command(sandbox)
main.add_command(points)
