"""Eager start: a new run's first workflow task is run by a worker before anything is stored.

A start that creates a new run (no history for its id, the fast path of ``starts.py``) may
first offer the run's first workflow task to a workflow worker of the run's task queue, as a
core-NATS request on ``dfev.<ns>.ws.<queue>`` (queue group ``workers``), for at most
``ServerOptions.eager_start_wait`` seconds. A worker with a free workflow-task slot runs it
exactly as a stored one and answers with the report it would have sent; any other answer
("busy", none in time, no worker listening, bytes that do not decode to that report, a
decision that is not only ScheduleActivity / StartTimer) and the run is created as before,
the answer discarded. An offer nobody answered pauses offers to its queue for ``PAUSE``
seconds: each one holds its start for the whole wait.

With an answer, the run's first history batch is [WorkflowStarted + the report's events],
recorded as the "start" input, and its effects are stored the way ``starts.py`` stores a new
run's first workflow task: the activity tasks and timers first, each guarded by the same
expected last sequence over the workflow's history subjects as the append, then the append
on the same connection right behind them (nothing awaited in between). So the argument of
``starts.py`` carries over with "first workflow task" replaced by "the first batch's effects":
a first batch in history always has its effects stored beside it, whatever dies when, and the
run needs no workflow task to go on. Only then is the worker sent its receipt (its cached run
becomes real), the run's status written and the client answered.

The other way round, an effect stored for a run that is not created (df-server killed between
the effects and the append; another df-server created the same id between the two checks): a
timer then fires for a run that does not exist (refused, as any input for an unknown run), and
an activity task reaches a worker with ``Df-First-Batch``, which runs it only once the run's
history holds its batch (``worker/first_batch.py``): never for a run that was not created.
A client that got no answer stores its start and gets a run (one run per request id).

Grants: an answer whose worker also runs the activities of the queue says how many attempts
it can take (``Df-Eager``) and names itself (``Df-Eager-Ask``; a worker that does not is
granted nothing). The first batch's first attempts on the run's queue allowed a second
attempt, up to that many, are then granted to it as ``grants.py`` grants a report's, and run
lazily like them: each ``ActivityScheduled`` is marked ``eager`` (that id) in the batch, so
its task is never published, whatever derives the batch's effects again (the attempt is
listed again: the worker may be running it with no lease); each is listed on a check list
(``df.<ns>.ck.<list>``), and the list is stored BEFORE the append, instead of their tasks;
the receipt names them (``Df-Granted``), and the worker runs them only once it has its
receipt, so never for a run that does not exist (no receipt: it runs nothing). Killed
between the list and the append, or beaten to the id, df-server leaves a list whose entries
name a run id that is never created: when it fires, its check finds no history for that run
and does nothing. A list not stored, or stored too late for the worker's receipt wait, and
the run is created as before (nothing of it was stored yet). An append stored so late that
the list may have fired before it lists the attempts again. Whatever goes wrong after the
append (the receipt lost, the worker killed) costs the attempt a timeout: the check records
a marked attempt nobody reported or claimed timed out, and it is retried per its policy.

The offer and the answer are hostile bytes: both are bounded (``MAX_OFFER_BYTES``), the answer
is decoded by the one codec and must be exactly a CompleteWorkflowTask for the offered run,
based on its WorkflowStarted, with at most ``MAX_COMMANDS`` commands; the receipt goes only to
an inbox subject. ``df auth init`` lets the server role offer and workers answer; clients can
do neither.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
from collections.abc import Awaitable, Sequence

from attrs import evolve

from durablefuture import metrics
from durablefuture.codec.checks import CheckedAttempt
from durablefuture.codec.wire import WorkflowTaskMessage
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.commands import ScheduleActivity, StartTimer
from durablefuture.core.effects import ArmTimer, DispatchActivityTask, DispatchWorkflowTask
from durablefuture.core.errors import DecodeError, MessageRejectedError, TransportError
from durablefuture.core.orchestration import APPLIED, decide, effects_for
from durablefuture.core.state import RunState
from durablefuture.server.effects import Guard
from durablefuture.server.first_append import FirstAppends
from durablefuture.server.grants import check_deadline, may_run_eagerly
from durablefuture.server.receipts import eager_ask, eager_offer
from durablefuture.server.runs import RunCache
from durablefuture.transport.guard import check_reply_subject
from durablefuture.transport.headers import (
    EAGER_ASK_HEADER,
    EAGER_HEADER,
    EAGER_WAIT_HEADER,
    FIRST_BATCH_HEADER,
    RECEIPT_HEADER,
    STICKY_HEADER,
)
from durablefuture.transport.publisher import MSG_ID, PubAck, settled
from durablefuture.transport.replies import NoResponders, RequestTimedOut, request_with_headers
from durablefuture.transport.subjects import STICKY_TOKEN

__all__ = ["BUSY", "FALLBACK", "MAX_COMMANDS", "MAX_OFFER_BYTES", "PAUSE", "EagerStarts"]

log = logging.getLogger("durablefuture.server")

BUSY = b"busy"
"""A worker's answer to an offer it does not take (the run is created as before)."""
MAX_OFFER_BYTES = 64 * 1024
"""An offer (the first workflow task) and its answer are at most this large; a larger one is
not offered, or its answer is discarded (the run is created as before)."""
MAX_COMMANDS = 64
"""An answer deciding more commands than this is discarded (the run is created as before)."""
PAUSE = 1.0
"""Seconds a task queue whose offer went unanswered gets no offers (its starts are created as
before meanwhile)."""
_MAX_PAUSED = 10_000
RECEIPT_GRANT_WITHIN = 0.5
"""Seconds after an answer past which its worker is granted nothing: it waits 2 s for its
receipt (``worker/eager_starts.RECEIPT_WAIT``), and a grant it does not read waits out its
check."""
FALLBACK = object()
"""What ``_eager_create`` returns when the run is to be created as before."""

_EAGER_COMMANDS = (ScheduleActivity, StartTimer)
_EAGER_EFFECTS = (DispatchActivityTask, ArmTimer)


class EagerStarts(FirstAppends):
    """Offers new runs' first workflow tasks to workers (a part of ``Server``)."""

    @functools.cached_property
    def _eager_paused(self) -> dict[str, float]:
        """Per task queue: offers are not made before this loop time (an offer there went
        unanswered: its workers are busy, or gone)."""
        return {}

    def _eager_offer(self, request: inp.StartWorkflowRequest) -> bool:
        """Whether a new run of ``request`` is offered before it is stored."""
        paused = self._eager_paused.get(request.task_queue)
        if paused is not None:
            if asyncio.get_running_loop().time() < paused:
                return False
            del self._eager_paused[request.task_queue]
        return (
            self.options.eager_start_wait > 0
            and self.options.replicas == 1
            and request.parent is None
            and request.continued_from is None
            # a run id chosen before (a retry would reuse it, and the message ids of a first
            # batch's tasks with it: one stored without its batch would hide the next copy)
            and not request.run_id
            and request.signal_name is None
            and not self._stopping.is_set()
        )

    async def _eager_create(
        self, workflow_id: str, run_id: str, events: Sequence[ev.Event]
    ) -> RunCache | object | None:
        """Offer the run's first workflow task; with a usable answer create the run with its
        decision in the first batch (a RunCache; None: the id is taken, decide again), else
        ``FALLBACK`` (nothing stored: create it as before)."""
        first = events[0]
        assert isinstance(first, ev.WorkflowStarted)
        state = RunState(started=first)
        state.apply(list(events), "start")
        tasks = [e for e in effects_for(state, events) if isinstance(e, DispatchWorkflowTask)]
        if len(tasks) != 1:
            return FALLBACK
        offer = self.codec.encode_workflow_task(WorkflowTaskMessage(tasks[0].task, tuple(events)))
        if len(offer) > MAX_OFFER_BYTES or self.codec.refers(offer):
            return FALLBACK  # payloads stored by reference: as before (their refs marked)
        subject = self.layout.eager_starts(first.task_queue)
        wait = self.options.eager_start_wait
        try:
            data, headers = await request_with_headers(
                self.nc, subject, offer, wait, {EAGER_WAIT_HEADER: f"{wait:g}"}
            )
        except (NoResponders, RequestTimedOut):
            self.stats["eager_unanswered"] = self.stats.get("eager_unanswered", 0) + 1
            # not offered again there for a while: each offer nobody answers holds its start
            # (and its place in start admission) for the whole wait
            if len(self._eager_paused) < _MAX_PAUSED:
                self._eager_paused[first.task_queue] = asyncio.get_running_loop().time() + PAUSE
            return FALLBACK
        except TransportError as exc:  # NATS away, a closed connection: as before
            log.debug("eager start of %s not offered: %s", workflow_id, exc)
            return FALLBACK
        answered_at = time.monotonic()
        usable = self._eager_answer(workflow_id, state, events, data, headers)
        if usable is None:
            self.stats["eager_declined"] = self.stats.get("eager_declined", 0) + 1
            return FALLBACK
        all_events, receipt_to, sticky = usable
        offered = eager_offer(headers.get(EAGER_HEADER, ""))
        ask = eager_ask(headers.get(EAGER_ASK_HEADER, ""))
        return await self._eager_store(
            workflow_id, run_id, all_events, receipt_to, sticky, (offered, answered_at, ask)
        )

    def _eager_answer(
        self,
        workflow_id: str,
        state: RunState,
        events: Sequence[ev.Event],
        data: bytes,
        headers: dict[str, str],
    ) -> tuple[list[ev.Event], str, str] | None:
        """The first batch an answer makes ([WorkflowStarted, its events]), where its worker
        wants the receipt, and its sticky token; None if it is not usable (hostile bytes)."""
        if data == BUSY or len(data) > MAX_OFFER_BYTES:
            return None
        try:
            env = self.codec.decode_input(data)
            receipt_to = check_reply_subject(headers.get(RECEIPT_HEADER, ""), "receipt subject")
        except (DecodeError, MessageRejectedError) as exc:
            log.warning("discarded an eager start answer for %s: %s", workflow_id, exc)
            return None
        report = env.input
        if (
            env.start is not None
            or env.workflow_id != workflow_id
            or not isinstance(report, inp.CompleteWorkflowTask)
            or report.run_id != state.run_id
            or report.based_on != state.last_event_id
            or report.more
            or not report.commands
            or len(report.commands) > MAX_COMMANDS
            or not all(isinstance(c, _EAGER_COMMANDS) for c in report.commands)
        ):
            return None
        decision = decide(state, report, self.clock.now())
        if decision.outcome != APPLIED or not decision.events or decision.effects:
            return None
        sticky = headers.get(STICKY_HEADER, "")
        if not STICKY_TOKEN.fullmatch(sticky):
            sticky = ""
        return [*events, *decision.events], receipt_to, sticky

    async def _eager_store(
        self,
        workflow_id: str,
        run_id: str,
        events: list[ev.Event],
        receipt_to: str,
        sticky: str,
        offer: tuple[int, float, str] = (0, 0.0, ""),
    ) -> RunCache | object | None:
        """Store a first batch's effects (guarded), then the batch (see the module docstring);
        ``offer``: the activity attempts the answering worker offered to run, when its answer
        came, and the id it named (``Df-Eager-Ask``: the granted attempts are marked with it)."""
        events = self._mark_first_grants(events, *offer)
        first = events[0]
        assert isinstance(first, ev.WorkflowStarted)
        state = RunState(started=first)
        state.apply(events, "start")
        effects = effects_for(state, events)
        early = [e for e in effects if isinstance(e, _EAGER_EFFECTS)]
        later = [e for e in effects if not isinstance(e, _EAGER_EFFECTS)]
        if any(isinstance(e, DispatchWorkflowTask) for e in later) or any(
            isinstance(e, DispatchActivityTask) and e.deliver_at is not None for e in early
        ):
            return FALLBACK
        cache = RunCache(workflow_id, state, list(events), 0, 0)
        guard = self._first_guard(workflow_id, 0)
        batch = self.codec.encode_batch("start", events)
        if self.codec.refers(batch):
            return FALLBACK
        async with cache.lock:
            grants = await self._first_grants(cache, early, offer[1])
            if grants is None:
                return FALLBACK  # nothing stored yet: marked attempts are never left unlisted
            listed_at = time.monotonic()
            # written now, awaited after the append: the append goes out right behind them
            rest = [e for e in early if not any(e is g for g in grants)]
            pending = await self._eager_effects(cache, rest, guard)
            seq = await self._append_first(workflow_id, run_id, events, 0, batch, pending)
            if seq is None:
                return None
            cache.last_seq = cache.first_seq = seq
            cache.sticky = sys.intern(sticky)
            self._remember(run_id, cache)
            self._gate.going(run_id, first.task_queue)  # its first report is in
            results = await settled(pending)
            if any(isinstance(r, BaseException) for r in results):
                # refused for another reason than the guard (the append was stored): the run
                # exists now, so send them again without it (each idempotent by its id)
                await self._execute(cache, rest)
            granted = await self._first_granted(cache, grants, listed_at)
            await self._send_receipt(receipt_to, run_id, seq, batch, granted)
            await self._execute(cache, later)
        self.stats["eager_starts"] = self.stats.get("eager_starts", 0) + 1
        metrics.SERVER_INPUTS.inc(self.layout.namespace, "EagerStart", "applied")
        return cache

    def _mark_first_grants(
        self, events: list[ev.Event], offered: int, answered_at: float, ask: str
    ) -> list[ev.Event]:
        """``events`` with the first batch's activities to grant to the answering worker
        marked ``eager`` (``ask``, its ``Df-Eager-Ask``), as ``grants.py`` marks a report's:
        first attempts on the run's queue allowed a second attempt, at most ``offered``. A
        marked attempt runs with no lease: its task is never published, whatever derives
        the batch's effects again, and its check records it timed out if nobody reported it
        or claimed its lease. A worker that names no id is granted nothing."""
        if (
            offered <= 0
            or not ask
            or self.options.eager_check <= 0
            or self.clock.skips  # a skipping clock's time is not the schedule's
            or time.monotonic() - answered_at > RECEIPT_GRANT_WITHIN
        ):
            return events
        first = events[0]
        assert isinstance(first, ev.WorkflowStarted)
        marked = list(events)
        for i, e in enumerate(events):
            if offered <= 0:
                break
            if isinstance(e, ev.ActivityScheduled) and may_run_eagerly(e, first.task_queue):
                marked[i] = evolve(e, eager=ask)
                offered -= 1
        return marked

    async def _first_grants(
        self, cache: RunCache, early: Sequence[object], answered_at: float
    ) -> list[DispatchActivityTask] | None:
        """The first batch's activity tasks granted to the worker that answered the offer
        (those marked ``eager``): each listed on a check list, stored before the append,
        instead of stored. A list whose append then fails finds no run when it fires, and
        does nothing. None: a list was not stored, or the worker may have stopped waiting
        for its receipt; the run is then created as before (nothing is stored yet)."""
        state = cache.state
        chosen = [
            e
            for e in early
            if isinstance(e, DispatchActivityTask)
            and e.task.attempt == 1
            and (act := state.activities.get(e.task.seq)) is not None
            and act.eager
        ]
        if not chosen:
            return []
        listed: list[asyncio.Future[PubAck]] = []
        for e in chosen:
            act = state.activities[e.task.seq]
            item = CheckedAttempt(cache.workflow_id, state.run_id, e.task.seq, 1)
            deadline = check_deadline(act.options, act.attempt_scheduled_at)
            listed.append(await self._check_later(item, deadline))
        try:
            for list_stored in listed:
                await list_stored
        except Exception as exc:  # (stored or not, a list is harmless)
            log.debug("eager start of %s not taken: %s", cache.workflow_id, exc)
            return None
        if time.monotonic() - answered_at > RECEIPT_GRANT_WITHIN:
            return None  # the worker may have stopped waiting for its receipt
        return chosen

    async def _first_granted(
        self, cache: RunCache, grants: Sequence[DispatchActivityTask], listed_at: float
    ) -> list[int]:
        """The run's first batch is stored: the seqs granted in its receipt. Should the append
        have come so late that a list may have fired before it (found no run, did nothing),
        the attempts are listed again first (``grants.py``: a marked attempt's task is never
        published, the worker granted it may be running it with no lease)."""
        if not grants:
            return []
        # (a list falls due at its attempt's start_to_close when that comes first: the
        # deadline ``check_deadline`` gives, counted from the listing)
        after = [check_deadline(g.task.options, 0.0) for g in grants]
        soonest = min([self.options.eager_check] + [d for d in after if d is not None])
        if time.monotonic() - listed_at > soonest / 2:
            await self._execute(cache, list(grants))  # (marked: listed again, not stored)
        run_id = cache.state.run_id
        for g in grants:
            self._note_granted((run_id, g.task.seq, g.task.attempt))
        return [g.task.seq for g in grants]

    async def _eager_effects(
        self, cache: RunCache, early: Sequence[object], guard: Guard
    ) -> list[Awaitable[object]]:
        """Send a first batch's activity tasks and timers, each guarded (not awaited)."""
        timers = [e for e in early if isinstance(e, ArmTimer)]
        pending, deferred = await self._send_guarded(cache, timers, guard)
        if deferred:
            raise TransportError("a timer of an eager start was deferred")  # never: no task
        run_id = cache.state.run_id
        for e in early:
            if not isinstance(e, DispatchActivityTask):
                continue
            task = e.task
            headers = {
                MSG_ID: f"at:{run_id}:{task.seq}:{task.attempt}",
                FIRST_BATCH_HEADER: "1",
                **guard,
            }
            data = self.codec.encode_activity_task(task)
            subject = self.layout.activity_tasks(task.task_queue)
            pending.append(await self.pub.send(subject, data, headers))
        return pending
