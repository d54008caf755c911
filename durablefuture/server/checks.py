"""Check lists firing: the activity attempts granted to workers, checked once their time is up.

A check list (``server/grants.py``) fires onto ``df.<ns>.rm.check-list``, read by the
removals consumer every df-server shares (``server/removals.py``: one server at a time, acked
only when done, in-progress acknowledgements meanwhile, a failure delivered again, or
dead-lettered with the reason once it keeps failing; a list that is no list, dead-lettered at
once). For each attempt it lists, from the run's history as it is now (an attempt whose outcome this
df-server recorded since it granted it needs no read; a run not in its cache is first read
by its newest batch only: most are closed by their check):

- the run is gone or closed, or history holds the attempt's outcome (or a later attempt):
  nothing, except when this df-server did not record the outcome itself and the run is
  still open, or the outcome's batch closed it and is its newest. That batch may have been
  appended by a df-server that died, or lost NATS, before its effects (a retry timer, the
  activity tasks and timers the workflow decided with the outcome, the workflow task it
  wakes), while the worker that ran the attempt died before it could store its report; no
  later batch derives them (a signal's, a parallel branch's). The outcome is then taken
  again as a duplicate, which derives the batch's effects again from the run as it is now,
  each idempotent by its message id (as a stored task delivered again would have it
  reported again, ``worker/handover.py``); a closing batch whose closed status entry is
  stored, of a run with no parent, children or next run, needs nothing. A df-server that
  recorded the outcome itself (and still remembers it) derived the effects then;
- its lease is held by a holder that renewed it within the lease, and its start_to_close is
  not over (``grants.check_deadline``): on a later list, due at the end of its
  start_to_close if that comes before ``eager_check`` (a worker claims the lease of a granted
  attempt still running after ``eager_claim_after``; a long activity is checked again every
  ``eager_check`` seconds, never run twice);
- its start_to_close is over and a live holder still renews its lease: recorded timed out
  (start_to_close) and retried per its retry policy, as a stored attempt is by its
  start_to_close timer whatever its lease. Its worker times the attempt out itself at its
  start_to_close, so only a stalled worker still runs it; as with a stored attempt, the
  next attempt may then run while that worker finishes the old one (its outcome, reported
  late, is ignored);
- otherwise the attempt is recorded timed out (start_to_close, lost with its worker) and
  retried per its retry policy, exactly as when a worker holding a lease dies mid-run
  (``worker/handover.py``). Its task is never published: the attempt may be running on a
  stalled worker; the next attempt is a new one, recorded. The worker it was granted to
  never ran it (the answer was lost, it stopped or was killed), or died before it reported
  or claimed the lease. (An activity not marked ``eager``, granted by a df-server of
  before, whose workers claim the lease at once, or listed for an append that failed, has
  its task published instead, as before: same Msg-Id, and the lease guards it.)

A list delivered again does it all again: an outcome recorded twice is one (the same input
id as the worker's report), an attempt listed again is checked again later. One attempt that
cannot be checked (a corrupt history: its run marked corrupt; a failure: on a later list)
never keeps the list's other attempts from their check.
"""

from __future__ import annotations

import asyncio
import logging
import time

from durablefuture import metrics
from durablefuture.codec.checks import CheckedAttempt, decode_check_list
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.effects import DispatchActivityTask, RunStatus, activity_task
from durablefuture.core.errors import CorruptHistoryError, DecodeError, DurableFutureError
from durablefuture.core.events import TERMINAL_EVENTS
from durablefuture.core.failure import Failure, FailureKind
from durablefuture.core.state import ActivityState, RunState
from durablefuture.server.grants import check_deadline
from durablefuture.server.inputs import RunInputs
from durablefuture.server.runs import RunCache, RunMissing
from durablefuture.transport.buckets import read_key
from durablefuture.transport.consumer import Msg, delivery_count
from durablefuture.transport.deadletter import dead_letter
from durablefuture.transport.layout import open_bucket
from durablefuture.transport.leases import AttemptLeases
from durablefuture.transport.publisher import PubAck

__all__ = ["EagerChecks"]

log = logging.getLogger("durablefuture.server")

DUE_TOLERANCE = 0.25
"""Seconds before its start_to_close deadline a check may fire and still find it over (a list's
due time is stored to the millisecond; df-servers' clocks differ a little)."""


class EagerChecks(RunInputs):
    """Checks the attempts of fired check lists (a part of ``Server``)."""

    _leases: AttemptLeases | None = None

    async def _corrupt(self, exc: CorruptHistoryError, reply_to: str = "") -> None:
        raise NotImplementedError  # service.Server

    async def _check_list(self, msg: Msg) -> None:
        """Check every attempt a fired list names; raises what is to be retried."""
        try:
            items = decode_check_list(msg.data)
        except DecodeError as exc:
            log.error("dead-lettering a check list: %s", exc)
            await dead_letter(
                self.pub, self.layout.dead_letter("removal"), msg, "removal", str(exc)
            )
            return
        keepalive = max(0.1, self.options.input_ack_wait / 3)
        alive = time.monotonic()
        later: list[asyncio.Future[PubAck]] = []
        for item in items:
            if time.monotonic() - alive > keepalive:
                await msg.in_progress()  # a long list: not to be delivered to another server
                alive = time.monotonic()
            deadline: float | None = None
            try:
                outcome, deadline = await self._check_attempt(item)
            except CorruptHistoryError as exc:
                log.error("check of run %s #%d: %s", item.run_id, item.seq, exc)
                await self._corrupt(exc)
                outcome = "done"  # a corrupt run is marked so; nothing of it runs
            except (DurableFutureError, OSError) as exc:
                log.warning(
                    "check of run %s #%d failed (%s); listed again", item.run_id, item.seq, exc
                )
                outcome = "later"
            self.stats[f"checks_{outcome}"] += 1  # timed_out, later, done, published, again
            metrics.EAGER_ATTEMPTS.inc(self.layout.namespace, outcome)
            if outcome == "later":
                later.append(await self._check_later(item, deadline))
        for listed in later:
            await listed  # stored before this list is acknowledged
        if delivery_count(msg) > 1:
            log.info("a check list delivered again was checked (%d attempts)", len(items))

    async def _check_attempt(self, item: CheckedAttempt) -> tuple[str, float | None]:
        """``done`` (nothing to do), ``again`` (its outcome's effects derived again), ``later``
        (a live holder runs it; with the end of its start_to_close, if to come), ``timed_out``
        or ``published`` (not granted by this version)."""
        if self._grant_checked((item.run_id, item.seq, item.attempt)):
            return "done", None  # this df-server recorded its outcome and derived its effects
        outcome_id = inp.CompleteActivityTask(item.run_id, item.seq, item.attempt).input_id
        if self._cached(item.run_id) is None:
            # most runs are closed by their check: one read tells, with no load of the run
            last = await self.history.last_batch(item.workflow_id, item.run_id, "none")
            if last is None:
                return "done", None  # removed since (or never stored)
            closed = bool(last.events) and isinstance(last.events[-1], TERMINAL_EVENTS)
            if closed and last.input_id != outcome_id:
                return "done", None  # closed by another batch
        try:
            cache = await self._load(item.workflow_id, item.run_id)
        except RunMissing:
            return "done", None  # removed since (or never stored)
        async with cache.lock:
            if self._grant_checked((item.run_id, item.seq, item.attempt)):
                # its outcome recorded by this df-server while this check waited for the run
                return "done", None
            latest = await self.history.last_seq(item.workflow_id, item.run_id)
            if latest != cache.last_seq:
                await self._refresh(cache)
            state = cache.state
            act = _open_attempt(state, item)
            if act is None:
                if (
                    item.seq in state.activities
                    and outcome_id in state.applied_inputs
                    and (state.is_open or await self._closed_by_outcome(cache, outcome_id))
                ):
                    log.debug(
                        "attempt %d of activity #%d of run %s: its outcome was recorded by "
                        "another df-server; its effects are derived again",
                        item.attempt,
                        item.seq,
                        item.run_id,
                        extra={"workflow_id": item.workflow_id, "run_id": item.run_id},
                    )
                    await self._decide_and_record(
                        cache, inp.CompleteActivityTask(item.run_id, item.seq, item.attempt)
                    )
                    return "again", None
                return "done", None
            lease = await (await self._attempt_leases()).read(item.run_id, item.seq, item.attempt)
            now = time.time()
            alive = lease is not None and now - lease.at < lease.lease
            deadline = check_deadline(act.options, act.attempt_scheduled_at)
            if deadline is not None and now >= deadline - DUE_TOLERANCE:
                deadline = None  # its start_to_close is over
                if alive and act.eager:
                    return await self._outlived(cache, act, item), None
            if alive:
                return "later", deadline
            if not act.eager:
                # not granted by this version (a df-server of before, whose workers claim the
                # lease at once; or listed for an append that failed, its task stored): the
                # task, as a dispatch would have (same Msg-Id), is safe
                await self._execute(cache, [DispatchActivityTask(activity_task(state, act))])
                return "published", None
            reason = (
                f"attempt {item.attempt} of activity {act.name!r} was lost with its worker "
                "before it reported or claimed a lease (the worker stopped, crashed or never "
                "got it)"
            )
            why = "was granted to a worker that has neither reported it nor claimed its lease"
            return await self._timed_out(cache, act, item, why, reason), None

    async def _outlived(self, cache: RunCache, act: ActivityState, item: CheckedAttempt) -> str:
        """Record granted attempt ``item`` timed out: its start_to_close is over, and a live
        holder still renews its lease (a stalled worker), as a stored attempt's
        start_to_close timer records it whatever its lease."""
        reason = (
            f"attempt {item.attempt} of activity {act.name!r} did not finish within its "
            f"start_to_close_timeout of {act.options.start_to_close_timeout:g}s"
        )
        why = "outlived its start_to_close_timeout with its lease still renewed (a stalled worker)"
        return await self._timed_out(cache, act, item, why, reason, level=logging.WARNING)

    async def _timed_out(
        self,
        cache: RunCache,
        act: ActivityState,
        item: CheckedAttempt,
        why: str,
        reason: str,
        level: int = logging.INFO,
    ) -> str:
        """Record granted attempt ``item`` timed out (start_to_close) with ``reason``; logs
        ``why``. It is retried per its retry policy."""
        log.log(
            level,
            "attempt %d of activity %s (#%d of run %s) %s: recorded timed out",
            item.attempt,
            act.name,
            item.seq,
            item.run_id,
            why,
            extra={"workflow_id": item.workflow_id, "run_id": item.run_id},
        )
        failure = Failure(
            message=reason,
            type="TimeoutError",
            kind=FailureKind.TIMEOUT,
            timeout_type="start_to_close",
        )
        await self._decide_and_record(
            cache, inp.FailActivityTask(item.run_id, item.seq, item.attempt, failure)
        )
        return "timed_out"

    async def _closed_by_outcome(self, cache: RunCache, outcome_id: str) -> bool:
        """Whether the batch that recorded the outcome ``outcome_id`` closed the (closed) run
        and its effects may be missing (a closing batch whose closed status entry is stored,
        of a run with no parent, children or next run, has none missing)."""
        recorded = cache.state.applied_inputs.get(outcome_id)
        if recorded is None or not cache.events or recorded[1] != cache.events[-1].event_id:
            return False
        state = cache.state
        terminal = cache.events[-1]
        if (
            state.started.parent is not None
            or isinstance(terminal, ev.WorkflowContinuedAsNew)
            or state.open_children()
            or state.open_activities()
        ):
            return True
        kv = self._runs_kv
        if kv is None:
            return True
        value = await read_key(kv, self.layout.status_key(cache.workflow_id, state.run_id))
        if not value:
            return True
        try:
            return self.codec.decode_summary(value).status not in RunStatus.CLOSED
        except DecodeError:
            return True

    async def _attempt_leases(self) -> AttemptLeases:
        if self._leases is None:
            kv = self._act_kv or await open_bucket(self.js, self.layout.activity_bucket)
            self._act_kv = kv
            self._leases = AttemptLeases(self.pub, kv, self.layout, self.codec)
        return self._leases


def _open_attempt(state: RunState, item: CheckedAttempt) -> ActivityState | None:
    """The activity of ``item`` if ``item`` is its current attempt, not closed, in an open run."""
    act = state.activities.get(item.seq)
    if not state.is_open or act is None or act.closed or act.attempt != item.attempt:
        return None
    return act
