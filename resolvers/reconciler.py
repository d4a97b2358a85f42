"""The reconciler: settles redemptions left PENDING because the provider's answer never arrived.

It asks again with the recorded request and the same idempotency key until the provider
answers, so each clientMutationId ends with exactly one provider redemption, also after a
crash: keys of a dead process are found by their lapsed lease when the next one starts.
"""

from __future__ import annotations

import asyncio
import logging

from resolvers.idempotency import IdempotencyStore
from resolvers.redeem import RedeemErrorCode, RedeemService

logger = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self,
        service: RedeemService,
        store: IdempotencyStore,
        *,
        interval: float,
        batch_size: int = 50,
        abandoned_after: float = 3600.0,
    ) -> None:
        self._service = service
        self._store = store
        self._interval = interval
        self._batch = batch_size
        self._abandoned_after = abandoned_after
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> int:
        """One pass over the unsettled keys; how many got a final outcome."""
        settled = 0
        for item in await self._store.unsettled(limit=self._batch):
            if self._stopping.is_set():
                break
            outcome = await self._service.resume(item.user_id, item.key, item.fingerprint)
            if outcome is not None and not any(
                e.code is RedeemErrorCode.REDEMPTION_IN_PROGRESS for e in outcome.errors
            ):
                settled += 1
        # Claims whose holder died before sending anything block nothing (a retry takes them over),
        # but would pile up: drop them once they are long dead.
        await self._store.drop_abandoned(older_than=self._abandoned_after)
        return settled

    def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name="giftgraph-reconciler")

    async def stop(self, *, grace: float = 5.0) -> None:
        """Let a pass in progress finish (up to `grace` seconds), then cancel."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        # The first pass runs at once: after a restart, what the last process left is settled first.
        while not self._stopping.is_set():
            try:
                settled = await self.run_once()
                if settled:
                    logger.info("reconciler settled redemptions", extra={"settled": settled})
            except Exception:
                logger.exception("reconciler pass failed")
            try:
                await asyncio.wait_for(self._stopping.wait(), self._interval)
            except TimeoutError:
                pass
