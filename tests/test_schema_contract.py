"""The public contract: the exported SDL, the CLI that writes it, the frontend's operations, issue #2's SDL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    parse,
    print_ast,
    validate,
)
from graphql.language import (
    DefinitionNode,
    EnumTypeDefinitionNode,
    InputObjectTypeDefinitionNode,
    InterfaceTypeDefinitionNode,
    ObjectTypeDefinitionNode,
)
from graphql.utilities import ast_from_value

import schema
from giftgraph.cli import main

ROOT = Path(__file__).resolve().parents[1]
GRAPHQL_DIR = ROOT / "graphql"
SCHEMA_FILE = GRAPHQL_DIR / "schema.graphql"
GIFTGRAPH = Path(sys.executable).with_name("giftgraph")

# The API contract from issue #2, verbatim: names and nullability are part of it.
CONTRACT_SDL = """
interface Node { id: ID! }
type PageInfo { hasNextPage: Boolean! hasPreviousPage: Boolean! startCursor: String endCursor: String }

enum RewardAvailability { AVAILABLE OUT_OF_STOCK DISCONTINUED }
enum DenominationKind { FIXED VARIABLE }
type Money { amount: Decimal! currencyCode: String! }
type Denomination {
  kind: DenominationKind!
  faceValues: [Money!]!   # FIXED: every allowed face value, ascending. VARIABLE: empty
  minValue: Money!
  maxValue: Money!
}
type Reward implements Node {
  id: ID!
  name: String!
  brand: String!
  description: String!
  category: String!
  imageUrl: String!
  countries: [String!]!    # ISO 3166-1 alpha-2
  currencyCode: String!    # ISO 4217
  denomination: Denomination!
  pointCost: Int!          # points for denomination.minValue
  pointCostFor(faceValue: Decimal!): Int   # null when that face value cannot be redeemed
  availability: RewardAvailability!
  terms: String
  redemptionInstructions: String
}
type RewardEdge { cursor: String! node: Reward! }
type RewardConnection { edges: [RewardEdge!]! nodes: [Reward!]! pageInfo: PageInfo! totalCount: Int! }
input CatalogFilter {
  search: String           # case-insensitive, over name, brand and description
  category: String
  brand: String
  country: String
  currencyCode: String
  availability: [RewardAvailability!]
  maxPointCost: Int        # pointCost <= this
}
enum CatalogSort { NAME POINT_COST_ASC POINT_COST_DESC }

type PointBalance { available: Int! pending: Int! updatedAt: DateTime! }
enum TransactionKind { EARN REDEEM REFUND ADJUSTMENT }
type Transaction implements Node {
  id: ID!
  kind: TransactionKind!
  points: Int!             # signed: a REDEEM is negative
  balanceAfter: Int!
  description: String!
  createdAt: DateTime!
  redemption: Redemption   # set for REDEEM and REFUND
}
type TransactionEdge { cursor: String! node: Transaction! }
type TransactionConnection { edges: [TransactionEdge!]! nodes: [Transaction!]! pageInfo: PageInfo! totalCount: Int! }

enum RedemptionStatus { PENDING FULFILLED FAILED }
type GiftCard { code: String pin: String claimUrl: String expiresAt: DateTime }
type Redemption implements Node {
  id: ID!
  reward: Reward!
  faceValue: Money!
  points: Int!
  status: RedemptionStatus!
  giftCard: GiftCard       # set once FULFILLED; only its owner can ever see it
  failureReason: String
  createdAt: DateTime!
  updatedAt: DateTime!
}
type Viewer {
  userId: String!
  balance: PointBalance!
  history(first: Int, after: String, last: Int, before: String, kinds: [TransactionKind!]): TransactionConnection!   # newest first
}
type Query {
  node(id: ID!): Node
  nodes(ids: [ID!]!): [Node]!
  catalog(first: Int, after: String, last: Int, before: String, filter: CatalogFilter, sort: CatalogSort = NAME): RewardConnection!
  viewer: Viewer!
}

input RedeemInput { clientMutationId: String! rewardId: ID! faceValue: Decimal! }
enum RedeemErrorCode { INSUFFICIENT_POINTS REWARD_NOT_FOUND REWARD_UNAVAILABLE INVALID_FACE_VALUE IDEMPOTENCY_KEY_REUSED REDEMPTION_IN_PROGRESS PROVIDER_UNAVAILABLE }
type RedeemUserError { code: RedeemErrorCode! message: String! field: [String!] }
type RedeemPayload { clientMutationId: String! redemption: Redemption balance: PointBalance userErrors: [RedeemUserError!]! }
type Mutation { redeem(input: RedeemInput!): RedeemPayload! }

type Subscription {
  balanceChanged: PointBalance!      # the viewer's; first the current balance, then one event per change
  redemptionUpdated: Redemption!     # the viewer's redemptions, on every status change
}
"""
CONTRACT = parse(CONTRACT_SDL)
KINDS = {
    ObjectTypeDefinitionNode: GraphQLObjectType,
    InterfaceTypeDefinitionNode: GraphQLInterfaceType,
    EnumTypeDefinitionNode: GraphQLEnumType,
    InputObjectTypeDefinitionNode: GraphQLInputObjectType,
}
CONTRACT_TYPES = {d.name.value: d for d in CONTRACT.definitions if type(d) in KINDS}


@pytest.fixture(scope="module")
def live() -> GraphQLSchema:
    # Strawberry's graphql-core schema: what the server executes against.
    return schema.build_schema()._schema


# (a) The exported SDL is the live schema


def test_given_the_live_schema_then_graphql_schema_graphql_is_its_exact_sdl() -> None:
    assert SCHEMA_FILE.read_text() == schema.print_sdl(), (
        "graphql/schema.graphql is out of date: run `giftgraph export-schema`"
    )


# (b) The CLI checks and writes it


def test_given_an_up_to_date_file_when_running_export_schema_check_then_it_exits_0() -> None:
    result = subprocess.run(
        [str(GIFTGRAPH), "export-schema", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr


def test_given_a_path_when_running_export_schema_then_it_writes_the_live_sdl_there(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "schema.graphql"

    result = CliRunner().invoke(main, ["export-schema", "--path", str(target)])

    assert result.exit_code == 0, result.output
    assert target.read_text() == schema.print_sdl()


def test_given_a_stale_file_when_running_export_schema_check_then_it_exits_1_naming_the_fix(tmp_path: Path) -> None:
    stale = tmp_path / "schema.graphql"
    stale.write_text(schema.print_sdl() + "# edited by hand\n")

    result = CliRunner().invoke(main, ["export-schema", "--check", "--path", str(stale)])

    assert result.exit_code == 1
    assert "giftgraph export-schema" in result.output


# (c) The frontend's operations are valid against the live schema

OPERATION_FILES = sorted((GRAPHQL_DIR / "operations").glob("*.graphql"))


def test_given_the_operations_folder_then_it_holds_at_least_one_operation() -> None:
    assert OPERATION_FILES


@pytest.mark.parametrize("path", OPERATION_FILES, ids=[p.stem for p in OPERATION_FILES])
def test_given_an_operation_file_then_it_parses_and_validates_against_the_live_schema(
    live: GraphQLSchema, path: Path
) -> None:
    document = parse(path.read_text())

    errors = validate(live, document)

    assert [error.message for error in errors] == []


# (d) Issue #2's SDL is honoured (extra fields and enum values are allowed)


@pytest.mark.parametrize("name", CONTRACT_TYPES)
def test_given_a_contract_type_then_the_live_schema_has_it_with_the_same_kind(live: GraphQLSchema, name: str) -> None:
    definition = CONTRACT_TYPES[name]

    assert isinstance(live.type_map.get(name), KINDS[type(definition)])


@pytest.mark.parametrize("name", [n for n, d in CONTRACT_TYPES.items() if hasattr(d, "interfaces")])
def test_given_a_contract_type_then_it_implements_the_same_interfaces(live: GraphQLSchema, name: str) -> None:
    wanted = {interface.name.value for interface in CONTRACT_TYPES[name].interfaces or ()}

    assert wanted <= {interface.name for interface in live.type_map[name].interfaces}


CONTRACT_FIELDS = [
    (type_name, field)
    for type_name, definition in CONTRACT_TYPES.items()
    if not isinstance(definition, EnumTypeDefinitionNode)
    for field in definition.fields
]


@pytest.mark.parametrize(
    ("type_name", "field"), CONTRACT_FIELDS, ids=[f"{t}.{f.name.value}" for t, f in CONTRACT_FIELDS]
)
def test_given_a_contract_field_then_the_live_field_has_the_same_type(
    live: GraphQLSchema, type_name: str, field: DefinitionNode
) -> None:
    live_field = live.type_map[type_name].fields.get(field.name.value)

    assert live_field is not None, f"{type_name}.{field.name.value} is missing"
    assert str(live_field.type) == print_ast(field.type)


CONTRACT_ARGUMENTS = [
    (type_name, field, argument)
    for type_name, field in CONTRACT_FIELDS
    for argument in getattr(field, "arguments", None) or ()
]


@pytest.mark.parametrize(
    ("type_name", "field", "argument"),
    CONTRACT_ARGUMENTS,
    ids=[f"{t}.{f.name.value}({a.name.value})" for t, f, a in CONTRACT_ARGUMENTS],
)
def test_given_a_contract_argument_then_the_live_argument_has_the_same_type_and_default(
    live: GraphQLSchema, type_name: str, field: DefinitionNode, argument: DefinitionNode
) -> None:
    live_argument = live.type_map[type_name].fields[field.name.value].args.get(argument.name.value)

    assert live_argument is not None, f"{type_name}.{field.name.value}({argument.name.value}) is missing"
    assert str(live_argument.type) == print_ast(argument.type)
    if argument.default_value is not None:
        live_default = ast_from_value(live_argument.default_value, live_argument.type)
        assert live_default is not None and print_ast(live_default) == print_ast(argument.default_value)


@pytest.mark.parametrize("name", [n for n, d in CONTRACT_TYPES.items() if isinstance(d, EnumTypeDefinitionNode)])
def test_given_a_contract_enum_then_the_live_enum_has_every_value(live: GraphQLSchema, name: str) -> None:
    wanted = {value.name.value for value in CONTRACT_TYPES[name].values}

    assert wanted <= set(live.type_map[name].values)


def test_given_the_contract_then_it_was_copied_whole() -> None:
    # Guards the parametrisations above against a truncated copy of the SDL.
    assert len(CONTRACT_TYPES) == 27
    assert {"Query", "Mutation", "Subscription", "Reward", "Redemption", "RedeemInput"} <= set(CONTRACT_TYPES)


# (e) graphql/ holds data only: a Python package there would shadow graphql-core


def test_given_the_graphql_folder_then_it_holds_no_python_files() -> None:
    assert sorted(str(p.relative_to(GRAPHQL_DIR)) for p in GRAPHQL_DIR.rglob("*.py")) == []
    assert not (GRAPHQL_DIR / "__init__.py").exists()
