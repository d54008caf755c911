"""``df why --schedule ID``: explain why a schedule did not fire (or what it did at a given time).

The reasons come from the schedule's state record (definition, running and buffered actions,
the journal of skipped/missed/paused facts, the latest actions) and from whether a df-server
is consuming schedule inputs at all. ``explain_state`` is the pure part: state and facts in,
reasons out, so every case is testable without NATS.

What it can tell, most important first: no df-server steps schedules; paused (by whom, since
when, and that due times are not caught up); outside ``start_at``/``end_at``; an overlap policy
holding actions back (skipped, buffered, a cancellation under way); actions missed after
downtime (older than the catch-up window); an action started but its run not seen yet; the
latest failures; and when it fires next. With ``at``, what happened to the action scheduled
then: taken (which run, how it ended), skipped by overlap, missed by catch-up, paused, before
the schedule existed, or not due yet.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

from attrs import frozen

from durablefuture.client import Client
from durablefuture.core.effects import RunStatus
from durablefuture.core.schedule_spec import iso, scheduled_times
from durablefuture.core.schedules import (
    STARTING,
    JournalEntry,
    Overlap,
    ScheduleState,
    upcoming,
)
from durablefuture.diagnose import QueueState, moment, queue_state
from durablefuture.schedules import Schedules

__all__ = ["ScheduleDiagnosis", "explain_schedule", "explain_state", "render_schedule"]

OVERDUE_SECONDS = 10.0
"""A due action not taken this long after its fire time means nothing is stepping it."""
_LOOK_BACK = (60.0, 3600.0, 86400.0, 32 * 86400.0, 367 * 86400.0)
_MAX_SCAN = 100_000


@frozen
class ScheduleDiagnosis:
    """What ``df why --schedule`` prints: a status word and reasons, most important first."""

    schedule_id: str
    status: str
    """``active``, ``paused`` or ``ended`` (its spec has no more times)."""
    reasons: tuple[str, ...]
    next_action_time: datetime | None = None
    asked_about: datetime | None = None
    """With ``at``: the scheduled time explained (the spec's latest time at or before ``at``)."""
    checked_at: float = 0.0


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


def _last(journal: tuple[JournalEntry, ...], *kinds: str) -> JournalEntry | None:
    return next((j for j in reversed(journal) if j.kind in kinds), None)


def _server_reason(server: QueueState | None, state: ScheduleState, now: float) -> str | None:
    if server is None:
        return None
    if not server.exists:
        return (
            "no df-server has ever stepped schedules in this namespace (its schedule consumer "
            "does not exist); start df-server"
        )
    if server.pollers == 0:
        return (
            f"no df-server is stepping schedules right now (0 pollers on the schedule consumer; "
            f"{server.pending} input(s) waiting); start df-server — when it starts, missed "
            "times inside the catch-up window run once"
        )
    return None


def _overdue(state: ScheduleState, now: float) -> tuple[float, float] | None:
    """The oldest due (nominal, fire_at) not handled for more than OVERDUE_SECONDS."""
    if state.paused:
        return None
    nxt = next(scheduled_times(state.schedule.spec, state.schedule_id, state.processed_upto), None)
    if nxt is not None and now - nxt[1] > OVERDUE_SECONDS:
        return nxt
    return None


def _pause_reason(state: ScheduleState, now: float) -> str:
    entry = _last(state.journal, "paused")
    created = _last(state.journal, "created")
    since = ""
    if entry is not None:
        since = f" since {moment(entry.at, now)}"
    elif created is not None and _last(state.journal, "unpaused") is None:
        since = f" since it was created ({moment(created.at, now)})"
    note = state.schedule.note
    if note.startswith("paused: action "):
        return (
            f"paused by pause_on_failure{since}: {note[len('paused: ') :]}; fix the cause, then "
            f"`df schedule unpause {state.schedule_id}` (times due while paused are not caught up)"
        )
    said = f" ({note})" if note else ""
    return (
        f"paused{since}{said}: no action is taken until `df schedule unpause "
        f"{state.schedule_id}`, and times due while paused are not caught up"
    )


def _bounds_reason(state: ScheduleState, now: float) -> str | None:
    spec = state.schedule.spec
    if spec.start_at is not None and spec.start_at.timestamp() > now:
        return f"its spec starts at {moment(spec.start_at.timestamp(), now)}: nothing fires before"
    if spec.end_at is not None and spec.end_at.timestamp() < now:
        return f"its spec ended at {moment(spec.end_at.timestamp(), now)}: no more actions"
    return None


def _overlap_reasons(state: ScheduleState, now: float) -> list[str]:
    out: list[str] = []
    overlap = state.schedule.policy.overlap
    stopping = {s.workflow_id: s.terminate for s in state.stopping}
    for r in state.running:
        label = f"action {r.workflow_id} (scheduled {_iso(r.nominal)})"
        if r.pending(now):
            continue  # recorded ahead of its time: the next action, not an overlap
        if r.status == STARTING:
            out.append(
                f"{label} was taken {moment(r.taken_at, now)} but its run has not been seen "
                "yet: df-server retries the start until it is done (a redelivered start is "
                "harmless: the workflow id is fixed) and records the run at the schedule's "
                f"next step (`df why {r.workflow_id}` shows the run if it has started)"
            )
            continue
        if r.workflow_id in stopping:
            what = "termination" if stopping[r.workflow_id] else "cancellation"
            out.append(
                f"{label} is running; its {what} was requested (overlap {overlap.name}); the "
                "next action starts when it has closed"
                + ("" if stopping[r.workflow_id] else f" — see `df why {r.workflow_id}`")
            )
            continue
        line = f"{label} is still running (run {r.run_id})"
        if overlap is Overlap.SKIP:
            line += "; overlap SKIP: actions due while it runs are skipped"
        elif overlap in (Overlap.BUFFER_ONE, Overlap.BUFFER_ALL):
            line += f"; overlap {overlap.name}: due actions wait for it to close"
        out.append(line + f" (`df why {r.workflow_id}` says why it has not finished)")
    if state.buffered:
        first = state.buffered[0]
        out.append(
            f"{len(state.buffered)} action(s) buffered by the overlap policy, the first "
            f"scheduled {_iso(first.nominal)}: each starts when the running one closes"
        )
    return out


def _journal_reasons(state: ScheduleState, now: float) -> list[str]:
    out: list[str] = []
    skipped = [j for j in state.journal if j.kind == "skipped"]
    if skipped:
        j = skipped[-1]
        out.append(
            f"{state.skipped} action(s) skipped in all; the latest, scheduled "
            f"{_iso(j.nominal or j.at)}, because {j.detail or 'of the overlap policy'}"
        )
    missed = [j for j in state.journal if j.kind == "missed"]
    if missed:
        j = missed[-1]
        window = state.schedule.policy.catchup_window
        out.append(
            f"{state.missed} action(s) missed after downtime in all (older than the catch-up "
            f"window of {window}); the latest, scheduled {_iso(j.nominal or j.at)}, was "
            f"{j.detail or 'too late'}"
        )
    failed = [r for r in state.recent if r.status in RunStatus.FAILED_LIKE]
    if failed:
        r = failed[-1]
        out.append(
            f"{len(failed)} of the latest {len(state.recent)} actions did not complete; the "
            f"latest, {r.workflow_id}, {r.status} (`df why {r.workflow_id}`)"
        )
    return out


def _spec_time_at_or_before(state: ScheduleState, at: float) -> float | None:
    """The spec's latest scheduled time at or before ``at`` (None: none in the last year)."""
    for back in _LOOK_BACK:
        found: float | None = None
        times: Iterator[tuple[float, float]] = scheduled_times(
            state.schedule.spec, state.schedule_id, at - back
        )
        for n, (nominal, _fire) in enumerate(times):
            if nominal > at or n >= _MAX_SCAN:
                break
            found = nominal
        if found is not None:
            return found
    return None


def _paused_at(state: ScheduleState, t: float) -> JournalEntry | None:
    """The journal's "paused" entry in force at ``t`` (None if not paused then, or unknown)."""
    current: JournalEntry | None = None
    for j in state.journal:
        if j.at > t:
            break
        if j.kind == "paused":
            current = j
        elif j.kind == "unpaused":
            current = None
    return current


def _about(state: ScheduleState, at: float, now: float) -> tuple[float | None, list[str]]:
    nominal = _spec_time_at_or_before(state, at)
    if nominal is None:
        return None, [f"its spec has no scheduled time in the year up to {_iso(at)}"]
    lines: list[str] = []
    if abs(nominal - at) >= 0.001:
        lines.append(
            f"its spec has no action at {_iso(at)}; the latest one before is {iso(nominal)}"
        )
    head = f"the action scheduled {iso(nominal)}"
    wid = state.action_id(nominal)
    taken = [r for r in (*state.running, *state.recent) if r.nominal == nominal]
    if taken:
        r = taken[0]
        if r.fire_at is not None and r.pending(now):
            when = moment(r.fire_at, now)
            return nominal, [*lines, f"{head} is recorded ahead of its time; it starts at {when}"]
        how = {
            STARTING: "was taken; its run has not been seen yet",
            RunStatus.RUNNING: f"fired: workflow {wid} (run {r.run_id}) is running",
        }.get(r.status, f"fired: workflow {wid} (run {r.run_id}) {r.status}")
        by = "" if r.source == "spec" else f" (by {r.source})"
        return nominal, [*lines, f"{head} {how}{by}"]
    if any(b.nominal == nominal for b in state.buffered):
        return nominal, [*lines, f"{head} is buffered by the overlap policy, not started yet"]
    for j in reversed(state.journal):
        if j.nominal != nominal:
            continue
        if j.kind == "skipped":
            return nominal, [*lines, f"{head} was skipped: {j.detail}"]
        if j.kind == "missed":
            window = state.schedule.policy.catchup_window
            return nominal, [
                *lines,
                f"{head} was missed: {j.detail} (catch-up window {window}; "
                f"`df schedule backfill {state.schedule_id}` can still run it)",
            ]
    if nominal < state.created_at:
        return nominal, [
            *lines,
            f"{head} is before the schedule was created ({_iso(state.created_at)}); "
            f"`df schedule backfill {state.schedule_id}` runs past times",
        ]
    paused = _paused_at(state, nominal)
    if paused is not None:
        note = f" ({paused.detail})" if paused.detail else ""
        return nominal, [
            *lines,
            f"{head} was not taken: the schedule was paused then (since {_iso(paused.at)})"
            f"{note}; times due while paused are not caught up",
        ]
    if nominal > state.processed_upto:
        fire = next(
            (f for n, f in scheduled_times(state.schedule.spec, state.schedule_id, nominal - 1e-6)),
            nominal,
        )
        if fire > now:
            return nominal, [*lines, f"{head} is not due yet: it fires at {moment(fire, now)}"]
        return nominal, [
            *lines,
            f"{head} was due at {moment(fire, now)} and has not been handled yet: no df-server "
            "has stepped the schedule since",
        ]
    if _last(state.journal, "updated") is not None and nominal <= state.updated_at:
        return nominal, [
            *lines,
            f"{head} left no record; the schedule was updated at {_iso(state.updated_at)} (a "
            "new spec applies from its update on, with no catch-up of earlier times)",
        ]
    return nominal, [
        *lines,
        f"{head} left no record in what the schedule keeps (its latest {len(state.journal)} "
        f"journal entries and {len(state.recent)} actions); look for workflow {wid}",
    ]


def explain_state(
    state: ScheduleState,
    now: float,
    server: QueueState | None = None,
    at: float | None = None,
) -> ScheduleDiagnosis:
    """Reasons, most important first, why the schedule is (not) firing; pure.

    Args:
        server: the schedule consumer's state (None: unknown, not reported).
        at: explain what happened to the action scheduled at (or last before) this time.
    """
    reasons: list[str] = []
    asked: datetime | None = None
    if at is not None:
        nominal, lines = _about(state, at, now)
        reasons += lines
        asked = datetime.fromtimestamp(nominal, tz=UTC) if nominal is not None else None
    problem = _server_reason(server, state, now)
    if problem:
        reasons.append(problem)
    overdue = _overdue(state, now)
    if overdue is not None and not problem:
        reasons.append(
            f"the action scheduled {iso(overdue[0])} was due at {moment(overdue[1], now)} and "
            "has not been taken: no df-server has stepped this schedule since (is one running "
            "and connected?)"
        )
    if state.paused:
        reasons.append(_pause_reason(state, now))
    bounds = _bounds_reason(state, now)
    if bounds:
        reasons.append(bounds)
    reasons += _overlap_reasons(state, now)
    reasons += _journal_reasons(state, now)
    nxt = upcoming(state, 1, now)
    next_time = datetime.fromtimestamp(nxt[0][1], tz=UTC) if nxt else None
    ended = (
        not state.paused
        and not nxt
        and next(
            scheduled_times(state.schedule.spec, state.schedule_id, state.processed_upto), None
        )
        is None
    )
    if nxt:
        reasons.append(f"next action at {moment(nxt[0][1], now)}")
    elif ended and not bounds:
        reasons.append("its spec has no more scheduled times: it will not fire again")
    if not reasons:
        reasons.append("nothing holds it back")
    status = "paused" if state.paused else ("ended" if ended else "active")
    return ScheduleDiagnosis(
        state.schedule_id, status, tuple(reasons), next_time, asked, checked_at=now
    )


async def explain_schedule(
    client: Client, schedule_id: str, at: datetime | None = None
) -> ScheduleDiagnosis:
    """Explain schedule ``schedule_id`` (and, with ``at``, its action scheduled then).

    Raises:
        ScheduleNotFoundError: there is no such schedule.
    """
    state = await Schedules(client).state(schedule_id)
    server = await queue_state(client, client.layout.schedule_consumer)
    return explain_state(state, time.time(), server, None if at is None else at.timestamp())


def render_schedule(d: ScheduleDiagnosis) -> str:
    """``df why --schedule`` as text."""
    lines = [f"schedule {d.schedule_id} is {d.status}:"]
    lines += [f"  - {r}" for r in d.reasons]
    return "\n".join(lines)
