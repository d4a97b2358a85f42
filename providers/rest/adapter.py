"""`RestProvider`: the `RewardsProvider` port spoken over HTTP to a service with the sandbox's REST contract.

Every response is validated with the contract's models (providers/rest/contract.py) before it becomes
port data: a body of the wrong shape, a batch of the wrong length or order, or a page outside the window
asked for is a `ProviderMalformedResponse`, never passed on. The shape is checked inside the HTTP call
(its `parse` step), so a provider answering the wrong shape counts against the circuit breaker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from itertools import pairwise
from typing import Any, TypeVar

from pydantic import BaseModel

from providers.base import (
    Balance,
    CallCounts,
    RedeemRequest,
    RedeemResult,
    Redemption,
    Reward,
    RewardPage,
    Transaction,
    TransactionKind,
    TransactionPage,
)
from providers.errors import (
    IdempotencyConflict,
    InsufficientPoints,
    InvalidFaceValue,
    ProviderError,
    ProviderMalformedResponse,
    RedemptionOutcomeUnknown,
    RewardNotFound,
    RewardUnavailable,
)
from providers.events import BalanceChanged, EventHub, RedemptionUpdated
from providers.http import ProviderHttpClient, parse_model
from providers.rest import contract

W = TypeVar("W", bound=BaseModel)
BatchWire = (
    contract.RewardBatchWire | contract.BalanceBatchWire | contract.TransactionBatchWire | contract.RedemptionBatchWire
)

PREFIX = contract.API_PREFIX
# The provider's answers about this key: one that had committed it would have replayed the result
# instead, so these stay what they are even after an earlier attempt's outcome was unknown.
REFUSALS = (InsufficientPoints, RewardNotFound, RewardUnavailable, InvalidFaceValue, IdempotencyConflict)


class RestProvider:
    """The provider port over one `ProviderHttpClient`; retries, auth, limits and breaker live in that layer."""

    name = "rest"

    def __init__(self, *, http: ProviderHttpClient, events: EventHub) -> None:
        self.http = http
        self.calls = CallCounts()
        self._events = events

    # Lifecycle

    async def start(self) -> None:
        await self.http.start()

    async def aclose(self) -> None:
        await self.http.aclose()

    # Port operations

    async def check(self) -> None:
        self.calls.add("check")
        body = await self.http.get(f"{PREFIX}/health", operation="check")
        if not isinstance(body, dict) or body.get("status") != "ok":
            raise self._malformed("check", "the health check did not answer ok")

    async def list_rewards(self, *, cursor: str | None, limit: int) -> RewardPage:
        self.calls.add("list_rewards")
        # The embedded sandbox clamps the page size; the contract refuses one out of range.
        limit = min(max(limit, 1), contract.MAX_PAGE)
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        page = await self.http.get(
            f"{PREFIX}/rewards",
            params=params,
            operation="list_rewards",
            parse=self._parser(contract.RewardPageWire, "list_rewards"),
        )
        if len(page.items) > limit:
            raise self._malformed("list_rewards", f"{len(page.items)} rewards for a page of {limit}")
        return RewardPage(items=tuple(item.to_domain() for item in page.items), next_cursor=page.next_cursor)

    async def get_rewards(self, ids: Sequence[str]) -> list[Reward | None]:
        self.calls.add("get_rewards")
        return await self._lookup("get_rewards", "/rewards/batch", "id", ids, contract.RewardBatchWire)

    async def get_balances(self, user_ids: Sequence[str]) -> list[Balance]:
        self.calls.add("get_balances")
        return await self._lookup("get_balances", "/balances", "user_id", user_ids, contract.BalanceBatchWire)

    async def list_transactions(
        self,
        user_id: str,
        *,
        kinds: frozenset[TransactionKind] | None,
        older_than: int | None,
        newer_than: int | None,
        limit: int,
        from_oldest: bool = False,
    ) -> TransactionPage:
        self.calls.add("list_transactions")
        # The contract serves at most MAX_PAGE per request; `has_more` still tells the caller more exist.
        limit = min(max(limit, 0), contract.MAX_PAGE)
        if kinds is not None and not kinds:
            # No kind matches nothing; on the wire an absent `kind` means every kind.
            return TransactionPage(items=(), total_count=0, has_more=False)
        params: dict[str, Any] = {"user_id": user_id, "limit": limit}
        if kinds is not None:
            params["kind"] = sorted(kind.value for kind in kinds)
        if older_than is not None:
            params["older_than"] = older_than
        if newer_than is not None:
            params["newer_than"] = newer_than
        if from_oldest:
            params["from_oldest"] = "true"
        page = await self.http.get(
            f"{PREFIX}/transactions",
            params=params,
            operation="list_transactions",
            parse=self._parser(contract.TransactionPageWire, "list_transactions"),
        )
        items = [item.to_domain() for item in page.items]
        self._check_transaction_page(
            items, user_id=user_id, kinds=kinds, older_than=older_than, newer_than=newer_than, limit=limit
        )
        return TransactionPage(items=tuple(items), total_count=page.total_count, has_more=page.has_more)

    async def get_transactions(self, ids: Sequence[str]) -> list[Transaction | None]:
        self.calls.add("get_transactions")
        return await self._lookup("get_transactions", "/transactions/batch", "id", ids, contract.TransactionBatchWire)

    async def get_redemptions(self, ids: Sequence[str]) -> list[Redemption | None]:
        self.calls.add("get_redemptions")
        return await self._lookup("get_redemptions", "/redemptions/batch", "id", ids, contract.RedemptionBatchWire)

    async def redeem(self, request: RedeemRequest) -> RedeemResult:
        self.calls.add("redeem")
        wire = contract.RedeemRequestWire(
            user_id=request.user_id, reward_id=request.reward_id, face_value=request.face_value, points=request.points
        )
        key = request.idempotency_key
        try:
            # The layer retries this POST only because it carries the key, the same one on every attempt.
            status, answer = await self.http.post(
                f"{PREFIX}/redemptions",
                json=wire.model_dump(mode="json"),
                operation="redeem",
                idempotency_key=key,
                parse=self._parser(contract.RedeemResultWire, "redeem"),  # a wrong shape: maybe redeemed
            )
            result = self._redeem_result(request, status, answer)
        except REFUSALS:
            raise
        except ProviderError as exc:
            if not exc.maybe_committed:
                raise
            # The provider may hold a redemption under this key: the caller keeps it PENDING and asks
            # again with the same key (a replay) rather than reporting a failure.
            unknown = RedemptionOutcomeUnknown(
                f"rest redeem: the outcome is unknown ({type(exc).__name__}: {exc.message})",
                provider=self.name,
                request_id=exc.request_id,
                status=exc.status,
            )
            # The key the caller must ask again with (providers/errors.py has no constructor argument for it yet).
            unknown.idempotency_key = key  # type: ignore[attr-defined]
            raise unknown from exc
        # A remote provider cannot publish on our hub, so the adapter does. Replays are published too:
        # a replay may be the first answer this gateway gets (the original's response was lost). An
        # answer that comes late (after the webhook that settled it) is dropped by the hub, which lets
        # through only what moves a redemption forward.
        self._events.publish(BalanceChanged(user_id=request.user_id, balance=result.balance))
        self._events.publish(RedemptionUpdated(user_id=request.user_id, redemption=result.redemption))
        return result

    # Helpers

    def _redeem_result(self, request: RedeemRequest, status: int, wire: contract.RedeemResultWire) -> RedeemResult:
        if status not in (200, 201):
            raise self._malformed("redeem", f"unexpected status {status} for a redemption", maybe_committed=True)
        redemption, balance = wire.redemption.to_domain(), wire.balance.to_domain()
        if (redemption.user_id, redemption.reward_id, redemption.points) != (
            request.user_id,
            request.reward_id,
            request.points,
        ) or balance.user_id != request.user_id:
            raise self._malformed("redeem", "the redemption returned is not the one requested", maybe_committed=True)
        return RedeemResult(redemption=redemption, balance=balance, replayed=wire.replayed)

    async def _lookup(
        self, operation: str, path: str, param: str, ids: Sequence[str], model: type[BatchWire]
    ) -> list[Any]:
        """A batch lookup, MAX_BATCH ids per request, each answer checked to hold the ids asked, in order."""
        found: list[Any] = []
        for start in range(0, len(ids), contract.MAX_BATCH):  # no ids: no request
            chunk = list(ids[start : start + contract.MAX_BATCH])
            batch = await self.http.get(
                f"{PREFIX}{path}", params={param: chunk}, operation=operation, parse=self._parser(model, operation)
            )
            items = batch.items
            self._check_batch(operation, chunk, [None if item is None else _id_of(item) for item in items])
            found.extend(None if item is None else item.to_domain() for item in items)
        return found

    def _parser(self, model: type[W], operation: str) -> Callable[[Any], W]:
        """The `parse` step of a call: the body validated against `model`, run by the HTTP layer inside the
        attempt. A wrong shape is a ProviderMalformedResponse naming the failing fields only (pydantic's own
        text would repeat the input, a gift card among it) and a failure the breaker counts."""
        return partial(parse_model, model, provider=self.name, operation=operation)

    def _check_batch(self, operation: str, asked: Sequence[str], answered: Sequence[str | None]) -> None:
        if len(answered) != len(asked):
            raise self._malformed(operation, f"{len(answered)} items for {len(asked)} ids")
        if any(got is not None and got != want for want, got in zip(asked, answered, strict=True)):
            raise self._malformed(operation, "items are not in the order of the ids asked")

    def _check_transaction_page(
        self,
        items: Sequence[Transaction],
        *,
        user_id: str,
        kinds: frozenset[TransactionKind] | None,
        older_than: int | None,
        newer_than: int | None,
        limit: int,
    ) -> None:
        problem = None
        if len(items) > limit:
            problem = f"{len(items)} transactions for a page of {limit}"
        elif any(item.user_id != user_id for item in items):
            problem = "transactions of another user"
        elif kinds is not None and any(item.kind not in kinds for item in items):
            problem = "transactions of a kind not asked for"
        elif any(a.position <= b.position for a, b in pairwise(items)):
            problem = "transactions are not newest first"
        elif items and (
            (older_than is not None and items[0].position >= older_than)
            or (newer_than is not None and items[-1].position <= newer_than)
        ):
            problem = "transactions outside the window asked for"
        if problem is not None:
            raise self._malformed("list_transactions", problem)

    def _malformed(self, operation: str, detail: str, *, maybe_committed: bool = False) -> ProviderMalformedResponse:
        return ProviderMalformedResponse(
            f"{self.name} {operation}: {detail}", provider=self.name, retryable=False, maybe_committed=maybe_committed
        )


def _id_of(item: Any) -> str:
    """What a batch item is keyed by: a balance by its user, everything else by its id."""
    return item.user_id if isinstance(item, contract.BalanceWire) else item.id
