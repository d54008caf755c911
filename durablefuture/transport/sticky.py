"""Sticky workflow-task subjects: what is waiting on them, and moving it to the task queue.

A worker that holds a run's generator takes that run's workflow tasks on a subject of its own,
``df.<ns>.wt.<queue>.<token>``, through a durable consumer of its own
(:meth:`~durablefuture.transport.subjects.Layout.sticky_consumer`). Tasks stored there are as
durable as any: if the worker does not take them, df-server copies them to the task queue's
subject (``df.<ns>.wt.<queue>``) with the message id a direct dispatch would have had, and
only then removes them from the sticky subject. A copy taken by two workers is harmless: the
reports of one workflow task carry the same message id and the server ignores a stale one.
"""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerInfo

from durablefuture.core.errors import TransportError
from durablefuture.transport.compaction import purge
from durablefuture.transport.history import direct_batch
from durablefuture.transport.messages import Msg
from durablefuture.transport.publisher import MSG_ID, Publisher
from durablefuture.transport.subjects import Layout

__all__ = [
    "MAX_MOVE",
    "StickyTasks",
    "sequence_of",
]

MAX_MOVE = 1000
"""Tasks read from one sticky subject per round (the rest follow in the next rounds)."""


def sequence_of(msg: Msg) -> int:
    """The stream sequence of a message read by direct get."""
    try:
        return int((msg.headers or {}).get("Nats-Sequence", "0"))
    except ValueError:
        return 0


class StickyTasks:
    """Reads and moves the sticky workflow tasks of one namespace."""

    def __init__(self, nc: NATS, pub: Publisher, layout: Layout) -> None:
        self.nc = nc
        self.pub = pub
        self.js = pub.js
        self.layout = layout

    async def subjects(self) -> dict[str, int]:
        """Sticky subjects that hold messages (handled or not), with their counts."""
        try:
            info = await self.js.stream_info(
                self.layout.stream, subjects_filter=self.layout.sticky_filter
            )
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransportError(f"listing the sticky task subjects: {exc}") from exc
        return {str(k): int(v) for k, v in (info.state.subjects or {}).items()}

    async def consumer(self, queue: str, token: str) -> ConsumerInfo | None:
        name = self.layout.sticky_consumer(queue, token)
        try:
            info: ConsumerInfo = await self.js.consumer_info(self.layout.stream, name)
        except nats.js.errors.NotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransportError(f"reading consumer {name}: {exc}") from exc
        return info

    async def read(self, subject: str, after_seq: int, limit: int = MAX_MOVE) -> list[Msg]:
        """Up to ``limit`` messages of ``subject`` above stream sequence ``after_seq``."""
        msgs = await direct_batch(
            self.nc,
            self.layout.stream,
            subject,
            after_seq + 1,
            self.pub.timeout,
            batch=limit,
            what="reading sticky tasks",
        )
        return msgs[:limit]

    async def copy_to_queue(self, queue: str, msgs: list[Msg]) -> None:
        """Store each of ``msgs`` on the task queue's subject (pipelined; a copy made before,
        within the duplicate window, is recognised by its message id)."""
        target = self.layout.workflow_tasks(queue)
        sent = []
        for m in msgs:
            headers: dict[str, str] = {}
            msg_id = (m.headers or {}).get(MSG_ID, "")
            if msg_id.startswith("wts:"):
                headers[MSG_ID] = "wt:" + msg_id[4:]
            sent.append(await self.pub.send(target, m.data, headers))
        await asyncio.gather(*sent)

    async def delete(self, seqs: list[int]) -> None:
        """Remove single messages (moved while their worker lives) from the stream."""
        for seq in seqs:
            try:
                await self.js.delete_msg(self.layout.stream, seq)
            except nats.js.errors.NotFoundError:
                pass  # purged already
            except (nats.errors.Error, TimeoutError) as exc:
                raise TransportError(f"removing a moved sticky task: {exc}") from exc

    async def drop(self, queue: str, token: str, below_seq: int) -> None:
        """Forget a gone worker's subject (up to ``below_seq``) and its consumer."""
        subject = self.layout.sticky_tasks(queue, token)
        if below_seq > 0:
            await purge(self.nc, self.layout.stream, subject, below_seq=below_seq)
        name = self.layout.sticky_consumer(queue, token)
        try:
            await self.js.delete_consumer(self.layout.stream, name)
        except nats.js.errors.NotFoundError:
            pass
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransportError(f"deleting consumer {name}: {exc}") from exc
