"""Shared fixtures. Async tests run on asyncio through anyio's pytest plugin."""

import io
import logging
from collections.abc import Iterator

import pytest
from hypothesis import settings

from giftgraph.logs import log_handler

# Property tests draw the same examples on every run (and keep no example database): a CI run that fails
# fails again on the next, and a green one is not luck. Explore with `--hypothesis-profile=explore`.
settings.register_profile("giftgraph", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False, database=None)
settings.load_profile("giftgraph")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    """Everything logged, at DEBUG, through giftgraph's own handler (as `giftgraph serve` logs)."""
    stream = io.StringIO()
    handler = log_handler(stream)
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
