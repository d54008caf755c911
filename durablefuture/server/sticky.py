"""The sticky fallback: workflow tasks a worker did not take go to the task queue.

A run's workflow tasks go to the worker that holds its generator in its cache (the token in
that worker's last report with a receipt), on the worker's own subject. Every second each
df-server looks at the sticky subjects that hold messages and moves to the task queue, for
any worker to take (it replays the run from history):

* a task its worker has not taken (not delivered) for ``ServerOptions.sticky_timeout``;
* every task a worker held and did not acknowledge, once the worker has been gone (no
  liveness record) for that long; its subject and consumer are then removed, and no task is
  sent there again.

The tasks are stored, so this survives any crash: a df-server that dies mid-move leaves the
task on its sticky subject (moved in the next round, by any server) or on both subjects (a
duplicate, harmless: both copies answer one workflow task, whose reports share a message id).
What a server remembers between rounds (when it first saw a task waiting, since when a worker
has been gone) only delays a move after a restart, by one timeout at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from durablefuture import metrics
from durablefuture.server.base import ServerBase
from durablefuture.transport.compaction import acknowledged
from durablefuture.transport.sticky import StickyTasks, sequence_of
from durablefuture.transport.stopping import cancel_and_wait
from durablefuture.transport.subjects import sticky_token
from durablefuture.transport.workers import WorkerRegistry

__all__ = ["StickyFallback"]

log = logging.getLogger("durablefuture.server")

MAX_GONE = 10_000
"""Tokens of gone workers a server remembers (no task is routed to them)."""


class StickyFallback(ServerBase):
    """The sticky fallback of one df-server (a part of ``Server``)."""

    _sticky_task: asyncio.Task[None] | None = None
    _sticky: StickyTasks | None = None
    _registry: WorkerRegistry | None = None

    def _start_sticky(self) -> None:
        if self.options.sticky_timeout <= 0 or self._sticky_task is not None:
            return
        self._sticky_task = asyncio.create_task(self._sticky_loop())

    async def _stop_sticky(self) -> None:
        task, self._sticky_task = self._sticky_task, None
        if task is not None:
            await cancel_and_wait(task, "the sticky fallback loop")

    async def _sticky_loop(self) -> None:
        failing = False
        interval = max(0.05, min(1.0, self.options.sticky_timeout / 5))
        while not self._stopping.is_set():
            try:
                await self.sticky_round()
                if failing:
                    log.info("moving sticky workflow tasks works again")
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # tried again next round
                if not failing:
                    log.warning("moving sticky workflow tasks failed (tried again): %s", exc)
                failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)

    def _forget_sticky(self, token: str) -> None:
        self._gone_sticky[token] = None
        while len(self._gone_sticky) > MAX_GONE:
            self._gone_sticky.popitem(last=False)

    async def sticky_round(self, now: float | None = None) -> int:
        """One look at the sticky subjects; returns how many tasks it moved."""
        if self._sticky is None:
            self._sticky = StickyTasks(self.nc, self.pub, self.layout)
            self._registry = WorkerRegistry(self.nc, self.pub, self.layout, self.codec)
            self._sticky_waiting: dict[tuple[str, int], float] = {}
            self._sticky_absent: dict[str, float] = {}
        sticky, registry = self._sticky, self._registry
        assert registry is not None
        now = time.monotonic() if now is None else now
        timeout = self.options.sticky_timeout
        subjects = await sticky.subjects()
        live: dict[str, set[str] | None] = {}
        waiting: dict[tuple[str, int], float] = {}
        absent: dict[str, float] = {}
        moved = 0
        for subject in subjects:
            parsed = self.layout.parse_sticky(subject)
            if parsed is None:
                continue
            queue, token = parsed
            if queue not in live:
                records = await registry.live(queue)
                live[queue] = (
                    None if records is None else {sticky_token(r.identity) for r in records}
                )
            tokens = live[queue]
            gone = False
            if tokens is not None and token not in tokens:
                absent[token] = self._sticky_absent.get(token, now)
                gone = now - absent[token] >= timeout
            info = await sticky.consumer(queue, token)
            if gone:
                # everything the worker did not acknowledge goes to the queue, then its
                # subject and consumer go (a task stored there later is moved next round)
                self._forget_sticky(token)
                # (an acknowledgement floor above what the consumer reports delivered is a
                # misreport, see ``transport.compaction``: only the delivered part counts).
                # The purge goes no higher than the last sequence read: a direct get answered
                # by a replica that is behind returns a prefix of the stream, and a task
                # stored after the read has a higher sequence; either stays for next round
                floor = acknowledged(info) if info is not None else 0
                msgs = await sticky.read(subject, floor)
                if msgs:
                    await sticky.copy_to_queue(queue, msgs)
                    moved += len(msgs)
                    self.stats["sticky_moved"] += len(msgs)
                    metrics.STICKY_TASKS.inc(self.layout.namespace, "moved", amount=len(msgs))
                upto = max([floor, *(sequence_of(m) for m in msgs)])
                await sticky.drop(queue, token, upto + 1)
                if info is not None or msgs:
                    log.info(
                        "the worker with sticky token %s (task queue %s) is gone: %d of its "
                        "workflow task(s) moved to the task queue",
                        token,
                        queue,
                        len(msgs),
                    )
                continue
            if info is not None and not ((info.num_pending or 0) + (info.num_ack_pending or 0)):
                continue  # nothing waiting
            # undelivered: due after the timeout (with no consumer, while the worker binds
            # one or after it was removed under a live worker, nothing is delivered). The
            # oldest unacknowledged one (the only one known to be unacknowledged: the floor
            # counts contiguous acks) also once a redelivery to this live worker has had its
            # chance (it took it and stalls, or its pull went nowhere)
            delivered = floor = 0
            redelivery = 0.0
            if info is not None:
                delivered = int(info.delivered.stream_seq or 0) if info.delivered else 0
                floor = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
                redelivery = float(info.config.ack_wait or 0) if info.config else 0.0
            due = []
            oldest = await sticky.read(subject, floor, 1) if floor < delivered else []
            undelivered = (
                await sticky.read(subject, delivered) if info is None or info.num_pending else []
            )
            for seq, m in {sequence_of(m): m for m in oldest + undelivered}.items():
                key = (subject, seq)
                waiting[key] = self._sticky_waiting.get(key, now)
                limit = timeout if seq > delivered else timeout + redelivery
                if now - waiting[key] >= limit:
                    due.append(m)
            if due:
                await sticky.copy_to_queue(queue, due)
                moved += len(due)
                self.stats["sticky_moved"] += len(due)
                metrics.STICKY_TASKS.inc(self.layout.namespace, "moved", amount=len(due))
                await sticky.delete([sequence_of(m) for m in due])
                log.info(
                    "%d workflow task(s) not taken within %gs by the worker with sticky token "
                    "%s moved to task queue %s",
                    len(due),
                    timeout,
                    token,
                    queue,
                )
        self._sticky_waiting = waiting
        self._sticky_absent = absent
        return moved
