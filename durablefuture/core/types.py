"""Small shared types: JSON values, durations, names and identifiers."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:  # the datetime module imports time, which the pure core may not
    from datetime import timedelta

from durablefuture.core.errors import InvalidArgumentError

__all__ = [
    "Duration",
    "JsonValue",
    "check_name",
    "check_namespace",
    "check_run_id",
    "check_text_id",
    "check_type_name",
    "check_workflow_id",
    "optional_seconds",
    "payloads",
    "seconds",
    "type_name",
]

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None
"""A value JSON can carry. Payloads (arguments, results, details) are JsonValues on the wire."""

Duration: TypeAlias = "timedelta | float | int"
"""Durations accept a ``timedelta`` or a number of seconds."""

_NAMESPACE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_QUEUE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
RUN_ID_PATTERN = _RUN_ID
"""What :func:`check_run_id` accepts (for checks compiled elsewhere)."""
QUEUE_PATTERN = _QUEUE
"""What :func:`check_name` accepts."""
MAX_WORKFLOW_ID = 512
"""Longest workflow id, in UTF-8 bytes (it travels in subjects, keys and headers)."""
MAX_NAME = 256
"""Longest workflow type, activity, signal or query name, in UTF-8 bytes."""
MAX_SECONDS = 100 * 365 * 24 * 3600.0
"""Longest duration or timeout: 100 years (datetimes past the year 9999 cannot be represented)."""


_QUALIFIED = re.compile(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)")


def type_name(hint: object) -> str:
    """A short readable name for a type hint: ``Order``, ``list[Item]``, ``int | None``."""
    if isinstance(hint, type) and not getattr(hint, "__args__", None):
        return hint.__name__
    text = repr(hint).replace("<locals>.", "")
    return _QUALIFIED.sub(r"\1", text.replace("NoneType", "None"))


def payloads(value: object) -> tuple[JsonValue, ...]:
    """attrs converter: a list or tuple of JSON payloads, as a tuple."""
    if isinstance(value, tuple):
        return value
    if isinstance(value, list):
        return tuple(value)
    raise TypeError(f"expected a tuple of payloads, got {type(value).__name__}")


def seconds(value: Duration, what: str = "duration") -> float:
    """Convert a ``timedelta`` or number of seconds to float seconds, rejecting negatives."""
    total = getattr(value, "total_seconds", None)
    if callable(total) and not isinstance(value, int | float):
        out = float(total())
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentError(
            f"{what} must be a timedelta or a number of seconds, got {type(value).__name__} "
            f"{value!r}"
        )
    else:
        out = float(value)
    if out != out or out < 0:  # NaN or negative
        raise InvalidArgumentError(
            f"{what} must be >= 0 seconds (a number of seconds or a timedelta), got {value!r}"
        )
    if out > MAX_SECONDS:
        raise InvalidArgumentError(
            f"{what} is {out:.0f} seconds; the limit is 100 years ({MAX_SECONDS:.0f} s)"
        )
    return out


def optional_seconds(value: Duration | None, what: str = "duration") -> float | None:
    """Like :func:`seconds` but passes ``None`` through."""
    return None if value is None else seconds(value, what)


def check_namespace(namespace: str) -> str:
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise InvalidArgumentError(
            f"namespace {namespace!r} is not valid: use 1-64 letters, digits, '-' or '_'"
        )
    return namespace


def check_name(name: str, what: str = "task queue") -> str:
    if not isinstance(name, str) or not _QUEUE.fullmatch(name):
        raise InvalidArgumentError(
            f"{what} {name!r} is not valid: use 1-128 letters, digits, '-' or '_'"
        )
    return name


def _check_text(value: object, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(f"{what} must be a non-empty string, got {value!r}")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise InvalidArgumentError(
            f"{what} is {size} bytes long (UTF-8); the limit is {limit} (it starts {value[:40]!r})"
        )
    if _CONTROL.search(value):
        raise InvalidArgumentError(
            f"{what} {value[:60]!r} contains a control character (line break, tab, NUL ...); "
            "use printable characters only"
        )
    return value


def check_workflow_id(workflow_id: str, what: str = "workflow id") -> str:
    """A workflow id: 1-512 UTF-8 bytes, no control characters."""
    return _check_text(workflow_id, what, MAX_WORKFLOW_ID)


def check_type_name(name: str, what: str = "workflow type") -> str:
    """A registered name (workflow type, activity, signal, query): 1-256 bytes, printable."""
    return _check_text(name, what, MAX_NAME)


def check_text_id(value: str, what: str = "request id", limit: int = 256) -> str:
    """Any other id that travels in a header (request ids): printable, bounded."""
    return _check_text(value, what, limit)


def check_run_id(run_id: str, what: str = "run id") -> str:
    """A run id: 1-64 letters, digits, '-' or '_' (it is a subject token)."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise InvalidArgumentError(
            f"{what} {str(run_id)[:80]!r} is not valid: use 1-64 letters, digits, '-' or '_'"
        )
    return run_id
