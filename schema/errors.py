"""Errors at the GraphQL boundary: every error gets an `extensions.code`; unexpected ones are masked.

ApiError from the resolvers keeps its message and code. Parse and validation
errors keep their message (clients need it). Anything else is an internal error:
its message and trace go to the log with the request id, never to the client.
HideSuggestions (production) drops graphql-core's "Did you mean ...?" hints.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError, OperationDefinitionNode
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from resolvers.errors import ApiError

logger = logging.getLogger("giftgraph.errors")

INTERNAL_MESSAGE = "Internal server error."


# Strawberry's own complaints about the request (no query, no such operation): the client's doing.
_REQUEST_ERRORS = (MissingQueryError, CannotGetOperationTypeError, InvalidOperationTypeError)


def is_unexpected(error: GraphQLError) -> bool:
    # No `path` check: an exception a subscription's generator raises reaches us without one.
    original = error.original_error
    return original is not None and not isinstance(original, (ApiError, GraphQLError, *_REQUEST_ERRORS))


def classify(error: GraphQLError) -> str:
    original = error.original_error
    if isinstance(original, ApiError):
        return original.code
    if isinstance(original, _REQUEST_ERRORS):
        return "BAD_REQUEST"
    if is_unexpected(error) or error.path is not None:
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
                ".".join(str(p) for p in error.path or ()) or "the operation (no field path)",
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

    def on_stream_result(self, result: Any) -> Iterator[None]:
        # WebSocket results (every subscription event) are sent before on_operation ends:
        # translate each one on its way out.
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = [self._translate(error) for error in errors]
        yield

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


# graphql-core's hints: "Did you mean 'name'?", "Did you mean to use an inline fragment on 'X'?", mid-message
# in variable errors ("... Did you mean 'search'? Found: ..."). GraphQL names never hold a "?".
_SUGGESTION = re.compile(r"\s*Did you mean\b[^?]*\?")


def without_suggestions(error: GraphQLError) -> GraphQLError:
    if isinstance(error.original_error, ApiError) or not _SUGGESTION.search(error.message):
        return error
    # A new error: validation errors are cached and shared across requests.
    return GraphQLError(
        _SUGGESTION.sub("", error.message),
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=error.original_error,
        extensions=error.extensions,
    )


class HideSuggestions(SchemaExtension):
    """Strips "Did you mean ...?" from validation and variable errors: with introspection off, the
    hints would still spell out the schema one guess at a time. The rest of each message stays."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is not None and result.errors:
            result.errors = [without_suggestions(error) for error in result.errors]

    def on_stream_result(self, result: Any) -> Iterator[None]:
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = [without_suggestions(error) for error in errors]
        yield


class RequireOperationName(SchemaExtension):
    """A document with several operations must say which one to run (the GraphQL spec's GetOperation;
    GraphQL over HTTP): Strawberry would quietly run the first, which may not be what the client meant."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        # Strawberry's `operation_name` falls back to the first operation's name: ask what was sent.
        provided = getattr(context, "_provided_operation_name", None)
        if document is not None and provided is None:
            operations = sum(isinstance(node, OperationDefinitionNode) for node in document.definitions)
            if operations > 1:
                message = "The document has several operations: say which to run with operationName."
                raise GraphQLError(message, extensions={"code": "BAD_REQUEST"})
        yield
