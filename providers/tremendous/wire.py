"""Pydantic models of Tremendous' documented answers: unknown fields ignored, enums kept as plain strings.

Statuses are `str`, never Literal: Tremendous renamed order statuses before (CART -> OPEN), and an
unknown value must reach the mapping (which treats it as "not done yet"), not fail validation.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# GET /products


class SkuWire(_Wire):
    min: Decimal
    max: Decimal
    currency_code: str | None = None  # added by Tremendous later: which currency min and max are in


class CountryWire(_Wire):
    abbr: str


class ImageWire(_Wire):
    src: str
    type: str | None = None


class ProductWire(_Wire):
    id: str
    name: str
    description: str = ""
    category: str = ""
    subcategory: str | None = None
    disclosure: str | None = None
    usage_instructions: str | None = None
    status: str | None = None  # not in every version of the API: absent means listed, so available
    skus: list[SkuWire] = Field(default_factory=list)
    currency_codes: list[str] = Field(default_factory=list)
    countries: list[CountryWire] = Field(default_factory=list)
    images: list[ImageWire] = Field(default_factory=list)


class ProductListWire(_Wire):
    # Raw dicts: each product is validated alone, so one odd product cannot hide the whole catalog.
    products: list[dict[str, Any]]


# Orders


class ValueWire(_Wire):
    denomination: Decimal
    currency_code: str


class DeliveryWire(_Wire):
    method: str | None = None  # EMAIL | LINK | PHONE
    status: str | None = None  # SCHEDULED | PENDING | SUCCEEDED | FAILED (| whatever comes next)
    link: str | None = Field(default=None, repr=False)  # the claim URL: a bearer secret, never in a repr


class RewardWire(_Wire):
    id: str
    order_id: str | None = None
    created_at: datetime | None = None
    value: ValueWire | None = None
    delivery: DeliveryWire | None = None
    products: list[str] = Field(default_factory=list)


class RewardEnvelopeWire(_Wire):
    reward: RewardWire


class OrderWire(_Wire):
    id: str
    external_id: str | None = None
    created_at: datetime
    status: str
    rewards: list[RewardWire] = Field(default_factory=list)


class OrderEnvelopeWire(_Wire):
    order: OrderWire


class OrderListWire(_Wire):
    orders: list[OrderWire]
    total_count: int | None = None


# GET /funding_sources


class FundingMetaWire(_Wire):
    available_cents: int | None = None
    pending_cents: int | None = None


class FundingSourceWire(_Wire):
    id: str
    method: str
    meta: FundingMetaWire | None = None


class FundingSourceListWire(_Wire):
    funding_sources: list[FundingSourceWire]


# Webhooks


class WebhookResourceWire(_Wire):
    id: str
    type: str | None = None


class WebhookPayloadWire(_Wire):
    resource: WebhookResourceWire
    meta: dict[str, Any] | None = None


class WebhookEventWire(_Wire):
    event: str
    uuid: str = Field(min_length=1, max_length=255)
    created_utc: datetime
    payload: WebhookPayloadWire
