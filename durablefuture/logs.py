"""Structured logs for the daemons: one JSON object (or one readable line) per record.

Context passed with ``extra={...}`` (workflow_id, run_id, activity id, task queue, ...) becomes
fields of the line. Every line is scrubbed of NATS passwords and tokens (see
``transport.redaction``), whoever logged it: our code, nats-py, uvicorn or a traceback.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

from durablefuture.transport.redaction import scrub

__all__ = [
    "JsonFormatter",
    "MessageFormatter",
    "TextFormatter",
    "setup_cli_logging",
    "setup_logging",
]

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = scrub(value) if isinstance(value, str) else value
        if record.exc_info and record.exc_info[0] is not None:
            out["exc"] = scrub(self.formatException(record.exc_info))
        # and once more as JSON, for secrets inside nested values
        return scrub(orjson.dumps(out, default=str).decode())


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{datetime.fromtimestamp(record.created).strftime('%H:%M:%S.%f')[:-3]} "
        base += f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        extras = [
            f"{k}={v}"
            for k, v in record.__dict__.items()
            if k not in _STANDARD and not k.startswith("_")
        ]
        if extras:
            base += "  " + " ".join(extras)
        if record.exc_info and record.exc_info[0] is not None:
            base += "\n" + self.formatException(record.exc_info)
        return scrub(base)


class MessageFormatter(logging.Formatter):
    """Just the message (and traceback), as Python prints warnings with no logging set up."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def setup_cli_logging(level: str = "warning") -> None:
    """For the command line: warnings and errors as bare lines on stderr, scrubbed of secrets.

    Leaves logging alone if the program has set it up already.
    """
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MessageFormatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())


def setup_logging(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("nats").setLevel(logging.WARNING if level.lower() != "debug" else "DEBUG")
