"""Structured logging: one JSON object per line, request-scoped ids, no secrets.

Nothing here ever formats a request header or body, which is how tokens and client
secrets stay out of the logs; the `redact` filter is a second line of defence for
anything that slips into a message.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from connector.config import LoggingSettings

# The connector's own secrets by their prefixes (SCIM tokens, admin API tokens, reporting
# keys, webhook signing secrets), and the usual ways of naming one.
_SECRET = re.compile(r"(Bearer\s+|scim_|\bcadm_|\brk_|\bwhsec_|token=|secret=|password=)"
                     r"[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
# Line breaks and other control characters a client's text may carry (a path with %0A, a
# userName): written as escapes, so one record stays one line and forges no other.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def redact(text: str) -> str:
    return _SECRET.sub(lambda m: m.group(1) + "[redacted]", text)


def one_line(text: str) -> str:
    """The text with its control characters escaped (\\n, \\x1b…)."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key, value in getattr(record, "fields", {}).items():
            entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={one_line(str(v))}"
                          for k, v in getattr(record, "fields", {}).items())
        text = (f"{record.levelname:<7} {record.name}: {one_line(record.getMessage())} "
                f"{fields}").rstrip()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return redact(text)


def setup(settings: LoggingSettings) -> None:
    """Configure the root logger once per process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.json else PlainFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    # Libraries' routine INFO (Alembic's "Context impl…" on every start, APScheduler's
    # "Running job…" every minute) says nothing an operator acts on: their warnings and
    # errors still show; the connector logs its own jobs' outcomes.
    for name in ("werkzeug", "alembic", "apscheduler"):
        logging.getLogger(name).setLevel(logging.WARNING)


def log(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    logger.log(level, msg, extra={"fields": fields})
