"""Errors a provider adapter may raise; adapters translate foreign errors into these.

ProviderError                   base: carries what is needed to debug, never a secret
├── InsufficientPoints          the user's balance cannot cover the debit
├── RewardNotFound              no reward with that id
├── RewardUnavailable           the reward is out of stock or discontinued
├── InvalidFaceValue            the face value is not one the reward allows
├── IdempotencyConflict         the idempotency key was used with other parameters
└── ProviderUnavailable         the provider could not be reached or failed; retryable
"""

from __future__ import annotations


class ProviderError(Exception):
    """Base of every provider failure."""

    retryable: bool = False

    def __init__(self, message: str, *, provider: str = "", request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.request_id = request_id


class InsufficientPoints(ProviderError):
    """The user's available points do not cover the redemption."""


class RewardNotFound(ProviderError):
    """The provider knows no reward with that id."""


class RewardUnavailable(ProviderError):
    """The reward exists but cannot be redeemed now (out of stock, discontinued)."""


class InvalidFaceValue(ProviderError):
    """The face value is not allowed for the reward (not a listed value or out of range)."""


class IdempotencyConflict(ProviderError):
    """The idempotency key was already used for a different request."""


class ProviderUnavailable(ProviderError):
    """The provider did not answer or answered with a failure; the call may be retried."""

    retryable = True


__all__ = [
    "IdempotencyConflict",
    "InsufficientPoints",
    "InvalidFaceValue",
    "ProviderError",
    "ProviderUnavailable",
    "RewardNotFound",
    "RewardUnavailable",
]
