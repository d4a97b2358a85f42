"""The schema's short path for plain leaf fields answers exactly as Strawberry's own execution does."""

from __future__ import annotations

import enum
import json
from decimal import Decimal

import pytest
import strawberry

from schema import build_schema
from schema.execution import PlainLeafExecutionContext

pytestmark = pytest.mark.anyio


@strawberry.enum
class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@strawberry.type
class Inner:
    amount: Decimal
    label: str | None


@strawberry.interface
class Named:
    name: str


@strawberry.type
class Item(Named):
    name: str
    color: Color
    n: int
    inner: Inner
    tags: list[str]

    @strawberry.field
    def upper(self) -> str:
        return self.name.upper()

    @strawberry.field
    async def doubled(self) -> int:
        return self.n * 2


def items(*, broken: bool = False) -> list[Item]:
    return [
        Item(name="a", color=Color.RED, n=1, inner=Inner(amount=Decimal("1.50"), label=None), tags=["x"]),
        Item(
            name=None if broken else "c",  # type: ignore[arg-type]
            color="nope" if broken else Color.BLUE,  # type: ignore[arg-type]
            n=2,
            inner=Inner(amount=Decimal("2"), label="l"),
            tags=[],
        ),
    ]


@strawberry.type
class Query:
    @strawberry.field
    def items(self) -> list[Item]:
        return items()

    @strawberry.field
    def broken_items(self) -> list[Item | None]:
        return items(broken=True)

    @strawberry.field
    async def one(self) -> Named:
        return items()[0]


QUERIES = [
    "{ items { __typename name color n upper doubled inner { amount label } tags x: name y: n } }",
    "{ one { __typename name ... on Item { n color name } } }",
    "fragment F on Item { name n } { items { ...F name color ... on Item { n } } }",
    "{ brokenItems { name n } }",  # null in a non-null leaf: error located, item nulled
    "{ brokenItems { color n } }",  # a value the enum cannot represent
]


async def run(query: str, execution_context_class: type | None) -> str:
    schema = strawberry.Schema(query=Query, types=[Item], execution_context_class=execution_context_class)
    result = await schema.execute(query)
    errors = [(error.message, error.path) for error in result.errors or []]
    return json.dumps([result.data, errors])  # key order matters: it is the response's byte order


@pytest.mark.parametrize("query", QUERIES)
async def test_given_a_query_when_run_with_the_short_path_then_data_and_errors_equal_strawberrys(query: str) -> None:
    expected = await run(query, None)

    assert await run(query, PlainLeafExecutionContext) == expected


def test_given_the_installed_graphql_core_when_the_schema_is_built_then_the_short_path_is_in_use() -> None:
    assert build_schema().execution_context_class is PlainLeafExecutionContext
