"""Bounds on what arrives from the wire, checked right after a message is decoded.

The API checks ids, names and durations where users pass them; this module checks them again
on every input, task and report the daemons receive, so a message from any other client (or a
forged one) that the server could not process later, or whose ids would reach a subject or
header, is refused at once as a :class:`DecodeError` (and dead-lettered with that reason)
instead of being written and left to sit as a run that can never move.
"""

from __future__ import annotations

import enum
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import orjson

from durablefuture.core.errors import DecodeError, InvalidArgumentError
from durablefuture.core.search_attributes import check_memo, check_wire
from durablefuture.core.types import (
    MAX_NAME,
    MAX_SECONDS,
    MAX_WORKFLOW_ID,
    QUEUE_PATTERN,
    RUN_ID_PATTERN,
    JsonValue,
    check_name,
    check_run_id,
    check_text_id,
    check_type_name,
    check_workflow_id,
)

__all__ = [
    "DURATION_FIELDS",
    "TIMESTAMP_FIELDS",
    "check_message_fields",
    "json_list_record",
    "json_object",
]

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
_EMPTY_OK = _RUN_IDS | {"worker", "chain_request_id"}
"""Fields where an empty string means "none"."""
_ITEMS = frozenset({"commands", "signals"})


_Checker = Callable[[object, str, str], None]
"""A field's check: ``(value, where, name)``; raises InvalidArgumentError naming
``where.name``. The text of the error is built only when the value fails."""


def json_object(data: bytes, what: str) -> dict[str, Any]:
    """``data`` decoded as the JSON object every record on the wire is.

    Raises:
        DecodeError: naming ``what``, when ``data`` is not JSON or not a JSON object.
    """
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"{what} is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DecodeError(f"{what} is not a JSON object")
    return obj


def json_list_record(
    data: bytes, what: str, key: str, noun: str, most: int, max_bytes: int
) -> list[object]:
    """The list under ``key`` of the JSON object ``data`` (a list record: an expiry list, a
    check list): ``data`` at most ``max_bytes``, the list 1 to ``most`` items, not yet
    checked one by one.

    Raises:
        DecodeError: what is wrong, naming ``what``.
    """
    if len(data) > max_bytes:
        raise DecodeError(f"{what} of {len(data):,} bytes is larger than {max_bytes:,}")
    items = json_object(data, what).get(key)
    if not isinstance(items, list) or not 1 <= len(items) <= most:
        raise DecodeError(f"{what} needs '{key}': a list of 1 to {most} {noun}")
    return items


def _slow(check: Callable[[Any, str], object]) -> _Checker:
    def checker(value: object, where: str, name: str) -> None:
        check(value, f"{where}.{name}")

    return checker


def _text(check: Callable[[Any, str], object], limit: int) -> _Checker:
    """Printable text of 1..``limit`` UTF-8 bytes: printable ASCII within the limit passes at
    once (``isprintable`` is false for exactly the control characters there); anything else
    goes through ``check``, which passes it or raises with the reason."""

    def checker(value: object, where: str, name: str) -> None:
        if (
            type(value) is str
            and 0 < len(value) <= limit
            and value.isascii()
            and value.isprintable()
        ):
            return
        check(value, f"{where}.{name}")

    return checker


def _pattern(check: Callable[[Any, str], object], pattern: re.Pattern[str]) -> _Checker:
    """Text matching ``pattern`` passes at once; anything else goes through ``check``."""
    match = pattern.fullmatch

    def checker(value: object, where: str, name: str) -> None:
        if type(value) is str and match(value):
            return
        check(value, f"{where}.{name}")

    return checker


def _number(limit: float) -> _Checker:
    def checker(value: object, where: str, name: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return  # typed fields were structured already; nothing numeric to bound
        if not math.isfinite(value) or value < 0 or value > limit:
            raise InvalidArgumentError(
                f"{where}.{name} is {value!r}; it must be between 0 and {limit:g}"
            )

    return checker


def _timer_key(value: object, where: str, name: str) -> None:
    if isinstance(value, str) and not _TIMER_KEY.fullmatch(value):
        raise InvalidArgumentError(
            f"{where}.{name} {value[:60]!r} is not a timer key "
            "(1-64 letters, digits, '.', '-', '_')"
        )


def _headers(value: object, where: str, name: str) -> None:
    if not isinstance(value, Mapping):
        return
    if len(value) > MAX_HEADERS:
        raise InvalidArgumentError(f"{where}.{name} has {len(value)} entries; the limit is 64")
    size = sum(len(str(k)) + len(str(v)) for k, v in value.items())
    if size > MAX_HEADER_BYTES:
        raise InvalidArgumentError(
            f"{where}.{name} is {size} bytes; the limit is {MAX_HEADER_BYTES}"
        )


def _checker(name: str) -> _Checker | None:
    """The check of a field called ``name`` (None: nothing to check)."""
    if name in _RUN_IDS:
        return _pattern(check_run_id, RUN_ID_PATTERN)
    if name in _WORKFLOW_IDS:
        return _text(check_workflow_id, MAX_WORKFLOW_ID)
    if name in _NAMES:
        return _text(check_type_name, MAX_NAME)
    if name in _QUEUES:
        return _pattern(check_name, QUEUE_PATTERN)
    if name in _TEXT_IDS:
        return _text(check_text_id, 256)
    if name in DURATION_FIELDS:
        return _number(MAX_SECONDS)
    if name in TIMESTAMP_FIELDS:
        return _number(253402300799.0)  # 9999-12-31
    if name == "key":
        return _timer_key
    if name == "search_attributes":
        return _slow(lambda value, _what: check_wire(value))
    if name == "memo":
        return _slow(lambda value, _what: check_memo(value))
    if name == "headers":
        return _headers
    return None


_Field = tuple[str, _Checker | None, bool, bool, bool]
"""A field of a message class: name, check, whether "" passes unchecked, whether its items
(a tuple of records: commands, signals) are walked, whether its value may hold a record."""
_PLANS: dict[type, tuple[_Field, ...] | None] = {}
_LEAVES = frozenset({str, int, float, bool})
"""Value types with nothing inside to walk."""
_MAX_PLANS = 4096
_NO_RECORDS: tuple[object, ...] = (str, int, float, bool, type(None), JsonValue)
"""Declared types whose values hold no record, as the converter structures them: text,
numbers and booleans are made by their own hooks, payloads (``JsonValue``) are the JSON
values as read."""


def _holds_no_records(hint: object) -> bool:
    """Whether a field declared ``hint`` can only hold values without an attrs record inside
    (leaves, enums, payloads, and unions, tuples, lists and dicts of those)."""
    if any(hint is t for t in _NO_RECORDS):
        return True
    if isinstance(hint, typing.ForwardRef):  # inside ``JsonValue``, which refers to itself
        return hint.__forward_arg__ == "JsonValue"
    if isinstance(hint, type):
        return issubclass(hint, enum.Enum)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType, tuple, list, dict):
        return all(a is Ellipsis or _holds_no_records(a) for a in typing.get_args(hint))
    return False


def _record_free_fields(cls: type) -> frozenset[str]:
    """The fields of attrs class ``cls`` declared with types that hold no record (none when
    its annotations cannot be resolved: every field is walked then)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        return frozenset()
    return frozenset(name for name, hint in hints.items() if _holds_no_records(hint))


def _plan(cls: type) -> tuple[_Field, ...] | None:
    """The fields of attrs class ``cls`` with their checks, worked out once per class (None:
    not an attrs class, nothing to walk). A field with no check whose declared type holds no
    record has nothing to look at and is left out."""
    try:
        return _PLANS[cls]
    except KeyError:
        pass
    plan: tuple[_Field, ...] | None = None
    if attrs.has(cls):
        flat = _record_free_fields(cls)
        fields = [
            (f.name, _checker(f.name), f.name in _EMPTY_OK, f.name in _ITEMS, f.name not in flat)
            for f in attrs.fields(cls)
        ]
        plan = tuple(f for f in fields if f[1] is not None or f[4])
    if len(_PLANS) < _MAX_PLANS:
        _PLANS[cls] = plan
    return plan


def _walk(obj: object, plan: tuple[_Field, ...], where: str, depth: int) -> None:
    for name, check, empty_ok, items, nested in plan:
        value = getattr(obj, name)
        if value is None or (empty_ok and value == ""):
            continue
        if check is not None:
            check(value, where, name)
        if not nested or depth >= MAX_DEPTH:
            continue
        kind = type(value)
        if kind in _LEAVES:
            continue
        inner = _PLANS[kind] if kind in _PLANS else _plan(kind)
        if inner is not None:
            _walk(value, inner, f"{where}.{name}", depth + 1)
        elif items and isinstance(value, tuple):
            for i, item in enumerate(value[:10_000]):
                item_plan = _plan(type(item))
                if item_plan is not None:
                    _walk(item, item_plan, f"{where}.{name}[{i}]", depth + 1)


def check_message_fields(obj: object, what: str) -> None:
    """Raise DecodeError naming the first id, name or duration in ``obj`` out of bounds."""
    plan = _plan(type(obj))
    if plan is None:
        return
    try:
        _walk(obj, plan, what, 0)
    except InvalidArgumentError as exc:
        raise DecodeError(f"{what} refused: {exc}") from None
