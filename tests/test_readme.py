"""The README against the code: every setting documented with its true default, no variable, command, option
or example operation that the code does not have."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from graphql import build_schema, parse, validate

from giftgraph.cli import main
from giftgraph.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCED = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.MULTILINE | re.DOTALL)


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


# Names and commands the README mentions must exist: a renamed or removed one leaves a stale line behind.


def mentioned_variables() -> list[str]:
    """Every `GIFTGRAPH_...` name in the README; a name written `GIFTGRAPH_X_*` stands for the settings it prefixes."""
    return sorted(set(re.findall(r"GIFTGRAPH_[A-Z0-9_]*[A-Z0-9](?:_\*)?", README)))


@pytest.mark.parametrize("name", mentioned_variables())
def test_every_variable_the_readme_names_is_a_setting(name: str) -> None:
    settings = {f"GIFTGRAPH_{field.upper()}" for field in Settings.model_fields}
    ci_only = (ROOT / ".ci" / "run").read_text(encoding="utf-8")  # e.g. GIFTGRAPH_TEST_REQUIRE_POSTGRES
    if name.endswith("_*"):
        assert any(setting.startswith(name[:-1]) for setting in settings), f"no setting starts with {name[:-1]}"
    else:
        assert name in settings or name in ci_only, f"README names {name}, which is neither a setting nor in .ci/run"


def command_lines() -> list[str]:
    """Every `giftgraph ...` invocation the README shows: in sh blocks, and in inline code outside code blocks."""
    found: list[str] = []
    for language, body in FENCED.findall(README):
        if language == "sh":
            found += re.findall(r"(?:^|[\s/(])(giftgraph(?: +[^\s)]+)*)", body, flags=re.MULTILINE)
    prose = FENCED.sub("", README)
    for span in re.findall(r"`([^`]+)`", prose):
        found += [" ".join(match.split()) for match in re.findall(r"^(giftgraph\s+\S.*)$", span, flags=re.DOTALL)]
    return sorted(set(found))


@pytest.mark.parametrize("line", command_lines())
def test_every_command_and_option_the_readme_shows_exists(line: str) -> None:
    command: click.Command = main
    words = line.split()[1:]
    while isinstance(command, click.Group) and words and words[0] in command.commands:
        command = command.commands[words.pop(0)]
    assert not isinstance(command, click.Group) or not words, f"`{line}`: no command {words[0]!r}"
    options = {opt for param in command.params for opt in getattr(param, "opts", ())}
    unknown = sorted(set(re.findall(r"--[a-z][a-z-]*", " ".join(words))) - options)
    assert unknown == [], f"`{line}`: {command.name} has no {', '.join(unknown)}"


def example_operations() -> list[str]:
    """The GraphQL documents of the README's graphql blocks, one per operation (a block may hold several)."""
    operations: list[str] = []
    for language, body in FENCED.findall(README):
        if language == "graphql":
            operations += [
                chunk
                for chunk in re.split(r"^(?=query|mutation|subscription|\{)", body, flags=re.MULTILINE)
                if chunk.strip()
            ]
    return operations


@pytest.mark.parametrize("document", example_operations())
def test_every_example_operation_in_the_readme_validates_against_the_schema(document: str) -> None:
    contract = build_schema((ROOT / "graphql" / "schema.graphql").read_text(encoding="utf-8"))
    errors = validate(contract, parse(document))
    assert errors == [], f"{document}\n{[error.message for error in errors]}"
