"""Logging: one line per record with the request id, and secrets scrubbed on the way out."""

from __future__ import annotations

import contextvars
import logging
import re

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# Bearer tokens and anything shaped like a JWT never reach a log line, whatever logged them.
_SECRETS = re.compile(r"(?i)bearer\s+[^\s\"',]+|eyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]*")
_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id"}


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get() or "-"
        return True


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


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        ScrubbingFormatter("%(asctime)s %(levelname)s %(name)s request_id=%(request_id)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
