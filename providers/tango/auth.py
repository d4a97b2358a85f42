"""Tango's two ways in: HTTP Basic with the platform name and key, or OAuth2 client credentials.

Tango issues a client about one token per ~20 hours (each lives 24 h; asking sooner answers 400), so
the token lives in a TokenStore that every gateway process shares (the gateway database) and survives
restarts; a 401 within those 20 h keeps the token rather than asking for one that would be refused,
and a refused token request surfaces as ProviderAuthenticationFailed, not asked again for a minute.
"""

from __future__ import annotations

import hashlib
from typing import Literal
from urllib.parse import parse_qsl, urlencode

import httpx

from providers.http import ApiKeyAuth, ClientCredentialsAuth
from providers.http.auth import TokenStore

AuthMode = Literal["basic", "oauth2"]
SCOPE = "raas.all"
REISSUE_INTERVAL = 20 * 3600.0  # Tango refuses a second token sooner than this after the last
REFRESH_MARGIN = 300.0  # a new token is asked for this long before the 24 h one expires (long after 20 h)
REFUSAL_COOLDOWN = 60.0  # after a refused token request, fail fast this long instead of asking again


class TangoClientCredentialsAuth(ClientCredentialsAuth):
    """ClientCredentialsAuth with Tango's issuing rules, whose token request also names its scope and audience."""

    def __init__(
        self,
        *,
        scope: str = SCOPE,
        audience: str | None = None,
        refresh_margin: float = REFRESH_MARGIN,
        min_reissue_interval: float = REISSUE_INTERVAL,
        refusal_cooldown: float = REFUSAL_COOLDOWN,
        **kwargs: object,
    ) -> None:
        super().__init__(
            refresh_margin=refresh_margin,
            min_reissue_interval=min_reissue_interval,
            refusal_cooldown=refusal_cooldown,
            **kwargs,  # type: ignore[arg-type]
        )
        self._extra = {"scope": scope, **({"audience": audience} if audience else {})}

    def _token_request(self, request: httpx.Request) -> httpx.Request:
        token_request = super()._token_request(request)
        form = dict(parse_qsl(token_request.content.decode()))
        form.update(self._extra)
        content = urlencode(form).encode()
        headers = {k: v for k, v in token_request.headers.items() if k.lower() != "content-length"}
        return httpx.Request(
            "POST", token_request.url, headers=headers, content=content, extensions=token_request.extensions
        )

    def __repr__(self) -> str:
        return f"TangoClientCredentialsAuth(token_url={self._token_url!r}, <credentials hidden>)"

    __str__ = __repr__


def token_store_name(*, token_url: str, client_id: str, audience: str | None) -> str:
    """The name of a client's token in a shared store: another client, endpoint or audience has its own."""
    digest = hashlib.sha256(f"{token_url}\n{client_id}\n{audience or ''}".encode()).hexdigest()
    return f"tango:{digest[:40]}"


def tango_auth(
    mode: AuthMode,
    *,
    platform_name: str | None,
    platform_key: str | None,
    client_id: str | None,
    client_secret: str | None,
    token_url: str | None,
    audience: str | None = None,
    token_store: TokenStore | None = None,
) -> httpx.Auth:
    """The httpx.Auth for `mode`; ValueError naming what is missing (never a value).

    `token_store`: where the OAuth2 token is kept (process memory when None: not shared, lost at restart).
    """
    if mode == "basic":
        if not platform_name or not platform_key:
            raise ValueError("Tango basic auth needs the platform name and platform key")
        return ApiKeyAuth(platform_name, platform_key)
    if mode == "oauth2":
        if not client_id or not client_secret or not token_url:
            raise ValueError("Tango OAuth2 needs a client id, client secret and token URL")
        return TangoClientCredentialsAuth(
            token_url=token_url,
            client_id=client_id,
            client_secret=client_secret,
            audience=audience,
            store=token_store,
        )
    raise ValueError(f"unknown Tango auth mode {mode!r} (basic or oauth2)")
