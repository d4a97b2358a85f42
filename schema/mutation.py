"""The Mutation root: redeem, whose clientMutationId makes retries safe."""

from __future__ import annotations

from decimal import Decimal

import strawberry
from strawberry.types import Info

from resolvers.context import RequestContext
from resolvers.errors import BadUserInput
from resolvers.ids import decode_global_id
from resolvers.redeem import RedeemErrorCode as DomainCode
from resolvers.redeem import RedeemOutcome, validate_client_mutation_id
from schema.types import PointBalance, Redemption

RedeemErrorCode = strawberry.enum(DomainCode, name="RedeemErrorCode")


@strawberry.input
class RedeemInput:
    client_mutation_id: str = strawberry.field(
        description="Idempotency key chosen by the client: 1-255 printable ASCII; reuse it on retries."
    )
    reward_id: strawberry.ID
    face_value: Decimal


@strawberry.type
class RedeemUserError:
    code: RedeemErrorCode
    message: str
    field: list[str] | None


@strawberry.type
class RedeemPayload:
    client_mutation_id: str
    balance: PointBalance | None
    user_errors: list[RedeemUserError]
    _redemption_id: strawberry.Private[str | None]

    @strawberry.field
    async def redemption(self, info: Info[RequestContext, None]) -> Redemption | None:
        if self._redemption_id is None:
            return None
        found = await info.context.loaders.redemptions.load(self._redemption_id)
        return None if found is None else Redemption.from_domain(found)

    @classmethod
    def from_outcome(cls, client_mutation_id: str, outcome: RedeemOutcome) -> RedeemPayload:
        return cls(
            client_mutation_id=client_mutation_id,
            balance=None if outcome.balance is None else PointBalance.from_domain(outcome.balance),
            user_errors=[
                RedeemUserError(code=e.code, message=e.message, field=list(e.field) if e.field else None)
                for e in outcome.errors
            ],
            _redemption_id=outcome.redemption_id,
        )


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Redeem a reward with points; safe to retry with the same clientMutationId.")
    async def redeem(self, info: Info[RequestContext, None], input: RedeemInput) -> RedeemPayload:
        ctx = info.context
        user_id = ctx.require_user()
        validate_client_mutation_id(input.client_mutation_id)
        type_name, reward_id = decode_global_id(input.reward_id, argument="input.rewardId")
        if type_name != "Reward":
            raise BadUserInput("rewardId must be the id of a Reward.", argument="input.rewardId")
        outcome = await ctx.services.redeem.redeem(user_id, input.client_mutation_id, reward_id, input.face_value)
        return RedeemPayload.from_outcome(input.client_mutation_id, outcome)
