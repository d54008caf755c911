"""Starting runs: a new id, an id that exists (by request id, reuse policy, or a signal with
start), continue-as-new and child workflows.

A start first tries to create the run without looking (most ids are new): the append expects
the workflow to have no history, so an existing one fails the sequence check and the next
round decides with the latest run in view.
"""

from __future__ import annotations

import asyncio
import logging

from durablefuture import metrics
from durablefuture.codec.wire import Reply
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.effects import RunStatus
from durablefuture.core.errors import (
    TransportError,
    WorkflowAlreadyStartedError,
)
from durablefuture.core.failure import Failure
from durablefuture.core.orchestration import LatestRun, decide_start, effects_for, start_events
from durablefuture.core.state import RunState, status_of
from durablefuture.server.effects import await_ack
from durablefuture.server.inputs import RunInputs
from durablefuture.server.runs import RunCache, new_run_id
from durablefuture.transport.publisher import WrongLastSequence

__all__ = ["Starts"]

log = logging.getLogger("durablefuture.server")


class Starts(RunInputs):
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

    async def _handle_start(self, request: inp.StartWorkflowRequest, reply_to: str) -> None:
        wid = request.workflow_id
        async with self._start_lock(wid):
            await self._start_locked(request, reply_to)

    async def _start_locked(self, request: inp.StartWorkflowRequest, reply_to: str) -> None:
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
                    await self._execute(cache, effects_for(cache.state, cache.events[lo - 1 : hi]))
                await self._reply(reply_to, Reply(True, run_id=d.run_id))
                return
            if d.action == "reject":
                await self._reply(
                    reply_to,
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
                await self._handle_run_input(
                    wid,
                    inp.SignalWorkflow(
                        d.run_id,
                        request.signal_name or "",
                        f"{request.request_id}:signal",
                        request.signal_args,
                    ),
                )
                await self._reply(reply_to, Reply(True, run_id=d.run_id))
                return
            run_id = request.run_id or new_run_id()
            events = start_events(
                request, namespace=self.layout.namespace, run_id=run_id, now=self.clock.now()
            )
            try:
                seq = await self.history.append(
                    wid, run_id, "start", events, latest_seq, whole_workflow=True
                )
            except WrongLastSequence:
                self.stats["conflicts"] += 1
                metrics.OCC_CONFLICTS.inc(self.layout.namespace)
                continue
            metrics.WORKFLOWS_STARTED.inc(self.layout.namespace)
            metrics.SERVER_INPUTS.inc(self.layout.namespace, "StartWorkflowRequest", "applied")
            first = events[0]
            assert isinstance(first, ev.WorkflowStarted)
            state = RunState(started=first)
            state.apply(events, "start")
            cache = RunCache(wid, state, list(events), seq, seq)
            self._remember(run_id, cache)
            await self._reply(reply_to, Reply(True, run_id=run_id))
            async with cache.lock:
                await self._execute(cache, effects_for(state, events))
            log.info(
                "started workflow %s run %s (%s)",
                wid,
                run_id,
                request.workflow_type,
                extra={"workflow_id": wid, "run_id": run_id},
            )
            return
        raise TransportError(f"could not start {wid!r}: too many concurrent conflicting starts")
