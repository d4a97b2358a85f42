"""Tango Card RaaS v2 JSON shapes, as pydantic models tolerant of what Tango adds.

Unknown fields are ignored and every enum (statuses, value types, credential types) is a plain
string, so a value Tango introduces later maps to a safe default instead of failing validation.
Reward credentials (codes, pins, claim URLs) are SecretStr and kept out of reprs.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


W = TypeVar("W", bound=Wire)


# GET /catalogs


class ItemWire(Wire):
    # Lenient on purpose: one odd item is skipped by the mapping instead of failing the whole catalog.
    utid: str = ""
    rewardName: str = ""
    currencyCode: str = ""
    status: str = ""
    valueType: str = ""
    faceValue: Decimal | None = None
    minValue: Decimal | None = None
    maxValue: Decimal | None = None
    countries: list[str] = []
    redemptionInstructions: str | None = None
    isWholeAmountValueRequired: bool | None = None

    @field_validator("isWholeAmountValueRequired", mode="before")
    @classmethod
    def _lenient_flag(cls, value: object) -> object:
        # An odd value must not fail the whole catalog; unreadable is "no flag" (Tango refuses at order time).
        return value if isinstance(value, bool) else None

    @property
    def whole_amounts_only(self) -> bool:
        """The Reward's `whole_amounts_only`: Tango takes only whole amounts for this item (else 422.026)."""
        return self.isWholeAmountValueRequired is True


class BrandWire(Wire):
    brandKey: str = ""
    brandName: str = ""
    description: str = ""
    shortDescription: str = ""
    terms: str | None = None
    disclaimer: str | None = None
    imageUrls: dict[str, str] = {}
    status: str = ""
    items: list[ItemWire] = []


class CatalogWire(Wire):
    catalogName: str = ""
    brands: list[BrandWire] = []


# GET /accounts/{accountIdentifier}


class AccountWire(Wire):
    accountIdentifier: str
    currencyCode: str = Field(min_length=3, max_length=3)
    currentBalance: Decimal
    status: str = ""


# POST /orders, GET /orders, GET /orders/{referenceOrderID}


class CredentialWire(Wire):
    label: str = ""
    type: str = ""  # text | url | barcode | date
    credentialType: str = ""  # cardNumber, cardPin, redemptionUrl... (GET /credentialtypes)
    value: SecretStr = Field(repr=False)


class RewardCredentialsWire(Wire):
    credentialList: list[CredentialWire] = Field(default=[], repr=False)
    redemptionInstructions: str | None = Field(default=None, repr=False)


class AmountWire(Wire):
    value: Decimal
    currencyCode: str = ""


class OrderWire(Wire):
    referenceOrderID: str = Field(min_length=1, max_length=255)
    externalRefID: str | None = None
    accountIdentifier: str | None = None
    utid: str = ""
    status: str = ""
    amountCharged: AmountWire | None = None
    denomination: AmountWire | None = None
    createdAt: datetime
    reward: RewardCredentialsWire | None = Field(default=None, repr=False)


class PageWire(Wire):
    number: int = 0
    elementsPerBlock: int = 0
    resultCount: int = 0
    totalCount: int = 0


class OrderListWire(Wire):
    page: PageWire | None = None
    orders: list[OrderWire] = []


# Error bodies: {timestamp, requestId, path, httpCode, httpPhrase, errors: [{path, code, i18nKey, message}]}


class ErrorItemWire(Wire):
    path: str | None = None
    code: str | None = None
    i18nKey: str | None = None
    message: str | None = None


class ErrorBodyWire(Wire):
    timestamp: str | None = None
    requestId: str | None = None
    path: str | None = None
    httpCode: int | None = None
    httpPhrase: str | None = None
    errors: list[ErrorItemWire] = []


# Webhook deliveries: {eventId, revision, category, eventType, eventOccurredAt, eventData}


class EventWire(Wire):
    eventId: str = Field(min_length=1, max_length=255)
    revision: int | None = None
    category: str | list[str] | None = None
    eventType: str | list[str] | None = None
    eventTypes: str | list[str] | None = None  # older deliveries spell it in the plural
    eventOccurredAt: datetime
    eventData: dict[str, object] = {}

    @property
    def type_name(self) -> str:
        value = self.eventType if self.eventType is not None else self.eventTypes
        if isinstance(value, list):
            return value[0] if value else ""
        return value or ""
