"""The one cattrs converter: engine messages and user payloads go through it.

Built once by :func:`make_converter`. Events, commands and inputs are tagged unions (``"t"`` holds
the class name); tuples become lists; enums travel by value; datetimes, dates, UUIDs, decimals
and bytes travel as strings so that every payload is plain JSON.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import pathlib
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any, get_args

import attrs
import orjson
from cattrs import Converter
from cattrs.strategies import configure_tagged_union

from durablefuture.core import commands as cmd
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.commands import describe_yieldable
from durablefuture.core.errors import PayloadError
from durablefuture.core.options import ActivityOptions
from durablefuture.core.types import JsonValue

__all__ = ["TAG", "CommandAsValue", "make_converter"]

TAG = "t"


_JSON_SCALARS = frozenset({type(None), bool, int, float, str})


def _is_json_value(t: object) -> bool:
    """True for the ``JsonValue`` alias however it was resolved (forward refs included)."""
    if t is JsonValue:
        return True
    if typing.get_origin(t) not in (typing.Union, types.UnionType):
        return False
    args = get_args(t)
    scalars = {a for a in args if isinstance(a, type)}
    origins = {typing.get_origin(a) for a in args}
    return scalars == _JSON_SCALARS and list in origins and dict in origins


def _tagged(converter: Converter, union: object) -> None:
    configure_tagged_union(
        union,
        converter,
        tag_generator=lambda cl: cl.__name__,
        tag_name=TAG,
    )


def _strict_str(value: Any, _t: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__} {value!r:.60}")
    return value


def _identity(value: Any) -> Any:
    return value


class CommandAsValue(PayloadError):
    """A workflow command (``df.activity(...)``, ...) met where a value was being encoded.

    ``JsonPayloads.to_payload`` turns it into a message naming what was being encoded.
    """

    def __init__(self, command: object) -> None:
        super().__init__(
            f"{describe_yieldable(command)} is a command, not a value; did you forget `yield`?"
        )
        self.command = command


def _refuse_command(value: Any) -> Any:
    raise CommandAsValue(value)


def make_converter() -> Converter:
    """Build the converter. Call once and share it (hooks are compiled lazily and cached)."""
    c = Converter(
        unstruct_collection_overrides={tuple: list, set: list, frozenset: list},
        omit_if_default=True,
        prefer_attrib_converters=False,
    )
    # JSON payload fields pass through untouched: they are JSON already.
    c.register_unstructure_hook_func(_is_json_value, _identity)
    c.register_structure_hook_func(_is_json_value, lambda v, _t: v)
    # Strings are not coerced: a null or a number where a str is expected (a workflow type,
    # an id) is an error, not the text "None" or "5".
    c.register_structure_hook(str, _strict_str)
    # Common value types travel as strings.
    c.register_unstructure_hook(dt.datetime, lambda v: v.isoformat())
    c.register_structure_hook(dt.datetime, lambda v, _t: dt.datetime.fromisoformat(v))
    c.register_unstructure_hook(dt.date, lambda v: v.isoformat())
    c.register_structure_hook(dt.date, lambda v, _t: dt.date.fromisoformat(v))
    c.register_unstructure_hook(dt.time, lambda v: v.isoformat())
    c.register_structure_hook(dt.time, lambda v, _t: dt.time.fromisoformat(v))
    c.register_unstructure_hook(dt.timedelta, lambda v: v.total_seconds())
    c.register_structure_hook(dt.timedelta, lambda v, _t: dt.timedelta(seconds=v))
    c.register_unstructure_hook(uuid.UUID, str)
    c.register_structure_hook(uuid.UUID, lambda v, _t: uuid.UUID(v))
    c.register_unstructure_hook(decimal.Decimal, str)
    c.register_structure_hook(decimal.Decimal, lambda v, _t: decimal.Decimal(v))
    c.register_unstructure_hook(bytes, lambda v: base64.b64encode(v).decode())
    c.register_structure_hook(bytes, lambda v, _t: base64.b64decode(v))
    c.register_unstructure_hook(pathlib.PurePath, str)
    c.register_structure_hook(pathlib.Path, lambda v, _t: pathlib.Path(v))
    c.register_structure_hook_func(lambda t: t is typing.Any or t is object, lambda v, _t: v)
    # What workflows yield is never a value: one met in a payload is a forgotten `yield`.
    c.register_unstructure_hook_func(lambda t: t in cmd.YIELDABLE_TYPES, _refuse_command)
    # Homogeneous tuples (payloads, commands): the element's hook is looked up once.
    c.register_structure_hook_factory(_homogeneous_tuple, lambda t: _tuple_hook(c, t))
    # Activity options repeat in every task, command and event of an activity: each distinct
    # one is structured (and its fields converted and checked) once. Registered before the
    # hooks of the classes that hold options are made, so that theirs use this one.
    _remember(c, ActivityOptions)
    # Engine unions: tagged by class name.
    for union in (ev.Event, cmd.Command, inp.RunInput):
        _tagged(c, union)
    _check_unions_are_attrs(ev.Event, cmd.Command, inp.RunInput)
    return c


_REMEMBERED = 1024
"""Distinct values kept per remembered class."""
_REMEMBERED_BYTES = 1024
"""Largest JSON object remembered. Real options take a few hundred bytes; a bigger object (a
forged one with unknown keys, which structuring ignores) is structured every time, so that a
sender cannot make the decoder keep what it sends."""


def _remember(converter: Converter, cls: type) -> None:
    """Structure ``cls`` (a frozen attrs class) once per distinct JSON object: the same
    object gives the same, immutable, value. An object that fails is structured (and
    fails) every time; one that is not plain JSON, holds a null, or is over
    ``_REMEMBERED_BYTES`` as JSON, is not remembered. A remembered key is a copy of its exact
    size (orjson's output keeps its whole working buffer, 4 KiB or more)."""
    structure_cls = converter.get_structure_hook(cls)
    seen: dict[bytes, Any] = {}

    def structure(obj: Any, _t: Any) -> Any:
        if type(obj) is not dict:
            return structure_cls(obj, cls)
        try:
            key = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            return structure_cls(obj, cls)
        if len(key) > _REMEMBERED_BYTES or b"null" in key:  # NaN and infinities are null too
            return structure_cls(obj, cls)
        value = seen.get(key)
        if value is None:
            value = structure_cls(obj, cls)
            if len(seen) < _REMEMBERED:
                seen[bytes(memoryview(key))] = value
        return value

    converter.register_structure_hook(cls, structure)


def _homogeneous_tuple(t: object) -> bool:
    """``tuple[X, ...]`` with a real element type (not ``Any``)."""
    if typing.get_origin(t) is not tuple:
        return False
    args = get_args(t)
    return len(args) == 2 and args[1] is Ellipsis and args[0] is not typing.Any


def _tuple_hook(converter: Converter, t: Any) -> Callable[[Any, Any], tuple[Any, ...]]:
    """Structure ``tuple[X, ...]`` with X's hook resolved once, when the hook is made.

    cattrs' own tuple structuring looks the element's hook up on every call, hashing the
    element type each time (for payloads, the ``JsonValue`` union of forward references). Any
    failure is structured again by cattrs, so errors read exactly as cattrs words them.
    """
    elem = get_args(t)[0]
    structure_elem = converter.get_structure_hook(elem)
    slow = converter._structure_tuple

    def structure(obj: Any, _t: Any) -> tuple[Any, ...]:
        try:
            return tuple([structure_elem(e, elem) for e in obj])
        except Exception:
            out: tuple[Any, ...] = slow(obj, t)  # raises cattrs' detailed error
            return out

    return structure


def _check_unions_are_attrs(*unions: object) -> None:
    for union in unions:
        for member in get_args(union):
            if not attrs.has(member):  # pragma: no cover - a programming error
                raise TypeError(f"{member!r} in a wire union is not an attrs class")
