"""Errors at the GraphQL boundary: every error gets an `extensions.code`; unexpected ones are masked.

ApiError from the resolvers keeps its message and code. Parse and validation
errors keep their message (clients need it). Anything else is an internal error:
its message and trace go to the log with the request id, never to the client.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from resolvers.errors import ApiError

logger = logging.getLogger("giftgraph.errors")

INTERNAL_MESSAGE = "Internal server error."


def is_unexpected(error: GraphQLError) -> bool:
    original = error.original_error
    return original is not None and not isinstance(original, (ApiError, GraphQLError)) and error.path is not None


def classify(error: GraphQLError) -> str:
    original = error.original_error
    if isinstance(original, ApiError):
        return original.code
    if error.path is not None:
        return "INTERNAL_SERVER_ERROR"
    if error.message.startswith("Syntax Error"):
        return "GRAPHQL_PARSE_FAILED"
    if error.message.startswith("Variable "):
        return "BAD_USER_INPUT"  # a variable of the wrong type or shape
    return "GRAPHQL_VALIDATION_FAILED"


def log_errors(errors: list[GraphQLError], request_id: str | None) -> None:
    for error in errors:
        if is_unexpected(error):
            logger.error(
                "unexpected error in %s",
                ".".join(str(p) for p in error.path or ()),
                exc_info=error.original_error,
                extra={"request_id": request_id},
            )


class ErrorCodes(SchemaExtension):
    """Sets `extensions.code` on every error and masks the unexpected ones."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is not None and result.errors:
            result.errors = [self._translate(error) for error in result.errors]

    def _translate(self, error: GraphQLError) -> GraphQLError:
        code = classify(error)
        if code == "INTERNAL_SERVER_ERROR":
            return GraphQLError(
                INTERNAL_MESSAGE,
                nodes=error.nodes,
                path=error.path,
                extensions={"code": code, "requestId": getattr(self.execution_context.context, "request_id", None)},
            )
        extensions = dict(error.extensions or {})
        original = error.original_error
        if isinstance(original, ApiError):
            extensions.update(original.extensions)
        extensions["code"] = code
        error.extensions = extensions
        return error
