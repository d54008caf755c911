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
MAX_WORKFLOW_ID = 512


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


def check_workflow_id(workflow_id: str) -> str:
    if not isinstance(workflow_id, str) or not workflow_id:
        raise InvalidArgumentError(f"workflow id must be a non-empty string, got {workflow_id!r}")
    if len(workflow_id) > MAX_WORKFLOW_ID:
        raise InvalidArgumentError(
            f"workflow id is {len(workflow_id)} characters long; the limit is {MAX_WORKFLOW_ID}"
        )
    return workflow_id
