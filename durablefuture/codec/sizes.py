"""Encoded sizes of events and commands, to keep a report under the NATS payload limit."""

from __future__ import annotations

import orjson

from durablefuture.codec.wire import Codec
from durablefuture.core import events as ev
from durablefuture.core.commands import Command

__all__ = ["command_size", "event_size"]


def command_size(codec: Codec, command: Command) -> int:
    """Bytes ``command`` takes encoded (as it travels in a report)."""
    return len(orjson.dumps(codec.converter.unstructure(command, Command)))


def event_size(codec: Codec, event: ev.Event) -> int:
    """Bytes ``event`` takes encoded (as it is stored in history)."""
    return len(orjson.dumps(codec.encode_event(event)))
