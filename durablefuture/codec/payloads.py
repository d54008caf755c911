"""User payloads: arguments, results and error details as JSON values.

Values are unstructured by the shared converter (attrs classes, dataclasses, datetimes, UUIDs,
enums, tuples, ...) and normalised through orjson, so what a workflow yields compares equal to
what history recorded. On the receiving side they are structured to the function's type hints.
"""

from __future__ import annotations

import ast
import re
import sys
import typing

import orjson
from cattrs import Converter, ForbiddenExtraKeysError, transform_error

from durablefuture.codec.converter import CommandAsValue
from durablefuture.codec.envelope import describe_envelope, is_envelope
from durablefuture.core.commands import ContinueAsNew, describe_yieldable
from durablefuture.core.errors import PayloadError
from durablefuture.core.types import JsonValue, type_name

__all__ = ["MAX_PAYLOAD_BYTES", "JsonPayloads"]

MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
"""Largest encoded payload accepted. Payloads over 256 KiB travel by reference, through the
namespace's object store (:mod:`durablefuture.codec.claims`)."""

_PASSTHROUGH: frozenset[object] = frozenset({None, object, typing.Any})
_INT_MIN = -(2**63)
_INT_END = 2**64
_FLOAT_MAX = sys.float_info.max
_FLOAT_MIN = -_FLOAT_MAX


class JsonPayloads:
    """The payload converter used by workers, clients and the replayer."""

    def __init__(self, converter: Converter, max_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        self._c = converter
        self._max = max_bytes

    def _as_is(self, value: object) -> bool:
        """Whether ``value`` is its own payload: where encoding cannot fail or exceed the limit
        and orjson would give back an equal value of the same type. A str encodes to at most 6
        bytes a character (escaped), orjson takes ints in [-2**63, 2**64) only, and writes a
        finite float in at most 24 characters that read back as the same float (not NaN or
        an infinity: those become null)."""
        kind = type(value)
        return (
            value is None
            or kind is bool
            or (kind is int and _INT_MIN <= value < _INT_END)  # type: ignore[operator]
            or (kind is str and 6 * len(value) + 2 <= self._max)  # type: ignore[arg-type]
            or (kind is float and _FLOAT_MIN <= value <= _FLOAT_MAX and self._max >= 32)  # type: ignore[operator]
        )

    def to_payload(self, value: object, what: str = "value") -> JsonValue:
        if self._as_is(value):
            return value  # type: ignore[return-value]
        try:
            raw = orjson.dumps(self._c.unstructure(value))
        except CommandAsValue as exc:
            raise PayloadError(_not_yielded(what, value, exc.command)) from None
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise PayloadError(
                f"{what} of type {type(value).__name__} cannot be encoded as JSON ({exc}); "
                "pass JSON-friendly values: str, int, float, bool, None, lists, dicts with str "
                "keys, attrs classes, dataclasses, datetime, UUID, Decimal, enums"
            ) from None
        if len(raw) > self._max:
            raise PayloadError(
                f"{what} is {len(raw)} bytes once encoded; the limit is {self._max} bytes. "
                "Store large data elsewhere (a database or object store) and pass a reference"
            )
        out: JsonValue = orjson.loads(raw)
        return out

    def to_payloads(self, values: tuple[object, ...], what: str) -> tuple[JsonValue, ...]:
        """Encode the arguments of one call; together they must fit the limit too (they
        travel in one message with the command that carries them)."""
        out: list[JsonValue] = []
        estimate = 0
        for i, value in enumerate(values):
            if self._as_is(value):  # (the label below is built only for what may fail)
                payload: JsonValue = value  # type: ignore[assignment]
            else:
                label = f"argument {i} ({type(value).__name__}) of {what}"
                payload = self.to_payload(value, label)
            out.append(payload)
            estimate += 6 * len(payload) + 2 if isinstance(payload, str) else 32
            if not isinstance(payload, str | int | float | bool | None):
                estimate = self._max + 1  # nested: measure exactly below
        if estimate > self._max and len(out) > 1:
            total = len(orjson.dumps(out))
            if total > self._max:
                raise PayloadError(
                    f"the {len(out)} arguments of {what} are {total} bytes once encoded; "
                    f"together they may take at most {self._max} bytes. Store large data "
                    "elsewhere (a database or object store) and pass a reference"
                )
        return tuple(out)

    def from_payload(
        self, payload: JsonValue, type_hint: object = None, what: str | None = None
    ) -> object:
        """Structure ``payload`` to ``type_hint``.

        Raises:
            PayloadError: naming ``what`` (e.g. "argument 'order' of activity 'charge'") and
                each field that does not fit, with the type it expected and the value it got.
        """
        if is_envelope(payload):
            subject = "a payload" if what is None else what
            raise PayloadError(
                f"{subject} is {describe_envelope(payload)}: this process has no payload codec "
                "that decodes it. Pass the codec that wrote it (codec=... on Client.connect, "
                "--codec on df-worker and df)"
            )
        if type_hint in _PASSTHROUGH:
            return payload
        try:
            return self._c.structure(payload, type_hint)  # type: ignore[arg-type]
        except Exception as exc:
            subject = f"payload {_short(payload)}" if what is None else what
            raise PayloadError(
                f"cannot turn {subject} into {type_name(type_hint)}: "
                f"{_problems(exc, payload, type_hint)}"
            ) from None


def _not_yielded(what: str, value: object, command: object) -> str:
    desc = describe_yieldable(command)
    site = getattr(command, "site", None)
    where = f", created at {site[0]}:{site[1]}" if site else ""
    if isinstance(command, ContinueAsNew):
        fix = f"`yield {desc}` (it ends the run)"
    else:
        fix = f"`value = yield {desc}` and use `value`, or `return (yield {desc})`"
    return (
        f"{what} {'is' if command is value else 'contains'} {desc}{where}: a command, which "
        f"does nothing until the workflow yields it. Did you forget `yield`? Write {fix}"
    )


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) < limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------ structuring errors

_MAX_PROBLEMS = 8
_STEP = re.compile(r"\.([A-Za-z_]\w*)|\[(-?\d+|'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\]")
_MISSING = object()


def _problems(exc: Exception, payload: JsonValue, type_hint: object) -> str:
    """``field 'amount' expected float, got str 'abc'; field 'items[2].sku' missing``.

    cattrs' ``transform_error`` walks the exception group and builds each path; the
    descriptions are ours, with the offending value looked up along the path.
    """
    found: list[tuple[BaseException, object]] = []

    def remember(error: BaseException, expected: type | None) -> str:
        found.append((error, expected))
        return str(len(found) - 1)  # an index: carries no " @ " of its own

    out: list[str] = []
    for line in transform_error(exc, "$", remember):
        index, _, path = line.partition(" @ ")
        error, expected = found[int(index)]
        value, parent = _value_at(payload, path)
        if parent is not None:  # a field of something that is not an object at all
            problem = f"{_where(parent[0])}expected an object, got {_got(parent[1])}"
        else:
            problem = _describe(path, error, expected, value)
        if problem not in out:
            out.append(problem)
    if len(out) > _MAX_PROBLEMS:
        out[_MAX_PROBLEMS:] = [f"and {len(out) - _MAX_PROBLEMS} more"]
    return "; ".join(out) or str(exc)


def _where(path: str) -> str:
    rest = path[1:].lstrip(".")
    if not rest:
        return ""
    return f"item {rest} " if rest.startswith("[") else f"field '{rest}' "


def _describe(path: str, error: BaseException, expected: object, value: object) -> str:
    where = _where(path)
    if isinstance(error, KeyError):
        return f"{where}missing"
    if isinstance(error, ForbiddenExtraKeysError):
        return f"{where}has unexpected fields {sorted(error.extra_fields)}"
    got = "" if value is _MISSING else f"got {_got(value)}"
    if not where:  # the whole payload: the message already names the expected type
        return got or f"{type(error).__name__}: {error}"
    if expected is not None:
        return f"{where}expected {type_name(expected)}" + (f", {got}" if got else "")
    return f"{where}is invalid ({type(error).__name__}: {error})" + (f", {got}" if got else "")


def _got(value: object) -> str:
    if value is None:
        return "null"
    return f"{type(value).__name__} {_short(value, 40)}"


def _value_at(payload: object, path: str) -> tuple[object, tuple[str, object] | None]:
    """The part of ``payload`` at a ``transform_error`` path such as ``$.items[2]['k']``, or
    ``_MISSING`` with (path, value) of the step that is not an object or list when that is why.
    """
    value = payload
    pos = 1
    while pos < len(path):
        step = _STEP.match(path, pos)
        if step is None:
            return _MISSING, None
        if step.group(1) is not None:
            key: object = step.group(1)
            if not isinstance(value, dict):
                return _MISSING, (path[:pos], value)
        else:
            try:
                key = ast.literal_eval(step.group(2))
            except (ValueError, SyntaxError):
                return _MISSING, None
            if not isinstance(value, dict | list):
                return _MISSING, (path[:pos], value)
        pos = step.end()
        try:
            value = value[key]  # type: ignore[call-overload]
        except (KeyError, IndexError, TypeError):
            return _MISSING, None
    return value, None
