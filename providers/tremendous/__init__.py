"""Tremendous (REST v2) as a giftgraph fulfilment provider: catalog, idempotent orders, balance, webhooks."""

from providers.tremendous.adapter import TremendousProvider, build_tremendous
from providers.tremendous.auth import BearerAuth
from providers.tremendous.errors import TREMENDOUS_ERRORS
from providers.tremendous.webhooks import (
    SIGNATURE_HEADER,
    InvalidTremendousEvent,
    TremendousOrderEvent,
    TremendousWebhookVerifier,
)

__all__ = [
    "SIGNATURE_HEADER",
    "TREMENDOUS_ERRORS",
    "BearerAuth",
    "InvalidTremendousEvent",
    "TremendousOrderEvent",
    "TremendousProvider",
    "TremendousWebhookVerifier",
    "build_tremendous",
]
