"""Starting runs: a new id, an id that exists (by request id, reuse policy, or a signal with
start), continue-as-new and child workflows.

A start first tries to create the run without looking (most ids are new): the append expects
the workflow to have no history, so an existing one fails the sequence check and the next
round decides with the latest run in view.

The first workflow task exists whenever the run's history does. A run is created by
:meth:`Starts._create_run`: its first workflow task (and the durable copy of its execution
timer) is written first, guarded by the same expected last sequence over the workflow's
history subjects as the append, and the WorkflowStarted append follows on the same
connection, right behind it. So:

- JetStream stores one connection's messages in order: the task is stored (or refused)
  before the append is looked at. The append is stored only if the guard held when the task
  was checked and still holds: the guard only ever fails more (a workflow's last history
  sequence only grows), so a refused task means a refused append. A task that never left the
  process (df-server killed before its write) means an append that did not either: the
  append is written after it.
- Hence a WorkflowStarted in history always has its first workflow task stored beside it,
  whatever dies when: df-server, the client that asked, both (``tests/integration/
  test_start_requests_crash.py``). Nothing has to re-derive it. That is what lets a client
  ask df-server to start a run with a core request (``start_requests``) instead of storing
  the start first: a stored start is redelivered to a df-server that died after the append
  and its effects are derived again; an asked one is not, and nothing else would dispatch
  the run's first workflow task.
- The worker sees the task first and may run it before the append has landed: the task
  carries the run's whole history (its WorkflowStarted), so the worker needs no read. Its
  report reaches a df-server after the append is stored: nothing is awaited between the two
  publishes (the payload objects the batch names are recorded before the task), so they
  leave in one flush of the connection, and nats-server has the append queued before it has
  even stored the task, long before a worker could take the task, run it and report. (A
  connection whose outgoing buffer is full flushes in between; the append still follows
  within that flush's time.)
- On a clustered stream (``--replicas`` > 1) JetStream refuses a second expected-sequence
  check on the same subjects while the first is being replicated (err_code 10164): there the
  task, the timer and the append are each sent once the one before is stored (an append
  refused so on a stream the server did not know was clustered is sent again the same way).
  The order, and so the argument, is the same; it costs a round trip per message, and the
  worker may now report before the append is stored: a workflow-task report for a run not
  found waits up to ``inputs.FIRST_APPEND_WAIT`` seconds for it before it is refused.
- A guarded message refused for another reason than its guard while the append is stored
  (a stream that had no leader for a moment: the publisher sends it again later, and by then
  the guard fails) is sent again without the guard once the append is stored. Only if
  df-server dies in between as well, and the client that asked too, is the run left without
  its task: three failures at one instant, on a cluster in failover.
- The other way round, a task stored for a run that is not created: when df-server is
  killed after writing the task and before writing the append, or when another df-server
  created the same workflow id between the two checks (both passed the guard, the other's
  append came in between). The worker runs that task and its report is refused, as one for a
  run that does not exist (a dead letter with that reason): no run exists, and the client
  that asked got no answer (it stores the start and gets a run, unless it died too). A start
  that finds the id taken (the guard fails) stores nothing.
- The run's status entry ("running") is written after the append (another stream, and a
  status for a run that was not created would be listed): with ``status_delay`` 0 before an
  asked start is answered, else once the run has been open that long, if it still is
  (``server/status_later.py``). A df-server that dies before it leaves the run without a
  status entry until the next df-server to handle an input of the run, or its close, writes
  one (the run itself goes on: its task exists).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from durablefuture import metrics
from durablefuture.codec.claims import CLAIM_MARK
from durablefuture.codec.wire import Reply
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.effects import ArmTimer, DispatchWorkflowTask, Effect, RunStatus
from durablefuture.core.errors import (
    TransportError,
    WorkflowAlreadyStartedError,
)
from durablefuture.core.failure import Failure
from durablefuture.core.orchestration import (
    LatestRun,
    decide_start,
    effects_again,
    effects_for,
    start_events,
)
from durablefuture.core.state import RunState, status_of
from durablefuture.server.eager_starts import FALLBACK, EagerStarts
from durablefuture.server.effects import MAX_TASK_BYTES, await_ack
from durablefuture.server.runs import RunCache, new_run_id
from durablefuture.transport.compaction import purge
from durablefuture.transport.guard import max_payload
from durablefuture.transport.payload_store import mark_refs
from durablefuture.transport.publisher import settled

__all__ = ["Answer", "StartToStore", "Starts"]

Answer = Callable[[Reply], Awaitable[None]]
"""Where a start's answer goes (a stored start's reply subject, an asked start's request)."""

_BEFORE_APPEND = (DispatchWorkflowTask, ArmTimer)
"""Effects of a new run stored before its WorkflowStarted (see the module docstring)."""

log = logging.getLogger("durablefuture.server")

_TASK_MARGIN = 16 * 1024
"""Bytes a workflow task adds to its run's start batch at most (the task's own fields)."""


class StartToStore(TransportError):
    """An asked start (nothing stored to redeliver it) whose first workflow task would be too
    large to carry the run's history: that task can only be sent after the WorkflowStarted
    append, and a df-server dying in between would leave the run without it. Nothing is
    created; its client stores the start (a stored start is redelivered and its effects
    derived again after such a crash)."""


class Starts(EagerStarts):
    """Start requests: create the run, or answer with the one that exists."""

    def _start_lock(self, workflow_id: str) -> asyncio.Lock:
        lock = self._start_locks.get(workflow_id)
        if lock is None:
            lock = self._start_locks[workflow_id] = asyncio.Lock()
        return lock

    async def _latest_run(self, workflow_id: str) -> tuple[LatestRun | None, int]:
        last = await self.history.last_of_workflow(workflow_id)
        if last is None:
            return None, 0
        cache = self._cached(last.run_id)
        if cache is not None and cache.last_seq == last.batch.stream_seq:
            st = cache.state
            return LatestRun.of(st.started, st.status), last.batch.stream_seq
        status = RunStatus.RUNNING
        for e in last.batch.events:
            if isinstance(e, ev.TERMINAL_EVENTS):
                status = status_of(e)
        started: ev.Event | None = last.batch.events[0]
        if not isinstance(started, ev.WorkflowStarted):
            head = await self.history.first_batch(workflow_id, last.run_id)
            started = head.events[0] if head else None
        if not isinstance(started, ev.WorkflowStarted):
            return LatestRun(last.run_id, status), last.batch.stream_seq
        return LatestRun.of(started, status), last.batch.stream_seq

    async def start_scheduled(self, request: inp.StartWorkflowRequest) -> None:
        """Start a schedule's action in this process: the schedule has recorded it first, and
        the start is idempotent (its request id), so a step done again starts nothing new."""
        await self._handle_start(request, "")

    async def _handle_start(
        self, request: inp.StartWorkflowRequest, reply_to: str, answer: Answer | None = None
    ) -> None:
        """Start (or find) the run; the answer goes to ``answer`` if given, else to
        ``reply_to``."""
        wid = request.workflow_id

        async def reply(r: Reply) -> None:
            await self._reply(reply_to, r)

        async with self._start_lock(wid):
            # an answer given: an asked start, which nothing redelivers after a crash
            await self._start_locked(request, answer or reply, redelivered=answer is None)

    async def _start_locked(
        self, request: inp.StartWorkflowRequest, answer: Answer, redelivered: bool = True
    ) -> None:
        wid = request.workflow_id
        for attempt in range(50):
            if attempt == 0 and request.continued_from is None and request.signal_name is None:
                # Most ids are new: try to create the run without looking first. If the id has
                # history, the sequence check fails and the next round looks it up.
                latest, latest_seq = None, 0
            else:
                latest, latest_seq = await self._latest_run(wid)
            d = decide_start(request, latest)
            if d.action == "existing":
                cache = await self._load(wid, d.run_id)
                async with cache.lock:
                    # the run as it is now (another server may have moved it on): effects
                    # re-derived from an old view would redo finished work
                    await self._refresh(cache)
                    lo, hi = cache.state.applied_inputs.get("start", (1, 1))
                    await self._execute(cache, effects_again(cache.state, cache.events, lo, hi))
                await answer(Reply(True, run_id=d.run_id))
                return
            if d.action == "reject":
                await answer(
                    Reply(
                        False,
                        run_id=d.run_id,
                        error_type=WorkflowAlreadyStartedError.__name__,
                        message=d.message,
                    ),
                )
                if request.parent is not None:
                    await await_ack(
                        self._send_input(
                            request.parent.workflow_id,
                            inp.RecordChildStartFailed(
                                request.parent.run_id,
                                request.parent.seq,
                                Failure(d.message, type="WorkflowAlreadyStartedError"),
                            ),
                        )
                    )
                return
            if d.action == "signal":
                if not redelivered:
                    # appended to a running run by an asked start, the signal's effects (the
                    # workflow task it wakes) would have nothing to derive them again should
                    # this df-server die before them while its client dies before it stores
                    # the start: the client stores it, which is acknowledged after them
                    raise StartToStore(
                        f"a signal with start to the running workflow {wid!r} is stored first"
                    )
                await self._handle_run_input(
                    wid,
                    inp.SignalWorkflow(
                        d.run_id,
                        request.signal_name or "",
                        f"{request.request_id}:signal",
                        request.signal_args,
                    ),
                )
                await answer(Reply(True, run_id=d.run_id))
                return
            run_id = request.run_id or new_run_id()
            events = start_events(
                request, namespace=self.layout.namespace, run_id=run_id, now=self.clock.now()
            )
            created: RunCache | object | None = FALLBACK
            if attempt == 0 and latest is None and self._eager_offer(request):
                created = await self._eager_create(wid, run_id, events)
            if created is FALLBACK:
                fresh = not request.run_id  # chosen here: no one else may hold it
                created = await self._create_run(
                    wid, run_id, events, latest_seq, redelivered, fresh=fresh
                )
            if created is None:
                self.stats["conflicts"] += 1
                metrics.OCC_CONFLICTS.inc(self.layout.namespace)
                continue
            metrics.WORKFLOWS_STARTED.inc(self.layout.namespace)
            metrics.SERVER_INPUTS.inc(self.layout.namespace, "StartWorkflowRequest", "applied")
            await answer(Reply(True, run_id=run_id))
            log.info(
                "started workflow %s run %s (%s)",
                wid,
                run_id,
                request.workflow_type,
                extra={"workflow_id": wid, "run_id": run_id},
            )
            return
        raise TransportError(f"could not start {wid!r}: too many concurrent conflicting starts")

    async def _create_run(
        self,
        workflow_id: str,
        run_id: str,
        events: Sequence[ev.Event],
        latest_seq: int,
        redelivered: bool = True,
        *,
        fresh: bool = False,
    ) -> RunCache | None:
        """Create a run: its first workflow task and timers, then its WorkflowStarted (the id
        check), then the rest of its effects. None if the workflow's history moved past
        ``latest_seq`` (nothing was created: decide again).

        ``fresh``: ``run_id`` was made for this attempt, so the payload markers written for
        it are its alone: when the run is surely not created (None; refused before its
        append was sent) they are purged, else they would hold the objects for good. After
        an append whose outcome is not known they stay (the run may exist)."""
        done: set[str] = set()  # "marked", then "sent" (the append)
        try:
            created = await self._create_marked(
                workflow_id, run_id, events, latest_seq, redelivered, done
            )
        except Exception:
            if fresh and done == {"marked"}:
                await self._unmark(run_id)
            raise
        if created is None and fresh and "marked" in done:
            await self._unmark(run_id)
        return created

    async def _unmark(self, run_id: str) -> None:
        """Purge the payload markers of ``run_id``, a run that is not created."""
        try:
            await purge(self.nc, self.layout.stream, self.layout.payload_refs_of_run(run_id))
        except TransportError as exc:  # left to the janitor
            log.warning("the payload markers of run %s, not created, stay: %s", run_id, exc)

    async def _create_marked(
        self,
        workflow_id: str,
        run_id: str,
        events: Sequence[ev.Event],
        latest_seq: int,
        redelivered: bool,
        done: set[str],
    ) -> RunCache | None:
        """:meth:`_create_run`'s work; ``done`` gets "marked" once payload markers are written
        (about to be), "sent" once the append is."""
        first = events[0]
        assert isinstance(first, ev.WorkflowStarted)
        state = RunState(started=first)
        state.apply(list(events), "start")
        cache = RunCache(workflow_id, state, list(events), 0, 0)
        effects = effects_for(state, events)
        early: list[Effect] = [e for e in effects if isinstance(e, _BEFORE_APPEND)]
        later = [e for e in effects if not isinstance(e, _BEFORE_APPEND)]
        guard = self._first_guard(workflow_id, latest_seq)
        # the payload objects it names first: nothing is awaited between the task and the append
        batch = self.codec.encode_batch("start", list(events))
        too_large = min(MAX_TASK_BYTES, max_payload(self.nc) // 2)
        if not redelivered and len(batch) + _TASK_MARGIN > too_large:
            raise StartToStore(
                f"the first workflow task of {workflow_id!r} would not carry its history "
                f"({len(batch):,} bytes of start): stored first instead"
            )
        if CLAIM_MARK in batch:  # it names payload objects: their markers are written
            done.add("marked")
        await mark_refs(self.pub, self.layout, run_id, batch)
        async with cache.lock:
            # written now, awaited after the append: the append goes out right behind them
            clustered = self.options.replicas > 1
            pending, deferred = await self._send_guarded(cache, early, guard, clustered)
            if deferred and not redelivered:  # larger than the margin foresaw: as above
                await self._abandon(run_id, pending)
                raise StartToStore(f"the first workflow task of {workflow_id!r} is too large")
            if clustered:
                # a clustered stream refuses a second check on the same subjects while the
                # first is being replicated: each waits for the PubAck of the one before
                if not await self._guard_held(pending, run_id):
                    return None
                pending = []
            done.add("sent")
            seq = await self._append_first(
                workflow_id, run_id, events, latest_seq, batch, pending, in_flight_again=True
            )
            if seq is None:
                return None
            cache.last_seq = cache.first_seq = seq
            self._remember(run_id, cache)
            # its start place waits for its first report (if its queue has workers)
            self._gate.created(run_id, first.task_queue)
            results = await settled(pending)
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                # refused for another reason than the guard (a stream without a leader for a
                # moment, resent after the append): the run exists now, so send them again
                # without it (each is idempotent by its message id)
                log.info("first effects of run %s sent again: %s", run_id, failed[0])
                cache.wft_sent_upto = 0
                await self._execute(cache, early)
            await self._execute(cache, [*deferred, *later])
        return cache
