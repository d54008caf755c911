"""Deliveries: every task a worker's consumers hand over runs guarded, in its own asyncio task.

A failed task is delivered again after a growing delay (the shared
:class:`~durablefuture.transport.redelivery.Redelivery` policy), never in a hot loop. One that
fails MAX_TASK_DELIVERIES times is given up on: the failure is recorded in its run's history
(the activity attempt or workflow task fails, and is retried per policy), and only then is the
message dead-lettered. A full JetStream store is not the task's fault: it is waited out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from durablefuture import metrics
from durablefuture.codec.wire import Codec
from durablefuture.core import inputs as inp
from durablefuture.core.errors import DecodeError, StorageFullError, TransportError
from durablefuture.core.failure import Failure
from durablefuture.transport.consumer import PullConsumer, delivery_count
from durablefuture.transport.deadletter import dead_letter
from durablefuture.transport.messages import Msg
from durablefuture.transport.payload_store import ObjectPayloads
from durablefuture.transport.publisher import Publisher
from durablefuture.transport.redelivery import Redelivery
from durablefuture.transport.storage import StorageWait
from durablefuture.transport.subjects import Layout
from durablefuture.worker.options import MAX_TASK_DELIVERIES
from durablefuture.worker.reports import Reports

__all__ = ["Deliveries"]

log = logging.getLogger("durablefuture.worker")


class Deliveries:
    """Runs the deliveries of a worker's consumers; ``tasks`` are the ones running now."""

    def __init__(
        self,
        codec: Codec,
        pub: Publisher,
        layout: Layout,
        *,
        identity: str,
        reports: Reports,
        storage: StorageWait,
        stopping: asyncio.Event,
    ) -> None:
        self.codec = codec
        self.pub = pub
        self.layout = layout
        self.identity = identity
        self.reports = reports
        self.storage = storage
        self.stopping = stopping
        self.redelivery = Redelivery(give_up_at=MAX_TASK_DELIVERIES)
        self.tasks: set[asyncio.Task[None]] = set()

    async def loop(self, consumer: PullConsumer, handler: Callable[[Msg], Awaitable[None]]) -> None:
        while not self.stopping.is_set():
            msg = await consumer.next()
            task = asyncio.create_task(self.guard(consumer, handler, msg))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def guard(
        self, consumer: PullConsumer, handler: Callable[[Msg], Awaitable[None]], msg: Msg
    ) -> None:
        try:  # whatever the message is, its credit is released in `finally`
            if delivery_count(msg) > 1:
                metrics.REDELIVERIES.inc("worker")
            await handler(msg)
        except asyncio.CancelledError:
            raise
        except StorageFullError:
            # not the task's fault: never given up on; StorageWait has said why, once
            with contextlib.suppress(Exception):
                await msg.nak(delay=self.storage.max_delay)
        except Exception as exc:
            delivered = delivery_count(msg)
            log.warning(
                "task on %s failed (delivery %d): %s",
                msg.subject,
                delivered,
                exc,
                exc_info=not isinstance(exc, TransportError),
            )
            with contextlib.suppress(Exception):
                if self.redelivery.exhausted(delivered):
                    await self.give_up(msg, delivered, exc)
                else:
                    await self.redelivery.retry_later(msg, delivered)
        finally:
            consumer.release()

    async def give_up(self, msg: Msg, delivered: int, exc: Exception) -> None:
        """A task failed too often to keep retrying: record that in the run's history (the
        activity attempt or workflow task fails, and is retried per policy), then move the
        message to the dead letters. Nothing is left silently stuck.

        The message is dead-lettered only once the failure is stored (persist, then ack): if
        the report cannot be stored, even after retries, the message is kept for a later
        delivery. Only a task that cannot be decoded has nothing to record it against."""
        reason = f"the task failed {delivered} times on workers; last error: {exc}"
        failure = Failure(message=reason, type=type(exc).__name__)
        extra = {"subject": msg.subject, "delivery": delivered}
        try:
            if ".at." in msg.subject:
                task = self.codec.decode_activity_task(msg.data, payloads=False)
                await self.reports.store(
                    task.workflow_id,
                    inp.FailActivityTask(task.run_id, task.seq, task.attempt, failure),
                    msg,
                    what=f"the final failure of attempt {task.attempt} of activity {task.seq}",
                    extra=extra,
                )
            else:
                m = self.codec.decode_workflow_task(msg.data, payloads=False)
                await self.reports.store(
                    m.task.workflow_id,
                    inp.FailWorkflowTask(
                        m.task.run_id, m.task.trigger, failure, m.task.attempt, self.identity
                    ),
                    msg,
                    what=f"the final failure of a workflow task of run {m.task.run_id}",
                    extra=extra,
                    task=m.task,
                )
        except DecodeError:
            pass  # nothing to record it against: the dead letter is its trace
        except Exception as report_exc:
            log.error(
                "could not record that a task on %s failed %d times (%s); the task is kept and "
                "delivered again",
                msg.subject,
                delivered,
                report_exc,
                extra=extra,
            )
            await self.redelivery.retry_later(msg, delivered)
            return
        await self.dead_letter(msg, reason)

    async def dead_letter(self, msg: Msg, reason: str) -> None:
        """Store ``msg`` as a dead letter, then terminate it (kept and retried if the store
        fails: a refused task is never lost without a trace)."""
        subject = self.layout.dead_letter("worker")
        payloads = ObjectPayloads(self.pub.js, self.layout)
        if await dead_letter(self.pub, subject, msg, "worker", reason, payloads=payloads):
            metrics.DEAD_LETTERS.inc("worker")
