"""User payloads: arguments, results and error details as JSON values.

Values are unstructured by the shared converter (attrs classes, dataclasses, datetimes, UUIDs,
enums, tuples, ...) and normalised through orjson, so what a workflow yields compares equal to
what history recorded. On the receiving side they are structured to the function's type hints.
"""

from __future__ import annotations

import typing

import orjson
from cattrs import Converter

from durablefuture.core.errors import PayloadError
from durablefuture.core.types import JsonValue

__all__ = ["MAX_PAYLOAD_BYTES", "JsonPayloads"]

MAX_PAYLOAD_BYTES = 512 * 1024
"""Largest encoded payload accepted (the NATS message limit is 1 MiB for the whole message)."""

_PASSTHROUGH: frozenset[object] = frozenset({None, object, typing.Any})
_INT_MIN = -(2**63)
_INT_END = 2**64


class JsonPayloads:
    """The payload converter used by workers, clients and the replayer."""

    def __init__(self, converter: Converter, max_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        self._c = converter
        self._max = max_bytes

    def to_payload(self, value: object, what: str = "value") -> JsonValue:
        # fast path only where encoding cannot fail or exceed the limit: a str encodes to at
        # most 6 bytes a character (\uXXXX), orjson takes ints in [-2**63, 2**64) only
        kind = type(value)
        if (
            value is None
            or kind is bool
            or (kind is int and _INT_MIN <= value < _INT_END)  # type: ignore[operator]
            or (kind is str and 6 * len(value) + 2 <= self._max)  # type: ignore[arg-type]
        ):
            return value  # type: ignore[return-value]
        try:
            raw = orjson.dumps(self._c.unstructure(value))
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
            payload = self.to_payload(value, f"argument {i} ({type(value).__name__}) of {what}")
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

    def from_payload(self, payload: JsonValue, type_hint: object = None) -> object:
        if type_hint in _PASSTHROUGH:
            return payload
        try:
            return self._c.structure(payload, type_hint)  # type: ignore[arg-type]
        except Exception as exc:
            raise PayloadError(
                f"cannot turn payload {_short(payload)} into {_type_name(type_hint)}: {exc}"
            ) from None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."


def _type_name(t: object) -> str:
    return getattr(t, "__name__", None) or repr(t)
