"""Deliveries: every task a worker's consumers hand over runs guarded, in its own asyncio task.

A failed task is delivered again after a growing delay (the shared
:class:`~durablefuture.transport.redelivery.Redelivery` policy), never in a hot loop. One that
fails MAX_TASK_DELIVERIES times is given up on: the failure is recorded in its run's history
(the activity attempt or workflow task fails, and is retried per policy), and only then is the
message dead-lettered. A full JetStream store is not the task's fault: it is waited out.

A task delivered more often than that without being given up on had no outcome: each worker
that took it died (the workflow or activity code crashes, exhausts the memory of or exits its
process) or stopped before reporting. Such a delivery records the give-up *before* the code
runs again, so a poison task ends as a recorded failure that `describe()` and `df why` show,
never stranded by the consumer's ``max_deliver`` (the limit is kept two deliveries below it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from durablefuture import metrics
from durablefuture.codec.wire import Codec
from durablefuture.core import inputs as inp
from durablefuture.core.errors import DecodeError, StorageFullError, TransportError
from durablefuture.core.failure import WORKER_LOST, Failure, FailureKind
from durablefuture.transport.consumer import PullConsumer, delivery_count, stream_sequence
from durablefuture.transport.deadletter import dead_letter
from durablefuture.transport.messages import Msg
from durablefuture.transport.payload_store import ObjectPayloads
from durablefuture.transport.publisher import Publisher
from durablefuture.transport.redelivery import Redelivery
from durablefuture.transport.storage import StorageWait
from durablefuture.transport.subjects import Layout
from durablefuture.worker.options import MAX_FAILURE_CHARS, MAX_TASK_DELIVERIES
from durablefuture.worker.reports import Reports

__all__ = ["Deliveries"]

log = logging.getLogger("durablefuture.worker")

MAX_REMEMBERED_FAILURES = 10_000
"""Tasks whose last delivery failed here that a worker remembers the error of (to name it
when a later delivery gives the task up)."""


def give_up_limit(max_deliver: int) -> int:
    """Deliveries after which a task is given up on, for a consumer allowing ``max_deliver``
    (0 or less: unlimited): MAX_TASK_DELIVERIES, and at least two below ``max_deliver`` so the
    give-up of a task whose workers died has a delivery to happen on, and one to spare."""
    if max_deliver <= 0:
        return MAX_TASK_DELIVERIES
    return max(1, min(MAX_TASK_DELIVERIES, max_deliver - 2))


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
        self._failed: OrderedDict[int, tuple[str, str]] = OrderedDict()
        """Stream sequence -> the error (type, message) of the task's last delivery here."""

    async def loop(
        self,
        consumer: PullConsumer,
        handler: Callable[[Msg], Awaitable[None]],
        max_deliver: int = 0,
    ) -> None:
        """Run the deliveries of ``consumer``, whose ``max_deliver`` is given (0: unlimited)."""
        policy = Redelivery(give_up_at=give_up_limit(max_deliver))
        while not self.stopping.is_set():
            msg = await consumer.next()
            task = asyncio.create_task(self.guard(consumer, handler, msg, policy))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def guard(
        self,
        consumer: PullConsumer,
        handler: Callable[[Msg], Awaitable[None]],
        msg: Msg,
        policy: Redelivery | None = None,
    ) -> None:
        policy = policy or self.redelivery
        try:  # whatever the message is, its credit is released in `finally`
            delivered = delivery_count(msg)
            last_error: tuple[str, str] | None = None
            if delivered > 1:  # (a first delivery has no earlier failure here)
                metrics.REDELIVERIES.inc("worker")
                last_error = self._failed.pop(stream_sequence(msg), None)
            if policy.abandoned(delivered):
                # never run again what killed its workers: record why it stopped here
                with contextlib.suppress(Exception):
                    await self.give_up(msg, delivered, last_error, policy)
                return
            await handler(msg)
        except asyncio.CancelledError:
            raise
        except StorageFullError as exc:
            # not the task's fault: not given up on while redeliveries last; StorageWait has
            # said why, once (and a give-up on the last ones names it)
            self._remember(stream_sequence(msg), exc)
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
            self._remember(stream_sequence(msg), exc)
            with contextlib.suppress(Exception):
                if policy.exhausted(delivered):
                    await self.give_up(msg, delivered, _error(exc), policy)
                else:
                    await policy.retry_later(msg, delivered)
        finally:
            consumer.release()

    def _remember(self, seq: int, exc: Exception | tuple[str, str]) -> None:
        if seq <= 0:
            return
        self._failed[seq] = exc if isinstance(exc, tuple) else _error(exc)
        while len(self._failed) > MAX_REMEMBERED_FAILURES:
            self._failed.popitem(last=False)

    async def give_up(
        self,
        msg: Msg,
        delivered: int,
        error: tuple[str, str] | None,
        policy: Redelivery | None = None,
    ) -> None:
        """A task failed too often to keep retrying (``error``: its last error's type and
        message), or its workers died each time it was delivered (``error`` None, or that of
        an earlier delivery whose give-up could not be stored): record that in the run's
        history (the activity attempt or workflow task fails, and is retried per policy), then
        move the message to the dead letters. Nothing is left silently stuck.

        The message is dead-lettered only once the failure is stored (persist, then ack): if
        the report cannot be stored, even after retries, the message is kept for a later
        delivery. Only a task that cannot be decoded has nothing to record it against."""
        policy = policy or self.redelivery
        activity = ".at." in msg.subject
        if error is not None:
            reason = f"the task failed {delivered} times on workers; last error: {error[1]}"
            failure = Failure(message=reason, type=error[0])
        else:
            reason = _lost_reason("activity" if activity else "workflow", delivered - 1)
            failure = (
                Failure(
                    message=reason,
                    type="TimeoutError",
                    kind=FailureKind.TIMEOUT,
                    timeout_type="start_to_close",
                )
                if activity
                else Failure(message=reason, type=WORKER_LOST)
            )
        extra = {"subject": msg.subject, "delivery": delivered}
        if error is None:
            log.error("giving up on a task on %s: %s", msg.subject, reason, extra=extra)
        try:
            if activity:
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
                    task=m,
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
            if error is not None:
                self._remember(stream_sequence(msg), error)
            await policy.retry_later(msg, delivered)
            return
        await self.dead_letter(msg, reason)

    async def dead_letter(self, msg: Msg, reason: str) -> None:
        """Store ``msg`` as a dead letter, then terminate it (kept and retried if the store
        fails: a refused task is never lost without a trace)."""
        subject = self.layout.dead_letter("worker")
        payloads = ObjectPayloads(self.pub.js, self.layout)
        if await dead_letter(self.pub, subject, msg, "worker", reason, payloads=payloads):
            metrics.DEAD_LETTERS.inc("worker")


def _error(exc: Exception) -> tuple[str, str]:
    """What a give-up names of an error (kept without its traceback and the frames it holds)."""
    return type(exc).__name__, str(exc)[:MAX_FAILURE_CHARS]


def _lost_reason(kind: str, deliveries: int) -> str:
    """Why a task whose workers died each time was given up on (one line: `df why` shows it)."""
    if kind == "activity":
        within, then = "its lease", "the attempt counts as failed under the retry policy"
    else:
        within, then = "the workflow task timeout", "the workflow task is retried with backoff"
    return (
        f"the {kind} task was delivered {deliveries} times and no worker reported an outcome: "
        "each worker that took it died (crashed, was killed or ran out of memory) or did not "
        f"report within {within}; if the {kind} code kills its worker process, fix it ({then})"
    )
