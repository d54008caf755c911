"""Schedules as a pure state machine: (state, now, what was observed, a request) -> new state,
effects and the next time to wake up.

A schedule's state is one record (``ScheduleState``) that df-server rewrites after each step with
optimistic concurrency. Rules this module keeps (the runtime in ``server/schedules.py`` relies on
them):

- ``processed_upto`` only moves forward; a nominal time at or before it is never acted on again
  by the schedule's own spec (a retried step finds it already handled).
- An action is *recorded first* (in ``running``, status ``starting``), then started: the start
  effect is derived again from the state on every step until the run is observed, and the
  start itself is idempotent (workflow id ``<id_prefix>-<scheduled time>``, a request id from
  the same facts, id reuse policy REJECT_DUPLICATE). So an action is never lost and never
  started twice.
- Overlap policies (as Temporal documents them) see only this schedule's own running actions.
- Catch-up: due times older than ``catchup_window`` are counted and recorded as missed.
- Ahead (ALLOW_ALL only): a step may record the next action before its fire time (``lead``
  seconds at most, one at a time), with ``fire_at`` set; ``processed_upto`` then covers it. At
  its fire time only its start is left (``due_starts``: no observation, no new record). A pause
  or an update withdraws it while it is not due (``processed_upto`` goes back to ``now``, the
  one exception to the rule above: nothing after ``now`` has been acted on).
- An update, a pause or an unpause applies as of the time it was asked for (``at``, from
  ``core/schedule_asof.py``): the times before it are the old definition's, the times after
  it the new one's, so a request that waited in the stream passes over no fire time.
- A request id stays in ``requests`` while its input could be redelivered (``keep`` seconds
  after it was applied, ``MAX_REQUESTS`` at most) and among the last ``RECENT`` anyway.

The types are in ``core/schedule_model.py`` (re-exported here), the working copy a step edits
in ``core/schedule_draft.py``.
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import evolve

from durablefuture.core.errors import InvalidArgumentError
from durablefuture.core.schedule_draft import Draft, ahead, next_wake, pending_times
from durablefuture.core.schedule_model import (
    JOURNAL,
    MAX_BACKFILL,
    MAX_REQUESTS,
    RECENT,
    STARTING,
    ActionRecord,
    Buffered,
    CancelAction,
    JournalEntry,
    Observed,
    Overlap,
    Schedule,
    ScheduleEffect,
    SchedulePolicy,
    ScheduleStartWorkflow,
    ScheduleState,
    StartAction,
    Step,
    Stop,
    TerminateAction,
)
from durablefuture.core.schedule_spec import iso, scheduled_times
from durablefuture.core.types import check_workflow_id

__all__ = [
    "STARTING",
    "ActionRecord",
    "Buffered",
    "CancelAction",
    "JournalEntry",
    "Observed",
    "Overlap",
    "Schedule",
    "ScheduleEffect",
    "SchedulePolicy",
    "ScheduleStartWorkflow",
    "ScheduleState",
    "StartAction",
    "Step",
    "Stop",
    "TerminateAction",
    "apply_backfill",
    "apply_pause",
    "apply_trigger",
    "apply_update",
    "backfill_times",
    "due_starts",
    "new_state",
    "next_wake",
    "step",
    "upcoming",
]


def new_state(schedule_id: str, schedule: Schedule, now: float, request_id: str) -> ScheduleState:
    """A new schedule: nothing before ``now`` is due."""
    check_workflow_id(schedule_id, "schedule id")
    return ScheduleState(
        schedule_id=schedule_id,
        schedule=schedule,
        created_at=now,
        updated_at=now,
        processed_upto=now,
        journal=(JournalEntry(now, "created", None, schedule.note),),
        requests=(request_id,),
        requests_at=(now,),
    )


def step(
    state: ScheduleState,
    now: float,
    observed: Mapping[str, Observed],
    poll: float = 5.0,
    lead: float = 0.0,
) -> Step:
    """Take every action that is due at ``now`` (and start buffered ones that may start); under
    ALLOW_ALL also record the next action ahead if it fires within ``lead`` seconds."""
    d = Draft(state, now)
    d.observe(observed)
    lead = ahead(state, lead)
    upto = state.processed_upto
    if d.paused:
        if d.withdraw():  # paused by a failure of an earlier action: nothing ahead starts
            upto = now
        upto = max(upto, now)
    else:
        upto = d.take_due(upto, state.schedule.policy.overlap, lead)
    d.drain_buffer()
    d.s = evolve(state, processed_upto=upto)
    out = d.finish(poll, lead)
    if not d.paused and _due_now(out.state, now):  # more than MAX_STEPS were due
        out = evolve(out, wake_at=now)
    return out


def _due_now(state: ScheduleState, now: float) -> bool:
    nxt = next(scheduled_times(state.schedule.spec, state.schedule_id, state.processed_upto), None)
    return nxt is not None and nxt[1] <= now


def _remember(state: ScheduleState, request_id: str, now: float, keep: float) -> ScheduleState:
    """``state`` with ``request_id`` applied at ``now``: the ids kept are the last ``RECENT``
    and every one applied within ``keep`` seconds (the longest a redelivery of its input can
    come back after it was applied), ``MAX_REQUESTS`` at most."""
    ids = (*state.requests, request_id)
    had = state.requests_at[-len(state.requests) :] if state.requests else ()
    times = (*(0.0,) * (len(state.requests) - len(had)), *had, now)
    first = max(0, len(ids) - MAX_REQUESTS)
    while first < len(ids) - RECENT and times[first] < now - keep:
        first += 1
    return evolve(state, requests=ids[first:], requests_at=times[first:])


def due_starts(
    state: ScheduleState, now: float, due: float | None, poll: float = 5.0
) -> Step | None:
    """The timer's firing at ``due`` for an action recorded ahead: start what is due, and
    nothing else (no observation, no new record; the step ``poll`` seconds later observes the
    runs and records the next action ahead). None if a whole step is needed instead: no action
    is recorded for ``due``, or the spec's next time is too close for that later step to record
    it ahead. A recorded action is taken: after downtime it starts however late (as one
    recorded at its fire time always did); the catch-up window applies to the times after it."""
    if due is None or due > now or state.paused:
        return None
    due_now = [
        r
        for r in state.running
        if r.status == STARTING and r.fire_at is not None and r.fire_at <= now
    ]
    if not any(r.fire_at == due for r in due_now):
        return None
    pend = pending_times(state, now)
    if not pend:
        nxt = next(
            scheduled_times(state.schedule.spec, state.schedule_id, state.processed_upto), None
        )
        if nxt is not None and nxt[1] <= now + 2 * poll:
            return None
    effects = tuple(
        StartAction(r.workflow_id, state.request_id(r.nominal), r.nominal) for r in due_now
    )
    wake = now + poll if not pend else min(pend[0][1], now + poll)
    lateness = tuple(now - (r.fire_at or now) for r in due_now if r.fire_at == due)
    return Step(state, effects, wake, lateness=lateness)


def _withdrawn(state: ScheduleState, now: float) -> ScheduleState:
    """Without its actions recorded ahead that are not due yet; their times are no longer
    processed (the new definition, or the end of the pause, decides them again)."""
    kept = tuple(r for r in state.running if not r.pending(now))
    n = len(state.running) - len(kept)
    if not n:
        return state
    return evolve(
        state,
        running=kept,
        actions=state.actions - n,
        processed_upto=min(state.processed_upto, now),
    )


def apply_update(
    state: ScheduleState,
    schedule: Schedule,
    now: float,
    request_id: str,
    at: float | None = None,
    keep: float = 0.0,
) -> ScheduleState:
    """Replace the schedule's definition; its spec applies from ``at`` on (default ``now``; the
    time the request was stored, see ``core/schedule_asof.py``): no catch-up of times the new
    spec would have had before it. An action recorded ahead that is not due at ``now`` is
    withdrawn, and taken again only if the new spec has it (one due at ``now`` is kept: its
    timer may have started it already)."""
    at = now if at is None else min(at, now)
    state = _withdrawn(state, now)
    return evolve(
        _remember(state, request_id, now, keep),
        schedule=schedule,
        updated_at=at,
        processed_upto=max(state.processed_upto, at),
        journal=(*state.journal, JournalEntry(at, "updated", None, schedule.note))[-JOURNAL:],
    )


def apply_pause(
    state: ScheduleState,
    paused: bool,
    note: str,
    now: float,
    request_id: str,
    at: float | None = None,
    keep: float = 0.0,
) -> ScheduleState:
    """Pause or unpause as of ``at`` (default ``now``, as for ``apply_update``). While paused no
    spec action is taken, and none is caught up later (an action recorded ahead that is not
    due at ``now`` is withdrawn)."""
    at = now if at is None else min(at, now)
    state = _withdrawn(state, now)
    schedule = evolve(state.schedule, paused=paused, note=note)
    kind = "paused" if paused else "unpaused"
    return evolve(
        _remember(state, request_id, now, keep),
        schedule=schedule,
        updated_at=at,
        processed_upto=max(state.processed_upto, at),
        journal=(*state.journal, JournalEntry(at, kind, None, note))[-JOURNAL:],
    )


def apply_trigger(
    state: ScheduleState,
    overlap: Overlap | None,
    now: float,
    request_id: str,
    observed: Mapping[str, Observed],
    poll: float = 5.0,
    lead: float = 0.0,
    keep: float = 0.0,
) -> Step:
    """Take one action now (its scheduled time is ``now``), even while paused."""
    d = Draft(state, now)
    d.observe(observed)
    d.log("triggered", now)
    d.action(now, overlap or state.schedule.policy.overlap, "trigger")
    d.drain_buffer()
    d.s = _remember(state, request_id, now, keep)
    return d.finish(poll, ahead(state, lead))


def backfill_times(state: ScheduleState, start: float, end: float) -> list[float]:
    times: list[float] = []
    for nominal, _fire in scheduled_times(state.schedule.spec, state.schedule_id, start - 1e-6):
        if nominal > end:
            break
        times.append(nominal)
        if len(times) > MAX_BACKFILL:
            raise InvalidArgumentError(
                f"a backfill may cover at most {MAX_BACKFILL} actions; split the range"
            )
    return times


def apply_backfill(
    state: ScheduleState,
    start: float,
    end: float,
    overlap: Overlap | None,
    now: float,
    request_id: str,
    observed: Mapping[str, Observed],
    poll: float = 5.0,
    lead: float = 0.0,
    keep: float = 0.0,
) -> Step:
    """Take the actions the spec has in [start, end] now, as ``overlap`` says (ignoring the
    catch-up window and pause; times already taken are not started again)."""
    times = backfill_times(state, start, end)
    d = Draft(state, now)
    d.observe(observed)
    d.log("backfilled", start, f"{iso(start)}..{iso(end)}: {len(times)} actions")
    for nominal in times:
        d.action(nominal, overlap or state.schedule.policy.overlap, "backfill")
    d.drain_buffer()
    d.s = _remember(state, request_id, now, keep)
    return d.finish(poll, ahead(state, lead))


def upcoming(state: ScheduleState, count: int, after: float) -> list[tuple[float, float]]:
    """The next ``count`` (nominal, fire_at) pairs after ``after`` (none while paused): an
    action recorded ahead first, then the spec's times after it."""
    out: list[tuple[float, float]] = []
    if state.paused:
        return out
    out.extend(pending_times(state, after)[:count])
    if len(out) >= count:
        return out
    for pair in scheduled_times(
        state.schedule.spec, state.schedule_id, max(after, state.processed_upto)
    ):
        out.append(pair)
        if len(out) >= count:
            break
    return out
