"""Encoded sizes of events and commands, to keep a report under the NATS payload limit."""

from __future__ import annotations

import orjson

from durablefuture.codec.wire import Codec
from durablefuture.core import events as ev
from durablefuture.core.commands import Command

__all__ = ["command_size", "event_size"]


def command_size(codec: Codec, command: Command) -> int:
    """Bytes ``command`` takes encoded (as it travels in a report)."""
    return _sealed(codec, len(orjson.dumps(codec.converter.unstructure(command, Command))))


def event_size(codec: Codec, event: ev.Event) -> int:
    """Bytes ``event`` takes encoded (as it is stored in history)."""
    return _sealed(codec, len(orjson.dumps(codec.encode_event(event))))


def _sealed(codec: Codec, size: int) -> int:
    """A bound on ``size`` once a payload codec encoded it: base64 takes 4/3, an envelope's
    metadata and an AES-GCM nonce and tag a few hundred bytes (compression only shrinks)."""
    return size if codec.payload_codec is None else size * 4 // 3 + 512
