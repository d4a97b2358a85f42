"""Regression tests for what the Schemathesis fuzz run (tests/test_fuzz_schemathesis.py) found.

A finding not fixed yet is kept here as `xfail(strict=True, reason=<the bug>)` until its fix lands.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from providers import DenominationKind
from resolvers.ids import encode_global_id
from tests.support import LiveServer, gql, live_server, make_settings, operation

REWARD_DETAIL = operation("RewardDetail")

# Found: Reward.pointCostFor answered INTERNAL_SERVER_ERROR for these. Their quotient by 0.01 has
# more digits than the default decimal context keeps (28), so the whole-cents check
# `face_value % Decimal("0.01")` raised decimal.InvalidOperation (DivisionImpossible).
HUGE_FACE_VALUES = ["1E+26", "-1E+100", "9" * 400]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(make_settings(tmp_path_factory.mktemp("fuzz-regressions"))) as server:
        yield server


@pytest.mark.parametrize("kind", [DenominationKind.FIXED, DenominationKind.VARIABLE], ids=lambda kind: kind.value)
@pytest.mark.parametrize("face_value", HUGE_FACE_VALUES, ids=["1E+26", "-1E+100", "400-nines"])
def test_given_a_face_value_too_large_for_decimal_arithmetic_when_asking_point_cost_for_it_then_null_and_no_error(
    server: LiveServer, kind: DenominationKind, face_value: str
) -> None:
    reward = next(r for r in server.provider.catalog if r.denomination.kind is kind)

    result = gql(server, REWARD_DETAIL, {"id": encode_global_id("Reward", reward.id), "faceValue": face_value})

    assert "errors" not in result, result["errors"]
    assert result["data"]["node"]["pointCostFor"] is None
