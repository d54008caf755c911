"""Eager activity dispatch: the first attempts a worker's decisions schedule, run by that worker.

A report request whose worker also runs activities of the run's task queue, and has free
slots, says so (``Df-Eager: <n>``, ``transport/headers.py``). For the batch appended for that
report, up to ``n`` of the activity tasks its effects dispatch (first attempts, due now, on
the run's own task queue, allowed a second attempt) are not stored: each attempt is listed
instead on a check list, one ``@at`` message schedule shared by the attempts granted
meanwhile (the group commit of the expiry lists, ``server/expiries.py``), due
``ServerOptions.eager_check`` seconds later, and its ``ActivityScheduled`` is marked
``eager`` (the request's ``Df-Eager-Ask``) in the batch appended. The list is sent beside the
append (a list naming an attempt whose append then fails is harmless: its check finds no
such attempt, or one not marked, and does nothing) and stored before the answer goes out,
and the answer (``eager``, ``transport/report_requests.py``) names the seqs granted; the
worker runs them with no lease (it claims one only for an attempt still running after
``WorkerOptions.eager_claim_after``), reports, fused with its next decisions.

The task of a marked first attempt is never published, whatever derives the batch's effects
again (a report delivered again, a redo, recovery): the attempt is listed again instead (the
worker granted it may be running it, with no lease). A task is stored only where the
request whose id marks the attempt is known to have had none of its grants run: a report
stored by the worker whose request it was (``server/receipts.py``, ``UNANSWERED_ASK``: with
no usable answer, it ran none), or the answer to that very request granting it nothing
(too late, no receipt in it). The id is what tells: the same decisions reported twice (a
workflow task delivered again while its first taker still reports it) can reach a second
df-server whose cached run is behind; it lists their attempts for its own answer, finds its
append refused and takes the report for a duplicate of the batch the first request
appended, whose attempts that request's worker may be running: they are listed, never
published (a worker given such a task finds no lease, and would run the attempt again).

A list falls due ``eager_check`` seconds after the grant, or sooner: at the attempt's
``start_to_close_timeout`` (plus ``CHECK_GRACE``) from the batch that scheduled it, when that
comes first, as a stored attempt's start_to_close timer would have timed it out (attempts
due further apart than ``CHECK_SPREAD`` never share a list). When a list fires
(``server/checks.py``), an attempt whose outcome history holds needs nothing; one whose lease
a live holder renews goes on a later list, until its start_to_close is over; any other (or
one past its start_to_close) is recorded timed out and retried per its policy. So a worker
lost after a grant, or a df-server lost between the append and the answer, costs that
attempt a timeout; an activity allowed one attempt only is never granted, so such a crash
never fails it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Coroutine, Sequence

from attrs import evolve

from durablefuture import metrics
from durablefuture.codec.checks import (
    CHECK_LIST_BYTES,
    MAX_CHECK_LIST,
    CheckedAttempt,
    check_list_size,
    encode_check_list,
)
from durablefuture.core import events as ev
from durablefuture.core.effects import ActivityTask
from durablefuture.core.options import ActivityOptions
from durablefuture.server.expiries import ScheduleLists
from durablefuture.server.receipts import ANSWERED_RECEIPT, UNANSWERED_ASK, AnsweredReceipt
from durablefuture.server.runs import RunCache
from durablefuture.server.status_later import StatusLater
from durablefuture.transport.publisher import PubAck
from durablefuture.transport.report_requests import ANSWER_WAIT

__all__ = [
    "CHECK_GRACE",
    "CHECK_SPREAD",
    "GRANT_WITHIN",
    "Grants",
    "check_deadline",
    "may_run_eagerly",
]

GRANT_WITHIN = ANSWER_WAIT / 4
"""Seconds after a request was taken past which nothing is granted any more: its answer
might come after the worker stopped waiting (it then stores the report, which carries no
grant), and a grant nobody reads waits out its check."""


CHECK_GRACE = 3.0
"""Seconds past an attempt's start_to_close_timeout (from the batch that scheduled it) its
check waits. A worker starts an attempt granted to it at most a second (``ANSWER_WAIT``), or
two for an eager start's receipt (``worker/eager_starts.RECEIPT_WAIT``), after that batch, and
times it out itself at its start_to_close, reporting it: the check never times out an attempt
still within its start_to_close by its worker's count, and lets that worker's report land."""
CHECK_SPREAD = 0.5
"""Seconds the due times of the attempts one check list names may differ by (a list fires at
the latest of them)."""

MAX_REMEMBERED = 100_000
"""Attempts a df-server remembers granting (until their outcome is recorded here), and
remembers the recorded outcome of (until their check): a check that finds one done here
needs no read (an attempt remembered or not is checked the same way, only cheaper)."""
_OUTCOMES = (
    ev.ActivityCompleted,
    ev.ActivityFailed,
    ev.ActivityTimedOut,
    ev.ActivityRetryScheduled,
)
Attempt = tuple[str, int, int]
"""(run id, activity seq, attempt)."""


class Grants(StatusLater):
    """Grants first activity attempts to the workers that decided them (a part of ``Server``)."""

    _check_lists: ScheduleLists[CheckedAttempt] | None = None
    _granted_open: OrderedDict[Attempt, None] | None = None
    """Attempts this df-server granted whose outcome it has not recorded."""
    _granted_done: OrderedDict[Attempt, None] | None = None
    """Attempts this df-server granted and then recorded the outcome of, not yet checked."""

    def _grants_recorded(self, run_id: str, events: Sequence[ev.Event]) -> None:
        """``events`` were appended to ``run_id``: note the outcomes of granted attempts."""
        granted, done = self._granted_open, self._granted_done
        if not granted or done is None:
            return
        for e in events:
            if isinstance(e, _OUTCOMES) and (key := (run_id, e.seq, e.attempt)) in granted:
                del granted[key]
                done[key] = None
                if len(done) > MAX_REMEMBERED:
                    done.popitem(last=False)

    def _grant_checked(self, key: Attempt) -> bool:
        """Whether this df-server recorded the outcome of granted attempt ``key`` (forgotten
        now: a list is checked once, and one delivered again is checked the long way)."""
        done = self._granted_done
        if done is None or key not in done:
            return False
        del done[key]
        return True

    def _lists(self) -> ScheduleLists[CheckedAttempt]:
        if self._check_lists is None:
            self._check_lists = ScheduleLists(
                self.pub,
                self._track,
                subject=self.layout.check_list,
                target=self.layout.removal("check-list"),
                encode=encode_check_list,
                size=check_list_size,
                max_items=MAX_CHECK_LIST,
                max_bytes=CHECK_LIST_BYTES,
                spread=CHECK_SPREAD,
            )
        return self._check_lists

    def _track(self, work: Coroutine[object, object, None]) -> None:
        raise NotImplementedError  # effects.Effects

    async def _check_later(
        self, item: CheckedAttempt, deadline: float | None = None
    ) -> asyncio.Future[PubAck]:
        """List ``item`` on a check list due ``eager_check`` seconds from now, or at
        ``deadline`` (``check_deadline``: its start_to_close is over) if that comes first;
        the future resolves once the list is stored."""
        now = time.time()
        due = now + self.options.eager_check
        if deadline is not None:
            due = min(due, max(now, deadline))
        return await self._lists().arm(item, due)

    async def _grant_early(
        self, cache: RunCache, events: tuple[ev.Event, ...]
    ) -> tuple[ev.Event, ...]:
        """List the first attempts of the activities ``events`` schedule on the run's task
        queue (at most as many as the worker offered) before the append that records them
        is sent: the list is stored beside the append instead of after it. Returns
        ``events`` with those marked ``eager`` (their tasks are never published, whatever
        derives their effects again). One listed for an append that fails is harmless: its
        check finds no such attempt, or one not marked, and does nothing."""
        answered = ANSWERED_RECEIPT.get()
        if answered is None or not self._may_grant(answered):
            return events
        state = cache.state
        queue = state.started.task_queue
        marked = list(events)
        for i, e in enumerate(events):
            if not isinstance(e, ev.ActivityScheduled) or not may_run_eagerly(e, queue):
                continue
            if e.seq not in answered.early:
                if len(answered.early) >= answered.eager:
                    continue
                item = CheckedAttempt(cache.workflow_id, state.run_id, e.seq, 1)
                listed = await self._check_later(item, check_deadline(e.options, e.at))
                listed.add_done_callback(_consume)  # (awaited only if granted)
                answered.early[e.seq] = listed
            marked[i] = evolve(e, eager=answered.ask)
        return tuple(marked)

    def _may_grant(self, answered: AnsweredReceipt) -> bool:
        return (
            answered.eager > len(answered.granted)
            and bool(answered.ask)  # (a worker that names no request id is granted nothing)
            and not answered.answered
            and self.options.eager_check > 0
            and not self.clock.skips  # a skipping clock's time is not the schedule's
            and time.monotonic() - answered.began <= GRANT_WITHIN
        )

    async def _granted(self, cache: RunCache, task: ActivityTask) -> asyncio.Future[PubAck] | None:
        """If ``task`` (a dispatch due now) is the first attempt of an activity marked
        ``eager``: its attempt granted to the worker whose report is being answered, or, if
        its effects are derived again (a report delivered again, a df-server that died
        before its answer, a report of the same decisions asked again of a df-server whose run
        was behind), listed again, never published (the worker granted it may be running it,
        with no lease yet). The future resolves once its list is stored. None: store the task
        as usual (not marked, or marked by a request whose worker runs none of it)."""
        state = cache.state
        act = state.activities.get(task.seq)
        if task.attempt != 1 or act is None or not act.eager or UNANSWERED_ASK.get() == act.eager:
            return None  # (not granted, or the worker granted it ran none of its grants)
        answered = ANSWERED_RECEIPT.get()
        listed = None
        if answered is not None and answered.run_id == state.run_id:
            listed = answered.early.pop(task.seq, None)
        if listed is not None and answered is not None and act.eager == answered.ask:
            # listed for this answer, and the batch stored is the one this request appended
            # (marked with its id): granted, or, if the answer will not grant it (too late,
            # no receipt in it), its worker never runs it and its task is stored as usual
            if answered.batch and self._may_grant(answered):
                answered.granted.append(task.seq)
                self._note_granted((state.run_id, task.seq, task.attempt))
                return listed
            return None
        if listed is not None:
            # listed for this answer, but the batch stored was appended for another request
            # (the same decisions reported twice, this df-server's run behind: its own append
            # refused, the report a duplicate): marked with that request's id, the attempt
            # may be running on its worker with no lease. The list stored is its check
            self.stats["eager_relisted"] += 1
            return listed
        item = CheckedAttempt(cache.workflow_id, state.run_id, task.seq, task.attempt)
        listed = await self._check_later(
            item, check_deadline(act.options, act.attempt_scheduled_at)
        )
        self.stats["eager_relisted"] += 1
        return listed

    def _note_granted(self, key: Attempt) -> None:
        """Attempt ``key``, listed on a stored check list, is granted (counted, remembered)."""
        self.stats["eager_granted"] += 1
        metrics.EAGER_ATTEMPTS.inc(self.layout.namespace, "granted")
        if self._granted_open is None:
            self._granted_open, self._granted_done = OrderedDict(), OrderedDict()
        self._granted_open[key] = None
        if len(self._granted_open) > MAX_REMEMBERED:
            self._granted_open.popitem(last=False)  # (its outcome recorded elsewhere, or lost)


def check_deadline(options: ActivityOptions, scheduled_at: float) -> float | None:
    """When a granted attempt scheduled at ``scheduled_at`` has outlived its start_to_close
    (``CHECK_GRACE`` after it, as its worker counts it), or None (no start_to_close)."""
    stc = options.start_to_close_timeout
    return None if stc is None else scheduled_at + stc + CHECK_GRACE


def may_run_eagerly(e: ev.ActivityScheduled, queue: str) -> bool:
    """Whether the first attempt of ``e`` may be granted: on the run's own task queue, and
    allowed a second attempt (one lost with its worker, or with a df-server that died before
    its answer, is recorded timed out and retried; an activity allowed one attempt only
    keeps its stored task and lease, so no infrastructure crash fails it)."""
    if (e.options.task_queue or queue) != queue:
        return False
    policy = e.options.retry_policy
    return policy is None or policy.maximum_attempts != 1


def _consume(listed: asyncio.Future[PubAck]) -> None:
    """Retrieve the outcome of a list nobody awaits (its append failed: nothing granted)."""
    if not listed.cancelled():
        listed.exception()
