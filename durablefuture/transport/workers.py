"""Worker liveness records in the namespace's ``DF_<ns>_workers`` KV bucket.

A worker writes its :class:`~durablefuture.core.liveness.WorkerRecord` under
``<queue>.<identity>`` every few seconds, each time with a per-message TTL (``Nats-TTL``): the
server drops the entry when the worker stops rewriting it (it crashed, hangs or lost its
connection), so an entry that exists belongs to a worker seen within its TTL. A graceful stop
purges the entry at once; the purge marker carries a TTL as well, so nothing accumulates.

Reading every record is one batched direct get over the bucket's stream (history 1: one message
per key), with no consumer. df-server creates the bucket; against an older server that did not,
workers skip publishing and readers report "unknown" (None), never "no workers".
"""

from __future__ import annotations

import logging
import math

import nats.js.errors
from nats.aio.client import Client as NATS

from durablefuture.codec.wire import Codec
from durablefuture.core.errors import DecodeError, TransportError
from durablefuture.core.liveness import WorkerRecord
from durablefuture.core.types import check_name
from durablefuture.transport.history import direct_batch
from durablefuture.transport.publisher import Publisher
from durablefuture.transport.subjects import Layout

__all__ = ["WorkerRegistry"]

log = logging.getLogger(__name__)

_TTL = "Nats-TTL"
_KV_OPERATION = "KV-Operation"
_MARKER_REASON = "Nats-Marker-Reason"
_ROLLUP = "Nats-Rollup"


def _ttl(seconds: float) -> str:
    # JetStream takes whole seconds, at least 1
    return f"{max(1, math.ceil(seconds))}s"


class WorkerRegistry:
    """Store, list and remove worker records of one namespace."""

    def __init__(self, nc: NATS, publisher: Publisher, layout: Layout, codec: Codec) -> None:
        self.nc = nc
        self.pub = publisher
        self.layout = layout
        self.codec = codec
        self.stream = f"KV_{layout.workers_bucket}"
        self._prefix = f"$KV.{layout.workers_bucket}."
        self._available = False

    async def available(self) -> bool:
        """Whether the bucket exists (a df-server of this version created the namespace)."""
        if self._available:
            return True
        try:
            await self.pub.js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            return False
        except Exception as exc:
            raise TransportError(f"cannot look up the workers bucket {self.stream}: {exc}") from exc
        self._available = True
        return True

    async def put(self, record: WorkerRecord, ttl: float) -> None:
        """Store ``record``; it disappears ``ttl`` seconds later unless stored again."""
        key = self.layout.worker_key(record.task_queue, record.identity)
        await self.pub.publish(
            self._prefix + key, self.codec.encode_worker(record), {_TTL: _ttl(ttl)}
        )

    async def remove(self, task_queue: str, identity: str, ttl: float) -> None:
        """Drop the record of a worker that stops (the purge marker expires after ``ttl``)."""
        key = self.layout.worker_key(task_queue, identity)
        headers = {_KV_OPERATION: "PURGE", _ROLLUP: "sub", _TTL: _ttl(ttl)}
        await self.pub.publish(self._prefix + key, b"", headers)

    async def live(self, task_queue: str | None = None) -> list[WorkerRecord] | None:
        """The records of live workers (of ``task_queue`` only, if given); None when the
        bucket does not exist, so nothing can be said about liveness."""
        if not await self.available():
            return None
        subject = self._prefix + (f"{check_name(task_queue)}.*" if task_queue is not None else ">")
        out: list[WorkerRecord] = []
        msgs = await direct_batch(
            self.nc, self.stream, subject, 1, self.pub.timeout, batch=500, what="listing workers"
        )
        for m in msgs:
            headers = m.headers or {}
            if _KV_OPERATION in headers or _MARKER_REASON in headers or not m.data:
                continue  # a purge marker or a server expiry marker
            try:
                out.append(self.codec.decode_worker(m.data))
            except DecodeError as exc:
                log.debug("skipping a worker record: %s", exc)
        return out
