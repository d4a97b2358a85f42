"""The sandbox service's OpenAPI 3.1 document: schemas generated from the wire models, paths written here.

`giftgraph sandbox openapi` writes it to providers/sandbox/openapi.json (committed, served at
GET /openapi.json); `--check` and a test fail when the committed file and this code disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from providers.rest import contract
from providers.sandbox import service_admin as admin
from providers.sandbox.config import OPERATIONS
from providers.sandbox.service_api import DEFAULT_PAGE, MAX_POINTS, MAX_POSITION
from providers.sandbox.service_faults import FAULT_HEADER, FAULT_KINDS, MAX_SECONDS, MAX_TIMES, NO_FAULT

DOCUMENT_PATH = Path(__file__).with_name("openapi.json")
REF = "#/components/schemas/{model}"

RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    contract.RewardPageWire,
    contract.RewardBatchWire,
    contract.BalanceBatchWire,
    contract.TransactionPageWire,
    contract.TransactionBatchWire,
    contract.RedemptionBatchWire,
    contract.RedeemResultWire,
    contract.RewardWire,
    contract.TokenWire,
    contract.ErrorWire,
    contract.WebhookEventWire,
    contract.PointsEarnedData,
    contract.RedemptionSettledData,
    contract.CatalogItemChangedData,
    admin.FaultListWire,
    admin.GrantResultWire,
    admin.StatsWire,
)
REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    contract.RedeemRequestWire,
    admin.FaultRequestWire,
    admin.GrantRequestWire,
    admin.AvailabilityRequestWire,
)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ok(model: type[BaseModel] | dict[str, Any], description: str = "OK") -> dict[str, Any]:
    schema = model if isinstance(model, dict) else _ref(model)
    return {"description": description, "content": _json(schema)}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json(_ref(contract.ErrorWire))}


RETRY_AFTER = {"description": "Whole seconds to wait", "schema": {"type": "integer", "minimum": 0}}
COMMON_ERRORS = {
    "400": _error("invalid_request: the input breaks the contract"),
    "401": _error("authentication_failed: missing, invalid or expired credentials"),
    "429": {**_error("rate_limited: this credential exceeded its rate limit"), "headers": {"Retry-After": RETRY_AFTER}},
    "503": _error("unavailable: the provider failed; retry later"),
}


def _query(name: str, schema: dict[str, Any], description: str, *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


def _ids(name: str, description: str) -> dict[str, Any]:
    item = {"type": "string", "minLength": 1, "maxLength": 255}
    schema = {"type": "array", "items": item, "maxItems": contract.MAX_BATCH}
    return {**_query(name, schema, description), "style": "form", "explode": True}


def _operation(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: type[BaseModel] | None = None,
    tags: tuple[str, ...] = ("port",),
) -> dict[str, Any]:
    spec: dict[str, Any] = {"operationId": operation_id, "summary": summary, "tags": list(tags)}
    if parameters:
        spec["parameters"] = parameters
    if body is not None:
        spec["requestBody"] = {"required": True, "content": _json(_ref(body))}
    spec["responses"] = {**responses, **COMMON_ERRORS}
    return spec


def _paths() -> dict[str, Any]:
    limit = {"type": "integer", "minimum": 1, "maximum": contract.MAX_PAGE, "default": DEFAULT_PAGE}
    position = {"type": "integer", "minimum": 0, "maximum": MAX_POSITION}
    kinds = {"type": "array", "items": {"type": "string", "enum": ["EARN", "REDEEM", "REFUND", "ADJUSTMENT"]}}
    admin_tags = ("sandbox admin",)
    return {
        "/v1/health": {
            "get": _operation(
                "check",
                "The provider answers",
                {"200": _ok({"type": "object", "properties": {"status": {"const": "ok"}}, "required": ["status"]})},
            )
        },
        "/v1/rewards": {
            "get": _operation(
                "list_rewards",
                "One page of the catalog, in the provider's stable order",
                {"200": _ok(contract.RewardPageWire)},
                parameters=[
                    _query("cursor", {"type": "string"}, "next_cursor of the previous page; unknown: 400"),
                    _query("limit", limit, "Items per page"),
                ],
            )
        },
        "/v1/rewards/batch": {
            "get": _operation(
                "get_rewards",
                "Rewards by id, in the order asked; null where unknown",
                {"200": _ok(contract.RewardBatchWire)},
                parameters=[_ids("id", "Reward ids")],
            )
        },
        "/v1/balances": {
            "get": _operation(
                "get_balances",
                "Balances in the order asked; a user seen for the first time is enrolled",
                {"200": _ok(contract.BalanceBatchWire)},
                parameters=[_ids("user_id", "User ids")],
            )
        },
        "/v1/transactions": {
            "get": _operation(
                "list_transactions",
                "A user's transactions strictly between two positions, newest first",
                {"200": _ok(contract.TransactionPageWire)},
                parameters=[
                    _query("user_id", {"type": "string", "minLength": 1, "maxLength": 255}, "The user", required=True),
                    {**_query("kind", kinds, "Only these kinds (repeat the parameter)"), "explode": True},
                    _query("older_than", position, "Only positions below this"),
                    _query("newer_than", position, "Only positions above this"),
                    _query("limit", {**limit, "minimum": 0}, "Items per page (0: only total_count)"),
                    _query("from_oldest", {"type": "boolean", "default": False}, "Take the items nearest newer_than"),
                ],
            )
        },
        "/v1/transactions/batch": {
            "get": _operation(
                "get_transactions",
                "Transactions by id, in the order asked; null where unknown",
                {"200": _ok(contract.TransactionBatchWire)},
                parameters=[_ids("id", "Transaction ids")],
            )
        },
        "/v1/redemptions/batch": {
            "get": _operation(
                "get_redemptions",
                "Redemptions by id, in the order asked (gift cards included); null where unknown",
                {"200": _ok(contract.RedemptionBatchWire)},
                parameters=[_ids("id", "Redemption ids")],
            )
        },
        "/v1/redemptions": {
            "post": _operation(
                "redeem",
                f"Debit the points and order the reward, once per idempotency key (points at most {MAX_POINTS})",
                {
                    "201": _ok(contract.RedeemResultWire, "Created"),
                    "200": _ok(contract.RedeemResultWire, "A replay of the key's first redemption (replayed: true)"),
                    "402": _error("insufficient_points"),
                    "404": _error("reward_not_found"),
                    "409": _error("idempotency_conflict: the key was used with another body"),
                    "422": _error("reward_unavailable or invalid_face_value"),
                },
                parameters=[
                    {
                        "name": contract.IDEMPOTENCY_HEADER,
                        "in": "header",
                        "required": True,
                        "description": "The same key on every retry of one redemption",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
                    }
                ],
                body=contract.RedeemRequestWire,
            )
        },
        "/v1/sandbox/faults": {
            "post": _operation(
                "schedule_fault",
                f"Schedule a fault for the next `times` calls of an operation (or '*'); at most {MAX_TIMES} times, "
                f"{MAX_SECONDS:g} seconds. Kinds: {', '.join(FAULT_KINDS)}. "
                f"Operations: {', '.join(sorted(OPERATIONS))}",
                {"200": _ok(admin.FaultListWire, "The faults still scheduled")},
                body=admin.FaultRequestWire,
                tags=admin_tags,
            ),
            "delete": _operation(
                "clear_faults",
                "Drop every scheduled fault",
                {"200": _ok(admin.FaultListWire, "No faults left")},
                tags=admin_tags,
            ),
        },
        "/v1/sandbox/grants": {
            "post": _operation(
                "grant",
                "Credit points (an EARN transaction) and send a points.earned webhook",
                {"200": _ok(admin.GrantResultWire)},
                body=admin.GrantRequestWire,
                tags=admin_tags,
            )
        },
        "/v1/sandbox/rewards/{reward_id}/availability": {
            "put": _operation(
                "set_availability",
                "Change a reward's availability and send a catalog.item_changed webhook",
                {"200": _ok(contract.RewardWire), "404": _error("reward_not_found")},
                parameters=[
                    {"name": "reward_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
                ],
                body=admin.AvailabilityRequestWire,
                tags=admin_tags,
            )
        },
        "/v1/sandbox/stats": {
            "get": _operation("stats", "Provider-side effect counts", {"200": _ok(admin.StatsWire)}, tags=admin_tags)
        },
        "/oauth/token": {"post": _token_operation()},
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "tags": ["meta"],
                "security": [],
                "responses": {"200": {"description": "OK", "content": _json({"type": "object"})}},
            }
        },
    }


def _fault_header() -> dict[str, Any]:
    """X-Sandbox-Fault, honoured by every port route. A component, not a parameter of each operation: it is a
    test's control, not part of the contract a client must speak (and a fuzzer must not choose faults)."""
    kinds = "|".join((NO_FAULT, *FAULT_KINDS))
    return {
        "name": FAULT_HEADER,
        "in": "header",
        "required": False,
        "description": (
            "This request's fault, taken instead of any scheduled or start-time fault (`none`: answer normally). "
            f"`<kind>[; seconds=<n>]`, seconds from 0 to {MAX_SECONDS:g} for latency, rate_limit_429 (Retry-After), "
            "hang and hang_after_commit. Honoured by the port routes when fault injection is on "
            "(GIFTGRAPH_SANDBOX_FAULT_INJECTION), ignored when it is off; a value it cannot read is a 400."
        ),
        "schema": {"type": "string", "pattern": f"^({kinds})( *; *seconds=[0-9]{{1,3}}(\\.[0-9]{{1,6}})?)?$"},
        "examples": {"reset": {"value": "reset"}, "hang": {"value": "hang; seconds=5"}},
    }


def _token_operation() -> dict[str, Any]:
    oauth_error = {
        "type": "object",
        "properties": {"error": {"enum": ["invalid_request", "invalid_client", "unsupported_grant_type"]}},
        "required": ["error"],
    }
    form = {
        "type": "object",
        "properties": {
            "grant_type": {"const": "client_credentials"},
            "client_id": {"type": "string"},
            "client_secret": {"type": "string"},
        },
        "required": ["grant_type"],
    }
    return {
        "operationId": "token",
        "summary": "OAuth2 client credentials grant (RFC 6749 4.4); client auth in the form or by HTTP Basic",
        "tags": ["auth"],
        "security": [],
        "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": form}}},
        "responses": {
            "200": _ok(contract.TokenWire),
            "400": {"description": "RFC 6749 5.2 error", "content": _json(oauth_error)},
            "401": {"description": "invalid_client", "content": _json(oauth_error)},
            "429": COMMON_ERRORS["429"],
        },
    }


def _webhooks() -> dict[str, Any]:
    headers = {
        name: {"required": True, "schema": {"type": "string"}, "description": description}
        for name, description in (
            ("webhook-id", "Unique per event, the same on every retry"),
            ("webhook-timestamp", "Unix seconds of this attempt"),
            ("webhook-signature", "Space-separated v1,<base64 HMAC-SHA256 of id.timestamp.body>"),
        )
    }
    data = {
        "points.earned": contract.PointsEarnedData,
        "redemption.fulfilled": contract.RedemptionSettledData,
        "redemption.failed": contract.RedemptionSettledData,
        "catalog.item_changed": contract.CatalogItemChangedData,
    }
    hooks = {}
    for event_type, model in data.items():
        body = {
            "type": "object",
            "properties": {
                "type": {"const": event_type},
                "timestamp": {"type": "string", "format": "date-time"},
                "data": _ref(model),
            },
            "required": ["type", "timestamp", "data"],
        }
        hooks[event_type] = {
            "post": {
                "summary": f"{event_type} (Standard Webhooks, signed with the whsec_ secret)",
                "parameters": [{"name": name, "in": "header", **spec} for name, spec in headers.items()],
                "requestBody": {"required": True, "content": _json(body)},
                "responses": {"2XX": {"description": "Received; anything else is retried with backoff"}},
            }
        }
    return hooks


def build_document() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "serialization") for m in RESPONSE_MODELS]
    models += [(m, "validation") for m in REQUEST_MODELS]
    _, schemas = models_json_schema(models, ref_template=REF)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "giftgraph sandbox provider",
            "version": "1",
            "description": (
                "The sandbox reward provider as a REST service (`giftgraph sandbox serve`). Errors are "
                '{"error": {"code", "message"}}; amounts are decimal strings. Every /v1 route needs '
                "HTTP Basic (api key, api secret) or a Bearer token from /oauth/token."
            ),
        },
        "servers": [{"url": "http://127.0.0.1:9000"}],
        "security": [{"basicAuth": []}, {"oauth2": []}],
        "tags": [
            {
                "name": "port",
                "description": (
                    f"The provider port. Each route honours the {FAULT_HEADER} request header "
                    "(#/components/parameters/SandboxFault) when fault injection is on."
                ),
            },
            {"name": "sandbox admin", "description": "Tests and demos: faults, grants, stock, effect counts"},
        ],
        "paths": _paths(),
        "webhooks": _webhooks(),
        "components": {
            "securitySchemes": {
                "basicAuth": {"type": "http", "scheme": "basic"},
                "oauth2": {
                    "type": "oauth2",
                    "flows": {"clientCredentials": {"tokenUrl": "/oauth/token", "scopes": {}}},
                },
            },
            "parameters": {"SandboxFault": _fault_header()},
            "schemas": schemas["$defs"],
        },
    }


def document_text() -> str:
    return json.dumps(build_document(), indent=2, ensure_ascii=False) + "\n"
