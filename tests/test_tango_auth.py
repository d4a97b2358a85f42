"""Tango authentication: HTTP Basic, and OAuth2 tokens cached across calls and restarts (Tango issues one per ~20 h).

Sharing the token between processes through the gateway database: tests/test_tango_token_store.py.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import anyio
import httpx
import pytest

import providers.errors as perr
from providers.tango import TangoClientCredentialsAuth, tango_auth
from providers.tango.auth import REISSUE_INTERVAL
from tests.fake_tango import (
    ACCOUNT,
    CLIENT_ID,
    CLIENT_SECRET,
    PLATFORM_KEY,
    TOKEN_PATH,
    make_tango,
    order_request,
    running_fake_tango,
    started,
)
from tests.test_http_fakes import FakeClock
from tests.test_tango_token_store import sqlite_store

pytestmark = pytest.mark.anyio


async def test_one_oauth_token_serves_every_call_and_asks_for_tangos_scope() -> None:
    with running_fake_tango(rate_limit=None, auth_mode="oauth2") as tango:
        provider = make_tango(tango.url, auth_mode="oauth2", oauth_audience="https://api.tangocard.com/")
        async with started(provider):
            await provider.catalog()
            await provider.funding_balance()
            await provider.place_order(order_request("ref0401"))
            await provider.find_order("ref0401")
            await provider.funding_balance()
        (token_request,) = tango.state.token_requests
        assert len(tango.state.api_requests) >= 5
    assert token_request == {
        "grant_type": "client_credentials",
        "scope": "raas.all",
        "audience": "https://api.tangocard.com/",
    }
    assert CLIENT_SECRET not in str(token_request)  # sent by HTTP Basic, not in the form


async def test_a_restart_on_the_same_database_reuses_the_stored_token_without_asking_tango(tmp_path: Path) -> None:
    with running_fake_tango(rate_limit=None, auth_mode="oauth2") as tango:
        for _ in range(2):  # a start, then a restart: a new process, a new engine, the same database file
            async with (
                sqlite_store(tmp_path / "giftgraph.db") as store,
                started(make_tango(tango.url, auth_mode="oauth2", token_store=store)) as provider,
            ):
                await provider.funding_balance()
                await provider.catalog()
        assert len(tango.state.token_requests) == 1
        assert len(tango.state.api_requests) == 4  # every call sent the one token, none was refused


async def test_without_a_shared_store_a_second_process_is_refused_and_does_not_ask_again_for_a_minute() -> None:
    with running_fake_tango(rate_limit=None, auth_mode="oauth2") as tango:
        async with started(make_tango(tango.url, auth_mode="oauth2")) as first:
            await first.funding_balance()
        # In process memory only, a second process inside Tango's window cannot get a token of its own.
        async with started(make_tango(tango.url, auth_mode="oauth2")) as second:
            with pytest.raises(perr.ProviderAuthenticationFailed) as caught:
                await second.funding_balance()
            with pytest.raises(perr.ProviderAuthenticationFailed) as again:
                await second.catalog()  # within the cool-down: refused without asking Tango
        assert len(tango.state.token_requests) == 2
    assert caught.value.status == again.value.status == 400
    assert caught.value.maybe_committed is False


async def test_basic_auth_sends_the_platform_name_and_key_on_every_call() -> None:
    with running_fake_tango(rate_limit=None, auth_mode="basic") as tango:
        async with started(make_tango(tango.url)) as provider:
            await provider.funding_balance()
            await provider.catalog()
        assert tango.state.token_requests == []
        assert len(tango.state.api_requests) == 2


def test_auth_configuration_errors_name_what_is_missing_never_a_value() -> None:
    with pytest.raises(ValueError, match="platform name and platform key"):
        tango_auth("basic", platform_name="p", platform_key=None, client_id=None, client_secret=None, token_url=None)
    with pytest.raises(ValueError, match="client id, client secret and token URL"):
        tango_auth("oauth2", platform_name=None, platform_key=None, client_id="c", client_secret="s", token_url=None)
    with pytest.raises(ValueError, match="unknown Tango auth mode"):
        tango_auth(
            "jwt",  # type: ignore[arg-type]
            platform_name=None, platform_key=None, client_id=None, client_secret=None, token_url=None,
        )  # fmt: skip


def test_auth_objects_and_the_provider_hide_their_secrets() -> None:
    oauth = tango_auth(
        "oauth2", platform_name=None, platform_key=None, client_id="c", client_secret=CLIENT_SECRET, token_url="/t"
    )
    basic = tango_auth("basic", platform_name="p", platform_key=PLATFORM_KEY, client_id=None, client_secret=None,
                       token_url=None)  # fmt: skip
    assert isinstance(oauth, TangoClientCredentialsAuth)
    provider = make_tango("http://127.0.0.1:9")
    encoded = base64.b64encode(f"p:{PLATFORM_KEY}".encode()).decode()
    for text in (repr(oauth), str(oauth), repr(basic), repr(provider), repr(provider._verifier)):
        for secret in (CLIENT_SECRET, PLATFORM_KEY, encoded):
            assert secret not in text


async def test_concurrent_first_calls_share_one_token_request() -> None:
    with running_fake_tango(rate_limit=None, auth_mode="oauth2") as tango:
        async with started(make_tango(tango.url, auth_mode="oauth2")) as provider, anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(provider.funding_balance)
        assert len(tango.state.token_requests) == 1
        assert len(tango.state.api_requests) == 8


async def test_a_401_inside_tangos_20_hours_keeps_the_token_and_no_call_asks_for_another() -> None:
    with running_fake_tango(rate_limit=None, auth_mode="oauth2") as tango:
        async with started(make_tango(tango.url, auth_mode="oauth2")) as provider:
            await provider.funding_balance()
            tango.state.tokens.clear()  # revoked on Tango's side
            for _ in range(3):
                with pytest.raises(perr.ProviderAuthenticationFailed) as caught:
                    await provider.funding_balance()
                assert caught.value.status == 401
        assert len(tango.state.token_requests) == 1  # asking again would be refused: never one per call
        assert len(tango.state.api_requests) == 4  # no retry either: it would send the same token


async def test_a_401_after_tangos_20_hours_asks_for_one_new_token_and_retries_with_it() -> None:
    clock = FakeClock(start=time.time())
    with running_fake_tango(rate_limit=None, auth_mode="oauth2", token_window=0) as tango:
        auth = TangoClientCredentialsAuth(
            token_url=TOKEN_PATH, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, clock=clock
        )
        async with httpx.AsyncClient(base_url=tango.url, auth=auth) as client:
            assert (await client.get(f"/accounts/{ACCOUNT}")).status_code == 200
            tango.state.tokens.clear()
            assert (await client.get(f"/accounts/{ACCOUNT}")).status_code == 401  # inside 20 h: kept
            clock.now += REISSUE_INTERVAL
            assert (await client.get(f"/accounts/{ACCOUNT}")).status_code == 200  # a new token, then the retry
            assert (await client.get(f"/accounts/{ACCOUNT}")).status_code == 200
        assert len(tango.state.token_requests) == 2
