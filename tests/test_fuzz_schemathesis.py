"""Fuzzing: Schemathesis in GraphQL mode against the live server, with a fixed seed and a bounded run.

Every root field (Query.node, Query.nodes, Query.catalog, Query.viewer, Mutation.redeem) gets
documents Schemathesis generates, valid ones and invalid ones, sent over real HTTP with a Bearer
token. Each response must be no 5xx, a GraphQL response in the spec's format, and data that fits
the schema for the document sent (checked field by field here, aliases and fragments included).

Schemathesis fills in every argument with arbitrary values, so nearly every valid document would
stop at the first argument check (`first` and `last` together, ids that are not ids). Three
times in four, a valid document is made more like a client's before it is sent: optional arguments
dropped at random, and ids, page sizes, face values and idempotency keys drawn from values that
exist, so the resolvers behind the checks run too. Invalid documents are sent as generated.
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import graphql
import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.graphql import nodes
from schemathesis.specs.openapi.checks import negative_data_rejection, response_schema_conformance

from resolvers.ids import encode_global_id
from tests.support import LiveServer, gql, live_server, make_settings, operation, reward_to_redeem

SDL = Path(__file__).resolve().parents[1] / "graphql" / "schema.graphql"
MAX_EXAMPLES = 40  # per root field and generation mode (valid, invalid): 400 documents in all
FUZZ_USER, OTHER_USER = "fuzz-user", "fuzz-other-user"
INT_RANGE = (-(2**31), 2**31 - 1)

# Decimal (a face value) has no built-in strategy: plain amounts, and the awkward ones a client
# might send (exponents, NaN, blanks, words, numbers as Int or Float literals).
schemathesis.graphql.scalar(
    "Decimal",
    st.one_of(
        st.decimals(allow_nan=False, allow_infinity=False).map(lambda value: nodes.String(str(value))),
        st.sampled_from(
            ["0", "-1", "25", "25.00", "0.001", "-0", "1e999999", "1E-999999", "NaN", "Infinity", "", " 5", "ten"]
            + ["9" * 400]
        ).map(nodes.String),
        st.integers().map(nodes.Int),
        st.floats(allow_nan=False, allow_infinity=False).map(nodes.Float),
    ),
)


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # Every protection stays on (static limits, costing, budgets, deadline), but the budgets outlast
    # the run: a fuzzer that only ever saw RATE_LIMITED would test nothing behind it.
    settings = make_settings(
        tmp_path_factory.mktemp("fuzz"), rate_limit_points=10_000_000, redeem_attempts_limit=1_000_000
    )
    with live_server(settings) as server:
        yield server


@pytest.fixture(scope="module")
def live_schema(fuzzed_server: LiveServer) -> Any:
    """The live server's schema, by introspection (as a client would see it)."""
    return schemathesis.graphql.from_url(fuzzed_server.url, timeout=30)


@dataclass(frozen=True)
class KnownValues:
    """Values that exist on the fuzzed server, for documents that get past the argument checks."""

    ids: tuple[str, ...]  # rewards, the fuzz user's redemptions and transactions, another user's redemption
    face_values: tuple[str, ...]


@pytest.fixture(scope="module")
def known_values(fuzzed_server: LiveServer) -> KnownValues:
    redemption_ids, face_values = [], []
    for user, key in ((FUZZ_USER, "fuzz-seed-1"), (OTHER_USER, "fuzz-seed-2")):
        reward = reward_to_redeem(fuzzed_server)
        result = gql(
            fuzzed_server,
            operation("Redeem"),
            {"input": {"clientMutationId": key, "rewardId": reward["rewardId"], "faceValue": reward["faceValue"]}},
            token=fuzzed_server.token(user),
        )
        redemption_ids.append(result["data"]["redeem"]["redemption"]["id"])
        face_values.append(reward["faceValue"])
    history = gql(fuzzed_server, operation("History"), {"first": 10}, token=fuzzed_server.token(FUZZ_USER))
    transaction_ids = [edge["node"]["id"] for edge in history["data"]["viewer"]["history"]["edges"]]
    reward_ids = [encode_global_id("Reward", reward.id) for reward in fuzzed_server.provider.catalog[:20]]
    assert transaction_ids and len(reward_ids) == 20
    return KnownValues(ids=(*reward_ids, *redemption_ids, *transaction_ids), face_values=tuple(face_values))


def like_a_client(query: str, schema: graphql.GraphQLSchema, known: KnownValues, rng: random.Random) -> str:
    """The document with optional arguments dropped at random and some values swapped for real ones."""
    type_info = graphql.TypeInfo(schema)
    key_characters = string.ascii_letters + string.digits + string.punctuation

    class Rewrite(graphql.Visitor):
        def enter_argument(self, node: graphql.ArgumentNode, *_: Any) -> Any:
            argument = type_info.get_argument()
            if argument is not None and not graphql.is_required_argument(argument) and rng.random() < 0.5:
                return graphql.REMOVE
            return None

        def enter_object_field(self, node: graphql.ObjectFieldNode, *_: Any) -> Any:
            if node.name.value == "clientMutationId" and rng.random() < 0.5:
                key = "".join(rng.choices(key_characters, k=rng.randint(1, 40)))
                return graphql.ObjectFieldNode(name=node.name, value=nodes.String(key))
            return None

        def enter_string_value(self, node: graphql.ValueNode, *_: Any) -> Any:
            return self._value()

        def enter_int_value(self, node: graphql.ValueNode, *_: Any) -> Any:
            return self._value()

        def _value(self) -> graphql.ValueNode | None:
            named = graphql.get_named_type(type_info.get_input_type())
            if named is None or rng.random() < 0.5:
                return None
            if named.name == "ID":
                return nodes.String(rng.choice(known.ids))
            if named.name == "Int":
                return nodes.Int(rng.randint(0, 120))
            if named.name == "Decimal":
                return nodes.String(rng.choice(known.face_values))
            return None

    document = graphql.visit(graphql.parse(query), graphql.TypeInfoVisitor(type_info, Rewrite()))
    return graphql.print_ast(document)


# Response conformance beyond Schemathesis' own: the GraphQL over HTTP response format, and data
# whose every value fits the schema type of the field the document asked for.


class SchemaBreach(AssertionError):
    """The response is not what the schema promises for the document sent."""


def response_conforms_to_the_schema(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    if response.status_code >= 500:
        return None  # not_a_server_error reports it
    payload = response.json()
    check_response_format(payload)
    query = case.body if isinstance(case.body, str) else None
    document = _valid_document(case.operation.schema.client_schema, query)
    if document is None:
        # Never executed: an error to say why, and no data.
        if not payload.get("errors") or payload.get("data") is not None:
            raise SchemaBreach(f"an invalid document must get errors and no data, got {payload!r}")
        return None
    if "data" in payload and payload["data"] is not None:
        DataChecker(case.operation.schema.client_schema, document).check_root(payload["data"])
    return None


def check_response_format(payload: Any) -> None:
    """https://spec.graphql.org/October2021/#sec-Response-Format"""
    if not isinstance(payload, dict) or not payload:
        raise SchemaBreach(f"a GraphQL response is a non-empty JSON object, got {payload!r}")
    unknown = set(payload) - {"data", "errors", "extensions"}
    if unknown:
        raise SchemaBreach(f"unknown top-level keys {sorted(unknown)}")
    if "data" not in payload and not payload.get("errors"):
        raise SchemaBreach("a response without data must carry errors")
    if "data" in payload and payload["data"] is not None and not isinstance(payload["data"], dict):
        raise SchemaBreach(f"data must be an object or null, got {payload['data']!r}")
    if "extensions" in payload and not isinstance(payload["extensions"], dict):
        raise SchemaBreach("extensions must be an object")
    if "errors" in payload:
        errors = payload["errors"]
        if not isinstance(errors, list) or not errors:
            raise SchemaBreach(f"errors must be a non-empty list, got {errors!r}")
        for error in errors:
            check_error_format(error)


def check_error_format(error: Any) -> None:
    if not isinstance(error, dict) or not isinstance(error.get("message"), str) or not error["message"]:
        raise SchemaBreach(f"every error has a message, got {error!r}")
    for location in error.get("locations", []):
        if not (isinstance(location, dict) and set(location) == {"line", "column"}):
            raise SchemaBreach(f"a location is {{line, column}}, got {location!r}")
        if not all(isinstance(v, int) and v >= 1 for v in location.values()):
            raise SchemaBreach(f"lines and columns count from 1, got {location!r}")
    path = error.get("path")
    if path is not None and not (isinstance(path, list) and all(isinstance(p, (str, int)) for p in path)):
        raise SchemaBreach(f"a path is a list of keys and indices, got {path!r}")
    extensions = error.get("extensions")
    if extensions is not None and not isinstance(extensions, dict):
        raise SchemaBreach(f"error extensions must be an object, got {extensions!r}")
    if not isinstance((extensions or {}).get("code"), str):
        raise SchemaBreach(f"every giftgraph error has an extensions.code, got {error!r}")


def _valid_document(schema: graphql.GraphQLSchema, query: str | None) -> graphql.DocumentNode | None:
    if query is None:
        return None
    try:
        document = graphql.parse(query)
    except graphql.GraphQLError:
        return None
    if graphql.validate(schema, document):
        return None
    operations = [d for d in document.definitions if isinstance(d, graphql.OperationDefinitionNode)]
    return document if len(operations) == 1 else None


class DataChecker:
    """Walks `data` alongside the document's selections and the schema's types."""

    def __init__(self, schema: graphql.GraphQLSchema, document: graphql.DocumentNode) -> None:
        self.schema = schema
        self.operation = next(d for d in document.definitions if isinstance(d, graphql.OperationDefinitionNode))
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, graphql.FragmentDefinitionNode)
        }

    def check_root(self, data: dict[str, Any]) -> None:
        root = self.schema.get_root_type(self.operation.operation)
        assert root is not None
        self.check_object(data, root, [self.operation.selection_set], ["data"])

    def check_value(
        self, value: Any, type_: graphql.GraphQLOutputType, selections: list[graphql.SelectionSetNode], path: list
    ) -> None:
        if isinstance(type_, graphql.GraphQLNonNull):
            if value is None:
                raise SchemaBreach(f"{_where(path)}: null for the non-null {type_}")
            type_ = type_.of_type
        if value is None:
            return
        if isinstance(type_, graphql.GraphQLList):
            if not isinstance(value, list):
                raise SchemaBreach(f"{_where(path)}: a list expected for {type_}, got {value!r}")
            for index, item in enumerate(value):
                self.check_value(item, type_.of_type, selections, [*path, index])
        elif isinstance(type_, graphql.GraphQLScalarType):
            if not scalar_fits(type_.name, value):
                raise SchemaBreach(f"{_where(path)}: {value!r} is not a {type_.name}")
        elif isinstance(type_, graphql.GraphQLEnumType):
            if value not in type_.values:
                raise SchemaBreach(f"{_where(path)}: {value!r} is not one of {type_.name}'s values")
        elif isinstance(type_, graphql.GraphQLObjectType):
            self.check_object(value, type_, selections, path)
        else:  # an interface or a union: the object must fit one of the types behind it
            assert isinstance(type_, (graphql.GraphQLInterfaceType, graphql.GraphQLUnionType))
            candidates = self.schema.get_possible_types(type_)
            if isinstance(value, dict) and isinstance(value.get("__typename"), str):
                candidates = [t for t in candidates if t.name == value["__typename"]]
            problems = []
            for candidate in candidates:
                try:
                    self.check_object(value, candidate, selections, path)
                    return
                except SchemaBreach as exc:
                    problems.append(str(exc))
            raise SchemaBreach(f"{_where(path)}: fits no type behind {type_.name}: {problems}")

    def check_object(
        self, value: Any, type_: graphql.GraphQLObjectType, selections: list[graphql.SelectionSetNode], path: list
    ) -> None:
        if not isinstance(value, dict):
            raise SchemaBreach(f"{_where(path)}: an object expected for {type_.name}, got {value!r}")
        fields = self.collect_fields(type_, selections)
        if set(value) != set(fields):
            raise SchemaBreach(f"{_where(path)}: keys {sorted(value)} where {type_.name} asked for {sorted(fields)}")
        for key, nodes in fields.items():
            name = nodes[0].name.value
            if name == "__typename":
                if value[key] != type_.name:
                    raise SchemaBreach(f"{_where([*path, key])}: {value[key]!r} for a {type_.name}")
                continue
            field = type_.fields.get(name) if not name.startswith("__") else None
            if field is None:
                continue  # __schema / __type: introspection, graphql-core's own
            sub_selections = [node.selection_set for node in nodes if node.selection_set is not None]
            self.check_value(value[key], field.type, sub_selections, [*path, key])

    def collect_fields(
        self, type_: graphql.GraphQLObjectType, selections: list[graphql.SelectionSetNode]
    ) -> dict[str, list[graphql.FieldNode]]:
        """The response keys of `selections` on an object of `type_` (spec: CollectFields), @skip/@include aside."""
        fields: dict[str, list[graphql.FieldNode]] = {}

        def visit(selection_set: graphql.SelectionSetNode) -> None:
            for selection in selection_set.selections:
                if selection.directives:
                    raise SchemaBreach("the fuzzer sent a directive: teach DataChecker about @skip/@include")
                if isinstance(selection, graphql.FieldNode):
                    key = (selection.alias or selection.name).value
                    fields.setdefault(key, []).append(selection)
                elif isinstance(selection, graphql.InlineFragmentNode):
                    if selection.type_condition is None or self.applies(selection.type_condition, type_):
                        visit(selection.selection_set)
                elif isinstance(selection, graphql.FragmentSpreadNode):
                    fragment = self.fragments[selection.name.value]
                    if self.applies(fragment.type_condition, type_):
                        visit(fragment.selection_set)

        for selection_set in selections:
            visit(selection_set)
        return fields

    def applies(self, condition: graphql.NamedTypeNode, type_: graphql.GraphQLObjectType) -> bool:
        condition_type = self.schema.get_type(condition.name.value)
        if condition_type is type_:
            return True
        if isinstance(condition_type, (graphql.GraphQLInterfaceType, graphql.GraphQLUnionType)):
            return self.schema.is_sub_type(condition_type, type_)
        return False


def scalar_fits(name: str, value: Any) -> bool:
    if name == "Int":
        return isinstance(value, int) and not isinstance(value, bool) and INT_RANGE[0] <= value <= INT_RANGE[1]
    if name == "Float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if name in ("String", "ID"):
        return isinstance(value, str)
    if name == "Boolean":
        return isinstance(value, bool)
    if name == "DateTime":
        if not isinstance(value, str):
            return False
        try:
            return datetime.fromisoformat(value).tzinfo is not None  # giftgraph sends UTC with an offset
        except ValueError:
            return False
    if name == "Decimal":
        if not isinstance(value, str):
            return False
        try:
            return Decimal(value).is_finite()
        except InvalidOperation:
            return False
    raise SchemaBreach(f"a scalar this check does not know: {name}")


def _where(path: list) -> str:
    return ".".join(str(part) for part in path)


def root_fields() -> list[str]:
    """Every Query and Mutation field of the committed SDL (the live schema must have the same)."""
    sdl = graphql.build_schema(SDL.read_text())
    roots = [root for root in (sdl.query_type, sdl.mutation_type) if root is not None]
    return [f"{root.name}.{name}" for root in roots for name in root.fields]


CHECKS = [not_a_server_error, response_schema_conformance, negative_data_rejection, response_conforms_to_the_schema]


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda mode: mode.value)
@pytest.mark.parametrize("root_field", root_fields())
def test_given_fuzzed_documents_when_sent_to_the_live_server_then_no_5xx_and_every_response_fits_the_schema(
    fuzzed_server: LiveServer, live_schema: Any, known_values: KnownValues, root_field: str, mode: GenerationMode
) -> None:
    root, name = root_field.split(".")
    fuzzed = live_schema[root][name]
    headers = {"Authorization": f"Bearer {fuzzed_server.token(FUZZ_USER)}"}

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,  # a fixed seed: the same documents on every run
        database=None,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=fuzzed.as_strategy(generation_mode=mode), rng=st.randoms(use_true_random=False))
    def fuzz(case: schemathesis.Case, rng: random.Random) -> None:
        if mode is GenerationMode.POSITIVE and isinstance(case.body, str) and rng.random() < 0.75:
            case.body = like_a_client(case.body, live_schema.client_schema, known_values, rng)
        case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)

    fuzz()
