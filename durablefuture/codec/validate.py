"""Bounds on what arrives from the wire, checked right after a message is decoded.

The API checks ids, names and durations where users pass them; this module checks them again
on every input, task and report the daemons receive, so a message from any other client (or a
forged one) that the server could not process later, or whose ids would reach a subject or
header, is refused at once as a :class:`DecodeError` (and dead-lettered with that reason)
instead of being written and left to sit as a run that can never move.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import attrs

from durablefuture.core.errors import DecodeError, InvalidArgumentError
from durablefuture.core.search_attributes import check_memo, check_wire
from durablefuture.core.types import (
    MAX_SECONDS,
    check_name,
    check_run_id,
    check_text_id,
    check_type_name,
    check_workflow_id,
)

__all__ = ["DURATION_FIELDS", "TIMESTAMP_FIELDS", "check_message_fields"]

_RUN_IDS = frozenset({"run_id", "child_run_id", "continued_from", "first_run_id", "new_run_id"})
_WORKFLOW_IDS = frozenset({"workflow_id", "child_workflow_id"})
_NAMES = frozenset({"workflow_type", "name", "signal_name", "activity_type"})
_QUEUES = frozenset({"task_queue"})
_TEXT_IDS = frozenset({"request_id", "chain_request_id", "worker"})
DURATION_FIELDS = frozenset(
    {
        "execution_timeout",
        "run_timeout",
        "schedule_to_close_timeout",
        "start_to_close_timeout",
        "schedule_to_start_timeout",
        "heartbeat_timeout",
        "duration",
        "timeout",
    }
)
TIMESTAMP_FIELDS = frozenset(
    {
        "execution_deadline",
        "scheduled_at",
        "attempt_scheduled_at",
        "fire_at",
        "completed_at",
        "heartbeat_at",
    }
)
_TIMER_KEY = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_HEADERS = 64
MAX_HEADER_BYTES = 8 * 1024
MAX_DEPTH = 8


def _check_field(name: str, value: object, where: str) -> None:
    what = f"{where}.{name}"
    if value is None or (value == "" and name in _RUN_IDS | {"worker", "chain_request_id"}):
        return
    if name in _RUN_IDS:
        check_run_id(value, what)  # type: ignore[arg-type]
    elif name in _WORKFLOW_IDS:
        check_workflow_id(value, what)  # type: ignore[arg-type]
    elif name in _NAMES:
        check_type_name(value, what)  # type: ignore[arg-type]
    elif name in _QUEUES:
        check_name(value, what)  # type: ignore[arg-type]
    elif name in _TEXT_IDS:
        check_text_id(value, what)  # type: ignore[arg-type]
    elif name in DURATION_FIELDS or name in TIMESTAMP_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return  # typed fields were structured already; nothing numeric to bound
        limit = MAX_SECONDS if name in DURATION_FIELDS else 253402300799.0  # 9999-12-31
        if not math.isfinite(value) or value < 0 or value > limit:
            raise InvalidArgumentError(f"{what} is {value!r}; it must be between 0 and {limit:g}")
    elif name == "key" and isinstance(value, str):
        if not _TIMER_KEY.fullmatch(value):
            raise InvalidArgumentError(
                f"{what} {value[:60]!r} is not a timer key (1-64 letters, digits, '.', '-', '_')"
            )
    elif name == "search_attributes":
        check_wire(value)
    elif name == "memo":
        check_memo(value)
    elif name == "headers" and isinstance(value, Mapping):
        if len(value) > MAX_HEADERS:
            raise InvalidArgumentError(f"{what} has {len(value)} entries; the limit is 64")
        size = sum(len(str(k)) + len(str(v)) for k, v in value.items())
        if size > MAX_HEADER_BYTES:
            raise InvalidArgumentError(f"{what} is {size} bytes; the limit is {MAX_HEADER_BYTES}")


def _walk(obj: object, where: str, depth: int) -> None:
    cls = type(obj)
    if depth > MAX_DEPTH or not attrs.has(cls):
        return
    for f in attrs.fields(cls):
        value = getattr(obj, f.name)
        _check_field(f.name, value, where)
        if attrs.has(type(value)):
            _walk(value, f"{where}.{f.name}", depth + 1)
        elif isinstance(value, tuple) and f.name in ("commands", "signals"):
            for i, item in enumerate(value[:10_000]):
                _walk(item, f"{where}.{f.name}[{i}]", depth + 1)


def check_message_fields(obj: object, what: str) -> None:
    """Raise DecodeError naming the first id, name or duration in ``obj`` out of bounds."""
    try:
        _walk(obj, what, 0)
    except InvalidArgumentError as exc:
        raise DecodeError(f"{what} refused: {exc}") from None
