"""The README documents every setting: a new field in Settings without a line there fails here."""

from __future__ import annotations

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
