"""Tango's OAuth2 token in the gateway database: one token for every gateway process and restart, never in clear.

Tango issues a client about one token per 20 hours (tests/fake_tango.py answers 400 to a second one), so
processes sharing the database must share the token: each "process" here is a provider with its own engine
(its own connection pool) on one SQLite file, or on PostgreSQL when one answers at 127.0.0.1:5432.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

import providers.errors as perr
from giftgraph.fulfilment import fulfilment_provider
from giftgraph.settings import ConfigurationError, Settings
from providers.http.auth import StoredToken
from providers.ledger import CardCipher
from providers.ledger.tokens import SqlTokenStore
from providers.sql import create_engine
from providers.tango import SIGNATURE_HEADER, TangoClientCredentialsAuth, TangoProvider, sign
from tests import test_ledger_postgres
from tests.fake_tango import (
    ACCOUNT,
    CLIENT_ID,
    CLIENT_SECRET,
    CUSTOMER,
    PLATFORM_KEY,
    PLATFORM_NAME,
    TOKEN_PATH,
    WEBHOOK_SECRET,
    RunningFakeTango,
    make_tango,
    running_fake_tango,
    started,
)
from tests.processes import GatewayProcess
from tests.support import make_settings
from tests.test_ledger import sqlite_url

pytestmark = pytest.mark.anyio

KEY = CardCipher.generate_key()
AUDIENCE = "https://api.tangocard.com/"
TOKEN_DELAY = 0.3  # real seconds the token endpoint takes in the race tests: the second process must wait


@asynccontextmanager
async def sqlite_store(path: Path, *, name: str = "tango:test") -> AsyncIterator[SqlTokenStore]:
    """One process's view of the shared database: its own engine, its own pool."""
    engine = create_engine(sqlite_url(path), logging_name="tango-token-test")
    try:
        yield SqlTokenStore(engine, CardCipher([KEY]), name=name)
    finally:
        await engine.dispose()


class SlowTokenEndpoint(httpx.AsyncBaseTransport):
    """Real HTTP to the fake, the token endpoint answering TOKEN_DELAY late, so that first calls overlap."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == TOKEN_PATH:
            await asyncio.sleep(TOKEN_DELAY)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def oauth_tango(tango: RunningFakeTango, store: SqlTokenStore, **overrides: Any) -> TangoProvider:
    return make_tango(tango.url, auth_mode="oauth2", oauth_audience=AUDIENCE, token_store=store, **overrides)


@asynccontextmanager
async def two_processes(
    tango: RunningFakeTango, database: Path, *, slow_token_endpoint: bool = False
) -> AsyncIterator[tuple[TangoProvider, TangoProvider]]:
    """Two started providers, each with its own engine on `database`, as two gateway processes would be."""
    async with sqlite_store(database) as store_one, sqlite_store(database) as store_two:
        one, two = (
            oauth_tango(tango, store, **({"transport": SlowTokenEndpoint()} if slow_token_endpoint else {}))
            for store in (store_one, store_two)
        )
        async with started(one), started(two):
            yield one, two


def issued_tokens(tango: RunningFakeTango) -> list[str]:
    return list(tango.state.tokens)


async def issue_elsewhere(tango: RunningFakeTango) -> str:
    """A token Tango issues to some other process once its 20 h are over (the fake's window reset)."""
    tango.state.last_token_at = None
    async with httpx.AsyncClient(base_url=tango.url, auth=(CLIENT_ID, CLIENT_SECRET)) as client:
        answer = await client.post(TOKEN_PATH, data={"grant_type": "client_credentials", "scope": "raas.all"})
    assert answer.status_code == 200
    return answer.json()["access_token"]


# Shared by processes


async def test_two_processes_on_one_database_use_one_token_from_one_request(tmp_path: Path) -> None:
    database = tmp_path / "giftgraph.db"
    with running_fake_tango(rate_limit=None, auth_mode="oauth2") as tango:
        async with two_processes(tango, database) as (one, two):
            await one.funding_balance()
            await two.funding_balance()
            await two.catalog()
            await one.funding_balance()
        assert len(tango.state.token_requests) == 1
        assert len(tango.state.api_requests) == 4  # none refused: both sent the one token


async def test_concurrent_first_calls_in_two_processes_ask_tango_once_and_the_other_waits(tmp_path: Path) -> None:
    database = tmp_path / "giftgraph.db"
    results: list[object] = []

    async def call(provider: TangoProvider) -> None:
        results.append(await provider.funding_balance())

    with running_fake_tango(rate_limit=None, auth_mode="oauth2") as tango:
        async with (
            two_processes(tango, database, slow_token_endpoint=True) as (one, two),
            anyio.create_task_group() as group,
        ):
            for _ in range(4):
                group.start_soon(call, one)
                group.start_soon(call, two)
        assert len(tango.state.token_requests) == 1
        assert len(results) == 8 and len(tango.state.api_requests) == 8


async def test_a_lease_left_by_a_process_that_died_lapses_and_the_next_one_fetches(tmp_path: Path) -> None:
    database = tmp_path / "giftgraph.db"
    with running_fake_tango(rate_limit=None, auth_mode="oauth2") as tango:
        async with sqlite_store(database) as dead, sqlite_store(database) as alive:
            now = time.time()
            assert await dead.acquire_refresh("dead-process", now=now - 60, until=now - 30)  # lapsed long ago
            async with started(oauth_tango(tango, alive)) as provider:
                await provider.funding_balance()
        assert len(tango.state.token_requests) == 1


async def test_while_another_process_fetches_a_call_waits_for_the_token_it_stores(tmp_path: Path) -> None:
    database = tmp_path / "giftgraph.db"
    with running_fake_tango(rate_limit=None, auth_mode="oauth2") as tango:
        async with sqlite_store(database) as other, sqlite_store(database) as ours:
            now = time.time()
            assert await other.acquire_refresh("other-process", now=now, until=now + 300)

            async def other_process_stores_its_token() -> None:
                token = await issue_elsewhere(tango)
                await asyncio.sleep(0.3)
                await other.save(StoredToken(token, expires_at=time.time() + 86_400, issued_at=time.time()))
                await other.release_refresh("other-process")

            async with started(oauth_tango(tango, ours)) as provider:
                fetching = asyncio.ensure_future(other_process_stores_its_token())
                await provider.funding_balance()
                await fetching
        assert len(tango.state.token_requests) == 1  # the other process's only


async def test_a_lease_holder_that_never_stores_a_token_fails_the_wait_as_retryable_unavailable(
    tmp_path: Path,
) -> None:
    database = tmp_path / "giftgraph.db"
    with running_fake_tango(rate_limit=None, auth_mode="oauth2") as tango:
        async with sqlite_store(database) as other, sqlite_store(database) as ours:
            now = time.time()
            assert await other.acquire_refresh("stuck-process", now=now, until=now + 300)
            auth = TangoClientCredentialsAuth(
                token_url=TOKEN_PATH, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, store=ours, lease_wait=0.3
            )
            async with httpx.AsyncClient(base_url=tango.url, auth=auth) as client:
                with pytest.raises(perr.ProviderUnavailable) as caught:
                    await client.get(f"/accounts/{ACCOUNT}")
        assert tango.state.token_requests == []
    assert caught.value.retryable is True and caught.value.maybe_committed is False


# After a 401


async def test_a_401_with_a_newer_token_in_the_store_retries_with_it_without_asking_tango(tmp_path: Path) -> None:
    database = tmp_path / "giftgraph.db"
    with running_fake_tango(rate_limit=None, auth_mode="oauth2") as tango:
        async with (
            sqlite_store(database) as ours,
            sqlite_store(database) as other,
            started(oauth_tango(tango, ours)) as provider,
        ):
            await provider.funding_balance()
            (first,) = issued_tokens(tango)
            newer = await issue_elsewhere(tango)  # another process, past the 20 h, got and stored a newer one
            await other.save(StoredToken(newer, expires_at=time.time() + 86_400, issued_at=time.time()))
            del tango.state.tokens[first]  # Tango no longer takes the first
            for _ in range(3):
                await provider.funding_balance()
        assert len(tango.state.token_requests) == 2  # ours at the start, the other process's
        assert tango.state.api_requests.count(("GET", f"/accounts/{ACCOUNT}")) == 5  # one 401, then the newer


# Never in clear


async def test_the_token_is_stored_encrypted_and_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    database = tmp_path / "giftgraph.db"
    with running_fake_tango(rate_limit=None, auth_mode="oauth2") as tango:
        async with two_processes(tango, database) as (one, two):
            await one.funding_balance()
            await two.funding_balance()
            (token,) = issued_tokens(tango)
            tango.state.tokens.clear()  # a 401: the warning it logs must not carry the token either
            with pytest.raises(perr.ProviderAuthenticationFailed) as caught:
                await two.funding_balance()
            shown = repr(one) + repr(one.http)
    with closing(sqlite3.connect(database)) as conn:
        (row,) = conn.execute("SELECT * FROM ledger_provider_tokens").fetchall()
        dump = "\n".join(conn.iterdump())
    stored = b"".join(path.read_bytes() for path in tmp_path.iterdir() if path.name.startswith("giftgraph.db"))
    assert token not in dump and token.encode() not in stored
    (ciphertext,) = [value for value in row if isinstance(value, str) and value.startswith("gAAAAA")]  # Fernet
    assert CardCipher([KEY]).decrypt(ciphertext).code == token
    assert "refused the OAuth token" in caplog.text
    for secret in (token, CLIENT_SECRET):
        assert secret not in caplog.text
        assert secret not in str(caught.value) and secret not in shown


async def test_a_token_the_keys_cannot_decrypt_counts_as_none(tmp_path: Path) -> None:
    database = tmp_path / "giftgraph.db"
    async with sqlite_store(database) as store:
        await store.save(StoredToken("sealed-with-another-key", expires_at=time.time() + 60, issued_at=time.time()))
        engine = create_engine(sqlite_url(database), logging_name="tango-token-test")
        try:
            rotated = SqlTokenStore(engine, CardCipher([CardCipher.generate_key()]), name="tango:test")
            assert await rotated.load() is None
        finally:
            await engine.dispose()


# PostgreSQL: the ledger tests' fixture (a schema per test; skipped without a server, except under .ci/run)

pg_engines = test_ledger_postgres.engines


async def test_on_postgresql_two_processes_racing_ask_tango_once_and_store_it_encrypted(
    pg_engines: Callable[[], AsyncEngine],
) -> None:
    stores = [SqlTokenStore(pg_engines(), CardCipher([KEY]), name="tango:test") for _ in range(2)]
    with running_fake_tango(rate_limit=None, auth_mode="oauth2") as tango:
        one, two = (oauth_tango(tango, store, transport=SlowTokenEndpoint()) for store in stores)
        async with started(one), started(two), anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(one.funding_balance)
                group.start_soon(two.funding_balance)
        (token,) = issued_tokens(tango)
        assert len(tango.state.api_requests) == 6
    async with pg_engines().connect() as conn:
        ciphertext = (await conn.execute(text("SELECT token_ciphertext FROM ledger_provider_tokens"))).scalar_one()
    assert token not in ciphertext and CardCipher([KEY]).decrypt(ciphertext).code == token
    loaded = await stores[1].load()
    assert loaded is not None and loaded.value == token
    assert loaded.expires_at - loaded.issued_at == pytest.approx(86_400, abs=1)


async def test_on_postgresql_one_lease_holder_at_a_time(pg_engines: Callable[[], AsyncEngine]) -> None:
    one, two = (SqlTokenStore(pg_engines(), CardCipher([KEY]), name="tango:test") for _ in range(2))
    now = time.time()
    outcomes = await asyncio.gather(
        *(store.acquire_refresh(holder, now=now, until=now + 30) for store, holder in ((one, "a"), (two, "b")) * 3)
    )
    assert sorted(set(outcomes)) == [False, True]  # one holder won; the other was refused every time
    winner = "a" if outcomes[0] else "b"
    assert all(outcome is (holder == winner) for outcome, holder in zip(outcomes, "ababab", strict=True))
    await (one if winner == "a" else two).release_refresh(winner)
    assert await (two if winner == "a" else one).acquire_refresh("c", now=now, until=now + 30)


# The composition root: settings reach the Tango builder


def oauth_settings(tmp_path: Path, url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "provider": "tango",
        "tango_auth": "oauth2",
        "tango_base_url": url,
        "tango_client_id": CLIENT_ID,
        "tango_client_secret": CLIENT_SECRET,
        "tango_token_url": f"{url}{TOKEN_PATH}",
        "tango_oauth_audience": AUDIENCE,
        "tango_account_identifier": ACCOUNT,
        "tango_customer_identifier": CUSTOMER,
        "tango_rate_limit_per_second": 0,
    }
    values.update(overrides)
    return make_settings(tmp_path, **values)


async def test_settings_give_tango_its_audience_and_a_restart_reuses_the_stored_token(tmp_path: Path) -> None:
    with running_fake_tango(rate_limit=None, auth_mode="oauth2") as tango:
        settings = oauth_settings(tmp_path, tango.url)
        for _ in range(3):  # a start, then two restarts on the same database
            provider = fulfilment_provider(settings)
            assert isinstance(provider, TangoProvider)
            async with started(provider):
                await provider.funding_balance()
        assert tango.state.token_requests == [
            {"grant_type": "client_credentials", "scope": "raas.all", "audience": AUDIENCE}
        ]
        assert len(tango.state.api_requests) == 3


@pytest.mark.parametrize(
    ("missing", "variable"),
    [
        ({"tango_token_url": None}, "GIFTGRAPH_TANGO_TOKEN_URL"),
        ({"tango_oauth_audience": None}, "GIFTGRAPH_TANGO_OAUTH_AUDIENCE"),
        ({"tango_client_id": None}, "GIFTGRAPH_TANGO_CLIENT_ID"),
    ],
)
def test_oauth_settings_missing_name_their_variable(tmp_path: Path, missing: dict[str, Any], variable: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        fulfilment_provider(oauth_settings(tmp_path, "http://127.0.0.1:9", **missing))
    assert not (tmp_path / "card-keys.json").exists()  # refused before any file was written


def test_a_bad_webhook_secret_names_its_variable_never_its_value(tmp_path: Path) -> None:
    bad = "not-base64-and-far-too-short!"
    settings = oauth_settings(tmp_path, "http://127.0.0.1:9", tango_webhook_secrets=[WEBHOOK_SECRET, bad])
    with pytest.raises(ConfigurationError, match="GIFTGRAPH_TANGO_WEBHOOK_SECRETS") as caught:
        fulfilment_provider(settings)
    assert "#2" in str(caught.value) and bad not in str(caught.value)


# The catalog: fetched about twice a day, sooner when Tango says it changed


def item_availability() -> tuple[dict[str, str], bytes]:
    body = (
        '{"eventId": "evt-cat", "revision": 1, "category": "CATALOG", "eventType": "ItemAvailability",'
        f' "eventOccurredAt": "{time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}",'
        ' "eventData": {"utid": "U000001", "status": "UNAVAILABLE"}}'
    ).encode()
    return {SIGNATURE_HEADER: sign(WEBHOOK_SECRET, body), "Content-Type": "application/json"}, body


async def test_the_catalog_ttl_setting_reaches_tango_and_a_catalog_webhook_drops_the_cache(tmp_path: Path) -> None:
    with running_fake_tango(rate_limit=None) as tango:
        basic = {"tango_auth": "basic", "tango_platform_name": PLATFORM_NAME, "tango_platform_key": PLATFORM_KEY}
        settings = oauth_settings(tmp_path, tango.url, **basic, tango_webhook_secrets=[WEBHOOK_SECRET])
        assert settings.tango_catalog_ttl_seconds >= 6 * 3600  # Tango: about two catalog fetches a day
        provider = fulfilment_provider(settings)
        assert isinstance(provider, TangoProvider)
        async with started(provider):
            await provider.catalog()
            await provider.catalog()
            assert tango.state.api_requests == [("GET", "/catalogs")]
            provider.verify_webhook(*item_availability())
            await provider.catalog()
            assert tango.state.api_requests == [("GET", "/catalogs")] * 2
        short = fulfilment_provider(settings.model_copy(update={"tango_catalog_ttl_seconds": 0}))
        assert isinstance(short, TangoProvider)
        async with started(short):
            await short.catalog()
            await short.catalog()
        assert tango.state.api_requests == [("GET", "/catalogs")] * 4


async def test_a_catalog_webhook_arriving_during_a_catalog_fetch_is_not_lost(tmp_path: Path) -> None:
    with running_fake_tango(rate_limit=None) as tango:
        basic = {"tango_auth": "basic", "tango_platform_name": PLATFORM_NAME, "tango_platform_key": PLATFORM_KEY}
        settings = oauth_settings(tmp_path, tango.url, **basic, tango_webhook_secrets=[WEBHOOK_SECRET])
        provider = fulfilment_provider(settings)
        assert isinstance(provider, TangoProvider)
        gate = threading.Event()
        tango.state.catalog_gate = gate
        async with started(provider):
            fetching = asyncio.create_task(provider.catalog())
            assert await asyncio.to_thread(tango.state.catalog_taken.wait, 10)  # Tango has answered, in transit
            provider.verify_webhook(*item_availability())  # the catalog changed meanwhile
            gate.set()
            await fetching
            tango.state.catalog_gate = None
            await provider.catalog()  # asks again: the fetch under way may predate the change
            await provider.catalog()  # and that answer is kept for the TTL

    assert tango.state.api_requests == [("GET", "/catalogs")] * 2


# Real processes: two `giftgraph serve` on one data folder, then one killed and started again


@pytest.mark.slow
def test_two_gateway_processes_and_a_restart_share_one_token_from_tango(tmp_path: Path) -> None:
    with running_fake_tango(rate_limit=None, auth_mode="oauth2") as tango:
        settings = {
            "GIFTGRAPH_PROVIDER": "tango",
            "GIFTGRAPH_TANGO_AUTH": "oauth2",
            "GIFTGRAPH_TANGO_BASE_URL": tango.url,
            "GIFTGRAPH_TANGO_CLIENT_ID": CLIENT_ID,
            "GIFTGRAPH_TANGO_CLIENT_SECRET": CLIENT_SECRET,
            "GIFTGRAPH_TANGO_TOKEN_URL": f"{tango.url}{TOKEN_PATH}",
            "GIFTGRAPH_TANGO_OAUTH_AUDIENCE": AUDIENCE,
            "GIFTGRAPH_TANGO_ACCOUNT_IDENTIFIER": ACCOUNT,
            "GIFTGRAPH_TANGO_CUSTOMER_IDENTIFIER": CUSTOMER,
            "GIFTGRAPH_TANGO_RATE_LIMIT_PER_SECOND": "0",
        }
        # /readyz answers 200 only once the process has read Tango's balance: it needs a token.
        gateways = [GatewayProcess(tmp_path, settings, ready_path="/readyz") for _ in range(2)]
        try:
            with ThreadPoolExecutor(2) as pool:  # started together: their first calls may overlap
                list(pool.map(lambda gateway: gateway.start(timeout=60), gateways))
            gateways[0].kill()
            gateways[0].start(timeout=60)
        finally:
            for gateway in gateways:
                gateway.stop()
        assert len(tango.state.token_requests) == 1
        assert {path for _, path in tango.state.api_requests} == {f"/accounts/{ACCOUNT}"}
