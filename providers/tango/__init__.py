"""Tango Card RaaS v2 as a fulfilment provider: catalog, orders by externalRefID, account balance, webhooks."""

from providers.tango.adapter import TangoProvider, build_tango
from providers.tango.auth import TangoClientCredentialsAuth, tango_auth
from providers.tango.errors import TANGO_ERRORS, tango_error_code
from providers.tango.webhooks import (
    SIGNATURE_HEADER,
    TangoCatalogEvent,
    TangoOrderEvent,
    TangoWebhookVerifier,
    sign,
)

__all__ = [
    "SIGNATURE_HEADER",
    "TANGO_ERRORS",
    "TangoCatalogEvent",
    "TangoClientCredentialsAuth",
    "TangoOrderEvent",
    "TangoProvider",
    "TangoWebhookVerifier",
    "build_tango",
    "sign",
    "tango_auth",
    "tango_error_code",
]
