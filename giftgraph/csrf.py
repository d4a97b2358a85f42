"""Browser protections: CSRF prevention for the GraphQL endpoint, and CORS from the settings.

A page on another site can make a browser POST without a CORS preflight only with a "simple" content type
(text/plain, a form encoding) or none, and only with CORS-safelisted headers. Refusing such POSTs unless
they carry a header a browser would have to preflight means every cross-site POST that gets through was
first allowed by CORS.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

# Content types a browser sends cross-site without asking first (the Fetch standard's CORS-safelisted
# values of Content-Type), plus none at all.
SIMPLE_CONTENT_TYPES = frozenset({"", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})

# Authorization is not CORS-safelisted either: a browser preflights any cross-site request that carries it.
_PREFLIGHTED_ALWAYS = ("authorization",)

CSRF_MESSAGE = (
    "This request could be a cross-site request forgery: send it with Content-Type: application/json, "
    "or add one of these headers: {headers}."
)


def is_csrf_risk(method: str, headers: Mapping[str, str], required_headers: Iterable[str]) -> bool:
    """Whether a request is one a page on another site could have made without a preflight.

    GET may only run queries (the view refuses mutations over GET), so only POSTs are checked.
    `headers` is looked up by lowercase name (Starlette's Headers are case-insensitive).
    """
    if method != "POST":
        return False
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in SIMPLE_CONTENT_TYPES:
        return False
    names = (*_PREFLIGHTED_ALWAYS, *(name.lower() for name in required_headers))
    return not any(headers.get(name, "").strip() for name in names)


def cors_middleware(origins: list[str], *, allow_headers: Iterable[str]) -> list[Middleware]:
    """Starlette's CORSMiddleware for the configured origins; none at all (no CORS headers) without origins."""
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID", *allow_headers],
            # Bearer tokens, not cookies: browsers need no credentials mode.
            allow_credentials=False,
            expose_headers=["X-Request-ID", "Retry-After", "RateLimit", "RateLimit-Policy"],
            max_age=600,
        )
    ]


__all__ = ["CSRF_MESSAGE", "SIMPLE_CONTENT_TYPES", "cors_middleware", "is_csrf_risk"]
