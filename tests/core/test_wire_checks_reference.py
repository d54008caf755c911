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
