"""What a namespace's stream holds: messages and bytes, and how many messages per kind."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats.errors
import nats.js.errors
from attrs import frozen
from nats.js.client import JetStreamContext

from durablefuture.codec.jsapi import api_reply, api_request
from durablefuture.core.errors import NamespaceNotFoundError, TransportError
from durablefuture.transport.subjects import Layout

__all__ = [
    "KINDS",
    "StreamUsage",
    "count_messages",
    "stream_size",
    "stream_subjects",
    "stream_usage",
]

KINDS = ("in", "wt", "at", "tm", "sci", "sct", "sch", "dlq", "rx", "rm", "ref")
"""Subject kinds counted one by one; every other message is a history batch (``h``)."""


@frozen
class StreamUsage:
    """Messages and bytes of a namespace's stream; ``by_kind`` counts messages per subject kind
    (``h`` histories, ``in`` inputs, ``wt``/``at`` tasks, ``tm`` timers, ...)."""

    messages: int
    bytes: int
    by_kind: dict[str, int]


async def count_messages(js: JetStreamContext, stream: str, subjects: str) -> int:
    """Messages of ``stream`` on ``subjects`` (a wildcard), from its per-subject counts, read
    page by page (JetStream answers at most 100,000 subjects at a time)."""
    total = 0
    async for page in _subject_pages(js, stream, subjects):
        total += sum(int(v) for v in page.values())
    return total


async def stream_subjects(js: JetStreamContext, stream: str, subjects: str) -> list[str]:
    """The subjects of ``stream`` that hold a message on ``subjects`` (a wildcard), as the
    stream's state tells them (read page by page)."""
    out: list[str] = []
    async for page in _subject_pages(js, stream, subjects):
        out += page
    return out


async def _subject_pages(
    js: JetStreamContext, stream: str, subjects: str
) -> AsyncIterator[dict[str, int]]:
    api = f"$JS.API.STREAM.INFO.{stream}"
    offset = 0
    for _ in range(100_000):  # bounded: 10**10 subjects
        request = api_request({"subjects_filter": subjects, "offset": offset})
        try:  # nats-py's stream_info has no paging: the API request by hand
            reply = await js._nc.request(api, request, timeout=30.0)
            body = api_reply(reply.data)
        except (nats.errors.Error, TimeoutError, ValueError) as exc:
            raise TransportError(f"listing {subjects} in {stream}: {exc}") from exc
        if not isinstance(body, dict) or "error" in body:
            raise TransportError(f"listing {subjects} in {stream}: {str(body)[:200]}")
        page = (body.get("state") or {}).get("subjects") or {}
        if not isinstance(page, dict):
            raise TransportError(f"listing {subjects} in {stream}: subjects are no map")
        yield {str(k): int(v) for k, v in page.items()}
        offset += len(page)
        if not page or offset >= int(body.get("total", 0) or 0):
            return
    raise TransportError(f"listing {subjects} in {stream}: too many subjects")


async def stream_usage(js: JetStreamContext, layout: Layout) -> StreamUsage:
    """Read the stream's state (a few stream-info requests per subject kind)."""
    by_kind: dict[str, int] = {}
    try:
        info = await js.stream_info(layout.stream)
        for kind in KINDS:
            n = await count_messages(js, layout.stream, f"{layout.prefix}.{kind}.>")
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
