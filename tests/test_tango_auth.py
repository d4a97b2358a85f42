"""Tango authentication: HTTP Basic, and OAuth2 tokens cached across calls (Tango issues one per ~20 h)."""

from __future__ import annotations

import base64

import anyio
import pytest

import providers.errors as perr
from providers.tango import TangoClientCredentialsAuth, tango_auth
from tests.fake_tango import CLIENT_SECRET, PLATFORM_KEY, make_tango, order_request, running_fake_tango, started

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


async def test_a_token_refused_as_too_frequent_surfaces_as_authentication_failed_and_is_not_retried() -> None:
    with running_fake_tango(rate_limit=None, auth_mode="oauth2") as tango:
        async with started(make_tango(tango.url, auth_mode="oauth2")) as first:
            await first.funding_balance()
        # A second process (or a restart) inside Tango's window cannot get a token of its own.
        async with started(make_tango(tango.url, auth_mode="oauth2")) as second:
            with pytest.raises(perr.ProviderAuthenticationFailed) as caught:
                await second.funding_balance()
        assert len(tango.state.token_requests) == 2
    assert caught.value.status == 400
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
        async with started(make_tango(tango.url, auth_mode="oauth2")) as provider:
            async with anyio.create_task_group() as group:
                for _ in range(8):
                    group.start_soon(provider.funding_balance)
        assert len(tango.state.token_requests) == 1
        assert len(tango.state.api_requests) == 8


async def test_a_revoked_token_is_replaced_once_and_tangos_refusal_surfaces_as_authentication_failed() -> None:
    with running_fake_tango(rate_limit=None, auth_mode="oauth2") as tango:
        async with started(make_tango(tango.url, auth_mode="oauth2")) as provider:
            await provider.funding_balance()
            tango.state.tokens.clear()  # revoked on Tango's side
            with pytest.raises(perr.ProviderAuthenticationFailed):
                await provider.funding_balance()
        assert len(tango.state.token_requests) == 2  # one replacement attempt, never a loop
