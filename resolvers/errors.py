"""Errors resolvers raise for the client to see; the schema turns them into GraphQL errors.

ApiError                the base: a message for users and an `extensions.code`
├── BadUserInput        BAD_USER_INPUT: arguments the API cannot accept
├── Unauthenticated     UNAUTHENTICATED: the operation needs a signed-in user
└── ProviderDown        PROVIDER_UNAVAILABLE: the provider failed and nothing cached can answer
"""

from __future__ import annotations


class ApiError(Exception):
    code = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str, **extensions: object) -> None:
        super().__init__(message)
        self.message = message
        self.extensions = extensions


class BadUserInput(ApiError):
    code = "BAD_USER_INPUT"


class Unauthenticated(ApiError):
    code = "UNAUTHENTICATED"


class ProviderDown(ApiError):
    code = "PROVIDER_UNAVAILABLE"
