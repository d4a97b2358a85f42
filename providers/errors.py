"""Errors a provider adapter may raise; adapters translate foreign errors into these.

ProviderError                       base: carries what is needed to debug, never a secret
├── InsufficientPoints              the user's balance cannot cover the debit
├── PointsLimitExceeded             a credit would take a balance past the most points an account holds
├── RewardNotFound                  no reward with that id
├── RewardUnavailable               the reward is out of stock or discontinued
├── InvalidFaceValue                the face value is not one the reward allows
├── IdempotencyConflict             the idempotency key was used with other parameters
├── ProviderAuthenticationFailed    the provider rejected our credentials (401/403, bad client)
├── ProviderPermanentFailure        the provider refused the request; repeating it will not help
├── RedemptionOutcomeUnknown        the redemption may have been committed; only the provider knows
└── ProviderUnavailable             the provider could not be reached or failed; temporary
    ├── ProviderRateLimited         the provider asked us to slow down (429, `retry_after`)
    ├── ProviderTimeout             no answer in time (connect, read, write, pool or call budget)
    ├── ProviderConnectionError     the connection failed or dropped
    ├── ProviderMalformedResponse   the answer was cut short, not JSON, or of the wrong shape
    ├── ProviderCircuitOpen         failing fast: the provider failed repeatedly, nothing was sent
    └── FundingInsufficient         the company account at the seller cannot pay (402): nothing ordered

Every error carries `provider`, `status` (HTTP status, when there was one), `retry_after`
(seconds, when the provider said), `request_id` (the provider's, for its support),
`retryable` and `maybe_committed`: True when the request may have been processed without us
learning the answer (a redemption must then be reconciled, never assumed failed).
"""

from __future__ import annotations


class ProviderError(Exception):
    """Base of every provider failure."""

    retryable: bool = False  # the failure is temporary: the same call may succeed later
    maybe_committed: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        request_id: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
        maybe_committed: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.request_id = request_id
        self.status = status
        self.retry_after = retry_after
        # None keeps the class default, so `ProviderUnavailable("...")` stays retryable as before.
        if retryable is not None:
            self.retryable = retryable
        if maybe_committed is not None:
            self.maybe_committed = maybe_committed


class InsufficientPoints(ProviderError):
    """The user's available points do not cover the redemption."""


class PointsLimitExceeded(ProviderError):
    """A credit would take the user's points (available and reserved) past what an account may hold."""


class RewardNotFound(ProviderError):
    """The provider knows no reward with that id."""


class RewardUnavailable(ProviderError):
    """The reward exists but cannot be redeemed now (out of stock, discontinued)."""


class InvalidFaceValue(ProviderError):
    """The face value is not allowed for the reward (not a listed value or out of range)."""


class IdempotencyConflict(ProviderError):
    """The idempotency key was already used for a different request."""


class ProviderAuthenticationFailed(ProviderError):
    """The provider rejected our credentials or token; a configuration problem, not a user's."""


class ProviderPermanentFailure(ProviderError):
    """The provider refused the request for a reason a retry will not fix (a 4xx we do not model)."""


class RedemptionOutcomeUnknown(ProviderError):
    """The redemption request may have been committed but its answer was lost: reconcile it."""

    maybe_committed = True


class ProviderUnavailable(ProviderError):
    """The provider did not answer or answered with a failure; the call may be retried."""

    retryable = True


class ProviderRateLimited(ProviderUnavailable):
    """The provider answered 429; `retry_after` says when to come back, when it said."""


class ProviderTimeout(ProviderUnavailable):
    """The provider did not answer within a timeout or the call's time budget."""


class ProviderConnectionError(ProviderUnavailable):
    """The connection could not be opened, or broke before the answer arrived."""


class ProviderMalformedResponse(ProviderUnavailable):
    """The provider's answer was truncated, not JSON, or did not have the documented shape."""


class ProviderCircuitOpen(ProviderUnavailable):
    """The circuit breaker is open after repeated failures: the call failed fast, nothing was sent."""




class FundingInsufficient(ProviderUnavailable):
    """The seller refused the order because the company account cannot pay for it (HTTP 402).

    To the user it is the provider being unavailable; to the saga it is a definite refusal: nothing was
    ordered, so the points go back (unless an earlier attempt of the same call may have been committed).
    """

    retryable = False


__all__ = [
    "FundingInsufficient",
    "IdempotencyConflict",
    "InsufficientPoints",
    "InvalidFaceValue",
    "PointsLimitExceeded",
    "ProviderAuthenticationFailed",
    "ProviderCircuitOpen",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderMalformedResponse",
    "ProviderPermanentFailure",
    "ProviderRateLimited",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RedemptionOutcomeUnknown",
    "RewardNotFound",
    "RewardUnavailable",
]
