"""The GraphQL schema: Strawberry types wired to the resolver logic."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from graphql import GraphQLError
from strawberry import Schema
from strawberry.extensions import ParserCache, SchemaExtension, ValidationCache
from strawberry.extensions.disable_introspection import DisableIntrospection
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from schema.errors import ErrorCodes, HideSuggestions, RequireOperationName, log_errors
from schema.execution import execution_context_class
from schema.limits import Protection, QueryLimits, Throttle
from schema.mutation import Mutation
from schema.query import Query
from schema.subscription import Subscription
from schema.types import Redemption, Reward, Transaction


class ReportingParserCache(ParserCache):
    """Strawberry's parser cache, except that a document that does not parse is left to Strawberry.

    The cache raises syntax errors from its hook, which Strawberry's subscription path does not
    catch (the client got a bare `complete`); Strawberry's own parse reports them as errors.
    """

    def on_parse(self) -> Iterator[None]:
        try:
            self.execution_context.graphql_document = self.cached_parse_document(
                self.execution_context.query, **self.execution_context.parse_options
            )
        except GraphQLError:
            pass  # parsed again, uncached, by Strawberry, which turns the error into a result
        yield


class GiftgraphSchema(Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        # Only unexpected errors are worth a log line; user errors are the client's business.
        context = execution_context.context if execution_context is not None else None
        log_errors(errors, getattr(context, "request_id", None))


def build_schema(
    *,
    introspection: bool = True,
    field_suggestions: bool = True,
    limits: QueryLimits | None = None,
    throttle: Throttle | None = None,
) -> Schema:
    # Factories, not instances: Strawberry builds fresh extensions per request (an instance would be
    # shared by concurrent requests); the parse and validation LRU caches still live across requests.
    extensions: list[type[SchemaExtension] | Callable[[], SchemaExtension]] = [
        ErrorCodes,
        RequireOperationName,
        lambda: ReportingParserCache(maxsize=256),
        lambda: ValidationCache(maxsize=256),
    ]
    if not introspection:
        extensions.append(DisableIntrospection)
    if not field_suggestions:
        extensions.append(HideSuggestions)
    if limits is not None:
        # First, so the document size is checked before any other hook runs (None: no limits, no budget).
        extensions.insert(0, Protection(limits, throttle).extension)
    return GiftgraphSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[Reward, Transaction, Redemption],
        extensions=extensions,
        execution_context_class=execution_context_class(),
        config=StrawberryConfig(),
    )


def print_sdl() -> str:
    return build_schema().as_str() + "\n"


__all__ = ["build_schema", "print_sdl"]
