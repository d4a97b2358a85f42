"""The catalog over real HTTP: Relay pages both ways, keyset cursors, filters, sorts and reward prices.

The oracle is the live sandbox provider's own catalog (the provider boundary) priced
here with the configured rates, independently of the resolvers under test.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import pytest

from providers import DenominationKind, Reward, RewardAvailability
from resolvers.ids import encode_global_id
from tests.support import LiveServer, gql, live_server, make_settings, operation

CATALOG = operation("Catalog")
REWARD_DETAIL = operation("RewardDetail")
SORTS = ("NAME", "POINT_COST_ASC", "POINT_COST_DESC")

# A lean page for walks, counts and flags; the frontend's Catalog operation is used where the reward card matters.
PAGE_SHAPE = """
query Page($first: Int, $after: String, $last: Int, $before: String, $filter: CatalogFilter, $sort: CatalogSort) {
  catalog(first: $first, after: $after, last: $last, before: $before, filter: $filter, sort: $sort) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { id name pointCost } }
  }
}
"""
DEFAULT_PAGE = """
{ catalog { totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor } edges { cursor } } }
"""
FIRST_HISTORY_CURSOR = "{ viewer { history(first: 1) { edges { cursor } } } }"

Page = dict[str, Any]  # one decoded `catalog` connection

CUSTOM_RATES = {"USD": "3", "CAD": "2.25", "GBP": "4", "EUR": "3.5", "AUD": "1.75"}


# Fixtures


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path_factory.mktemp("catalog"), sandbox_fulfilment_delay=0.2)
    with live_server(settings) as running:
        yield running


@pytest.fixture(scope="module")
def custom_rates_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("custom-rates"), sandbox_fulfilment_delay=0.2, points_per_unit=CUSTOM_RATES
    )
    with live_server(settings) as running:
        yield running


@pytest.fixture
def changing_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A server of its own: these tests change the provider's catalog."""
    with live_server(make_settings(tmp_path, sandbox_fulfilment_delay=0.2)) as running:
        yield running


# Helpers


def rates(server: LiveServer) -> Mapping[str, Decimal]:
    return {code.upper(): Decimal(rate) for code, rate in server.settings.points_per_unit.items()}


def points(amount: Decimal | str, currency: str, server: LiveServer) -> int:
    """Points for a face value: the amount times the currency's rate, rounded up to whole points."""
    return int((Decimal(amount) * rates(server)[currency]).to_integral_value(rounding=ROUND_CEILING))


def oracle(server: LiveServer, keep: Callable[[Reward, int], bool] = lambda reward, cost: True) -> dict[str, Reward]:
    """The provider's rewards that pass `keep`, by global id."""
    return {
        encode_global_id("Reward", reward.id): reward
        for reward in server.provider.catalog
        if keep(reward, points(reward.denomination.min_value, reward.currency_code, server))
    }


def catalog(server: LiveServer, query: str = PAGE_SHAPE, **variables: Any) -> Page:
    body = gql(server, query, variables)
    assert "errors" not in body, body
    return body["data"]["catalog"]


def walk_forward(server: LiveServer, query: str = PAGE_SHAPE, *, page_size: int, **variables: Any) -> list[Page]:
    pages: list[Page] = []
    after = None
    while True:
        page = catalog(server, query, first=page_size, after=after, **variables)
        pages.append(page)
        if not page["pageInfo"]["hasNextPage"]:
            return pages
        after = page["pageInfo"]["endCursor"]
        assert len(pages) <= 600, "the walk does not end"


def walk_backward(server: LiveServer, query: str = PAGE_SHAPE, *, page_size: int, **variables: Any) -> list[Page]:
    pages: list[Page] = []
    before = None
    while True:
        page = catalog(server, query, last=page_size, before=before, **variables)
        pages.append(page)
        if not page["pageInfo"]["hasPreviousPage"]:
            return pages
        before = page["pageInfo"]["startCursor"]
        assert len(pages) <= 600, "the walk does not end"


def nodes_of(pages: list[Page]) -> list[dict[str, Any]]:
    return [edge["node"] for page in pages for edge in page["edges"]]


def ids_of(pages: list[Page]) -> list[str]:
    return [node["id"] for node in nodes_of(pages)]


def sort_key(sort: str) -> Callable[[dict[str, Any]], Any]:
    """The primary sort key of a returned node (ties may come in any stable order)."""
    return {
        "NAME": lambda node: node["name"].casefold(),
        "POINT_COST_ASC": lambda node: node["pointCost"],
        "POINT_COST_DESC": lambda node: -node["pointCost"],
    }[sort]


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def assert_bad_user_input(body: dict[str, Any]) -> None:
    assert body.get("data") is None, body
    assert [error["extensions"]["code"] for error in body["errors"]] == ["BAD_USER_INPUT"], body


def set_availability(server: LiveServer, changes: Mapping[str, RewardAvailability]) -> None:
    """Change rewards' availability at the provider (keyed by global id), then drop the cached catalog.

    The sandbox serves `list_rewards` from its public `catalog`; ids and order stay as they were.
    """
    provider = server.provider
    raw_ids = {encode_global_id("Reward", r.id): r.id for r in provider.catalog}
    changed = {raw_ids[gid]: availability for gid, availability in changes.items()}
    provider.catalog = tuple(
        dataclasses.replace(r, availability=changed[r.id]) if r.id in changed else r for r in provider.catalog
    )
    server.services.catalog.invalidate()


def available_ids(server: LiveServer) -> set[str]:
    return set(oracle(server, lambda r, _: r.availability is RewardAvailability.AVAILABLE))


def reward_detail(server: LiveServer, reward: Reward, face_value: Decimal | str) -> dict[str, Any]:
    body = gql(server, REWARD_DETAIL, {"id": encode_global_id("Reward", reward.id), "faceValue": str(face_value)})
    assert "errors" not in body, body
    return body["data"]["node"]


def a_reward(server: LiveServer, kind: DenominationKind) -> Reward:
    """An available AUD reward: at the default 65 points per AUD a face value with cents needs rounding."""
    return next(
        r
        for r in server.provider.catalog
        if r.denomination.kind is kind and r.availability is RewardAvailability.AVAILABLE and r.currency_code == "AUD"
    )


# Forward and backward walks


@pytest.mark.parametrize("sort", SORTS)
def test_given_a_sort_when_walking_every_page_forward_then_every_reward_appears_once_in_sort_order(
    server: LiveServer, sort: str
) -> None:
    pages = walk_forward(server, page_size=97, sort=sort)

    ids = ids_of(pages)
    keys = [sort_key(sort)(node) for node in nodes_of(pages)]
    assert len(ids) == len(set(ids))
    assert set(ids) == set(oracle(server))
    assert keys == sorted(keys)


@pytest.mark.parametrize("sort", SORTS)
def test_given_a_sort_when_walking_every_page_backward_then_pages_come_in_reverse_and_join_to_the_forward_order(
    server: LiveServer, sort: str
) -> None:
    forward = ids_of(walk_forward(server, page_size=100, sort=sort))

    backward = walk_backward(server, page_size=97, sort=sort)

    assert ids_of(list(reversed(backward))) == forward


def test_given_a_filter_when_walking_forward_then_exactly_the_matching_rewards_appear_once_in_order(
    server: LiveServer,
) -> None:
    wanted = {"currencyCode": "EUR", "availability": ["AVAILABLE"]}
    expected = oracle(server, lambda r, _: r.currency_code == "EUR" and r.availability is RewardAvailability.AVAILABLE)

    pages = walk_forward(server, page_size=13, sort="POINT_COST_DESC", filter=wanted)

    ids = ids_of(pages)
    costs = [node["pointCost"] for node in nodes_of(pages)]
    assert len(ids) == len(set(ids)) == len(expected)
    assert set(ids) == set(expected)
    assert costs == sorted(costs, reverse=True)
    assert {page["totalCount"] for page in pages} == {len(expected)}


def test_given_a_filter_when_walking_backward_with_the_catalog_operation_then_the_pages_join_to_the_forward_order(
    server: LiveServer,
) -> None:
    wanted = {"category": "Travel", "maxPointCost": 2500}
    forward = ids_of(walk_forward(server, page_size=100, sort="NAME", filter=wanted))

    # The operation defaults `first` to 50: a backward client sends it as null.
    backward = walk_backward(server, CATALOG, page_size=7, first=None, sort="NAME", filter=wanted)

    assert ids_of(list(reversed(backward))) == forward
    assert len(forward) == len(oracle(server, lambda r, cost: r.category == "Travel" and cost <= 2500))


def test_given_a_forward_walk_then_each_pages_flags_and_bounding_cursors_match_its_position(
    server: LiveServer,
) -> None:
    pages = walk_forward(server, page_size=75, sort="NAME")

    flags = [(p["pageInfo"]["hasPreviousPage"], p["pageInfo"]["hasNextPage"]) for p in pages]
    assert flags == [(False, True)] + [(True, True)] * (len(pages) - 2) + [(True, False)]
    for page in pages:
        assert page["pageInfo"]["startCursor"] == page["edges"][0]["cursor"]
        assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]


def test_given_a_backward_walk_then_each_pages_flags_and_bounding_cursors_match_its_position(
    server: LiveServer,
) -> None:
    pages = walk_backward(server, page_size=75, sort="NAME")

    flags = [(p["pageInfo"]["hasPreviousPage"], p["pageInfo"]["hasNextPage"]) for p in pages]
    assert flags == [(True, False)] + [(True, True)] * (len(pages) - 2) + [(False, True)]
    for page in pages:
        assert page["pageInfo"]["startCursor"] == page["edges"][0]["cursor"]
        assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]


# Page sizes and pageInfo at the ends and in the middle


def test_given_no_paging_arguments_then_the_first_20_rewards_come_with_a_next_page_only(server: LiveServer) -> None:
    page = catalog(server, DEFAULT_PAGE)

    assert len(page["edges"]) == 20
    assert page["pageInfo"] == {
        "hasNextPage": True,
        "hasPreviousPage": False,
        "startCursor": page["edges"][0]["cursor"],
        "endCursor": page["edges"][-1]["cursor"],
    }


def test_given_no_sort_when_querying_catalog_then_rewards_come_by_name(server: LiveServer) -> None:
    by_default = nodes_of([catalog(server, first=100)])

    by_name = nodes_of([catalog(server, first=100, sort="NAME")])

    assert [node["id"] for node in by_default] == [node["id"] for node in by_name]


def test_given_a_cursor_in_the_middle_when_paging_forward_then_the_next_items_with_both_flags_set(
    server: LiveServer,
) -> None:
    first_30 = catalog(server, first=30)["edges"]

    page = catalog(server, first=10, after=first_30[9]["cursor"])

    assert [e["cursor"] for e in page["edges"]] == [e["cursor"] for e in first_30[10:20]]
    assert (page["pageInfo"]["hasPreviousPage"], page["pageInfo"]["hasNextPage"]) == (True, True)


def test_given_a_cursor_in_the_middle_when_paging_backward_then_the_items_before_it_with_both_flags_set(
    server: LiveServer,
) -> None:
    first_30 = catalog(server, first=30)["edges"]

    page = catalog(server, last=10, before=first_30[25]["cursor"])

    assert [e["cursor"] for e in page["edges"]] == [e["cursor"] for e in first_30[15:25]]
    assert (page["pageInfo"]["hasPreviousPage"], page["pageInfo"]["hasNextPage"]) == (True, True)


def test_given_a_cursor_near_the_start_when_paging_backward_past_it_then_only_the_items_before_it_and_no_previous(
    server: LiveServer,
) -> None:
    first_5 = catalog(server, first=5)["edges"]

    page = catalog(server, last=10, before=first_5[3]["cursor"])

    assert [e["cursor"] for e in page["edges"]] == [e["cursor"] for e in first_5[:3]]
    assert (page["pageInfo"]["hasPreviousPage"], page["pageInfo"]["hasNextPage"]) == (False, True)


def test_given_a_cursor_near_the_end_when_paging_forward_past_it_then_only_the_remaining_items_and_no_next(
    server: LiveServer,
) -> None:
    last_5 = catalog(server, last=5)["edges"]

    page = catalog(server, first=10, after=last_5[2]["cursor"])

    assert [e["cursor"] for e in page["edges"]] == [e["cursor"] for e in last_5[3:]]
    assert (page["pageInfo"]["hasPreviousPage"], page["pageInfo"]["hasNextPage"]) == (True, False)


def test_given_last_without_before_then_the_tail_of_the_list_with_a_previous_page_only(server: LiveServer) -> None:
    everything = ids_of(walk_forward(server, page_size=100, sort="NAME"))

    page = catalog(server, last=20)

    assert [e["node"]["id"] for e in page["edges"]] == everything[-20:]
    assert (page["pageInfo"]["hasPreviousPage"], page["pageInfo"]["hasNextPage"]) == (True, False)


def test_given_first_zero_then_no_edges_null_cursors_a_next_page_and_the_full_count(server: LiveServer) -> None:
    page = catalog(server, first=0)

    assert page["edges"] == []
    assert page["pageInfo"] == {"hasNextPage": True, "hasPreviousPage": False, "startCursor": None, "endCursor": None}
    assert page["totalCount"] == len(oracle(server))


@pytest.mark.parametrize("argument", ["first", "last"])
def test_given_a_page_size_of_exactly_100_then_100_rewards_come_back(server: LiveServer, argument: str) -> None:
    page = catalog(server, **{argument: 100})

    assert len(page["edges"]) == 100


def test_given_a_filter_when_paging_then_total_count_counts_the_filtered_list_on_every_page(
    server: LiveServer,
) -> None:
    wanted = {"country": "DE"}
    expected = len(oracle(server, lambda r, _: "DE" in r.countries))

    pages = walk_forward(server, page_size=10, filter=wanted)

    assert 10 < expected < len(oracle(server))
    assert [page["totalCount"] for page in pages] == [expected] * len(pages)


def test_given_a_filter_matching_nothing_then_an_empty_page_with_no_neighbours(server: LiveServer) -> None:
    page = catalog(server, first=10, filter={"search": "no reward is called this"})

    assert page == {
        "totalCount": 0,
        "edges": [],
        "pageInfo": {"hasNextPage": False, "hasPreviousPage": False, "startCursor": None, "endCursor": None},
    }


# Keyset cursors


def test_given_rewards_before_the_cursor_leave_the_filtered_list_when_continuing_then_nothing_is_skipped(
    changing_server: LiveServer,
) -> None:
    available = {"availability": ["AVAILABLE"]}
    first_page = catalog(changing_server, first=10, filter=available)
    untouched = catalog(changing_server, first=10, after=first_page["pageInfo"]["endCursor"], filter=available)
    # Half of the first page goes out of stock: an offset cursor would now skip five rewards.
    gone = {edge["node"]["id"]: RewardAvailability.OUT_OF_STOCK for edge in first_page["edges"][:5]}
    set_availability(changing_server, gone)

    continued = catalog(changing_server, first=10, after=first_page["pageInfo"]["endCursor"], filter=available)

    assert ids_of([continued]) == ids_of([untouched])
    assert continued["totalCount"] == untouched["totalCount"] - 5


def test_given_the_cursors_own_reward_leaves_the_list_when_continuing_then_the_page_starts_right_after_its_place(
    changing_server: LiveServer,
) -> None:
    available = {"availability": ["AVAILABLE"]}
    first_20 = catalog(changing_server, first=20, filter=available)["edges"]
    cursor = first_20[9]["cursor"]
    set_availability(changing_server, {first_20[9]["node"]["id"]: RewardAvailability.DISCONTINUED})

    forward = catalog(changing_server, first=10, after=cursor, filter=available)
    backward = catalog(changing_server, last=9, before=cursor, filter=available)

    assert ids_of([forward]) == [e["node"]["id"] for e in first_20[10:20]]
    assert ids_of([backward]) == [e["node"]["id"] for e in first_20[:9]]


def test_given_rewards_around_the_cursor_come_back_in_stock_when_continuing_then_only_those_after_it_appear(
    changing_server: LiveServer,
) -> None:
    by_name = ids_of([catalog(changing_server, first=100)])  # the NAME order does not depend on availability
    in_stock = available_ids(changing_server)
    later_at = next(i for i in range(12, len(by_name)) if by_name[i] not in in_stock)
    cursor_id = next(by_name[i] for i in reversed(range(later_at)) if by_name[i] in in_stock)
    earlier = next(gid for gid in by_name[: by_name.index(cursor_id)] if gid not in in_stock)
    available = {"availability": ["AVAILABLE"]}
    page_size = [gid for gid in by_name if gid in in_stock].index(cursor_id) + 1
    first_page = catalog(changing_server, first=page_size, filter=available)
    assert first_page["edges"][-1]["node"]["id"] == cursor_id
    set_availability(
        changing_server, {earlier: RewardAvailability.AVAILABLE, by_name[later_at]: RewardAvailability.AVAILABLE}
    )

    continued = catalog(changing_server, first=10, after=first_page["pageInfo"]["endCursor"], filter=available)

    now_in_stock = available_ids(changing_server)
    expected = [gid for gid in by_name[by_name.index(cursor_id) + 1 :] if gid in now_in_stock][:10]
    assert expected[0] == by_name[later_at]
    assert ids_of([continued]) == expected


@pytest.mark.parametrize(
    ("issued_for", "used_with"),
    [("NAME", "POINT_COST_ASC"), ("POINT_COST_ASC", "POINT_COST_DESC"), ("POINT_COST_DESC", "NAME")],
)
def test_given_a_cursor_from_one_sort_when_used_with_another_sort_then_bad_user_input(
    server: LiveServer, issued_for: str, used_with: str
) -> None:
    cursor = catalog(server, first=3, sort=issued_for)["pageInfo"]["endCursor"]

    body = gql(server, PAGE_SHAPE, {"first": 3, "after": cursor, "sort": used_with})

    assert_bad_user_input(body)


# Arguments and cursors that are not acceptable


@pytest.mark.parametrize(
    "variables",
    [
        {"first": 101},
        {"first": -1},
        {"last": 101},
        {"last": -1},
        {"first": 5, "last": 5},
        {"after": "not-a-cursor"},
        {"before": "not-a-cursor"},
        {"after": b64(b"\x00\xffjunk")},
        {"after": b64(b"[1, 2, 3]")},
        {"after": b64(json.dumps(["catalog:NAME", 1, 2]).encode())},
        {"after": b64(json.dumps({"kind": "catalog:NAME"}).encode())},
        {"after": "caf\u00e9"},
        {"after": ""},
        {"after": b64(b"[" * 100_000 + b"]" * 100_000)},
        {"before": encode_global_id("Reward", "rw_0001")},
    ],
    ids=[
        "first-101",
        "first-negative",
        "last-101",
        "last-negative",
        "first-and-last",
        "random-after",
        "random-before",
        "base64-binary",
        "base64-json-of-another-shape",
        "right-kind-wrong-key-types",
        "base64-json-object",
        "non-ascii",
        "empty",
        "deeply-nested-json",
        "a-global-id",
    ],
)
def test_given_unacceptable_paging_arguments_when_querying_catalog_then_bad_user_input_and_no_data(
    server: LiveServer, variables: dict[str, Any]
) -> None:
    body = gql(server, PAGE_SHAPE, variables)

    assert_bad_user_input(body)


def test_given_a_history_cursor_when_used_on_the_catalog_then_bad_user_input_and_no_data(server: LiveServer) -> None:
    history = gql(server, FIRST_HISTORY_CURSOR, token=server.token("cursor-borrower"))
    cursor = history["data"]["viewer"]["history"]["edges"][0]["cursor"]

    body = gql(server, PAGE_SHAPE, {"first": 5, "after": cursor})

    assert_bad_user_input(body)


# Filters


FILTERS: list[tuple[str, dict[str, Any], Callable[[Reward, int], bool]]] = [
    ("search-name-any-case", {"search": "gIfT vOuChEr"}, lambda r, _: "gift voucher" in r.name.casefold()),
    (
        "search-description-only",
        {"search": "IN THE TRAVEL CATEGORY"},
        lambda r, _: "in the travel category" in r.description.casefold(),
    ),
    (
        "search-brand",
        {"search": "velvet FOX"},
        lambda r, _: any("velvet fox" in t.casefold() for t in (r.name, r.brand, r.description)),
    ),
    ("category", {"category": "Travel"}, lambda r, _: r.category == "Travel"),
    ("brand", {"brand": "Velvet Fox"}, lambda r, _: r.brand == "Velvet Fox"),
    ("country", {"country": "DE"}, lambda r, _: "DE" in r.countries),
    ("currency", {"currencyCode": "GBP"}, lambda r, _: r.currency_code == "GBP"),
    (
        "availability-list",
        {"availability": ["OUT_OF_STOCK", "DISCONTINUED"]},
        lambda r, _: r.availability in (RewardAvailability.OUT_OF_STOCK, RewardAvailability.DISCONTINUED),
    ),
    ("max-point-cost", {"maxPointCost": 1000}, lambda _, cost: cost <= 1000),
    (
        "combination",
        {"category": "Dining", "currencyCode": "USD", "availability": ["AVAILABLE"], "maxPointCost": 2500},
        lambda r, cost: r.category == "Dining"
        and r.currency_code == "USD"
        and r.availability is RewardAvailability.AVAILABLE
        and cost <= 2500,
    ),
]


@pytest.mark.parametrize(("wanted", "keep"), [(f, k) for _, f, k in FILTERS], ids=[name for name, _, _ in FILTERS])
def test_given_a_filter_when_walking_the_catalog_then_exactly_the_matching_rewards_come_back(
    server: LiveServer, wanted: dict[str, Any], keep: Callable[[Reward, int], bool]
) -> None:
    expected = oracle(server, keep)
    assert 0 < len(expected) < len(oracle(server)), "the filter should select some but not all rewards"

    pages = walk_forward(server, page_size=100, filter=wanted)

    ids = ids_of(pages)
    assert len(ids) == len(set(ids))
    assert set(ids) == set(expected)
    assert pages[0]["totalCount"] == len(expected)


def test_given_a_search_matching_only_descriptions_then_no_name_or_brand_contains_it(server: LiveServer) -> None:
    # Guards the "search-description-only" case above: it must really be a description-only match.
    matched = oracle(server, lambda r, _: "in the travel category" in r.description.casefold()).values()

    assert matched
    assert not any("in the travel category" in (r.name + r.brand).casefold() for r in matched)


def test_given_max_point_cost_equal_to_a_rewards_cost_then_that_reward_is_included(server: LiveServer) -> None:
    cost = 500  # 5.00 USD at 100 points per dollar: the cheapest FIXED USD cards
    assert oracle(server, lambda _, c: c == cost)

    nodes = nodes_of(walk_forward(server, page_size=100, filter={"maxPointCost": cost}, sort="POINT_COST_DESC"))

    assert nodes[0]["pointCost"] == cost
    assert all(node["pointCost"] <= cost for node in nodes)


# Reward prices and denominations


def test_given_default_rates_then_every_point_cost_is_the_points_for_the_minimum_face_value(
    server: LiveServer,
) -> None:
    nodes = nodes_of(walk_forward(server, CATALOG, page_size=100))

    wrong = [
        node["id"]
        for node in nodes
        if node["pointCost"] != points(node["denomination"]["minValue"]["amount"], node["currencyCode"], server)
    ]
    assert len(nodes) == len(oracle(server))
    assert wrong == []


def test_given_fixed_rewards_then_face_values_are_ascending_and_bound_the_range_in_the_rewards_currency(
    server: LiveServer,
) -> None:
    fixed = [n for n in nodes_of(walk_forward(server, CATALOG, page_size=100)) if n["denomination"]["kind"] == "FIXED"]

    assert fixed
    for node in fixed:
        denomination = node["denomination"]
        amounts = [Decimal(money["amount"]) for money in denomination["faceValues"]]
        assert amounts == sorted(set(amounts)) and amounts, node
        assert (amounts[0], amounts[-1]) == (
            Decimal(denomination["minValue"]["amount"]),
            Decimal(denomination["maxValue"]["amount"]),
        ), node
        assert {money["currencyCode"] for money in denomination["faceValues"]} == {node["currencyCode"]}, node


def test_given_variable_rewards_then_face_values_are_empty_and_the_range_is_not(server: LiveServer) -> None:
    variable = [
        n for n in nodes_of(walk_forward(server, CATALOG, page_size=100)) if n["denomination"]["kind"] == "VARIABLE"
    ]

    assert variable
    for node in variable:
        denomination = node["denomination"]
        assert denomination["faceValues"] == [], node
        assert Decimal(denomination["minValue"]["amount"]) < Decimal(denomination["maxValue"]["amount"]), node


# pointCostFor: (denomination kind, face value chosen from the reward's denomination, redeemable?)
FACE_VALUES: list[tuple[str, DenominationKind, Callable[[Reward], Decimal], bool]] = [
    ("fixed-listed", DenominationKind.FIXED, lambda r: r.denomination.face_values[1], True),
    ("fixed-listed-without-cents", DenominationKind.FIXED, lambda r: Decimal(int(r.denomination.face_values[0])), True),
    ("fixed-between-listed", DenominationKind.FIXED, lambda r: r.denomination.face_values[0] + 1, False),
    ("fixed-above-max", DenominationKind.FIXED, lambda r: r.denomination.max_value * 2, False),
    ("variable-min", DenominationKind.VARIABLE, lambda r: r.denomination.min_value, True),
    ("variable-max", DenominationKind.VARIABLE, lambda r: r.denomination.max_value, True),
    ("variable-inside", DenominationKind.VARIABLE, lambda r: r.denomination.min_value + Decimal("3.17"), True),
    ("variable-below-min", DenominationKind.VARIABLE, lambda r: r.denomination.min_value - Decimal("0.01"), False),
    ("variable-above-max", DenominationKind.VARIABLE, lambda r: r.denomination.max_value + Decimal("0.01"), False),
    ("variable-not-a-number", DenominationKind.VARIABLE, lambda r: Decimal("NaN"), False),
]


@pytest.mark.parametrize(
    ("kind", "face_value", "redeemable"), [c[1:] for c in FACE_VALUES], ids=[c[0] for c in FACE_VALUES]
)
def test_given_a_face_value_when_asking_point_cost_for_it_then_points_at_the_rate_or_null_when_not_redeemable(
    server: LiveServer, kind: DenominationKind, face_value: Callable[[Reward], Decimal], redeemable: bool
) -> None:
    reward = a_reward(server, kind)
    value = face_value(reward)

    node = reward_detail(server, reward, value)

    assert node["pointCostFor"] == (points(value, reward.currency_code, server) if redeemable else None)


def test_given_custom_rates_then_every_point_cost_uses_them_and_the_cost_sort_follows(
    custom_rates_server: LiveServer,
) -> None:
    nodes = nodes_of(walk_forward(custom_rates_server, CATALOG, page_size=100, sort="POINT_COST_ASC"))

    expected = [
        points(node["denomination"]["minValue"]["amount"], node["currencyCode"], custom_rates_server) for node in nodes
    ]
    assert len(nodes) == len(oracle(custom_rates_server))
    assert [node["pointCost"] for node in nodes] == expected
    assert expected == sorted(expected)


@pytest.mark.parametrize("kind", [DenominationKind.FIXED, DenominationKind.VARIABLE])
def test_given_custom_rates_then_point_cost_for_the_minimum_equals_point_cost_and_differs_from_the_default(
    server: LiveServer, custom_rates_server: LiveServer, kind: DenominationKind
) -> None:
    reward = a_reward(custom_rates_server, kind)

    custom = reward_detail(custom_rates_server, reward, reward.denomination.min_value)
    default = reward_detail(server, reward, reward.denomination.min_value)

    assert custom["pointCostFor"] == custom["pointCost"] == points(
        reward.denomination.min_value, reward.currency_code, custom_rates_server
    )
    assert custom["pointCost"] != default["pointCost"]


def test_given_a_variable_face_value_with_a_fraction_of_a_cent_when_asking_point_cost_for_it_then_null(
    server: LiveServer,
) -> None:
    reward = a_reward(server, DenominationKind.VARIABLE)

    node = reward_detail(server, reward, reward.denomination.min_value + Decimal("1.005"))

    assert node["pointCostFor"] is None
