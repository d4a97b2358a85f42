"""`giftgraph sandbox serve | grant | openapi` as a user runs them: a real service process, its credentials
file, and clear errors (exit 1, no traceback) when the service cannot be reached or refuses the credentials.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from standardwebhooks import Webhook

from giftgraph.cli import main
from giftgraph.sandbox_cli import CREDENTIALS_FILE, service_credentials
from giftgraph.settings import ConfigurationError, Settings
from providers.sandbox.credentials import SandboxCredentials, new_webhook_secret
from providers.sandbox.openapi import DOCUMENT_PATH
from tests.processes import free_port, stop_process, wait_until_answering

PRODUCTION_JWT_SECRET = "production-secret-0123456789abcdef-0123456789"


def _clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIFTGRAPH_")}
    return {**env, "GIFTGRAPH_DATA_DIR": str(data_dir), **extra}


@dataclass
class Served:
    url: str
    env: dict[str, str]
    data_dir: Path
    process: subprocess.Popen[str]

    def output(self) -> str:
        """Stop the service and return everything it printed (stdout and logs)."""
        stop_process(self.process)
        assert self.process.stdout is not None
        return self.process.stdout.read()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("sandbox-cli")
    url = f"http://127.0.0.1:{free_port()}"
    env = _clean_env(data_dir, GIFTGRAPH_SANDBOX_URL=url, GIFTGRAPH_LOG_LEVEL="DEBUG")
    process = subprocess.Popen(
        [sys.executable, "-m", "giftgraph", "sandbox", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    served = Served(url=url, env=env, data_dir=data_dir, process=process)
    try:
        wait_until_answering(f"{url}/openapi.json", process, output=served.output)
        yield served
    finally:
        served.output()
        if process.stdout:
            process.stdout.close()


def _giftgraph(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "giftgraph", *args], env=env, capture_output=True, text=True, timeout=30
    )


def test_given_sandbox_serve_then_grant_credits_through_it_wrong_credentials_are_refused_and_no_secret_is_printed(
    served: Served,
) -> None:
    credentials_file = served.data_dir / CREDENTIALS_FILE
    credentials = SandboxCredentials.from_json(credentials_file.read_text())

    granted = _giftgraph(served.env, "sandbox", "grant", "cli-user", "500", "--description", "Welcome back")
    wrong = CliRunner().invoke(
        main,
        ["sandbox", "grant", "cli-user", "10"],
        env={**served.env, "GIFTGRAPH_SANDBOX_API_KEY": "wrong", "GIFTGRAPH_SANDBOX_API_SECRET": "wrong-secret"},
    )
    balance = httpx.get(
        f"{served.url}/v1/balances",
        params={"user_id": "cli-user"},
        auth=(credentials.api_key, credentials.api_secret),
    ).json()["items"][0]
    printed = served.output()

    assert stat.S_IMODE(credentials_file.stat().st_mode) == 0o600
    assert granted.returncode == 0, granted.stderr
    assert granted.stdout.strip() == "granted 500 points to cli-user: balance 10500 available, 0 pending"
    assert balance["available"] == 10_500
    assert wrong.exit_code == 1 and "refused the credentials" in wrong.output
    assert "Traceback" not in wrong.output and "wrong-secret" not in wrong.output
    assert f"GIFTGRAPH_PROVIDER_BASE_URL={served.url}" in printed and "GIFTGRAPH_PROVIDER=rest" in printed
    assert f"GIFTGRAPH_PROVIDER_API_KEY={credentials.api_key}" in printed and str(credentials_file) in printed
    assert "sandbox POST /v1/sandbox/grants 200" in printed  # the request line, at DEBUG level even
    for secret in (credentials.api_secret, credentials.client_secret, credentials.webhook_secret):
        assert secret not in printed and secret not in granted.stdout + granted.stderr


def test_given_no_service_listening_when_granting_then_exit_1_with_a_clear_message(tmp_path: Path) -> None:
    env = _clean_env(
        tmp_path,
        GIFTGRAPH_SANDBOX_URL=f"http://127.0.0.1:{free_port()}",
        GIFTGRAPH_SANDBOX_API_KEY="key",
        GIFTGRAPH_SANDBOX_API_SECRET="secret-value-1",
    )

    result = CliRunner().invoke(main, ["sandbox", "grant", "u", "10"], env=env)

    assert result.exit_code == 1 and "cannot reach the sandbox service" in result.output
    assert "Traceback" not in result.output and "secret-value-1" not in result.output


def test_given_no_credentials_anywhere_when_granting_then_exit_1_naming_the_settings(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["sandbox", "grant", "u", "10"], env=_clean_env(tmp_path))

    assert result.exit_code == 1 and "GIFTGRAPH_SANDBOX_API_KEY" in result.output
    assert not (tmp_path / CREDENTIALS_FILE).exists()  # grant never invents credentials


def test_given_zero_points_when_granting_then_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["sandbox", "grant", "u", "0"])

    assert result.exit_code == 2 and "POINTS" in result.output


def test_given_production_without_credentials_when_serving_then_exit_1_naming_what_is_missing(tmp_path: Path) -> None:
    env = _clean_env(
        tmp_path,
        GIFTGRAPH_ENV="production",
        GIFTGRAPH_JWT_SECRET=PRODUCTION_JWT_SECRET,
        GIFTGRAPH_SANDBOX_API_KEY="key",
    )

    result = CliRunner().invoke(main, ["sandbox", "serve", "--port", "0"], env=env)

    assert result.exit_code == 1 and "GIFTGRAPH_SANDBOX_API_SECRET" in result.output
    assert "GIFTGRAPH_SANDBOX_WEBHOOK_SECRET" in result.output and "GIFTGRAPH_SANDBOX_API_KEY," not in result.output
    assert not (tmp_path / CREDENTIALS_FILE).exists()


def test_given_development_then_credentials_are_generated_once_and_the_environment_overrides_them(
    tmp_path: Path,
) -> None:
    first, path = service_credentials(Settings(data_dir=tmp_path))
    again, _ = service_credentials(Settings(data_dir=tmp_path))
    webhook_secret = new_webhook_secret()
    mixed, _ = service_credentials(
        Settings(data_dir=tmp_path, sandbox_api_key="env-key", sandbox_webhook_secret=webhook_secret)
    )

    assert path == tmp_path / CREDENTIALS_FILE and first == again
    assert (mixed.api_key, mixed.webhook_secret, mixed.api_secret) == ("env-key", webhook_secret, first.api_secret)
    assert first.api_secret not in repr(first) and first.webhook_secret.startswith("whsec_")


def test_given_every_credential_in_production_then_no_file_is_used(tmp_path: Path) -> None:
    settings = Settings(
        env="production",
        jwt_secret=PRODUCTION_JWT_SECRET,
        data_dir=tmp_path,
        sandbox_api_key="k",
        sandbox_api_secret="s",
        sandbox_client_id="c",
        sandbox_client_secret="cs",
        sandbox_webhook_secret=new_webhook_secret(),
    )

    credentials, path = service_credentials(settings)

    assert path is None and credentials.client_id == "c"
    with pytest.raises(ConfigurationError, match="GIFTGRAPH_SANDBOX_CLIENT_SECRET"):
        service_credentials(settings.model_copy(update={"sandbox_client_secret": None}))


def test_given_the_committed_document_when_checking_then_up_to_date_and_a_stale_copy_fails(tmp_path: Path) -> None:
    stale = tmp_path / "openapi.json"
    stale.write_text(json.dumps({"openapi": "3.1.0"}))
    runner = CliRunner()

    committed = runner.invoke(main, ["sandbox", "openapi", "--check"])
    stale_check = runner.invoke(main, ["sandbox", "openapi", "--check", "--path", str(stale)])
    written = runner.invoke(main, ["sandbox", "openapi", "--path", str(stale)])

    assert committed.exit_code == 0 and "up to date" in committed.output
    assert stale_check.exit_code == 1 and "out of date" in stale_check.output
    assert written.exit_code == 0 and stale.read_text() == DOCUMENT_PATH.read_text()


# The development credentials file


def test_given_no_file_when_many_start_at_once_then_one_set_of_credentials_is_written_private_and_shared(
    tmp_path: Path,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from providers.sandbox.credentials import load_or_create

    path = tmp_path / "nested" / CREDENTIALS_FILE
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: load_or_create(path), range(8)))

    assert len(set(results)) == 1 and load_or_create(path) == results[0]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [CREDENTIALS_FILE]  # no temporary file left behind
    assert Webhook(results[0].webhook_secret)  # a valid Standard Webhooks secret


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[]",
        '{"api_key": "k"}',
        '{"api_key": "k", "api_secret": "hush-123", "client_id": "c", '
        '"client_secret": "s", "webhook_secret": "no-prefix-hush-456"}',
    ],
)
def test_given_a_broken_credentials_file_then_a_credentials_error_that_quotes_no_secret(
    tmp_path: Path, content: str
) -> None:
    from providers.sandbox.credentials import CredentialsError, load_or_create

    path = tmp_path / CREDENTIALS_FILE
    path.write_text(content)

    with pytest.raises(CredentialsError) as caught:
        load_or_create(path)

    assert "hush" not in str(caught.value)
