"""What a namespace's stream holds: messages and bytes, and how many messages per kind."""

from __future__ import annotations

import nats.errors
import nats.js.errors
from attrs import frozen
from nats.js.client import JetStreamContext

from durablefuture.core.errors import NamespaceNotFoundError, TransportError
from durablefuture.transport.subjects import Layout

__all__ = ["KINDS", "StreamUsage", "stream_size", "stream_usage"]

KINDS = ("in", "wt", "at", "tm", "sci", "sct", "sch", "dlq", "rx", "rm", "ref")
"""Subject kinds counted one by one; every other message is a history batch (``h``)."""


@frozen
class StreamUsage:
    """Messages and bytes of a namespace's stream; ``by_kind`` counts messages per subject kind
    (``h`` histories, ``in`` inputs, ``wt``/``at`` tasks, ``tm`` timers, ...)."""

    messages: int
    bytes: int
    by_kind: dict[str, int]


async def stream_usage(js: JetStreamContext, layout: Layout) -> StreamUsage:
    """Read the stream's state (a few stream-info requests, one per subject kind)."""
    by_kind: dict[str, int] = {}
    try:
        info = await js.stream_info(layout.stream)
        for kind in KINDS:
            part = await js.stream_info(layout.stream, subjects_filter=f"{layout.prefix}.{kind}.>")
            n = sum(int(v) for v in (part.state.subjects or {}).values())
            if n:
                by_kind[kind] = n
    except nats.js.errors.NotFoundError as exc:
        raise NamespaceNotFoundError(
            f"stream {layout.stream} does not exist; start df-server for namespace "
            f"{layout.namespace!r} first"
        ) from exc
    except (nats.errors.Error, TimeoutError) as exc:
        raise TransportError(f"reading the state of stream {layout.stream}: {exc}") from exc
    messages = int(info.state.messages or 0)
    history = messages - sum(by_kind.values())
    if history > 0:
        by_kind["h"] = history
    return StreamUsage(messages, int(info.state.bytes or 0), by_kind)


async def stream_size(js: JetStreamContext, stream: str) -> tuple[int, int]:
    """(messages, bytes) of ``stream``; (0, 0) if it does not exist."""
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        return 0, 0
    except (nats.errors.Error, TimeoutError) as exc:
        raise TransportError(f"reading the state of stream {stream}: {exc}") from exc
    return int(info.state.messages or 0), int(info.state.bytes or 0)
