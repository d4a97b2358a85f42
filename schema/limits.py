"""What an operation may ask for, checked before it runs: document size, tokens, depth, aliases and
query cost; the caller's budget, charged by cost through a Throttle; and the operation deadline.

Cost (Shopify's model): every object is 1 point, scalars and enums 0; a connection's `edges` and
`nodes` count once per item asked for (`first`/`last`, 20 when absent, at most 100), `nodes(ids:)`
once per id; FIELD_COSTS overrides a field's own cost. Lists that are not connections
(`Denomination.faceValues`) count as one object. Introspection (`__schema`, `__type`) is free
and does not count towards the depth. `actualQueryCost` counts the items that connections and
`nodes` really returned, each at its requested cost.

Every refusal is a GraphQL error with an `extensions.code`: DOCUMENT_TOO_LARGE, MAX_TOKENS_EXCEEDED,
MAX_DEPTH_EXCEEDED, MAX_ALIASES_EXCEEDED, MAX_COST_EXCEEDED and RATE_LIMITED before anything runs,
TIMEOUT when the deadline cancels a running operation.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cachetools import LRUCache
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    NamedTypeNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    ValueNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    is_abstract_type,
    is_leaf_type,
    is_list_type,
)
from graphql.language import Visitor, visit
from graphql.utilities import get_operation_ast, value_from_ast_untyped
from strawberry.extensions import SchemaExtension

from resolvers.errors import ApiError
from resolvers.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

# A field's own cost where it is not the default (objects 1, scalars and enums 0); its selections add theirs.
FIELD_COSTS: dict[str, int] = {
    "Mutation.redeem": 10,  # a provider order and a ledger write, not a lookup
}
# List fields whose length an argument gives: the field, the argument.
LIST_SIZE_ARGUMENTS: dict[str, str] = {"Query.nodes": "ids"}
# Fields each of which is one attempt at a sensitive business flow (OWASP API6), limited apart from cost.
ATTEMPT_FIELDS: frozenset[str] = frozenset({"Mutation.redeem"})
CONNECTION_SUFFIX = "Connection"


@dataclass(frozen=True, kw_only=True)
class QueryLimits:
    """The static limits; a value of 0 turns that limit off (timeout_seconds too)."""

    max_cost: int = 1000
    max_depth: int = 10
    max_aliases: int = 30
    max_tokens: int = 2000
    max_document_bytes: int = 16 * 1024
    timeout_seconds: float = 30.0


# The caller's budget. giftgraph/ratelimit.py implements it; the schema only needs this much.


@dataclass(frozen=True, slots=True)
class ThrottleStatus:
    maximum_available: int
    currently_available: int
    restore_rate: float  # points per second


@dataclass(frozen=True, slots=True)
class Charge:
    """The answer of a Throttle: whether the operation may run, and the budget after it."""

    allowed: bool
    status: ThrottleStatus
    retry_after: int = 0  # seconds, when refused
    reason: str = ""  # why it was refused, for the client
    headers: Mapping[str, str] = field(default_factory=dict)  # HTTP headers describing the limits (RateLimit, ...)


class Throttle(Protocol):
    async def charge(self, client: str, *, cost: int, attempts: int) -> Charge:
        """Take `cost` points and `attempts` redeem attempts from the client's budgets, or neither."""
        ...

    async def peek(self, client: str) -> Charge:
        """The client's budget, charging nothing."""
        ...


class QueryRejected(ApiError):
    """An operation refused by a limit; the code says which (ErrorCodes keeps it)."""

    def __init__(self, code: str, message: str, **extensions: object) -> None:
        super().__init__(message, **extensions)
        self.code = code


def rejection(code: str, message: str, nodes: Any = None, **extensions: object) -> GraphQLError:
    # The code is set here too: errors raised from an extension hook skip ErrorCodes.
    original = QueryRejected(code, message, **extensions)
    return GraphQLError(message, nodes, original_error=original, extensions={**extensions, "code": code})


# Document size and tokens: before and while parsing.


def document_too_large(query: str | None, max_bytes: int) -> GraphQLError | None:
    if not query or not max_bytes or len(query) * 4 <= max_bytes:  # UTF-8 needs at most 4 bytes a character
        return None
    size = len(query) if query.isascii() else len(query.encode())
    if size <= max_bytes:
        return None
    return rejection(
        "DOCUMENT_TOO_LARGE", f"The document is {size} bytes; the maximum is {max_bytes}.", maxDocumentBytes=max_bytes
    )


_TOKEN_LIMIT_MESSAGE = "Document contains more than"  # graphql-core's parser, with max_tokens


def tokens_error(error: GraphQLError, max_tokens: int) -> GraphQLError | None:
    if _TOKEN_LIMIT_MESSAGE not in error.message or (error.extensions or {}).get("code") == "MAX_TOKENS_EXCEEDED":
        return None
    return rejection(
        "MAX_TOKENS_EXCEEDED", f"The document has more than {max_tokens} tokens; the maximum is {max_tokens}.",
        maxTokens=max_tokens,
    )


# Depth and aliases: validation rules, so the validation cache remembers their verdict per document.


class _DocumentWalk:
    """Depth and alias counts of selection sets, each fragment measured once (fragment bombs stay linear)."""

    def __init__(self, document: DocumentNode) -> None:
        self.fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        self._depths: dict[str, int] = {}
        self._aliases: dict[str, int] = {}

    def depth(self, selection_set: SelectionSetNode | None) -> int:
        deepest = 0
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                if selection.name.value in ("__schema", "__type"):
                    continue
                deepest = max(deepest, 1 + self.depth(selection.selection_set))
            elif isinstance(selection, InlineFragmentNode):
                deepest = max(deepest, self.depth(selection.selection_set))
            elif isinstance(selection, FragmentSpreadNode):
                deepest = max(deepest, self._fragment(selection.name.value, self._depths, self.depth))
        return deepest

    def aliases(self, selection_set: SelectionSetNode | None) -> int:
        count = 0
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                count += (selection.alias is not None) + self.aliases(selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                count += self.aliases(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                count += self._fragment(selection.name.value, self._aliases, self.aliases)
        return count

    def _fragment(self, name: str, memo: dict[str, int], measure: Callable[[SelectionSetNode], int]) -> int:
        if name not in memo:
            fragment = self.fragments.get(name)
            memo[name] = 0  # a cycle (a validation error of its own) counts nothing more
            memo[name] = measure(fragment.selection_set) if fragment is not None else 0
        return memo[name]


def _operations(context: ValidationContext) -> list[OperationDefinitionNode]:
    return [d for d in context.document.definitions if isinstance(d, OperationDefinitionNode)]


def depth_rule(max_depth: int) -> type[ValidationRule]:
    class MaxDepthRule(ValidationRule):
        """Each operation at most `max_depth` field levels deep (`{ viewer { userId } }` is 2)."""

        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            walk = _DocumentWalk(context.document)
            for operation in _operations(context):
                depth = walk.depth(operation.selection_set)
                if depth > max_depth:
                    name = operation.name.value if operation.name else "The operation"
                    context.report_error(
                        rejection(
                            "MAX_DEPTH_EXCEEDED",
                            f"{name} is {depth} levels deep; the maximum is {max_depth}.",
                            operation,
                            depth=depth,
                            maxDepth=max_depth,
                        )
                    )

    return MaxDepthRule


def aliases_rule(max_aliases: int) -> type[ValidationRule]:
    class MaxAliasesRule(ValidationRule):
        """At most `max_aliases` aliased fields in the document (a fragment counts each time it is spread)."""

        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            walk = _DocumentWalk(context.document)
            count = sum(walk.aliases(operation.selection_set) for operation in _operations(context))
            if count > max_aliases:
                context.report_error(
                    rejection(
                        "MAX_ALIASES_EXCEEDED",
                        f"The document uses {count} aliases; the maximum is {max_aliases}.",
                        aliases=count,
                        maxAliases=max_aliases,
                    )
                )

    return MaxAliasesRule


# Query cost


@dataclass(frozen=True, slots=True)
class FieldCost:
    """The cost of one response key: `count` items of `own` plus the children's cost (those of the costliest
    type behind it). `counted`: the count is a page size or an id list, so the response tells how many
    items really came back; `dynamic`: some field below is counted."""

    key: str
    own: int
    count: int
    counted: bool
    children: tuple[FieldCost, ...]
    item: int  # own plus the children's cost: one item
    dynamic: bool

    @classmethod
    def of(cls, key: str, own: int, count: int, counted: bool, children: tuple[FieldCost, ...]) -> FieldCost:
        dynamic = any(child.counted or child.dynamic for child in children)
        return cls(key, own, count, counted, children, own + _sum(children), dynamic)

    @property
    def requested(self) -> int:
        return self.count * self.item

    def actual(self, value: Any) -> int:
        if value is None:
            return 0
        dynamic = self.dynamic
        if not (self.counted or dynamic):
            return self.requested
        if isinstance(value, list):
            if not dynamic:
                return self.item * sum(item is not None for item in value)
            return sum(self.own + _actual(self.children, item) for item in value if item is not None)
        return self.own + _actual(self.children, value)


def _actual(children: tuple[FieldCost, ...], value: Any) -> int:
    if not isinstance(value, dict):
        return 0
    return sum(child.actual(value.get(child.key)) for child in children)


@dataclass(frozen=True, slots=True)
class OperationCost:
    fields: tuple[FieldCost, ...]
    requested: int
    attempts: int  # ATTEMPT_FIELDS in the operation (each alias one attempt)

    def actual(self, data: Any) -> int:
        return _actual(self.fields, data)


class _CostWalk:
    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: Mapping[str, Any],
    ) -> None:
        self.schema = schema
        self.fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        defaults = {
            d.variable.name.value: value_from_ast_untyped(d.default_value)
            for d in operation.variable_definitions or ()
            if d.default_value is not None
        }
        self.variables = {**defaults, **variables}

    def object_fields(
        self, type_: GraphQLObjectType, selection_sets: list[SelectionSetNode], page: int | None
    ) -> tuple[FieldCost, ...]:
        costs = []
        for key, nodes in self.collect(type_, selection_sets).items():
            cost = self._field(type_, key, nodes, page)
            if cost is not None:
                costs.append(cost)
        return tuple(costs)

    def _field(self, parent: GraphQLObjectType, key: str, nodes: list[FieldNode], page: int | None) -> FieldCost | None:
        name = nodes[0].name.value
        field = parent.fields.get(name)
        if field is None:  # __typename, __schema, __type
            return None
        coordinate = f"{parent.name}.{name}"
        named = get_named_type(field.type)
        if is_leaf_type(named):
            own = FIELD_COSTS.get(coordinate, 0)
            return FieldCost.of(key, own, 1, False, ()) if own else None
        own = FIELD_COSTS.get(coordinate, 1)
        count, counted = 1, False
        if coordinate in LIST_SIZE_ARGUMENTS:
            items = self._argument(nodes[0], LIST_SIZE_ARGUMENTS[coordinate])
            count, counted = (len(items) if isinstance(items, list) else 1), True
        elif page is not None and is_list_type(get_nullable_type(field.type)):
            count, counted = page, True
        sub_page = self._page_size(nodes[0]) if named.name.endswith(CONNECTION_SUFFIX) else None
        selection_sets = [node.selection_set for node in nodes if node.selection_set is not None]
        types = self.schema.get_possible_types(named) if is_abstract_type(named) else [named]
        children: tuple[FieldCost, ...] = ()
        for type_ in types:
            candidate = self.object_fields(type_, selection_sets, sub_page)
            if not children or _sum(candidate) > _sum(children):
                children = candidate
        return FieldCost.of(key, own, count, counted, children)

    def collect(self, type_: GraphQLObjectType, selection_sets: list[SelectionSetNode]) -> dict[str, list[FieldNode]]:
        """The fields by response key, as the executor merges them (directives aside: @skip counts)."""
        fields: dict[str, list[FieldNode]] = {}
        seen: set[int] = set()

        def visit(selection_set: SelectionSetNode) -> None:
            if id(selection_set) in seen:
                return
            seen.add(id(selection_set))
            for selection in selection_set.selections:
                if isinstance(selection, FieldNode):
                    fields.setdefault((selection.alias or selection.name).value, []).append(selection)
                elif isinstance(selection, InlineFragmentNode):
                    if self._applies(selection.type_condition, type_):
                        visit(selection.selection_set)
                elif isinstance(selection, FragmentSpreadNode):
                    fragment = self.fragments.get(selection.name.value)
                    if fragment is not None and self._applies(fragment.type_condition, type_):
                        visit(fragment.selection_set)

        for selection_set in selection_sets:
            visit(selection_set)
        return fields

    def _applies(self, condition: NamedTypeNode | None, type_: GraphQLObjectType) -> bool:
        if condition is None:
            return True
        named = self.schema.get_type(condition.name.value)
        if named is type_:
            return True
        return is_abstract_type(named) and self.schema.is_sub_type(named, type_)  # type: ignore[arg-type]

    def _argument(self, node: FieldNode, name: str) -> Any:
        for argument in node.arguments or ():
            if argument.name.value == name:
                return value_from_ast_untyped(argument.value, self.variables)
        return None

    def _page_size(self, node: FieldNode) -> int:
        sizes = [
            value
            for value in (self._argument(node, "first"), self._argument(node, "last"))
            if isinstance(value, int) and not isinstance(value, bool)
        ]
        # Past the maximum the resolver refuses the page (BAD_USER_INPUT): it costs no more than the largest.
        return min(max(max(sizes), 0), MAX_PAGE_SIZE) if sizes else DEFAULT_PAGE_SIZE


def _sum(costs: tuple[FieldCost, ...]) -> int:
    return sum(cost.requested for cost in costs)


def operation_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: Mapping[str, Any] | None,
) -> OperationCost:
    root = schema.get_root_type(operation.operation)
    if root is None:
        return OperationCost((), 0, 0)
    walk = _CostWalk(schema, document, operation, variables or {})
    fields = walk.object_fields(root, [operation.selection_set], None)
    attempts = 0
    if operation.operation is OperationType.MUTATION:
        for nodes in walk.collect(root, [operation.selection_set]).values():
            attempts += f"{root.name}.{nodes[0].name.value}" in ATTEMPT_FIELDS
    return OperationCost(fields, _sum(fields), attempts)


SIZE_ARGUMENTS = frozenset({"first", "last", *LIST_SIZE_ARGUMENTS.values()})


def sizing_variables(document: DocumentNode) -> tuple[str, ...]:
    """The variables a cost can depend on: those inside page-size and id-list arguments."""
    names: set[str] = set()

    class Sizes(Visitor):
        def enter_argument(self, node: Any, *_: Any) -> None:
            if node.name.value in SIZE_ARGUMENTS:
                names.update(_variables_in(node.value))

    visit(document, Sizes())
    return tuple(sorted(names))


def _variables_in(value: ValueNode) -> Iterator[str]:
    if isinstance(value, VariableNode):
        yield value.name.value
    for child in getattr(value, "values", None) or getattr(value, "fields", None) or ():
        yield from _variables_in(getattr(child, "value", child))


class CostCache:
    """Costs by document, operation and the values of the variables that size it: clients send the same
    few operations, so most requests skip the walk."""

    def __init__(self, maxsize: int = 512) -> None:
        self._sizing: LRUCache[str, tuple[str, ...]] = LRUCache(maxsize)
        self._costs: LRUCache[tuple[Any, ...], OperationCost] = LRUCache(maxsize)

    def cost(
        self,
        schema: GraphQLSchema,
        query: str,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: Mapping[str, Any] | None,
    ) -> OperationCost:
        variables = variables or {}
        if not query:
            return operation_cost(schema, document, operation, variables)
        names = self._sizing.get(query)
        if names is None:
            names = self._sizing[query] = sizing_variables(document)
        sizes = json.dumps([variables.get(name) for name in names], default=str)  # 1, 1.0 and true differ
        key = (query, operation.name.value if operation.name else None, sizes)
        found = self._costs.get(key)
        if found is None:
            found = self._costs[key] = operation_cost(schema, document, operation, variables)
        return found


# The extension


def client_key(context: Any) -> str:
    """Whose budget: the signed-in user's, else the client address's (an IPv6 client's /64: one host
    usually holds a whole /64, and could otherwise take a fresh budget per address)."""
    user_id = getattr(context, "user_id", None)
    if user_id is not None:
        return f"user:{user_id}"
    client = getattr(getattr(context, "request", None), "client", None)
    if client is None:
        return "ip:unknown"
    try:
        address = ipaddress.ip_address(client.host)
    except ValueError:
        return f"ip:{client.host}"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"ip:{address.ipv4_mapped}"
        return f"ip:{ipaddress.IPv6Network((address, 64), strict=False)}"
    return f"ip:{address}"


def http_response(context: Any) -> Any:
    """The HTTP sub-response whose status and headers the view sends, or None (a WebSocket)."""
    response = getattr(context, "response", None)
    return response if hasattr(response, "status_code") else None


class Protection:
    """Built once per schema: the limits, the budget, and validation rules the validation cache can key on."""

    def __init__(self, limits: QueryLimits, throttle: Throttle | None = None) -> None:
        self.limits = limits
        self.throttle = throttle
        rules: list[type[ValidationRule]] = []
        if limits.max_depth:
            rules.append(depth_rule(limits.max_depth))
        if limits.max_aliases:
            rules.append(aliases_rule(limits.max_aliases))
        self.rules = tuple(rules)
        self.costs = CostCache()

    def extension(self) -> QueryProtection:
        return QueryProtection(self)


class QueryProtection(SchemaExtension):
    """One operation's checks, charge, deadline and `extensions.cost` (a new instance per operation)."""

    def __init__(self, protection: Protection) -> None:
        super().__init__()
        self.protection = protection
        self.cost: OperationCost | None = None
        self.charge: Charge | None = None

    def on_operation(self) -> Iterator[None]:
        ctx = self.execution_context
        limits = self.protection.limits
        too_large = document_too_large(ctx.query, limits.max_document_bytes)
        if too_large is not None:
            # Refuse before parsing. Raising from this hook would escape Strawberry's subscription
            # path (a WebSocket client got a bare `complete`); instead the parser stops at its first
            # token, Strawberry reports that as a result on every transport, and it is replaced below.
            ctx.parse_options["max_tokens"] = 1
        elif limits.max_tokens:
            ctx.parse_options["max_tokens"] = limits.max_tokens
        ctx.validation_rules = ctx.validation_rules + self.protection.rules
        yield  # parse errors come back in the result (schema.ReportingParserCache), not raised here
        result = ctx.result
        if result is not None and result.errors:
            if too_large is not None:
                result.errors = [too_large]
            else:
                result.errors = [tokens_error(error, limits.max_tokens) or error for error in result.errors]

    async def on_execute(self) -> AsyncIterator[None]:
        ctx = self.execution_context
        limits = self.protection.limits
        document = ctx.graphql_document
        operation = get_operation_ast(document, ctx.operation_name) if document is not None else None
        if operation is None:  # Strawberry reports it
            yield
            return
        schema = ctx.schema._schema
        self.cost = cost = self.protection.costs.cost(schema, ctx.query or "", document, operation, ctx.variables)
        if limits.max_cost and cost.requested > limits.max_cost:
            raise rejection(
                "MAX_COST_EXCEEDED",
                f"This operation would cost {cost.requested} points; the maximum is {limits.max_cost}. "
                "Ask for fewer items (first/last) or fewer fields.",
                requestedQueryCost=cost.requested,
                maxCost=limits.max_cost,
            )
        throttle = self.protection.throttle
        if throttle is not None:
            self.charge = charge = await throttle.charge(
                client_key(ctx.context), cost=cost.requested, attempts=cost.attempts
            )
            if not charge.allowed:
                response = http_response(ctx.context)
                if response is not None:
                    response.status_code = 429
                    response.headers["Retry-After"] = str(charge.retry_after)
                raise rejection("RATE_LIMITED", charge.reason, retryAfter=charge.retry_after)
        if not limits.timeout_seconds or operation.operation is OperationType.SUBSCRIPTION:
            yield
            return
        deadline = asyncio.timeout(limits.timeout_seconds)
        try:
            async with deadline:
                yield
        except TimeoutError:
            if not deadline.expired():
                raise
            response = http_response(ctx.context)
            if response is not None:
                response.status_code = 504
            raise rejection(
                "TIMEOUT",
                f"The operation ran longer than {limits.timeout_seconds:g} seconds and was cancelled. Retry it; "
                "a redeem retried with the same clientMutationId is never carried out twice.",
                timeoutSeconds=limits.timeout_seconds,
            ) from None

    async def get_results(self) -> dict[str, Any]:
        ctx = self.execution_context
        response = http_response(ctx.context)
        if response is None:  # subscription events over a WebSocket carry no cost
            return {}
        cost = self.cost
        throttle = self.protection.throttle
        charge = self.charge
        if charge is None and throttle is not None:
            charge = await throttle.peek(client_key(ctx.context))
        if charge is not None:
            for name, value in charge.headers.items():
                response.headers[name] = value
        requested = cost.requested if cost is not None else 0
        result = ctx.result
        ran = cost is not None and result is not None and (self.charge is None or self.charge.allowed)
        report: dict[str, Any] = {
            "requestedQueryCost": requested,
            "actualQueryCost": cost.actual(getattr(result, "data", None)) if ran else 0,  # type: ignore[union-attr]
        }
        if charge is not None:
            status = charge.status
            report["throttleStatus"] = {
                "maximumAvailable": status.maximum_available,
                "currentlyAvailable": status.currently_available,
                "restoreRate": _number(status.restore_rate),
            }
        return {"cost": report}


def _number(value: float) -> float | int:
    return int(value) if math.isfinite(value) and value == int(value) else value


__all__ = [
    "ATTEMPT_FIELDS",
    "FIELD_COSTS",
    "Charge",
    "OperationCost",
    "Protection",
    "QueryLimits",
    "QueryProtection",
    "QueryRejected",
    "Throttle",
    "ThrottleStatus",
    "operation_cost",
]
