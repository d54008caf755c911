"""A durable timer is due: what it guarded decides what (if anything) is recorded."""

from __future__ import annotations

from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.effects import DispatchWorkflowTask, workflow_task
from durablefuture.core.orchestration._activities import _activity_timer
from durablefuture.core.orchestration._decision import (
    Decision,
    _Builder,
    _ignored,
    _rejected,
)
from durablefuture.core.state import RunState
from durablefuture.core.timers import TimerKey, TimerKind, names_a_spent_timer


def _fire_timer(state: RunState, fire: inp.FireTimer, b: _Builder) -> Decision:
    raw = fire.key
    key = TimerKey.parse(raw)
    if key is None:
        # a malformed sleep / signal-wait / retry key names nothing that can still be due
        if names_a_spent_timer(raw):
            return _ignored(f"timer {raw} already fired or unknown")
        return _rejected(f"unknown timer key {raw!r}")
    kind = key.kind
    if kind is TimerKind.EXECUTION:
        if state.started.execution_deadline is None:
            return _rejected("the run has no execution timeout")
        timeout = state.started.execution_timeout or 0.0
        b.add(ev.WorkflowTimedOut, timeout=timeout)
        return b.decision()
    if kind is TimerKind.WORKFLOW_TASK_RETRY:
        if state.last_wft_failure is None:
            return _ignored("no failing workflow task to retry")
        return _ignored(
            "workflow task retry due",
            (DispatchWorkflowTask(workflow_task(state, state.last_event_id, key.attempt + 1)),),
        )
    if kind is TimerKind.TIMER:
        if key.seq not in state.timers:
            return _ignored(f"timer {raw} already fired or unknown")
        b.add(ev.TimerFired, seq=key.seq)
        return b.decision()
    if kind is TimerKind.SIGNAL_WAIT:
        if key.seq not in state.signal_waits:
            return _ignored(f"signal wait {raw} already over or unknown")
        b.add(ev.SignalWaitTimedOut, seq=key.seq)
        return b.decision()
    return _activity_timer(state, fire, key, b)
