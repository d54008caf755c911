"""``client.describe_namespace()``: a namespace's settings, its runs and the storage it uses."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from attrs import frozen

from durablefuture.core.errors import DecodeError
from durablefuture.core.namespace import NamespaceSettings, format_duration
from durablefuture.transport.buckets import read_values
from durablefuture.transport.layout import open_bucket
from durablefuture.transport.namespace_settings import read_settings
from durablefuture.transport.usage import stream_size, stream_usage

if TYPE_CHECKING:
    from durablefuture.client.requests import Requests

__all__ = ["COUNT_LIMIT", "NamespaceDescription", "describe_namespace"]

COUNT_LIMIT = 100_000
"""Runs are counted by status only up to this many status entries (each is read)."""


@frozen
class NamespaceDescription:
    """What ``df namespace describe`` prints."""

    namespace: str
    settings: NamespaceSettings
    runs: int
    """Status entries (one per retained run)."""
    runs_by_status: dict[str, int]
    """Empty when there are more than :data:`COUNT_LIMIT` runs."""
    stream_messages: int
    stream_bytes: int
    messages_by_kind: dict[str, int]
    """``h`` history batches, ``in`` inputs, ``wt``/``at`` tasks, ``tm`` timers, ``rx`` expiries."""
    status_bytes: int
    activity_bytes: int
    payload_bytes: int

    @property
    def bytes_used(self) -> int:
        return self.stream_bytes + self.status_bytes + self.activity_bytes + self.payload_bytes

    def text(self) -> str:
        s = self.settings
        lines = [
            f"namespace            {self.namespace}",
            f"retention            {format_duration(s.retention)} (closed runs)",
            f"history warning      {s.history_warn_events:,} events or "
            f"{s.history_warn_bytes:,} bytes",
            f"history limit        {s.history_limit_events:,} events or "
            f"{s.history_limit_bytes:,} bytes (the run fails)",
            f"runs                 {self.runs:,}"
            + (
                " (" + ", ".join(f"{k} {v:,}" for k, v in sorted(self.runs_by_status.items())) + ")"
                if self.runs_by_status
                else ""
            ),
            f"bytes used           {self.bytes_used:,}",
            f"  stream             {self.stream_bytes:,} in {self.stream_messages:,} messages ("
            + ", ".join(f"{k} {v:,}" for k, v in sorted(self.messages_by_kind.items()))
            + ")",
            f"  status entries     {self.status_bytes:,}",
            f"  activity records   {self.activity_bytes:,}",
            f"  payload objects    {self.payload_bytes:,}",
        ]
        return "\n".join(lines)


async def describe_namespace(client: Requests) -> NamespaceDescription:
    js = client.pub.js
    layout = client.layout
    settings = await read_settings(js, layout)
    usage = await stream_usage(js, layout)
    runs, status_bytes = await stream_size(js, f"KV_{layout.runs_bucket}")
    _, activity_bytes = await stream_size(js, f"KV_{layout.activity_bucket}")
    _, payload_bytes = await stream_size(js, f"OBJ_{layout.payloads_bucket}")
    by_status: Counter[str] = Counter()
    if runs <= COUNT_LIMIT:
        for value in await read_values(await open_bucket(js, layout.runs_bucket)):
            try:
                by_status[client.codec.decode_summary(value).status] += 1
            except DecodeError:
                by_status["unreadable"] += 1
    return NamespaceDescription(
        namespace=layout.namespace,
        settings=settings,
        runs=sum(by_status.values()) if by_status else runs,
        runs_by_status=dict(by_status),
        stream_messages=usage.messages,
        stream_bytes=usage.bytes,
        messages_by_kind=usage.by_kind,
        status_bytes=status_bytes,
        activity_bytes=activity_bytes,
        payload_bytes=payload_bytes,
    )
