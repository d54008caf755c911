"""JSON as text for people and HTTP: the CLI's output, the UI's responses, ``--input``.

The one place above the wire format that turns values into JSON text; attrs classes, failures and
datetimes go through the shared converter, so what is printed matches what is stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from durablefuture.codec.wire import default_codec

__all__ = ["JsonTextError", "compact", "dumps", "loads", "pretty"]


class JsonTextError(ValueError):
    """Text that is not JSON; the message says where it breaks."""


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return default_codec().converter.unstructure(value)


def dumps(value: Any) -> bytes:
    """Compact JSON bytes (HTTP bodies, server-sent events)."""
    return orjson.dumps(value, default=_default)


def pretty(value: Any) -> str:
    """Indented JSON text for a terminal."""
    return orjson.dumps(value, default=_default, option=orjson.OPT_INDENT_2).decode()


def compact(value: Any) -> str:
    """One-line JSON text."""
    return dumps(value).decode()


def loads(text: str | bytes) -> Any:
    """Parse JSON text; :class:`JsonTextError` names the position where it breaks."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise JsonTextError(" ".join(str(exc).split())) from exc
