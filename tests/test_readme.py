"""The README documents every setting: a new field in Settings without a line there fails here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from giftgraph.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def documented(field: str) -> bool:
    """`GIFTGRAPH_FIELD`, or a grouped row naming a prefix and then `_REST` (e.g. `_READ_TIMEOUT`)."""
    name = field.upper()
    if f"`GIFTGRAPH_{name}`" in README:
        return True
    parts = name.split("_")
    return any(
        f"`GIFTGRAPH_{'_'.join(parts[:cut])}" in README and f"`_{'_'.join(parts[cut:])}`" in README
        for cut in range(1, len(parts))
    )


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_in_the_readme(field: str) -> None:
    assert documented(field), f"GIFTGRAPH_{field.upper()} is not documented in README.md"


def documented_defaults() -> dict[str, str]:
    """Rows naming one setting with one backticked default: `| `GIFTGRAPH_X` | `default` | ... |`."""
    rows = re.findall(r"^\| `GIFTGRAPH_([A-Z0-9_]+)` \| `([^`]*)` \|", README, flags=re.MULTILINE)
    # `{base URL}/oauth/token`: a default derived from another setting, not a literal.
    return {
        name.lower(): default
        for name, default in rows
        if name.lower() in Settings.model_fields and not re.match(r"\{[A-Za-z ]+\}", default)
    }


def as_documented(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple | dict):
        return json.dumps(
            value, separators=(",", ":"), default=lambda number: int(number) if number == int(number) else float(number)
        )
    return str(getattr(value, "value", value))


@pytest.mark.parametrize("field", sorted(documented_defaults()))
def test_a_documented_default_is_the_default(field: str) -> None:
    default = Settings.model_fields[field].get_default(call_default_factory=True)
    documented_value = documented_defaults()[field]
    assert documented_value.split(" ")[0] == as_documented(default) or (
        isinstance(default, int | float) and not isinstance(default, bool) and float(documented_value) == default
    ), f"README says GIFTGRAPH_{field.upper()} defaults to {documented_value!r}; Settings says {default!r}"
