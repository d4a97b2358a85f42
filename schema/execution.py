"""A faster path through graphql-core for plain leaf fields (strings, numbers, enums).

Strawberry's executor makes a path, a resolve info and a resolver call for every
field; a catalog page has some 1,250 of them. This execution context reads plain
attribute fields in the loop over an object's fields and leaves everything else
to graphql-core. It relies on graphql-core 3.3's executor methods, so it is used
only when their signatures match (`execution_context_class()`); otherwise
Strawberry's own execution context runs. tests/test_execution.py proves both give
the same results and errors.
"""

from __future__ import annotations

import inspect
import weakref
from datetime import datetime
from decimal import Decimal
from typing import Any

from graphql import GraphQLLeafType, GraphQLNonNull, GraphQLObjectType, GraphQLOutputType, GraphQLSchema, is_leaf_type
from graphql.pyutils import Path, Undefined
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

try:  # graphql-core 3.3; without it Strawberry's own execution context is used
    from graphql.pyutils import gather_with_cancel
except ImportError:  # pragma: no cover
    gather_with_cancel = None


# Values that are never awaitable: no need to ask (Decimal and datetime take the slow path there).
_PLAIN_VALUES = frozenset({str, int, float, bool, Decimal, datetime})
_NOT_PLAIN = object()  # a plain leaf field holding an awaitable: the normal path awaits it
# (attribute name, leaf type, the declared type for error handling, non-null?) of a plain leaf field
_LeafPlan = tuple[str, GraphQLLeafType, GraphQLOutputType, bool]


def _plain_leaf_fields(schema: GraphQLSchema) -> dict[GraphQLObjectType, dict[str, _LeafPlan]]:
    """The fields that only read an attribute holding a scalar or enum, by type and field name.

    Those are Strawberry's "basic" fields (no resolver, no permission or field extension,
    hence no use for an info object) without arguments, under the default attribute resolver.
    """
    strawberry_schema = getattr(schema, "_strawberry_schema", None)
    if strawberry_schema is None or strawberry_schema.config.default_resolver is not getattr:
        return {}
    plans: dict[GraphQLObjectType, dict[str, _LeafPlan]] = {}
    for graphql_type in schema.type_map.values():
        if not isinstance(graphql_type, GraphQLObjectType) or graphql_type.name.startswith("__"):
            continue
        for name, field in graphql_type.fields.items():
            definition = (field.extensions or {}).get("strawberry-definition")
            if definition is None or field.args or not getattr(field.resolve, "_is_default", False):
                continue
            non_null = isinstance(field.type, GraphQLNonNull)
            inner = field.type.of_type if non_null else field.type
            if is_leaf_type(inner):
                plans.setdefault(graphql_type, {})[name] = (definition.python_name, inner, field.type, non_null)
    return plans


class PlainLeafExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's execution context with a short path for plain leaf fields.

    A catalog page is some 1,250 fields, most of them strings, numbers and enums read
    straight off an attribute. For each, graphql-core makes a path, a resolve info and a
    resolver call, then walks its completion machinery; here the attribute is read and
    coerced in the loop over an object's fields, and errors are located as graphql-core
    locates them. Everything else (resolvers, objects, lists, awaitables, arguments,
    resolve middleware from extensions) takes graphql-core's own path, and the result
    is the same, key order included. `execute_fields` follows graphql-core 3.3's; the
    class is used only when the executor has the shape it was written for.
    """

    _plans: weakref.WeakKeyDictionary[GraphQLSchema, dict[GraphQLObjectType, dict[str, _LeafPlan]]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        plans = self._plans.get(self.schema)
        if plans is None:
            plans = self._plans[self.schema] = _plain_leaf_fields(self.schema)
        middleware = self.middleware_manager
        self._leaf_plans = {} if middleware is not None and middleware.middlewares else plans

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: Any,
        position_context: Any,
    ) -> Any:
        plans = self._leaf_plans.get(parent_type)
        if plans is None:
            return super().execute_fields(parent_type, source_value, path, grouped_field_set, position_context)
        results: dict[str, Any] = {}
        is_awaitable = self.is_awaitable
        awaitable_fields: list[str] = []
        try:
            for response_name, field_details_list in grouped_field_set.items():
                node = field_details_list[0].node
                plan = None if node.arguments else plans.get(node.name.value)
                if plan is not None:
                    value = self._plain_leaf(plan, parent_type, source_value, field_details_list, path, response_name)
                    if value is not _NOT_PLAIN:
                        results[response_name] = value
                        continue
                field_path = Path(path, response_name, parent_type.name)
                result = self.execute_field(parent_type, source_value, field_details_list, field_path, position_context)
                if result is not Undefined:
                    results[response_name] = result
                    if is_awaitable(result):
                        awaitable_fields.append(response_name)
        except Exception:
            if awaitable_fields:
                # Settle the awaitables other fields created: they may fail too.
                self.settle_in_background([results[name] for name in awaitable_fields])
            raise
        if not awaitable_fields:
            return results
        return _gather_fields(results, awaitable_fields)

    def _plain_leaf(
        self,
        plan: _LeafPlan,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: Any,
        path: Path | None,
        response_name: str,
    ) -> Any:
        attribute, leaf_type, return_type, non_null = plan
        try:
            value = getattr(source, attribute)
            if value is None:
                if non_null:
                    field_name = field_details_list[0].node.name.value
                    raise TypeError(f"Cannot return null for non-nullable field {parent_type.name}.{field_name}.")
                return None
            if type(value) not in _PLAIN_VALUES and self.is_awaitable(value):
                return _NOT_PLAIN
            return self.complete_leaf_value(leaf_type, value)
        except Exception as raw_error:
            field_path = Path(path, response_name, parent_type.name)
            self.handle_field_error(raw_error, return_type, field_details_list, field_path)
            return None


async def _gather_fields(results: dict[str, Any], awaitable_fields: list[str]) -> dict[str, Any]:
    """`results` with its awaitable values awaited, as graphql-core's execute_fields does."""
    if len(awaitable_fields) == 1:
        name = awaitable_fields[0]
        results[name] = await results[name]
    else:
        awaited = await gather_with_cancel(*(results[name] for name in awaitable_fields))
        results.update(zip(awaitable_fields, awaited, strict=True))
    return results


def execution_context_class() -> type | None:
    """The short path where graphql-core's executor has the shape it was written for; else Strawberry's own."""
    base = StrawberryGraphQLCoreExecutionContext
    if gather_with_cancel is None:
        return None
    expected = {
        "execute_fields": ["self", "parent_type", "source_value", "path", "grouped_field_set", "position_context"],
        "execute_field": ["self", "parent_type", "source", "field_details_list", "path", "position_context"],
        "handle_field_error": ["self", "raw_error", "return_type", "field_details_list", "path"],
        "settle_in_background": ["self", "awaitables"],
        "complete_leaf_value": ["return_type", "result"],
    }
    try:
        shapes = {name: list(inspect.signature(getattr(base, name)).parameters) for name in expected}
    except (AttributeError, TypeError, ValueError):
        return None
    return PlainLeafExecutionContext if shapes == expected else None
