"""Eager starts: a new run's first workflow task, offered by df-server before it stores it.

A worker with workflows listens on ``dfev.<ns>.ws.<queue>`` (queue group ``workers``) for
the queue it runs workflows of. An offer carries the run's first workflow task, as a stored
one would (``server/eager_starts.py``). While the worker runs fewer offers than it has
workflow-task slots, it replays the task as a stored one and answers with the report it
would have sent, with its receipt subject and sticky token; otherwise it answers ``busy``
(df-server then stores the task as before). Only a decision df-server can take eagerly is
answered (activities and timers only, in one report); any other is answered ``busy`` and
its generator dropped. The code is replayed, nothing else is run: a first task that waits on
a local activity, or calls ``df.side_effect``, is answered ``busy`` before either runs (the
replay is tentative: a side effect not recorded is held, the code waits at it), and the
stored task runs it. Once the receipt came the run exists and its side effects run as usual.

A worker that also runs the queue's activities offers its free activity slots with its
answer (``Df-Eager``, only when it registers every activity the decision schedules on its
queue) and the id df-server marks its grants with (``Df-Eager-Ask``); the receipt names the
attempts df-server granted it (``Df-Granted``), which it starts only then, as granted
attempts of any report (``eager.py``: no lease until ``eager_claim_after``). No receipt,
and it runs none of them (their checks record them timed out).

The generator it keeps is TENTATIVE: the run has no history yet, and df-server may discard
the answer (it came too late, the id was taken meanwhile). The taker holds the run's lock
until the receipt, the first batch as stored, arrives, and only then is the cached run real
(with its stream sequence). No receipt within ``RECEIPT_WAIT`` (or one that does not fit),
or a stored workflow task for the run meanwhile (df-server created it as before: it gave up
waiting), and the generator is dropped; that workflow task replays it from history. Nothing
tentative is ever trusted.

An offer is hostile bytes: bounded in size, decoded by the one codec, and taken only if it
is a run's first workflow task for this queue and a registered workflow type.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Sequence

from durablefuture import metrics, tracing
from durablefuture.codec.wire import InputEnvelope
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.commands import ScheduleActivity, StartTimer
from durablefuture.core.errors import DecodeError, MessageRejectedError
from durablefuture.transport.guard import check_service_reply
from durablefuture.transport.headers import (
    EAGER_ASK_HEADER,
    EAGER_HEADER,
    EAGER_WAIT_HEADER,
    RECEIPT_HEADER,
    STICKY_HEADER,
)
from durablefuture.transport.messages import Msg, Subscription
from durablefuture.worker.cache import CachedRun
from durablefuture.worker.receipts import Receipt
from durablefuture.worker.workflow_tasks import WorkflowTasks, _first_task

__all__ = ["BUSY", "MAX_COMMANDS", "MAX_OFFER_BYTES", "RECEIPT_WAIT", "EagerOffers"]

log = logging.getLogger("durablefuture.worker")

BUSY = b"busy"
MAX_OFFER_BYTES = 64 * 1024
"""A larger offer is answered ``busy`` (df-server sends none this large)."""
RECEIPT_WAIT = 2.0
"""Seconds an answered offer's generator waits for its receipt before it is dropped."""
_MAX_WAIT = 1.0
"""The longest wait an offer may ask for (a larger value is taken as this)."""
_EAGER_COMMANDS = (ScheduleActivity, StartTimer)
MAX_COMMANDS = 64
"""A first decision with more commands is answered ``busy`` (df-server discards a larger one:
``server/eager_starts.MAX_COMMANDS``)."""


class EagerOffers:
    """Takes the eager start offers of one worker's task queue (its workflow tasks' part)."""

    def __init__(self, tasks: WorkflowTasks, task_queue: str, limit: int) -> None:
        self.tasks = tasks
        self.task_queue = task_queue
        self.limit = limit
        self.taken = 0
        """Offers being run now (at most ``limit``: the worker's workflow-task slots)."""
        self.sub: Subscription | None = None
        self.receipt_sub: Subscription | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def listen(self) -> None:
        """Subscribe to the worker's receipts inbox, then to the offers of its task queue."""
        nc = self.tasks.client.nc
        inbox = nc.new_inbox()
        self.tasks.reports.receipts = inbox
        self.receipt_sub = await nc.subscribe(inbox, cb=self.tasks.receipts.on_receipt)
        subject = self.tasks.client.layout.eager_starts(self.task_queue)
        self.sub = await nc.subscribe(subject, queue="workers", cb=self.on_offer)

    async def close(self) -> None:
        """Take no more offers (receipts still arrive: running tasks wait for theirs)."""
        sub, self.sub = self.sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self._running:  # taken offers end within their receipt wait
            await asyncio.wait(set(self._running), timeout=RECEIPT_WAIT + 1)

    async def on_offer(self, msg: Msg) -> None:
        try:  # df-server's inbox, or the one nats-server makes for a request across accounts
            check_service_reply(msg.reply)
        except MessageRejectedError:
            return
        if self.sub is None or self.taken >= self.limit or len(msg.data) > MAX_OFFER_BYTES:
            await _answer(msg, BUSY)
            return
        self.taken += 1
        task = asyncio.create_task(self._take(msg, time.monotonic()))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _take(self, msg: Msg, began: float) -> None:
        try:
            await self._run(msg, began)
        except Exception as exc:  # (the code failed to replay): the stored task will say why
            log.debug("eager start offer not taken: %s", exc)
            await _answer(msg, BUSY)  # no answer yet: df-server need not wait for one
        finally:
            self.taken -= 1

    async def _run(self, msg: Msg, began: float) -> None:
        tasks = self.tasks
        try:
            m = tasks.codec.decode_workflow_task(msg.data)
            wait = min(_MAX_WAIT, float((msg.headers or {}).get(EAGER_WAIT_HEADER, "0")))
        except (DecodeError, ValueError):
            await _answer(msg, BUSY)
            return
        if not wait > 0:  # (nan, or none given)
            await _answer(msg, BUSY)
            return
        task = m.task
        run_id = task.run_id
        cache = tasks.cache
        if (
            not _first_task(m)
            or task.task_queue != self.task_queue
            or task.workflow_type not in tasks.workflows
            or tasks.codec.refers(msg.data)
            or run_id in cache
            or cache.lock(run_id).locked()
        ):
            await _answer(msg, BUSY)
            return
        async with cache.lock(run_id):
            # replayed as a stored first task is, but nothing run beside the code: a local
            # activity waited on is a side effect for a run that may never exist
            started = m.events[0]
            with tracing.span(
                f"RunWorkflow:{task.workflow_type}",
                started.headers if isinstance(started, ev.WorkflowStarted) else None,
                {"workflow_id": task.workflow_id, "run_id": task.run_id},
            ):
                execution, activation = await tasks._replay(task, m, tentative=True)
            commands, more = tasks.reports.bounded(activation.commands)
            if (
                execution.pending_local_activities
                or execution.held_side_effect
                or execution.finished
                or more
                or not commands
                or len(commands) > MAX_COMMANDS
                or not all(isinstance(c, _EAGER_COMMANDS) for c in commands)
                # df-server may no longer wait (its wait began before the offer got here)
                or time.monotonic() - began >= wait / 2
            ):
                await _answer(msg, BUSY)
                return
            entry = CachedRun(execution, 0)
            entry.sent(commands)
            cache.keep(run_id, entry)
            report = inp.CompleteWorkflowTask(run_id, activation.based_on, commands, tasks.identity)
            waiter: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
            tasks.receipts.expected[run_id] = waiter
            try:
                data = tasks.codec.encode_input(InputEnvelope(task.workflow_id, input=report))
                headers = {RECEIPT_HEADER: tasks.reports.receipts}
                if tasks.reports.sticky:
                    headers[STICKY_HEADER] = tasks.reports.sticky
                if offer := self._offer(run_id, commands):
                    # the id df-server marks the attempts it grants with (``eager`` in their
                    # ActivityScheduled): they run with no lease, and are never published
                    headers[EAGER_HEADER] = str(offer)
                    headers[EAGER_ASK_HEADER] = os.urandom(6).hex()
                await tasks.client.nc.publish(msg.reply, data, headers=headers)
                seq, batch, granted = await asyncio.wait_for(waiter, RECEIPT_WAIT)
            except (TimeoutError, Exception):
                cache.pop(run_id)  # never trusted: a workflow task replays it from history
                return
            finally:
                tasks.receipts.expected.pop(run_id, None)
                tasks.receipts.offered.pop(run_id, None)
            events = await tasks.receipts.events_of(batch) if seq else None
            if events is None:
                cache.pop(run_id)
                return
            if granted and tasks.receipts.run_granted is not None:
                # the run exists (its batch is stored): its granted attempts may run now,
                # also if the generator left the cache meanwhile (a full cache)
                tasks.receipts.run_granted(execution.started, events, granted)
            if cache.get(run_id) is not entry or not entry.catch_up(events):
                cache.pop(run_id)  # a workflow task replays it from history
                return
            entry.last_seq = max(entry.last_seq, seq)
            execution.tentative = False  # the run exists: side effects run again
            tasks.stats["eager_starts"] = tasks.stats.get("eager_starts", 0) + 1
            # counted as the run's first workflow task (a declined offer's stored task counts)
            metrics.worker_cache_lookup("new")
            metrics.WORKFLOW_TASKS.inc(self.task_queue, "commands")
            metrics.WORKFLOW_TASK_SECONDS.observe(time.monotonic() - began, self.task_queue)

    def _offer(self, run_id: str, commands: Sequence[object]) -> int:
        """How many activity attempts of this first decision to offer to run here (0: none,
        also when an activity it schedules on this queue is not registered here: its grant
        would wait for its check)."""
        tasks = self.tasks
        if tasks.reports.eager is None:
            return 0
        for c in commands:
            if isinstance(c, ScheduleActivity) and (
                (c.options.task_queue or self.task_queue) == self.task_queue
                and c.name not in tasks.activities
            ):
                return 0
        return tasks.reports.eager(run_id)


async def _answer(msg: Msg, data: bytes) -> None:
    with contextlib.suppress(Exception):  # unanswered: df-server creates the run as before
        await msg.respond(data)
