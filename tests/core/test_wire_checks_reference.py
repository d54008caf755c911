"""The compiled wire checks refuse exactly what a plain walk over every field refuses.

``_reference`` is the straightforward form of the checks (each field's check chosen by name on
every visit); :func:`check_message_fields` works the choice out once per class and lets
printable ASCII through without building error text. Both must agree on any value, nested
anywhere within the depth bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durablefuture.codec import validate as v
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


def _reference_field(name: str, value: object, where: str) -> None:
    what = f"{where}.{name}"
    if value is None or (value == "" and name in v._RUN_IDS | {"worker", "chain_request_id"}):
        return
    if name in v._RUN_IDS:
        check_run_id(value, what)  # type: ignore[arg-type]
    elif name in v._WORKFLOW_IDS:
        check_workflow_id(value, what)  # type: ignore[arg-type]
    elif name in v._NAMES:
        check_type_name(value, what)  # type: ignore[arg-type]
    elif name in v._QUEUES:
        check_name(value, what)  # type: ignore[arg-type]
    elif name in v._TEXT_IDS:
        check_text_id(value, what)  # type: ignore[arg-type]
    elif name in v.DURATION_FIELDS or name in v.TIMESTAMP_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return
        limit = MAX_SECONDS if name in v.DURATION_FIELDS else 253402300799.0
        if not math.isfinite(value) or value < 0 or value > limit:
            raise InvalidArgumentError(f"{what} is {value!r}; it must be between 0 and {limit:g}")
    elif name == "key" and isinstance(value, str):
        if not v._TIMER_KEY.fullmatch(value):
            raise InvalidArgumentError(
                f"{what} {value[:60]!r} is not a timer key (1-64 letters, digits, '.', '-', '_')"
            )
    elif name == "search_attributes":
        check_wire(value)
    elif name == "memo":
        check_memo(value)
    elif name == "headers" and isinstance(value, Mapping):
        if len(value) > v.MAX_HEADERS:
            raise InvalidArgumentError(f"{what} has {len(value)} entries; the limit is 64")
        size = sum(len(str(k)) + len(str(x)) for k, x in value.items())
        if size > v.MAX_HEADER_BYTES:
            raise InvalidArgumentError(f"{what} is {size} bytes; the limit is {v.MAX_HEADER_BYTES}")


def _reference_walk(obj: object, where: str, depth: int) -> None:
    if depth > v.MAX_DEPTH or not attrs.has(type(obj)):
        return
    for f in attrs.fields(type(obj)):
        value = getattr(obj, f.name)
        _reference_field(f.name, value, where)
        if attrs.has(type(value)):
            _reference_walk(value, f"{where}.{f.name}", depth + 1)
        elif isinstance(value, tuple) and f.name in ("commands", "signals"):
            for i, item in enumerate(value[:10_000]):
                _reference_walk(item, f"{where}.{f.name}[{i}]", depth + 1)


def _reference(obj: object, what: str) -> None:
    try:
        _reference_walk(obj, what, 0)
    except InvalidArgumentError as exc:
        raise DecodeError(f"{what} refused: {exc}") from None


_FIELDS = (
    sorted(v._RUN_IDS | v._WORKFLOW_IDS | v._NAMES | v._QUEUES | v._TEXT_IDS | v.DURATION_FIELDS)
    + sorted(v.TIMESTAMP_FIELDS)
    + ["key", "headers", "memo", "other", "commands", "signals"]
)

# One class per field name, each holding that field and a nested value: values of any shape
# reach every check, at any depth.
_CLASSES = {
    name: attrs.make_class(f"Msg_{name}", {name: attrs.field(), "inner": attrs.field()})
    for name in _FIELDS
}

_TEXTS = ["", "a", "a b", "a.b", "é" * 128, "é" * 129, "é" * 256, "é" * 257, "x" * 64, "x" * 65]
_TEXTS += ["q" * 128, "q" * 129, "x" * 256, "x" * 257, "x" * 512, "x" * 513, "a\tb", "a\x7f"]
_TEXTS += ["\u2028", "a\x00", "\ud800", "*", "日本", "a\nb", "\x1f", "\x80", "_-", " ", "~"]
_NUMBERS: list[object] = [0, 1, -1, True, False, 2**70, -0.0, math.nan, math.inf, -math.inf]
_NUMBERS += [MAX_SECONDS, MAX_SECONDS + 1, 253402300799.0, 253402300800.0]
_TEXT = st.sampled_from(_TEXTS) | st.text(max_size=8)
_NUMBER = st.sampled_from(_NUMBERS) | st.floats() | st.integers()
_LEAF = st.none() | _TEXT | _NUMBER
_VALUE = st.recursive(
    _LEAF,
    lambda inner: (
        st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def _messages(draw: st.DrawFn, depth: int = 0) -> object:
    cls = _CLASSES[draw(st.sampled_from(_FIELDS))]
    name = attrs.fields(cls)[0].name
    nested = depth < v.MAX_DEPTH + 2 and draw(st.booleans())
    value: object
    if name in ("commands", "signals") and nested:
        value = tuple(draw(st.lists(_messages(depth + 1), max_size=3)))
    else:
        value = draw(_VALUE)
    inner = draw(_messages(depth + 1)) if nested else draw(_VALUE)
    return cls(value, inner)


def _outcome(check: object, obj: object) -> str:
    try:
        check(obj, "msg")  # type: ignore[operator]
    except DecodeError as exc:
        return f"refused: {exc}"
    except Exception as exc:  # both must fail alike
        return f"{type(exc).__name__}"
    return "passed"


@settings(max_examples=2_000, deadline=None)
@given(_messages())
def test_the_compiled_checks_agree_with_a_plain_walk(obj: object) -> None:
    assert _outcome(v.check_message_fields, obj) == _outcome(_reference, obj)


def test_every_field_agrees_on_every_boundary_value() -> None:
    others: list[object] = [None, (), ("a",), {}, {"A": 1}, {1: "x"}, {"h": "x" * 9000}]
    others += [{f"h{i}": "" for i in range(65)}, [1], 1.5]
    for name in _FIELDS:
        for value in [*_TEXTS, *_NUMBERS, *others]:
            obj = _CLASSES[name](value, None)
            assert _outcome(v.check_message_fields, obj) == _outcome(_reference, obj), (name, value)


@pytest.mark.parametrize("depth", range(v.MAX_DEPTH + 3))
def test_a_bad_id_is_refused_at_every_depth_the_walk_reaches(depth: int) -> None:
    obj: object = _CLASSES["run_id"]("a.b", None)
    for _ in range(depth):
        obj = _CLASSES["other"](None, obj)
    assert _outcome(v.check_message_fields, obj) == _outcome(_reference, obj)
    assert _outcome(_reference, obj).startswith("refused") == (depth <= v.MAX_DEPTH)


# ------------------------------------------------------------------ the engine's own messages
#
# The compiled checks leave out fields whose declared type holds no record (text, numbers,
# enums, payloads) and that have no check of their own: the converter makes such a field's
# value a leaf or the JSON as read, never a record. Every message of every wire class below,
# with any value put anywhere in its JSON, is refused or passed by both walks alike.

_PARENT = {"namespace": "ns", "workflow_id": "p", "run_id": "r" * 32, "seq": 1}
_OPTIONS = {
    "task_queue": "q",
    "start_to_close_timeout": 5.0,
    "heartbeat_timeout": 1.0,
    "retry_policy": {"initial_interval": 1.0, "maximum_attempts": 3},
}
_COMMANDS = [
    {"t": "ScheduleActivity", "seq": 1, "name": "charge", "args": ["o", 1], "options": _OPTIONS},
    {"t": "StartTimer", "seq": 2, "duration": 1.5},
    {
        "t": "StartChildWorkflow",
        "seq": 3,
        "workflow_type": "child",
        "workflow_id": "c-1",
        "args": [],
        "task_queue": "q",
        "execution_timeout": 9.0,
    },
    {"t": "SignalExternalWorkflow", "seq": 4, "workflow_id": "w", "name": "go", "args": []},
    {"t": "ContinueAsNewWorkflow", "args": [1], "signals": [{"name": "s", "args": [2]}]},
    {"t": "FailWorkflow", "failure": {"message": "m", "type": "E", "cause": {"message": "c"}}},
]
_WIRE: list[tuple[str, object]] = [
    (
        "activity task",
        {
            "namespace": "ns",
            "workflow_id": "w-1",
            "run_id": "a" * 32,
            "workflow_type": "order",
            "seq": 1,
            "attempt": 1,
            "name": "charge",
            "task_queue": "q",
            "options": _OPTIONS,
            "scheduled_at": 1.0,
            "attempt_scheduled_at": 2.0,
            "args": ["o", {"k": [1]}],
            "headers": {"traceparent": "x"},
        },
    ),
    (
        "start request",
        {
            "workflow_id": "w-1",
            "workflow_type": "order",
            "task_queue": "q",
            "request_id": "req-1",
            "args": [1],
            "execution_timeout": 30.0,
            "parent": _PARENT,
            "signals": [{"name": "s", "args": []}],
            "search_attributes": {"CustomerTier": "gold"},
            "memo": {"note": "x"},
        },
    ),
    (
        "report",
        {
            "t": "CompleteWorkflowTask",
            "run_id": "a" * 32,
            "based_on": 3,
            "commands": _COMMANDS,
            "worker": "h:1",
        },
    ),
    (
        "report",
        {
            "t": "CompleteActivityTask",
            "run_id": "a" * 32,
            "seq": 1,
            "attempt": 1,
            "result": {"ok": True},
            "commands": _COMMANDS[:2],
            "event_id": 5,
            "completed_at": 3.0,
        },
    ),
    (
        "report",
        {
            "t": "FailActivityTask",
            "run_id": "a" * 32,
            "seq": 1,
            "attempt": 2,
            "failure": {"message": "m", "type": "E", "timeout_type": "heartbeat"},
            "heartbeat_details": ["d"],
        },
    ),
    ("report", {"t": "FireTimer", "run_id": "a" * 32, "key": "t.1"}),
]
_BAD: list[object] = ["", "a b", "a.b", "*", "x" * 300, "\x00", -1, 1e300, math.nan, None]
_BAD += [True, [], {}, {"a": 1}, ["a"], _PARENT, _OPTIONS]


def _paths(tree: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out = [path] if path else []
    if isinstance(tree, dict):
        for k, value in tree.items():
            if k != "t":
                out += _paths(value, (*path, k))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            out += _paths(value, (*path, i))
    return out


def _with(tree: object, path: tuple[object, ...], value: object) -> object:
    copy = orjson.loads(orjson.dumps(tree))
    node = copy
    for step in path[:-1]:
        node = node[step]  # type: ignore[index]
    node[path[-1]] = value  # type: ignore[index]
    return copy


def test_the_engine_messages_are_checked_as_a_plain_walk_checks_them() -> None:
    from durablefuture.codec.wire import default_codec
    from durablefuture.core.effects import ActivityTask
    from durablefuture.core.inputs import RunInput, StartWorkflowRequest

    codec = default_codec()
    classes = {"activity task": ActivityTask, "start request": StartWorkflowRequest}
    compared = 0
    for what, tree in _WIRE:
        cls = classes.get(what, RunInput)
        for path in [(), *_paths(tree)]:
            for bad in _BAD if path else [None]:
                message = _with(tree, path, bad) if path else tree
                try:
                    obj = codec._structure(message, cls, what)
                except DecodeError:
                    continue  # refused by the schema before any check
                assert _outcome(v.check_message_fields, obj) == _outcome(_reference, obj), (
                    what,
                    path,
                    bad,
                )
                compared += 1
    assert compared > 500
