"""Relay cursor pagination: argument checks, opaque keyset cursors and in-memory slicing."""

from __future__ import annotations

import base64
import binascii
import json
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from resolvers.errors import BadUserInput

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# Our cursors hold a sort key and an id: far below this. Longer input is not ours, and
# refusing it before decoding keeps hostile JSON (e.g. deep nesting) away from the parser.
MAX_CURSOR_LENGTH = 4096

T = TypeVar("T")
Key = tuple


@dataclass(frozen=True, slots=True)
class Window:
    """Validated Relay arguments: exactly one of `first` / `last` is set."""

    first: int | None
    last: int | None
    after: Key | None
    before: Key | None

    @property
    def size(self) -> int:
        return self.first if self.first is not None else self.last  # type: ignore[return-value]

    @property
    def backward(self) -> bool:
        return self.last is not None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: Sequence[T]
    cursors: Sequence[str]
    has_next_page: bool
    has_previous_page: bool
    total_count: int


def encode_cursor(kind: str, key: Key) -> str:
    raw = json.dumps([kind, *key], separators=(",", ":"), ensure_ascii=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(kind: str, cursor: str, shape: Sequence[type]) -> Key:
    """The key inside a cursor we issued for `kind`, checked against `shape`; else BadUserInput."""
    data = None
    if len(cursor) <= MAX_CURSOR_LENGTH:
        try:
            padded = cursor + "=" * (-len(cursor) % 4)
            data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        except (ValueError, UnicodeError, binascii.Error, RecursionError):
            data = None
    if (
        not isinstance(data, list)
        or len(data) != len(shape) + 1
        or data[0] != kind
        or not all(type(value) is expected for value, expected in zip(data[1:], shape, strict=True))
    ):
        raise BadUserInput("That cursor is not valid for this list.", argument="cursor")
    return tuple(data[1:])


def window(
    *,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
    decode: Callable[[str], Key],
) -> Window:
    """Check Relay arguments and decode the cursors; BadUserInput on anything out of bounds."""
    if first is not None and last is not None:
        raise BadUserInput("Pass either `first` or `last`, not both.", argument="first")
    for name, value in (("first", first), ("last", last)):
        if value is not None and not 0 <= value <= MAX_PAGE_SIZE:
            raise BadUserInput(
                f"`{name}` must be between 0 and {MAX_PAGE_SIZE}.", argument=name, maximum=MAX_PAGE_SIZE
            )
    if first is None and last is None:
        first = DEFAULT_PAGE_SIZE
    return Window(
        first=first,
        last=last,
        after=decode(after) if after is not None else None,
        before=decode(before) if before is not None else None,
    )


def slice_sorted(
    items: Sequence[T],
    keys: Sequence[Key],
    win: Window,
    encode: Callable[[Key], str],
) -> Page[T]:
    """The window of `items` (sorted ascending by `keys`) the Relay arguments select."""
    start = bisect_right(keys, win.after) if win.after is not None else 0
    end = bisect_left(keys, win.before) if win.before is not None else len(items)
    end = max(start, end)
    if win.backward:
        lo = max(start, end - win.size)
        hi = end
        has_previous, has_next = lo > start, end < len(items)
    else:
        lo = start
        hi = min(end, start + win.size)
        has_previous, has_next = start > 0, hi < end
    return Page(
        items=items[lo:hi],
        cursors=[encode(keys[i]) for i in range(lo, hi)],
        has_next_page=has_next,
        has_previous_page=has_previous,
        total_count=len(items),
    )
