"""Bearer-token auth over real HTTP: who may call what, every way a token can be bad, and the dev secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from giftgraph.auth import DEV_SECRET_FILE
from giftgraph.cli import main as cli
from giftgraph.settings import ConfigurationError, Settings, load_settings
from tests.support import (
    TEST_SECRET,
    LiveServer,
    gql,
    live_server,
    make_settings,
    operation,
    post,
    reward_to_redeem,
)

OTHER_SECRET = "another-secret-that-is-long-enough-0123456789"
ISSUER = "https://id.giftgraph.test"
AUDIENCE = "giftgraph-api"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(make_settings(tmp_path_factory.mktemp("auth"))) as running:
        yield running


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path_factory.mktemp("auth-strict"), jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    with live_server(settings) as running:
        yield running


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made_token(
    header: dict[str, Any], claims: dict[str, Any], *, hmac_key: str | None, digest: str = "sha256"
) -> str:
    """A JWT assembled by hand, for headers a JWT library refuses to produce; HMAC-signed when a key is given."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if hmac_key is None:
        return f"{signing_input}."
    signature = hmac.new(hmac_key.encode(), signing_input.encode(), getattr(hashlib, digest)).digest()
    return f"{signing_input}.{_b64(signature)}"


def signed(claims: dict[str, Any], secret: str = TEST_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def _now() -> int:
    return int(time.time())


# Each builds an Authorization header value that must be refused.
BAD_AUTHORIZATIONS: dict[str, Callable[[], str]] = {
    "expired": lambda: f"Bearer {signed({'sub': 'u1', 'exp': _now() - 3600})}",
    "not yet valid (nbf in the future)": lambda: "Bearer "
    + signed({"sub": "u1", "exp": _now() + 7200, "nbf": _now() + 3600}),
    "signed with another secret": lambda: f"Bearer {signed({'sub': 'u1', 'exp': _now() + 3600}, OTHER_SECRET)}",
    "alg none": lambda: "Bearer "
    + hand_made_token({"alg": "none", "typ": "JWT"}, {"sub": "u1", "exp": _now() + 3600}, hmac_key=None),
    "RS256 header signed with the secret (HS/RS confusion)": lambda: "Bearer "
    + hand_made_token({"alg": "RS256", "typ": "JWT"}, {"sub": "u1", "exp": _now() + 3600}, hmac_key=TEST_SECRET),
    "an algorithm outside the allowlist (HS512)": lambda: "Bearer "
    + hand_made_token(
        {"alg": "HS512", "typ": "JWT"}, {"sub": "u1", "exp": _now() + 3600}, hmac_key=TEST_SECRET, digest="sha512"
    ),
    "missing exp": lambda: f"Bearer {signed({'sub': 'u1'})}",
    "missing sub": lambda: f"Bearer {signed({'exp': _now() + 3600})}",
    "empty sub": lambda: f"Bearer {signed({'sub': '', 'exp': _now() + 3600})}",
    "blank sub": lambda: f"Bearer {signed({'sub': '   ', 'exp': _now() + 3600})}",
    "garbage": lambda: "Bearer this-is-not-a-jwt",
    "bearer without a token": lambda: "Bearer",
    "wrong scheme (Basic)": lambda: "Basic dXNlcjpwYXNzd29yZA==",
}


def viewer_balance(server: LiveServer, authorization: str) -> Any:
    return post(server, operation("ViewerBalance"), headers={"Authorization": authorization})


def provider_calls(server: LiveServer) -> int:
    return sum(server.provider.calls.counts.values())


# Without a token


def test_given_no_token_when_the_catalog_is_queried_then_it_answers(server: LiveServer) -> None:
    body = gql(server, operation("Catalog"), {"first": 3})

    assert "errors" not in body
    assert len(body["data"]["catalog"]["edges"]) == 3


def test_given_no_token_when_the_viewer_is_queried_then_the_error_is_unauthenticated(server: LiveServer) -> None:
    response = post(server, operation("ViewerBalance"))

    assert response.status_code == 200
    assert response.json()["data"] is None
    assert [e["extensions"]["code"] for e in response.json()["errors"]] == ["UNAUTHENTICATED"]


def test_given_no_token_when_redeeming_then_the_error_is_unauthenticated_and_nothing_is_ordered(
    server: LiveServer,
) -> None:
    reward = reward_to_redeem(server)
    redeems_before = server.provider.calls.get("redeem")

    body = gql(
        server,
        operation("Redeem"),
        {"input": {"clientMutationId": "no-token", "rewardId": reward["rewardId"], "faceValue": reward["faceValue"]}},
    )

    assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAUTHENTICATED"]
    assert server.provider.calls.get("redeem") == redeems_before


# A valid token


def test_given_a_valid_token_when_the_viewer_is_queried_then_it_is_the_tokens_subject(server: LiveServer) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"

    body = gql(server, operation("ViewerBalance"), token=server.token(user))

    assert "errors" not in body
    assert body["data"]["viewer"]["userId"] == user


# Tokens that must be refused


@pytest.mark.parametrize("case", list(BAD_AUTHORIZATIONS))
def test_given_an_invalid_token_when_the_viewer_is_queried_then_401_unauthenticated(
    server: LiveServer, case: str
) -> None:
    response = viewer_balance(server, BAD_AUTHORIZATIONS[case]())

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert [e["extensions"]["code"] for e in response.json()["errors"]] == ["UNAUTHENTICATED"]


@pytest.mark.parametrize("case", list(BAD_AUTHORIZATIONS))
def test_given_an_invalid_token_when_the_viewer_is_queried_then_the_provider_is_not_called(
    server: LiveServer, case: str
) -> None:
    before = provider_calls(server)

    viewer_balance(server, BAD_AUTHORIZATIONS[case]())

    assert provider_calls(server) == before


def test_given_an_invalid_token_when_the_error_is_returned_then_it_does_not_echo_the_token(server: LiveServer) -> None:
    token = signed({"sub": "u1", "exp": _now() + 3600}, OTHER_SECRET)

    response = viewer_balance(server, f"Bearer {token}")

    assert token not in response.text
    assert token.split(".")[1] not in response.text


def test_given_an_invalid_token_when_the_catalog_is_queried_then_it_is_refused_not_served_anonymously(
    server: LiveServer,
) -> None:
    response = post(server, operation("Catalog"), {"first": 1}, headers={"Authorization": "Bearer garbage"})

    assert response.status_code == 401


# Issuer and audience, when configured


def _claims(**overrides: Any) -> dict[str, Any]:
    claims = {"sub": "u1", "exp": _now() + 3600, "iss": ISSUER, "aud": AUDIENCE}
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def test_given_issuer_and_audience_configured_when_the_token_has_both_then_it_is_accepted(
    strict_server: LiveServer,
) -> None:
    body = gql(strict_server, operation("ViewerBalance"), token=signed(_claims()))

    assert body["data"]["viewer"]["userId"] == "u1"


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param(_claims(iss="https://evil.test"), id="wrong issuer"),
        pytest.param(_claims(iss=None), id="no issuer"),
        pytest.param(_claims(aud="some-other-api"), id="wrong audience"),
        pytest.param(_claims(aud=None), id="no audience"),
    ],
)
def test_given_issuer_and_audience_configured_when_the_token_does_not_match_then_401(
    strict_server: LiveServer, claims: dict[str, Any]
) -> None:
    response = post(strict_server, operation("ViewerBalance"), token=signed(claims))

    assert response.status_code == 401
    assert [e["extensions"]["code"] for e in response.json()["errors"]] == ["UNAUTHENTICATED"]


def test_given_issuer_and_audience_configured_when_a_dev_token_is_issued_then_it_carries_them(
    strict_server: LiveServer,
) -> None:
    body = gql(strict_server, operation("ViewerBalance"), token=strict_server.token("u2"))

    assert body["data"]["viewer"]["userId"] == "u2"


# Development tokens and the development secret


def _cli_env(data_dir: Path) -> dict[str, str | None]:
    return {"GIFTGRAPH_DATA_DIR": str(data_dir), "GIFTGRAPH_JWT_SECRET": None, "GIFTGRAPH_ENV": None}


def _dev_settings(data_dir: Path) -> Settings:
    return make_settings(data_dir, jwt_secret=None)


def test_given_no_secret_in_development_when_a_cli_token_is_printed_then_the_server_accepts_it(
    tmp_path: Path,
) -> None:
    result = CliRunner().invoke(cli, ["token", "cli-user"], env=_cli_env(tmp_path))
    assert result.exit_code == 0, result.output
    token = result.output.strip()

    with live_server(_dev_settings(tmp_path)) as server:
        body = gql(server, operation("ViewerBalance"), token=token)

    assert body["data"]["viewer"]["userId"] == "cli-user"


def test_given_no_secret_in_development_when_a_token_is_printed_then_a_private_secret_file_is_created(
    tmp_path: Path,
) -> None:
    result = CliRunner().invoke(cli, ["token", "cli-user"], env=_cli_env(tmp_path))

    assert result.exit_code == 0, result.output
    secret_file = tmp_path / DEV_SECRET_FILE
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert len(secret_file.read_text().strip()) >= 32


def test_given_a_dev_secret_file_when_the_server_starts_then_it_reuses_it(tmp_path: Path) -> None:
    CliRunner().invoke(cli, ["token", "cli-user"], env=_cli_env(tmp_path))
    secret_before = (tmp_path / DEV_SECRET_FILE).read_text()

    with live_server(_dev_settings(tmp_path)):
        pass
    CliRunner().invoke(cli, ["token", "cli-user"], env=_cli_env(tmp_path))

    assert (tmp_path / DEV_SECRET_FILE).read_text() == secret_before


def test_given_a_configured_secret_when_a_token_is_printed_then_no_secret_file_is_written(tmp_path: Path) -> None:
    env = {**_cli_env(tmp_path), "GIFTGRAPH_JWT_SECRET": TEST_SECRET}

    result = CliRunner().invoke(cli, ["token", "cli-user"], env=env)

    assert result.exit_code == 0, result.output
    assert jwt.decode(result.output.strip(), TEST_SECRET, algorithms=["HS256"])["sub"] == "cli-user"
    assert not (tmp_path / DEV_SECRET_FILE).exists()


@pytest.mark.parametrize("user_id", ["", "   ", "u" * 256], ids=["empty", "blank", "too-long"])
def test_given_a_user_id_no_token_may_carry_when_a_token_is_asked_for_then_a_usage_error(
    tmp_path: Path, user_id: str
) -> None:
    env = {**_cli_env(tmp_path), "GIFTGRAPH_JWT_SECRET": TEST_SECRET}

    result = CliRunner().invoke(cli, ["token", user_id], env=env)

    assert result.exit_code == 2 and "USER_ID" in result.output
    assert "eyJ" not in result.output  # no token printed (a JWT starts with the base64 of {")


# Configuration that must be refused


def test_given_production_without_a_secret_when_settings_load_then_they_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="GIFTGRAPH_JWT_SECRET"):
        load_settings(env="production", jwt_secret=None, data_dir=tmp_path)


def test_given_production_without_a_secret_when_the_cli_runs_then_it_exits_with_a_clear_message(
    tmp_path: Path,
) -> None:
    env = {**_cli_env(tmp_path), "GIFTGRAPH_ENV": "production"}

    result = CliRunner().invoke(cli, ["token", "cli-user"], env=env)

    assert result.exit_code != 0
    assert "GIFTGRAPH_JWT_SECRET is required" in result.output
    assert not (tmp_path / DEV_SECRET_FILE).exists()


def test_given_production_with_a_short_secret_when_settings_load_then_the_error_does_not_show_it(
    tmp_path: Path,
) -> None:
    short_secret = "too-short-secret-xyz"

    with pytest.raises(ConfigurationError) as refused:
        load_settings(env="production", jwt_secret=short_secret, data_dir=tmp_path)

    assert "at least 32 bytes" in str(refused.value)
    assert short_secret not in str(refused.value)


@pytest.mark.parametrize("algorithms", [["none"], ["HS256", "none"], ["HS256", "None"], ["NONE"]])
def test_given_alg_none_in_the_allowlist_when_settings_are_built_then_they_are_refused(
    tmp_path: Path, algorithms: list[str]
) -> None:
    with pytest.raises(ValidationError, match="never 'none'"):
        Settings(data_dir=tmp_path, jwt_secret=TEST_SECRET, jwt_algorithms=algorithms)


def test_given_an_asymmetric_algorithm_in_the_allowlist_when_settings_are_built_then_they_are_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValidationError, match="RS256"):
        Settings(data_dir=tmp_path, jwt_secret=TEST_SECRET, jwt_algorithms=["HS256", "RS256"])


def test_given_alg_none_in_the_environment_when_the_cli_runs_then_it_exits_with_a_clear_message(
    tmp_path: Path,
) -> None:
    env = {**_cli_env(tmp_path), "GIFTGRAPH_JWT_ALGORITHMS": '["none"]'}

    result = CliRunner().invoke(cli, ["token", "cli-user"], env=env)

    assert result.exit_code != 0
    assert "never 'none'" in result.output


def test_given_a_blank_secret_when_settings_are_built_then_they_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="must not be blank"):
        Settings(data_dir=tmp_path, jwt_secret="   ")
