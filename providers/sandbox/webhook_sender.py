"""The sandbox service's outgoing webhooks: Standard Webhooks signed POSTs, delivered in the background.

Each event gets one `webhook-id` and one body, both kept on every attempt; each attempt is signed
afresh (its own `webhook-timestamp`) so a late retry still falls inside the receiver's tolerance.
Connection errors, timeouts, 408, 429 and 5xx are retried with capped exponential backoff and full
jitter (tenacity); any other answer is final.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from pydantic import BaseModel
from standardwebhooks import Webhook
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 429})
KEPT_DELIVERIES = 1000  # the record tests read; the oldest are forgotten beyond it
USER_AGENT = "giftgraph-sandbox-webhooks/1"


@dataclass(frozen=True, kw_only=True)
class WebhookRetry:
    max_attempts: int = 8  # the first included
    base_delay: float = 0.5  # full jitter: wait uniform(0, min(max_delay, base_delay * 2**n))
    max_delay: float = 30.0
    timeout: float = 5.0  # per attempt
    concurrency: int = 16  # deliveries in flight at once
    drain_seconds: float = 2.0  # on shutdown, how long deliveries in flight may finish

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.concurrency < 1:
            raise ValueError("max_attempts and concurrency must be at least 1")
        if min(self.base_delay, self.max_delay, self.drain_seconds) < 0 or self.timeout <= 0:
            raise ValueError("webhook delays must not be negative and the timeout must be positive")


@dataclass(slots=True)
class Delivery:
    """What happened to one event so far (for tests and the log)."""

    id: str
    type: str
    attempts: int = 0
    last_status: int | None = None  # None: no answer (connection error, timeout)
    delivered: bool = False
    gave_up: bool = False


class DeliveryRefused(Exception):
    """The receiver answered with a status other than 2xx."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"the webhook receiver answered {status}")
        self.status = status
        self.retry_after = retry_after


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):  # connect errors, timeouts, dropped connections
        return True
    return isinstance(exc, DeliveryRefused) and (exc.status >= 500 or exc.status in RETRYABLE_STATUSES)


class WebhookSender:
    """Sends signed events to one URL; `send` returns at once and delivery runs in a background task."""

    def __init__(
        self,
        *,
        url: str,
        secret: str,
        retry: WebhookRetry = WebhookRetry(),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self.retry = retry
        self._signer = Webhook(secret)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None
        self._backoff = wait_random_exponential(multiplier=retry.base_delay, max=retry.max_delay)
        self.deliveries: OrderedDict[str, Delivery] = OrderedDict()

    async def start(self) -> None:
        self._slots = asyncio.Semaphore(self.retry.concurrency)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.retry.timeout),
            transport=self._transport,
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
        )

    async def aclose(self) -> None:
        """Let deliveries in flight finish for `drain_seconds`, cancel the rest, close the client."""
        client, self._client = self._client, None
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.retry.drain_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if pending:
                logger.warning("webhooks: %d deliveries abandoned at shutdown", len(pending))
        if client is not None:
            await client.aclose()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def send(self, event_type: str, data: BaseModel) -> str:
        """Queue one event (`{"type", "timestamp", "data"}`) for delivery; its webhook-id."""
        delivery = Delivery(id=f"msg_{uuid.uuid4().hex}", type=event_type)
        self.deliveries[delivery.id] = delivery
        while len(self.deliveries) > KEPT_DELIVERIES:
            self.deliveries.popitem(last=False)
        if self._client is None:
            delivery.gave_up = True
            logger.warning("webhooks: %s %s dropped: the sender is closed", event_type, delivery.id)
            return delivery.id
        body = json.dumps(
            {"type": event_type, "timestamp": datetime.now(UTC).isoformat(), "data": data.model_dump(mode="json")},
            separators=(",", ":"),
        )
        task = asyncio.create_task(self._deliver(delivery, body), name=f"webhook-{delivery.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return delivery.id

    async def _deliver(self, delivery: Delivery, body: str) -> None:
        assert self._slots is not None
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry.max_attempts),
            wait=self._wait,
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        async with self._slots:
            try:
                async for attempt in retrying:
                    with attempt:
                        await self._attempt(delivery, body)
            except (httpx.HTTPError, DeliveryRefused) as exc:
                delivery.gave_up = True
                # The type and id identify the event; neither the body nor the URL is logged.
                logger.warning(
                    "webhooks: gave up on %s %s after %d attempts: %s",
                    delivery.type,
                    delivery.id,
                    delivery.attempts,
                    type(exc).__name__ if isinstance(exc, httpx.HTTPError) else exc,
                )
                return
        logger.info("webhooks: %s %s delivered (%d attempts)", delivery.type, delivery.id, delivery.attempts)

    async def _attempt(self, delivery: Delivery, body: str) -> None:
        client = self._client
        if client is None:
            raise httpx.ConnectError("the webhook sender is closed")
        delivery.attempts += 1
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery.id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._signer.sign(delivery.id, now, body),
        }
        try:
            response = await client.post(self.url, content=body.encode("utf-8"), headers=headers)
        except httpx.HTTPError:
            delivery.last_status = None
            raise
        delivery.last_status = response.status_code
        if not response.is_success:
            raise DeliveryRefused(response.status_code, _retry_after(response))
        delivery.delivered = True

    def _wait(self, state: RetryCallState) -> float:
        delay = self._backoff(state)
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, DeliveryRefused) and exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, self.retry.max_delay))
        return delay


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None
