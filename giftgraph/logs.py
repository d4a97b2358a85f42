"""Logging: one line per record with the request id, and secrets scrubbed on the way out."""

from __future__ import annotations

import contextvars
import logging
import re
from typing import IO

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# Bearer tokens and anything shaped like a JWT never reach a log line, whatever logged them.
_SECRETS = re.compile(r"(?i)bearer\s+[^\s\"',]+|eyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]*")
# uvicorn adds `color_message`, a copy of the message with terminal colours: not worth a field.
_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id", "color_message"}


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get() or "-"
        return True


class TraceRedactionFilter(logging.Filter):
    """At DEBUG, websockets (under uvicorn) traces every frame's payload and every handshake header:
    the line stays, the content goes. A frame's payload carries tokens (connection_init) and gift
    cards (subscription events), and the trace keeps its start and end, so a prefix is no cover."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg in ("< %s", "> %s") and len(args) == 1 and _is_data_frame(args[0]):
            frame = args[0]
            record.args = (f"{frame.opcode.name} [redacted] [{len(frame.data)} bytes]",)
        elif record.msg in ("< %s: %s", "> %s: %s") and len(args) == 2 and str(args[0]).lower() in _SECRET_HEADERS:
            record.args = (args[0], "[redacted]")
        return True


_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


def _is_data_frame(candidate: object) -> bool:
    opcode = getattr(candidate, "opcode", None)
    return getattr(opcode, "name", None) in ("TEXT", "BINARY", "CONT") and hasattr(candidate, "data")


class ScrubbingFormatter(logging.Formatter):
    """Appends `extra` fields as key=value and redacts tokens from the whole line."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(
            f"{key}={value!r}" for key, value in record.__dict__.items() if key not in _STANDARD_ATTRS
        )
        if extras:
            line = f"{line} {extras}"
        return _SECRETS.sub("[redacted]", line)


LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s request_id=%(request_id)s %(message)s"


def log_handler(stream: IO[str] | None = None) -> logging.Handler:
    """The handler giftgraph logs through: request ids added, tokens scrubbed (stderr by default)."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(TraceRedactionFilter())
    handler.setFormatter(ScrubbingFormatter(LINE_FORMAT))
    return handler


def configure_logging(level: str = "INFO") -> None:
    handler = log_handler()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # httpx logs every provider request at INFO with its query string (user ids, reward ids): our own
    # provider layer logs what matters (retries, failures) without them.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    # Alembic announces each of its plugins at INFO on every start; its migration lines stay.
    logging.getLogger("alembic.runtime.plugins").setLevel(max(logging.WARNING, root.level))
