"""Tokens from an identity provider, verified against its JWKS over real HTTP: every token attack,
the key cache, key rotation, the refresh limit, outages, and WebSocket connection_init.

The identity provider is a fake on a loopback port (the identity-provider boundary); its keys are
made here with `cryptography`, and it counts the fetches of each key set.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
import websockets
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from giftgraph.cli import main as cli
from giftgraph.settings import ConfigurationError, Settings, load_settings
from tests.support import TEST_SECRET, LiveServer, live_server, make_settings, operation, post, ws_connect

ISSUER = "https://id.giftgraph.test/"
AUDIENCE = "giftgraph-api"
VIEWER_BALANCE = operation("ViewerBalance")


# The fake identity provider


@functools.cache
def rsa_private_key(name: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def ec_private_key(name: str) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str  # RS256 or ES256
    private_key: Any

    def public_jwk(self) -> dict[str, Any]:
        codec = RSAAlgorithm if self.algorithm.startswith("RS") else ECAlgorithm
        jwk = codec.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, Any], *, kid: str | None = "") -> str:
        """A token signed with this key; `kid` overrides the header's key id (None leaves it out)."""
        headers = {} if kid is None else {"kid": kid or self.kid}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)  # SHORT_RSA_KEY is short on purpose
            return jwt.encode(claims, self.private_key, algorithm=self.algorithm, headers=headers)


def rsa_key(kid: str, *, bits: int = 2048) -> SigningKey:
    return SigningKey(kid, "RS256", rsa_private_key(kid, bits))


def ec_key(kid: str) -> SigningKey:
    return SigningKey(kid, "ES256", ec_private_key(kid))


RSA_KEY = rsa_key("rsa-1")
EC_KEY = ec_key("ec-1")
OTHER_IDPS_KEY = rsa_key("other-idp-1")  # published by another identity provider, never by ours
SHORT_RSA_KEY = rsa_key("rsa-short", bits=1024)


@dataclass
class KeySet:
    """One JWKS document on the fake identity provider, and how often it was fetched."""

    url: str
    keys: list[SigningKey]
    fetches: int = 0
    status: int = 200  # anything else: the identity provider is failing
    delay: float = 0.0  # seconds before answering, so concurrent fetches would overlap
    body: Any = None  # sent instead of the key set when set: a broken identity provider

    def document(self) -> Any:
        return {"keys": [key.public_jwk() for key in self.keys]} if self.body is None else self.body


@dataclass
class IdentityProvider:
    """JWKS documents under uvicorn in a thread, one per key set, on a free loopback port."""

    key_sets: dict[str, KeySet] = field(default_factory=dict)
    port: int = 0

    async def jwks(self, request: Request) -> Response:
        key_set = self.key_sets.get(request.path_params["name"])
        if key_set is None:
            return Response(status_code=404)
        key_set.fetches += 1
        await asyncio.sleep(key_set.delay)
        if key_set.status != 200:
            return Response(status_code=key_set.status)
        return JSONResponse(key_set.document())

    def key_set(self, *keys: SigningKey) -> KeySet:
        name = uuid.uuid4().hex[:8]
        self.key_sets[name] = KeySet(url=f"http://127.0.0.1:{self.port}/{name}/jwks.json", keys=list(keys))
        return self.key_sets[name]


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    app = Starlette(routes=[Route("/{name}/jwks.json", provider.jwks)])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the identity provider did not start"
        time.sleep(0.01)
    provider.port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield provider
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def jwks_settings(data_dir: Path, jwks_url: str, **overrides: Any) -> Settings:
    # make_settings also configures the shared test secret: in JWKS mode it must verify nothing.
    values = {"jwt_jwks_url": jwks_url, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE, **overrides}
    return make_settings(data_dir, **values)


@contextmanager
def giftgraph_on(tmp_path: Path, key_set: KeySet, **overrides: Any) -> Iterator[LiveServer]:
    with live_server(jwks_settings(tmp_path, key_set.url, **overrides)) as server:
        yield server


# Tokens


def now() -> int:
    return int(time.time())


def claims(**overrides: Any) -> dict[str, Any]:
    """The claims of a good token for `jwks-user`; an override of None removes that claim."""
    values: dict[str, Any] = {"sub": "jwks-user", "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 600}
    values.update(overrides)
    return {name: value for name, value in values.items() if value is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], body: dict[str, Any], *, hmac_key: bytes | None) -> str:
    """A JWT assembled by hand, for tokens PyJWT refuses to produce; HS256-signed when a key is given."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}"
    if hmac_key is None:
        return f"{signing_input}."
    return f"{signing_input}.{b64(hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest())}"


def tampered(token: str, **changes: Any) -> str:
    """The token with its payload rewritten and its original signature kept."""
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return ".".join([header, b64(json.dumps({**body, **changes}).encode()), signature])


# Each: a token that must be refused, and the words the refusal gives.
BAD_TOKENS: dict[str, tuple[Callable[[], str], str]] = {
    "alg none": (
        lambda: hand_made({"alg": "none", "typ": "JWT", "kid": RSA_KEY.kid}, claims(), hmac_key=None),
        "not valid",
    ),
    "HS256 signed with the RSA public key as secret (HS/RS confusion)": (
        lambda: hand_made({"alg": "HS256", "typ": "JWT", "kid": RSA_KEY.kid}, claims(), hmac_key=RSA_KEY.public_pem()),
        "not valid",
    ),
    "HS256 signed with the configured shared secret": (
        lambda: jwt.encode(claims(), TEST_SECRET, algorithm="HS256", headers={"kid": RSA_KEY.kid}),
        "not valid",
    ),
    "RS256 under the EC key's kid": (lambda: RSA_KEY.sign(claims(), kid=EC_KEY.kid), "not valid"),
    "expired": (lambda: RSA_KEY.sign(claims(exp=now() - 3600)), "expired"),
    "not yet valid (nbf)": (lambda: RSA_KEY.sign(claims(nbf=now() + 3600)), "not valid yet"),
    "wrong audience": (lambda: RSA_KEY.sign(claims(aud="another-api")), "audience"),
    "wrong issuer": (lambda: RSA_KEY.sign(claims(iss="https://evil.test/")), "issuer"),
    "missing exp": (lambda: RSA_KEY.sign(claims(exp=None)), "claim 'exp'"),
    "missing sub": (lambda: RSA_KEY.sign(claims(sub=None)), "claim 'sub'"),
    "missing iss": (lambda: RSA_KEY.sign(claims(iss=None)), "claim 'iss'"),
    "missing aud": (lambda: RSA_KEY.sign(claims(aud=None)), "claim 'aud'"),
    "no kid": (lambda: RSA_KEY.sign(claims(), kid=None), "key id"),
    "another JWKS's key under our kid": (lambda: OTHER_IDPS_KEY.sign(claims(), kid=RSA_KEY.kid), "not valid"),
    "another JWKS's key under its own kid": (lambda: OTHER_IDPS_KEY.sign(claims()), "unknown key"),
    "a tampered payload": (lambda: tampered(RSA_KEY.sign(claims()), sub="someone-else"), "not valid"),
    "an RSA key under 2048 bits": (lambda: SHORT_RSA_KEY.sign(claims()), "not valid"),
}

# Refused on their header alone: the identity provider must never be asked about them.
REFUSED_BY_ALGORITHM = [
    "alg none",
    "HS256 signed with the RSA public key as secret (HS/RS confusion)",
    "HS256 signed with the configured shared secret",
]


def viewer(server: LiveServer, token: str) -> httpx.Response:
    return post(server, VIEWER_BALANCE, headers={"Authorization": f"Bearer {token}"})


async def viewer_async(client: httpx.AsyncClient, server: LiveServer, token: str) -> httpx.Response:
    return await client.post(
        server.url, json={"query": VIEWER_BALANCE}, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def provider_calls(server: LiveServer) -> int:
    return sum(server.provider.calls.counts.values())


@dataclass(frozen=True)
class Deployment:
    server: LiveServer
    keys: KeySet


@pytest.fixture(scope="module")
def deployment(idp: IdentityProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """giftgraph on a key set with an RSA, an EC and a short RSA key, its cache warmed by one good token."""
    keys = idp.key_set(RSA_KEY, EC_KEY, SHORT_RSA_KEY)
    with giftgraph_on(tmp_path_factory.mktemp("jwks"), keys) as server:
        assert viewer(server, RSA_KEY.sign(claims())).status_code == 200
        yield Deployment(server, keys)


# Good tokens


@pytest.mark.parametrize("key", [RSA_KEY, EC_KEY], ids=["RS256", "ES256"])
def test_given_a_token_signed_by_a_published_key_when_the_viewer_is_queried_then_it_is_the_subject(
    deployment: Deployment, key: SigningKey
) -> None:
    response = viewer(deployment.server, key.sign(claims(sub="alice")))

    assert response.status_code == 200
    assert response.json()["data"]["viewer"]["userId"] == "alice"


def test_given_a_warm_cache_when_many_tokens_are_verified_then_the_key_set_is_not_fetched_again(
    deployment: Deployment,
) -> None:
    before = deployment.keys.fetches

    statuses = {viewer(deployment.server, RSA_KEY.sign(claims(sub=f"u{i}"))).status_code for i in range(10)}

    assert statuses == {200}
    assert deployment.keys.fetches == before


# Token attacks


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_given_a_bad_token_when_the_viewer_is_queried_then_401_unauthenticated_with_the_reason(
    deployment: Deployment, case: str
) -> None:
    make_token, reason = BAD_TOKENS[case]

    response = viewer(deployment.server, make_token())

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert reason in error["message"]


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_given_a_bad_token_when_the_viewer_is_queried_then_neither_provider_nor_identity_provider_is_asked(
    deployment: Deployment, case: str
) -> None:
    calls, fetches = provider_calls(deployment.server), deployment.keys.fetches

    viewer(deployment.server, BAD_TOKENS[case][0]())

    assert (provider_calls(deployment.server), deployment.keys.fetches) == (calls, fetches)


def test_given_a_cold_cache_when_tokens_with_a_refused_algorithm_arrive_then_the_key_set_is_never_fetched(
    idp: IdentityProvider, tmp_path: Path
) -> None:
    keys = idp.key_set(RSA_KEY)
    with giftgraph_on(tmp_path, keys) as server:
        statuses = [viewer(server, BAD_TOKENS[case][0]()).status_code for case in REFUSED_BY_ALGORITHM]

    assert statuses == [401] * len(REFUSED_BY_ALGORITHM)
    assert keys.fetches == 0


# The key cache: single-flight, rotation, refresh limit, expiry


@pytest.mark.anyio
async def test_given_a_cold_cache_when_ten_requests_arrive_at_once_then_the_key_set_is_fetched_once(
    idp: IdentityProvider, tmp_path: Path
) -> None:
    keys = idp.key_set(RSA_KEY)
    keys.delay = 0.3
    with giftgraph_on(tmp_path, keys) as server:
        async with httpx.AsyncClient() as client:
            responses = await asyncio.gather(*(viewer_async(client, server, RSA_KEY.sign(claims())) for _ in range(10)))

    assert [r.status_code for r in responses] == [200] * 10
    assert keys.fetches == 1


@pytest.mark.anyio
async def test_given_a_rotated_key_when_ten_requests_with_its_new_kid_arrive_at_once_then_one_refresh_serves_all(
    idp: IdentityProvider, tmp_path: Path
) -> None:
    keys = idp.key_set(RSA_KEY)
    new_key = rsa_key("rsa-2")
    with giftgraph_on(tmp_path, keys, jwt_jwks_min_refresh_seconds=0.2) as server:
        assert viewer(server, RSA_KEY.sign(claims())).status_code == 200
        keys.keys.append(new_key)
        keys.delay = 0.3
        await asyncio.sleep(0.25)  # past the refresh interval
        async with httpx.AsyncClient() as client:
            responses = await asyncio.gather(*(viewer_async(client, server, new_key.sign(claims())) for _ in range(10)))

    assert [r.status_code for r in responses] == [200] * 10
    assert keys.fetches == 2


def test_given_an_unknown_kid_when_the_refreshed_key_set_lacks_it_too_then_401_unknown_key(
    idp: IdentityProvider, tmp_path: Path
) -> None:
    keys = idp.key_set(RSA_KEY)
    with giftgraph_on(tmp_path, keys, jwt_jwks_min_refresh_seconds=0.2) as server:
        viewer(server, RSA_KEY.sign(claims()))
        time.sleep(0.25)

        response = viewer(server, RSA_KEY.sign(claims(), kid="not-published"))

    assert response.status_code == 401
    assert "unknown key" in response.json()["errors"][0]["message"]
    assert keys.fetches == 2  # the warm-up, then the one refresh the unknown kid was worth


def test_given_unknown_kids_within_the_refresh_interval_when_they_arrive_then_the_key_set_is_not_fetched_again(
    idp: IdentityProvider, tmp_path: Path
) -> None:
    keys = idp.key_set(RSA_KEY)
    with giftgraph_on(tmp_path, keys, jwt_jwks_min_refresh_seconds=60) as server:
        viewer(server, RSA_KEY.sign(claims()))

        statuses = [viewer(server, RSA_KEY.sign(claims(), kid=f"made-up-{i}")).status_code for i in range(5)]

    assert statuses == [401] * 5
    assert keys.fetches == 1


def test_given_the_cache_expired_when_a_key_was_removed_from_the_key_set_then_its_tokens_are_refused(
    idp: IdentityProvider, tmp_path: Path
) -> None:
    keys = idp.key_set(RSA_KEY)
    successor = rsa_key("rsa-successor")
    with giftgraph_on(tmp_path, keys, jwt_jwks_cache_seconds=0.2, jwt_jwks_min_refresh_seconds=0) as server:
        assert viewer(server, RSA_KEY.sign(claims())).status_code == 200
        keys.keys = [successor]
        time.sleep(0.25)

        retired = viewer(server, RSA_KEY.sign(claims()))
        fetched_for_retired = keys.fetches  # read now: on a slow machine the 0.2 s cache may lapse again
        current = viewer(server, successor.sign(claims()))

    assert (retired.status_code, current.status_code) == (401, 200)
    assert fetched_for_retired == 2


# The identity provider is down


def test_given_the_key_set_cannot_be_fetched_and_nothing_is_cached_when_a_token_arrives_then_503_auth_unavailable(
    idp: IdentityProvider, tmp_path: Path
) -> None:
    keys = idp.key_set(RSA_KEY)
    keys.status = 503
    with giftgraph_on(tmp_path, keys, jwt_jwks_min_refresh_seconds=30) as server:
        response = viewer(server, RSA_KEY.sign(claims()))
        calls = provider_calls(server)

    assert response.status_code == 503
    assert response.json()["errors"][0]["extensions"]["code"] == "AUTH_UNAVAILABLE"
    assert 1 <= int(response.headers["Retry-After"]) <= 30
    assert calls == 0


def test_given_an_unreachable_jwks_url_when_a_token_arrives_then_503_auth_unavailable(tmp_path: Path) -> None:
    with socket_nobody_listens_on() as port:
        settings = jwks_settings(tmp_path, f"http://127.0.0.1:{port}/jwks.json", jwt_jwks_timeout_seconds=2)
        with live_server(settings) as server:
            response = viewer(server, RSA_KEY.sign(claims()))

    assert response.status_code == 503
    assert response.json()["errors"][0]["extensions"]["code"] == "AUTH_UNAVAILABLE"


def test_given_cached_keys_when_the_identity_provider_fails_after_the_cache_expired_then_tokens_still_verify(
    idp: IdentityProvider, tmp_path: Path
) -> None:
    keys = idp.key_set(RSA_KEY)
    with giftgraph_on(tmp_path, keys, jwt_jwks_cache_seconds=0.2, jwt_jwks_min_refresh_seconds=0) as server:
        viewer(server, RSA_KEY.sign(claims()))
        keys.status = 500
        time.sleep(0.25)

        response = viewer(server, RSA_KEY.sign(claims()))

    assert response.status_code == 200
    assert keys.fetches == 2  # it did try


def test_given_the_identity_provider_recovers_when_the_refresh_interval_has_passed_then_tokens_verify(
    idp: IdentityProvider, tmp_path: Path
) -> None:
    keys = idp.key_set(RSA_KEY)
    keys.status = 503
    # 2 s: "too soon" must still be too soon after two requests on a loaded machine
    with giftgraph_on(tmp_path, keys, jwt_jwks_min_refresh_seconds=2) as server:
        during = viewer(server, RSA_KEY.sign(claims())).status_code
        keys.status = 200
        too_soon = viewer(server, RSA_KEY.sign(claims())).status_code
        time.sleep(2.1)

        after = viewer(server, RSA_KEY.sign(claims())).status_code

    assert (during, too_soon, after) == (503, 503, 200)
    assert keys.fetches == 2


BROKEN_DOCUMENTS = {
    "not a key set": ["keys"],
    "no keys": {"keys": []},
    "keys of no allowed algorithm": {"keys": [{"kty": "oct", "kid": "rsa-1", "k": "c2VjcmV0"}]},
    "an RSA key with garbage values": {"keys": [{"kty": "RSA", "kid": "rsa-1", "n": 42, "e": ["AQAB"]}]},
    "an encryption key": {"keys": [{**RSA_KEY.public_jwk(), "use": "enc"}]},
}


@pytest.fixture(scope="module")
def broken_idp(idp: IdentityProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """giftgraph on a key set that never had a good answer, asked again on every token."""
    keys = idp.key_set(RSA_KEY)
    with giftgraph_on(tmp_path_factory.mktemp("jwks-broken"), keys, jwt_jwks_min_refresh_seconds=0) as server:
        yield Deployment(server, keys)


@pytest.mark.parametrize("case", list(BROKEN_DOCUMENTS))
def test_given_a_key_set_without_a_usable_key_when_a_token_arrives_then_503_auth_unavailable(
    broken_idp: Deployment, case: str
) -> None:
    broken_idp.keys.body = BROKEN_DOCUMENTS[case]
    fetches = broken_idp.keys.fetches

    response = viewer(broken_idp.server, RSA_KEY.sign(claims()))

    assert broken_idp.keys.fetches == fetches + 1
    assert response.status_code == 503
    assert response.json()["errors"][0]["extensions"]["code"] == "AUTH_UNAVAILABLE"


@contextmanager
def socket_nobody_listens_on() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# WebSocket connection_init goes through the same verifier


@pytest.mark.anyio
async def test_given_an_identity_provider_token_in_connection_init_when_subscribing_then_the_balance_arrives(
    deployment: Deployment,
) -> None:
    token = EC_KEY.sign(claims(sub="ws-jwks-user"))

    async with ws_connect(deployment.server, init_payload={"authorization": f"Bearer {token}"}) as ws:
        assert (await ws.receive())["type"] == "connection_ack"
        op_id = await ws.subscribe(operation("BalanceChanged"))
        message = await ws.receive()

    assert message["type"] == "next" and message["id"] == op_id
    assert message["payload"]["data"]["balanceChanged"]["available"] >= 0


@pytest.mark.anyio
@pytest.mark.parametrize("case", ["HS256 signed with the RSA public key as secret (HS/RS confusion)", "expired"])
async def test_given_a_bad_token_in_connection_init_when_sent_then_the_socket_closes_with_4403(
    deployment: Deployment, case: str
) -> None:
    token = BAD_TOKENS[case][0]()

    async with ws_connect(deployment.server, init_payload={"authorization": f"Bearer {token}"}) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.receive()

    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


@pytest.mark.anyio
async def test_given_the_key_set_cannot_be_fetched_when_a_socket_sends_its_token_then_it_closes_with_4403(
    idp: IdentityProvider, tmp_path: Path
) -> None:
    keys = idp.key_set(RSA_KEY)
    keys.status = 502
    with giftgraph_on(tmp_path, keys) as server:
        async with ws_connect(server, init_payload={"authorization": f"Bearer {RSA_KEY.sign(claims())}"}) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.receive()

    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    assert keys.fetches == 1


# Settings


def test_given_a_jwks_url_when_settings_are_built_then_rs256_and_es256_are_the_default_algorithms(
    tmp_path: Path,
) -> None:
    settings = jwks_settings(tmp_path, "https://id.example.com/.well-known/jwks.json")

    assert settings.jwt_algorithms == ["RS256", "ES256"]


@pytest.mark.parametrize("algorithms", [["RS256", "HS256"], ["HS512"]])
def test_given_a_jwks_url_when_an_hmac_algorithm_is_allowed_then_settings_are_refused(
    tmp_path: Path, algorithms: list[str]
) -> None:
    with pytest.raises(ValidationError, match="not HS"):
        jwks_settings(tmp_path, "https://id.example.com/jwks.json", jwt_algorithms=algorithms)


@pytest.mark.parametrize("missing", ["jwt_issuer", "jwt_audience"])
def test_given_a_jwks_url_without_issuer_or_audience_when_settings_are_built_then_they_are_refused(
    tmp_path: Path, missing: str
) -> None:
    with pytest.raises(ValidationError, match="GIFTGRAPH_JWT_ISSUER and GIFTGRAPH_JWT_AUDIENCE"):
        jwks_settings(tmp_path, "https://id.example.com/jwks.json", **{missing: None})


def test_given_production_with_a_jwks_url_and_no_secret_when_settings_load_then_they_are_accepted(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        env="production",
        data_dir=tmp_path,
        jwt_secret=None,
        jwt_jwks_url="https://id.example.com/jwks.json",
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )

    assert settings.jwt_jwks_url == "https://id.example.com/jwks.json"


@pytest.mark.parametrize(
    ("url", "accepted"),
    [("http://id.example.com/jwks.json", False), ("http://127.0.0.1:9000/jwks.json", True)],
    ids=["plain-http", "loopback-sidecar"],
)
def test_given_production_when_the_jwks_url_is_plain_http_then_only_a_loopback_address_is_accepted(
    tmp_path: Path, url: str, accepted: bool
) -> None:
    def load() -> Settings:
        return load_settings(
            env="production", data_dir=tmp_path, jwt_jwks_url=url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
        )

    if accepted:
        assert load().jwt_jwks_url == url
    else:
        with pytest.raises(ConfigurationError, match="https://"):
            load()


def test_given_a_jwks_url_when_a_development_token_is_asked_for_then_the_cli_refuses(tmp_path: Path) -> None:
    env = {
        "GIFTGRAPH_DATA_DIR": str(tmp_path),
        "GIFTGRAPH_ENV": None,
        "GIFTGRAPH_JWT_SECRET": None,
        "GIFTGRAPH_JWT_JWKS_URL": "https://id.example.com/jwks.json",
        "GIFTGRAPH_JWT_ISSUER": ISSUER,
        "GIFTGRAPH_JWT_AUDIENCE": AUDIENCE,
    }

    result = CliRunner().invoke(cli, ["token", "someone"], env=env)

    assert result.exit_code == 1
    assert "identity provider" in result.output
    assert "Traceback" not in result.output
