"""The sandbox service's admin routes (tests and demos): schedule faults, grant points, change a reward's
availability, and count the provider-side effects. The two that change state send webhooks.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from providers.base import RewardAvailability
from providers.rest.contract import (
    BalanceWire,
    CatalogItemChangedData,
    Id,
    PointsEarnedData,
    RewardWire,
    TransactionWire,
    Wire,
)
from providers.sandbox.service_api import (
    MAX_POINTS,
    Handler,
    InvalidRequest,
    error_response,
    json_body,
    provider_of,
    wire,
)
from providers.sandbox.service_faults import FaultPlan
from providers.sandbox.webhook_sender import WebhookSender


class FaultRequestWire(Wire):  # POST /v1/sandbox/faults
    operation: Annotated[str, Field(min_length=1, max_length=64)]
    fault: Annotated[str, Field(min_length=1, max_length=64)]
    times: Annotated[int, Field(ge=1, le=10_000)] = 1
    seconds: Annotated[float, Field(ge=0, le=300)] | None = None


class ScheduledFaultWire(Wire):
    operation: str
    fault: str
    times: int
    seconds: float


class FaultListWire(Wire):  # the faults still waiting for their operation
    faults: list[ScheduledFaultWire]


class GrantRequestWire(Wire):  # POST /v1/sandbox/grants
    user_id: Id
    points: Annotated[int, Field(gt=0, le=MAX_POINTS)]
    description: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class GrantResultWire(Wire):
    transaction: TransactionWire
    balance: BalanceWire


class AvailabilityRequestWire(Wire):  # PUT /v1/sandbox/rewards/{id}/availability
    availability: Literal["AVAILABLE", "OUT_OF_STOCK", "DISCONTINUED"]


class StatsWire(Wire):  # GET /v1/sandbox/stats: provider-side effect counts
    calls: dict[str, int]
    redemptions: int
    redeem_transactions: int
    redemptions_by_key: dict[str, int]


def _faults(request: Request) -> FaultPlan:
    return request.app.state.faults


def _webhooks(request: Request) -> WebhookSender | None:
    return request.app.state.webhooks


def _fault_list(plan: FaultPlan) -> Response:
    return wire(FaultListWire.model_validate({"faults": plan.pending()}))


async def schedule_fault(request: Request) -> Response:
    body: FaultRequestWire = await json_body(request, FaultRequestWire)
    plan = _faults(request)
    try:
        plan.schedule(body.operation, body.fault, times=body.times, seconds=body.seconds)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    return _fault_list(plan)


async def clear_faults(request: Request) -> Response:
    plan = _faults(request)
    plan.clear()
    return _fault_list(plan)


async def grant(request: Request) -> Response:
    body: GrantRequestWire = await json_body(request, GrantRequestWire)
    kwargs = {} if body.description is None else {"description": body.description}
    transaction, balance = await provider_of(request).grant(body.user_id, body.points, **kwargs)
    sender = _webhooks(request)
    if sender is not None:
        sender.send(
            "points.earned",
            PointsEarnedData(
                user_id=body.user_id,
                points=body.points,
                transaction_id=transaction.id,
                balance=BalanceWire.of(balance),
            ),
        )
    return wire(GrantResultWire(transaction=TransactionWire.of(transaction), balance=BalanceWire.of(balance)))


async def set_availability(request: Request) -> Response:
    reward_id: str = request.path_params["reward_id"]
    body: AvailabilityRequestWire = await json_body(request, AvailabilityRequestWire)
    provider = provider_of(request)
    if reward_id not in {reward.id for reward in provider.catalog}:
        return error_response("reward_not_found", f"no reward {reward_id!r}")
    reward = provider.set_availability(reward_id, RewardAvailability(body.availability))
    sender = _webhooks(request)
    if sender is not None:
        sender.send("catalog.item_changed", CatalogItemChangedData(reward_id=reward.id, availability=body.availability))
    return wire(RewardWire.of(reward))


async def stats(request: Request) -> Response:
    provider = provider_of(request)
    counts = await provider.effect_counts()
    return wire(
        StatsWire(
            calls=dict(provider.calls.counts),
            redemptions=counts.redemptions,
            redeem_transactions=counts.redeem_transactions,
            redemptions_by_key=counts.redemptions_by_key,
        )
    )


# (path, method, handler)
ADMIN_ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("/v1/sandbox/faults", "POST", schedule_fault),
    ("/v1/sandbox/faults", "DELETE", clear_faults),
    ("/v1/sandbox/grants", "POST", grant),
    ("/v1/sandbox/rewards/{reward_id}/availability", "PUT", set_availability),
    ("/v1/sandbox/stats", "GET", stats),
)
