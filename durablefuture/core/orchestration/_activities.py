"""Activity attempts: start reports, failures and retries, and their timeouts."""

from __future__ import annotations

from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.effects import ArmTimer
from durablefuture.core.failure import Failure, FailureKind
from durablefuture.core.orchestration._decision import (
    APPLIED,
    TIMER_TOLERANCE,
    Decision,
    _Builder,
    _ignored,
    _rejected,
    _timeout_failure,
)
from durablefuture.core.retry import decide_retry
from durablefuture.core.state import ActivityState, RunState
from durablefuture.core.timers import TimerKey, TimerKind


def _current_attempt(
    state: RunState, seq: int, attempt: int
) -> tuple[ActivityState | None, Decision]:
    act = state.activities.get(seq)
    if act is None:
        return None, _rejected(f"no activity #{seq} in this run")
    if act.closed:
        return None, _ignored(f"activity #{seq} is already closed")
    if attempt < act.attempt:
        return None, _ignored(
            f"late report for attempt {attempt}; activity #{seq} is on {act.attempt}"
        )
    if attempt > act.attempt:
        return None, _rejected(f"attempt {attempt} of activity #{seq} was never scheduled")
    return act, Decision(APPLIED)


def _activity_started(state: RunState, rep: inp.ReportActivityStarted, b: _Builder) -> Decision:
    act, why = _current_attempt(state, rep.seq, rep.attempt)
    if act is None:
        return why
    if act.started_at is not None:
        return _ignored("attempt start already recorded")
    b.add(ev.ActivityStarted, seq=rep.seq, attempt=rep.attempt, worker=rep.worker)
    return b.decision()


def _attempt_failed(
    state: RunState,
    act: ActivityState,
    failure: Failure,
    heartbeat_details: tuple[object, ...],
    b: _Builder,
) -> None:
    policy = act.options.retry_policy
    assert policy is not None, "activity options are resolved when scheduled"
    details = tuple(heartbeat_details) or act.heartbeat_details
    if failure.kind == FailureKind.TIMEOUT and failure.timeout_type in (
        "schedule_to_start",
        "schedule_to_close",
    ):
        retry_ok, delay, reason = False, 0.0, "timeout"
    elif act.cancel_requested or (failure.kind == FailureKind.CANCELLED and state.cancel_requested):
        # the workflow cancelled it (or asked all its activities to stop): never run it again
        retry_ok, delay, reason = False, 0.0, "cancel_requested"
    else:
        rd = decide_retry(
            policy,
            failure,
            act.attempt,
            now=b.now,
            scheduled_at=act.scheduled_at,
            schedule_to_close_timeout=act.options.schedule_to_close_timeout,
            jitter_key=f"{state.run_id}:{act.seq}:{act.attempt}",
        )
        retry_ok, delay, reason = rd.retry, rd.delay, rd.reason
    if retry_ok:
        b.add(
            ev.ActivityRetryScheduled,
            seq=act.seq,
            attempt=act.attempt,
            failure=failure,
            delay=delay,
            retry_at=b.now + delay,
            heartbeat_details=details,
        )
    elif failure.kind == FailureKind.TIMEOUT:
        b.add(
            ev.ActivityTimedOut,
            seq=act.seq,
            attempt=act.attempt,
            timeout_type=failure.timeout_type or "",
            failure=failure,
            retry_state=reason,
        )
    else:
        b.add(
            ev.ActivityFailed, seq=act.seq, attempt=act.attempt, failure=failure, retry_state=reason
        )


def _activity_timer(state: RunState, fire: inp.FireTimer, key: TimerKey, b: _Builder) -> Decision:
    act = state.activities.get(key.seq)
    if act is None:
        return _rejected(f"unknown activity timer {fire.key!r}")
    if act.closed:
        return _ignored(f"activity #{act.seq} already closed")
    opts = act.options
    if key.kind is TimerKind.SCHEDULE_TO_CLOSE:
        failure = _timeout_failure(
            "schedule_to_close",
            f"activity {act.name!r} did not complete within its schedule_to_close_timeout of "
            f"{opts.schedule_to_close_timeout:g}s (all attempts and retries included)",
        )
        b.add(
            ev.ActivityTimedOut,
            seq=act.seq,
            attempt=act.attempt,
            timeout_type="schedule_to_close",
            failure=failure,
            retry_state="timeout",
        )
        return b.decision()
    attempt, kind = key.attempt, key.kind
    if attempt != act.attempt:
        return _ignored(f"timer for attempt {attempt}; activity #{act.seq} is on {act.attempt}")
    if kind is TimerKind.SCHEDULE_TO_START:
        if act.started_at is not None:
            return _ignored("attempt already started")
        failure = _timeout_failure(
            "schedule_to_start",
            f"no worker picked up activity {act.name!r} (attempt {act.attempt}) on task queue "
            f"{opts.task_queue!r} within its schedule_to_start_timeout of "
            f"{opts.schedule_to_start_timeout:g}s; is a worker running for that queue?",
        )
        _attempt_failed(state, act, failure, (), b)
        return b.decision()
    if act.started_at is None:
        return _ignored("attempt has not started")
    if kind is TimerKind.START_TO_CLOSE:
        failure = _timeout_failure(
            "start_to_close",
            f"attempt {act.attempt} of activity {act.name!r} did not finish within its "
            f"start_to_close_timeout of {opts.start_to_close_timeout:g}s",
        )
        _attempt_failed(state, act, failure, (), b)
        return b.decision()
    if kind is TimerKind.HEARTBEAT:
        timeout = opts.heartbeat_timeout
        if timeout is None:
            return _ignored("activity has no heartbeat timeout")
        last = max(act.started_at, fire.heartbeat_at or 0.0)
        deadline = last + timeout
        if b.now + TIMER_TOLERANCE < deadline:
            return _ignored("heartbeat received in time", (ArmTimer(fire.key, deadline),))
        failure = _timeout_failure(
            "heartbeat",
            f"attempt {act.attempt} of activity {act.name!r} sent no heartbeat for "
            f"{timeout:g}s (its heartbeat_timeout)",
        )
        _attempt_failed(state, act, failure, fire.heartbeat_details, b)
        return b.decision()
    return _rejected(f"unknown activity timer {fire.key!r}")
