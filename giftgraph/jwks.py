"""An identity provider's signing keys, from its JWKS URL: fetched with httpx, cached, refreshed by `kid`.

PyJWKClient fetches synchronously and would block the event loop; this asks with the app's
AsyncClient, one request at a time (single-flight), and at most once per refresh interval, so
tokens with made-up key ids cannot turn giftgraph into a flood against the identity provider.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from typing import Any

import httpx
import jwt

logger = logging.getLogger(__name__)


class JwksUnavailable(Exception):
    """The key set could not be fetched and no cached key answers for the token."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds until the key set may be asked again


def parse_jwks(document: Any, algorithms: Collection[str]) -> dict[str, jwt.PyJWK]:
    """The signing keys of a JWK Set (RFC 7517) by `kid`, keeping only those of an allowed algorithm.

    ValueError when the document is not a key set or holds no usable key.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("the response is not a JWK Set")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str) or not entry["kid"]:
            continue
        # Encryption keys, and shared secrets that have no place in a public key set, never verify a token.
        if entry.get("use", "sig") != "sig" or entry.get("kty") == "oct":
            continue
        try:
            key = jwt.PyJWK(entry)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue  # a key type, curve or value PyJWT cannot use: the others still can
        if key.algorithm_name in algorithms:
            keys[entry["kid"]] = key
    if not keys:
        raise ValueError("the JWK Set has no signing key for the allowed algorithms")
    return keys


class JwksKeys:
    """The key set behind one JWKS URL, cached for `cache_seconds`.

    A token whose `kid` is not cached triggers a refresh, but no fetch of any kind starts within
    `min_refresh_seconds` of the previous one, and concurrent callers share the fetch in flight.
    When a fetch fails the cached keys stay in use.
    """

    def __init__(
        self,
        url: str,
        *,
        algorithms: Collection[str],
        cache_seconds: float,
        min_refresh_seconds: float,
    ) -> None:
        self.url = url
        self._algorithms = frozenset(algorithms)
        self._cache_seconds = cache_seconds
        self._min_refresh_seconds = min_refresh_seconds
        self._http: httpx.AsyncClient | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # the last successful fetch
        self._attempted_at: float | None = None  # the last fetch started, successful or not
        self._last_failed = False
        self._inflight: asyncio.Task[None] | None = None

    def attach(self, http: httpx.AsyncClient | None) -> None:
        """Fetch with this client (the app's lifespan opens and closes it); None detaches."""
        self._http = http

    async def key_for(self, kid: str) -> jwt.PyJWK | None:
        """The signing key `kid`, or None when the key set does not have it (after at most one refresh).

        JwksUnavailable when the key is not cached and the key set cannot be fetched: whether the
        token is valid cannot be known.
        """
        expired = self._expired()
        if expired:
            await self._refresh()
        key = self._keys.get(kid)
        if key is None and not expired:
            await self._refresh()  # a rotated key, or a made-up one: the interval bounds the cost
            key = self._keys.get(kid)
        if key is None and self._last_failed:
            raise JwksUnavailable(f"the key set at {self.url} could not be fetched", retry_after=self._retry_after())
        return key

    def _expired(self) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at >= self._cache_seconds

    def _retry_after(self) -> float:
        if self._attempted_at is None:
            return 0.0
        return max(0.0, self._min_refresh_seconds - (time.monotonic() - self._attempted_at))

    def _may_fetch(self) -> bool:
        return self._retry_after() <= 0

    async def _refresh(self) -> None:
        if self._inflight is None:
            if not self._may_fetch():
                return
            self._attempted_at = time.monotonic()
            self._inflight = asyncio.get_running_loop().create_task(self._fetch())
        # Shielded: a caller that goes away (client disconnect) must not cancel the others' fetch.
        await asyncio.shield(self._inflight)

    async def _fetch(self) -> None:
        try:
            if self._http is None:
                raise RuntimeError("no HTTP client attached (the app's lifespan has not started)")
            response = await self._http.get(self.url, headers={"Accept": "application/json"})
            response.raise_for_status()
            keys = parse_jwks(response.json(), self._algorithms)
        except (httpx.HTTPError, ValueError, RuntimeError) as exc:
            self._last_failed = True
            logger.warning("could not fetch the JWKS at %s: %s: %s", self.url, type(exc).__name__, exc)
        except Exception:  # whatever the identity provider sends, auth answers "unavailable", never a 500
            self._last_failed = True
            logger.exception("unexpected failure reading the JWKS at %s", self.url)
        else:
            self._keys, self._fetched_at, self._last_failed = keys, time.monotonic(), False
            logger.info("fetched the JWKS at %s: key ids %s", self.url, sorted(keys))
        finally:
            self._inflight = None
