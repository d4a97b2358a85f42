"""Tremendous authentication: `Authorization: Bearer <API key>` on every request, the key never in a repr."""

from __future__ import annotations

from collections.abc import Generator

import httpx


class BearerAuth(httpx.Auth):
    """A static bearer token (Tremendous API keys do not expire; a revoked key answers 401)."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("an API key is required")
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(<credentials hidden>)"

    __str__ = __repr__
