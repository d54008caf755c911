"""Turn a run's history into timeline rows: what the web UI draws as bars and markers.

Pure: events in, JSON values out (times are seconds since the epoch, as in history).

* An activity is one row spanning scheduled -> closed, with one segment per attempt. Attempt 1
  starts when the activity is scheduled, attempt ``n + 1`` when the retry recorded by
  ``ActivityRetryScheduled(n)`` is due (or when an ``ActivityStarted`` says it really started),
  so the gaps between segments are the retry backoff.
* A timer spans started -> fired; a signal wait spans started -> the signal that satisfied it
  (matched in history order, the way the workflow consumed them) or its timeout; a child
  workflow spans scheduled -> its result.
* Any other command is drawn from its vocabulary entry (``core/vocabulary.py``): one the code
  waits on (``df.wait_condition``) is a row of kind ``command`` named by its description, from
  its event to the timer that ends it, if any; an instant one (``df.signal_workflow``, ...) is
  a point. A new command needs no code here.
* A cancellation (``df.cancel``, an ``any_of`` loser) is a point; it ends a timer's row and
  marks an activity's or child's row until it ends (an activity stopped by it is "cancelled").
* Signals, cancel requests, workflow task failures, side effects and patch markers are points.
* When the run is closed, whatever is still open ends at the close ("abandoned"); while it
  runs, open rows end at ``now`` and the UI draws them as in progress.
"""

from __future__ import annotations

from collections.abc import Sequence

from attrs import define, field

from durablefuture.core import events as ev
from durablefuture.core.failure import Failure, FailureKind
from durablefuture.core.types import JsonValue
from durablefuture.core.vocabulary import describe_event, is_instant

__all__ = ["build_timeline", "failure_brief"]

_ACTIVITY_EVENTS = (
    ev.ActivityScheduled,
    ev.ActivityStarted,
    ev.ActivityCompleted,
    ev.ActivityRetryScheduled,
    ev.ActivityFailed,
    ev.ActivityTimedOut,
)
_CHILD_EVENTS = (
    ev.ChildWorkflowScheduled,
    ev.ChildWorkflowStarted,
    ev.ChildWorkflowCompleted,
    ev.ChildWorkflowFailed,
)
_CLOSE_STATUS: dict[type, str] = {
    ev.WorkflowCompleted: "completed",
    ev.WorkflowFailed: "failed",
    ev.WorkflowCancelled: "cancelled",
    ev.WorkflowContinuedAsNew: "continued_as_new",
    ev.WorkflowTimedOut: "timed_out",
    ev.WorkflowTerminated: "terminated",
}


def failure_brief(failure: Failure | None) -> JsonValue:
    """``{"type", "message", "describe"}`` of a failure (the full one is in the history)."""
    if failure is None:
        return None
    return {"type": failure.type, "message": failure.message, "describe": failure.describe()}


@define
class _Attempt:
    attempt: int
    start: float
    end: float | None = None
    status: str = "running"
    failure: Failure | None = None
    retry_at: float | None = None

    def to_json(self) -> JsonValue:
        return {
            "attempt": self.attempt,
            "start": self.start,
            "end": self.end,
            "status": self.status,
            "failure": failure_brief(self.failure),
            "retry_at": self.retry_at,
        }


@define
class _Row:
    kind: str
    seq: int
    name: str
    start: float
    end: float | None = None
    status: str = "running"
    detail: dict[str, JsonValue] = field(factory=dict)
    attempts: list[_Attempt] = field(factory=list)

    def attempt(self, n: int, at: float) -> _Attempt:
        for a in self.attempts:
            if a.attempt == n:
                return a
        a = _Attempt(n, at)
        self.attempts.append(a)
        return a

    def to_json(self) -> JsonValue:
        out: dict[str, JsonValue] = {
            "kind": self.kind,
            "seq": self.seq,
            "name": self.name,
            "start": self.start,
            "end": self.end,
            "status": self.status,
            "detail": self.detail,
        }
        if self.kind == "activity":
            out["attempts"] = [a.to_json() for a in self.attempts]
        return out


def _marker(kind: str, e: ev.Event, label: str, detail: JsonValue = None) -> JsonValue:
    return {"kind": kind, "at": e.at, "event_id": e.event_id, "label": label, "detail": detail}


class _Builder:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, int], _Row] = {}
        self.markers: list[JsonValue] = []
        self.signals: list[ev.SignalReceived] = []
        self.waits: list[_Row] = []

    def activity(
        self,
        e: ev.ActivityScheduled
        | ev.ActivityStarted
        | ev.ActivityCompleted
        | ev.ActivityRetryScheduled
        | ev.ActivityFailed
        | ev.ActivityTimedOut,
    ) -> None:
        if isinstance(e, ev.ActivityScheduled):
            row = _Row("activity", e.seq, e.name, e.at, status="scheduled")
            row.detail = {
                "task_queue": e.options.task_queue,
                "maximum_attempts": e.options.retry_policy.maximum_attempts
                if e.options.retry_policy is not None
                else None,
            }
            row.attempts.append(_Attempt(1, e.at, status="scheduled"))
            self.rows[("activity", e.seq)] = row
            return
        found = self.rows.get(("activity", e.seq))
        if found is None:  # a history that starts mid-way (never from a real server)
            found = _Row("activity", e.seq, f"activity #{e.seq}", e.at)
            self.rows[("activity", e.seq)] = found
        row = found
        att = row.attempt(e.attempt, e.at)
        if isinstance(e, ev.ActivityStarted):
            # reported once the attempt has run for a while: it marks, it does not start
            att.status = "running"
            row.status = "running"
        elif isinstance(e, ev.ActivityCompleted):
            att.end, att.status = e.at, "completed"
            row.end, row.status = e.at, "completed"
        elif isinstance(e, ev.ActivityRetryScheduled):
            timed_out = e.failure.kind == FailureKind.TIMEOUT or e.failure.timeout_type
            att.end, att.failure, att.retry_at = e.at, e.failure, e.retry_at
            att.status = "timed_out" if timed_out else "failed"
            row.attempts.append(_Attempt(e.attempt + 1, max(e.retry_at, e.at), status="backoff"))
            row.status = "retrying"
        elif isinstance(e, ev.ActivityFailed):
            status = "cancelled" if e.failure.kind == FailureKind.CANCELLED else "failed"
            att.end, att.status, att.failure = e.at, status, e.failure
            row.end, row.status = e.at, status
        else:
            att.end, att.status, att.failure = e.at, "timed_out", e.failure
            row.end, row.status = e.at, "timed_out"

    def timer(self, e: ev.TimerStarted | ev.TimerFired) -> None:
        if isinstance(e, ev.TimerStarted):
            row = _Row("timer", e.seq, f"sleep {_span(e.duration)}", e.at, status="pending")
            row.detail = {"duration": e.duration, "fire_at": e.fire_at}
            self.rows[("timer", e.seq)] = row
        elif (found := self.rows.get(("timer", e.seq))) is not None:
            found.end, found.status = e.at, "fired"
        elif (found := self.rows.get(("command", e.seq))) is not None:
            found.end, found.status = e.at, "timed_out"  # the timer of a wait is its timeout

    def cancellation(self, e: ev.CancellationRequested) -> None:
        """A point where the code cancelled command ``target``; a timer's row ends there."""
        self.markers.append(_marker("cancel", e, f"cancel #{e.target}", e.target))
        for (_, seq), row in self.rows.items():
            if seq != e.target or row.end is not None:
                continue
            row.detail["cancel_requested_at"] = e.at
            if row.kind == "timer":
                row.end, row.status = e.at, "cancelled"
            elif row.kind == "command":  # a wait whose timeout is not needed: it is over
                row.end, row.status = e.at, "done"
            else:
                row.status = "cancel_requested"

    def command(self, e: ev.Event) -> None:
        """A command with no row of its own: described by the vocabulary."""
        seq = int(getattr(e, "seq", 0))
        row = _Row("command", seq, describe_event(e), e.at, status="waiting")
        row.detail = {"event": type(e).__name__}
        for name in ("timeout", "deadline"):
            value = getattr(e, name, None)
            if isinstance(value, float | int):
                row.detail[name] = value
        self.rows[("command", seq)] = row

    def signal_wait(self, e: ev.SignalWaitStarted | ev.SignalWaitTimedOut) -> None:
        if isinstance(e, ev.SignalWaitStarted):
            row = _Row("signal_wait", e.seq, e.name, e.at, status="waiting")
            row.detail = {"signal": e.name, "timeout": e.timeout, "deadline": e.deadline}
            self.rows[("signal_wait", e.seq)] = row
            self.waits.append(row)
        elif (found := self.rows.get(("signal_wait", e.seq))) is not None:
            found.end, found.status = e.at, "timed_out"

    def child(
        self,
        e: ev.ChildWorkflowScheduled
        | ev.ChildWorkflowStarted
        | ev.ChildWorkflowCompleted
        | ev.ChildWorkflowFailed,
    ) -> None:
        if isinstance(e, ev.ChildWorkflowScheduled):
            new = _Row("child", e.seq, e.workflow_type, e.at, status="scheduled")
            new.detail = {"workflow_id": e.workflow_id, "task_queue": e.task_queue}
            self.rows[("child", e.seq)] = new
            return
        row = self.rows.get(("child", e.seq))
        if row is None:
            return
        if isinstance(e, ev.ChildWorkflowStarted):
            row.status = "running"
            row.detail["run_id"] = e.run_id
        elif isinstance(e, ev.ChildWorkflowCompleted):
            row.end, row.status = e.at, "completed"
        else:
            row.end, row.status = e.at, "failed"
            row.detail["failure"] = failure_brief(e.failure)

    def match_signals(self) -> None:
        """Each wait takes the first unconsumed signal of its name, in history order."""
        pending = list(self.signals)
        for wait in self.waits:
            if wait.status == "timed_out":
                continue
            for i, sig in enumerate(pending):
                if sig.name == wait.detail.get("signal"):
                    wait.end, wait.status = max(wait.start, sig.at), "received"
                    wait.detail["signal_event_id"] = sig.event_id
                    del pending[i]
                    break


def _span(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:g}s"
    if seconds < 7200:
        return f"{seconds / 60:.4g}min"
    return f"{seconds / 3600:.4g}h"


def build_timeline(events: Sequence[ev.Event], now: float) -> dict[str, JsonValue]:
    """Rows (activities with attempts, timers, signal waits, children) and point markers.

    Returns ``{"start", "end", "now", "status", "workflow": {...}, "rows": [...],
    "signals": [...], "markers": [...]}``; ``end`` is the close time, or ``now`` while the
    run is open (never before the last event).
    """
    b = _Builder()
    start = events[0].at if events else now
    close: ev.Event | None = None
    for e in events:
        if isinstance(e, _ACTIVITY_EVENTS):
            b.activity(e)
        elif isinstance(e, ev.TimerStarted | ev.TimerFired):
            b.timer(e)
        elif isinstance(e, ev.SignalWaitStarted | ev.SignalWaitTimedOut):
            b.signal_wait(e)
        elif isinstance(e, _CHILD_EVENTS):
            b.child(e)
        elif isinstance(e, ev.SignalReceived):
            b.signals.append(e)
        elif isinstance(e, ev.CancelRequested):
            b.markers.append(_marker("cancel_requested", e, "cancel requested", e.reason))
        elif isinstance(e, ev.UpdateAccepted):
            label = f"update {e.name!r} accepted"
            b.markers.append(_marker("update_accepted", e, label, e.update_id))
        elif isinstance(e, ev.WorkflowTaskFailed):
            label = f"workflow task failed: {e.failure.type}"
            b.markers.append(_marker("task_failed", e, label, failure_brief(e.failure)))
        elif isinstance(e, ev.SideEffectRecorded):
            b.markers.append(_marker("side_effect", e, f"side effect #{e.seq}", e.value))
        elif isinstance(e, ev.MarkerRecorded):
            b.markers.append(_marker("patch", e, f"patched {e.change_id!r}", e.change_id))
        elif isinstance(e, ev.TERMINAL_EVENTS):
            close = e
        elif isinstance(e, ev.CancellationRequested):
            b.cancellation(e)
        elif isinstance(e, ev.COMMAND_EVENTS) and is_instant(e):
            b.markers.append(_marker("command", e, describe_event(e), type(e).__name__))
        elif isinstance(e, ev.COMMAND_EVENTS):
            b.command(e)
    b.match_signals()
    last_at = max((e.at for e in events), default=start)
    end = close.at if close is not None else max(now, last_at)
    rows = sorted(b.rows.values(), key=lambda r: (r.start, r.seq))
    if close is not None:
        for row in rows:
            if row.end is None:
                row.end, row.status = close.at, "abandoned"
            for att in row.attempts:
                if att.end is None:
                    att.end = close.at
                    att.status = "abandoned" if att.status != "backoff" else "not_run"
    status = _CLOSE_STATUS[type(close)] if close is not None else "running"
    workflow: dict[str, JsonValue] = {
        "start": start,
        "end": close.at if close is not None else None,
        "status": status,
    }
    if isinstance(close, ev.WorkflowFailed):
        workflow["failure"] = failure_brief(close.failure)
    elif isinstance(close, ev.WorkflowTerminated):
        workflow["reason"] = close.reason
    elif isinstance(close, ev.WorkflowContinuedAsNew):
        workflow["new_run_id"] = close.new_run_id
    return {
        "start": start,
        "end": end,
        "now": now,
        "status": status,
        "workflow": workflow,
        "rows": [r.to_json() for r in rows],
        "signals": [
            {"name": s.name, "at": s.at, "event_id": s.event_id, "args": list(s.args)}
            for s in b.signals
        ],
        "markers": b.markers,
    }
