"""Shared fixtures. Async tests run on asyncio through anyio's pytest plugin."""

import io
import logging
from collections.abc import Iterator

import pytest

from giftgraph.logs import log_handler


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
