"""Tango's two ways in: HTTP Basic with the platform name and key, or OAuth2 client credentials.

Tango issues a client about one token per ~20 hours (each lives 24 h; asking sooner answers 400), so
the layer's ClientCredentialsAuth cache is shared by every call, and a refused token request surfaces
as ProviderAuthenticationFailed rather than being retried.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import parse_qsl, urlencode

import httpx

from providers.http import ApiKeyAuth, ClientCredentialsAuth

AuthMode = Literal["basic", "oauth2"]
SCOPE = "raas.all"


class TangoClientCredentialsAuth(ClientCredentialsAuth):
    """ClientCredentialsAuth whose token request also names Tango's scope and, when set, the audience."""

    def __init__(self, *, scope: str = SCOPE, audience: str | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
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


def tango_auth(
    mode: AuthMode,
    *,
    platform_name: str | None,
    platform_key: str | None,
    client_id: str | None,
    client_secret: str | None,
    token_url: str | None,
    audience: str | None = None,
) -> httpx.Auth:
    """The httpx.Auth for `mode`; ValueError naming what is missing (never a value)."""
    if mode == "basic":
        if not platform_name or not platform_key:
            raise ValueError("Tango basic auth needs the platform name and platform key")
        return ApiKeyAuth(platform_name, platform_key)
    if mode == "oauth2":
        if not client_id or not client_secret or not token_url:
            raise ValueError("Tango OAuth2 needs a client id, client secret and token URL")
        return TangoClientCredentialsAuth(
            token_url=token_url, client_id=client_id, client_secret=client_secret, audience=audience
        )
    raise ValueError(f"unknown Tango auth mode {mode!r} (basic or oauth2)")
