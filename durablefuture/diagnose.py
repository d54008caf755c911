"""``df why``: explain why a run is (not) progressing, from its history and live queue state."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import nats.js.errors
from attrs import frozen

from durablefuture.client import Client
from durablefuture.core import events as ev
from durablefuture.core.effects import RunStatus
from durablefuture.core.state import RunState

__all__ = ["Diagnosis", "QueueState", "explain"]


@frozen
class QueueState:
    """Live state of one task queue consumer."""

    name: str
    exists: bool
    pollers: int = 0
    pending: int = 0
    in_flight: int = 0
    last_delivery: datetime | None = None


@frozen
class Diagnosis:
    workflow_id: str
    run_id: str
    status: str
    reasons: tuple[str, ...]


def _when(ts: float, now: float) -> str:
    at = datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")
    delta = ts - now
    if abs(delta) < 1:
        return f"{at} (now)"
    return f"{at} (in {delta:.0f}s)" if delta > 0 else f"{at} ({-delta:.0f}s ago)"


def _ago(then: datetime | None, now: float) -> str:
    if then is None:
        return "never"
    seconds = now - then.timestamp()
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


async def queue_state(client: Client, consumer: str) -> QueueState:
    try:
        info = await client.pub.js.consumer_info(client.layout.stream, consumer)
    except nats.js.errors.NotFoundError:
        return QueueState(consumer, False)
    delivered = info.delivered.last_active if info.delivered is not None else None
    return QueueState(
        consumer,
        True,
        pollers=int(info.num_waiting or 0),
        pending=int(info.num_pending or 0),
        in_flight=int(info.num_ack_pending or 0),
        last_delivery=delivered,
    )


def _no_worker(q: QueueState, queue: str, kind: str, now: float) -> str | None:
    if not q.exists:
        return (
            f"no worker has ever served {kind} tasks on task queue {queue!r} (its consumer does "
            "not exist); start a df-worker with --task-queue " + queue
        )
    if q.pollers == 0:
        return (
            f"no worker is polling {kind} tasks on task queue {queue!r} right now (0 pollers; "
            f"{q.pending} waiting; last delivery {_ago(q.last_delivery, now)})"
        )
    return None


def _waiting_signals(events: list[ev.Event]) -> list[ev.SignalWaitStarted]:
    """Signal waits recorded after the last signal received (best effort from history)."""
    out: list[ev.SignalWaitStarted] = []
    timed_out = {e.seq for e in events if isinstance(e, ev.SignalWaitTimedOut)}
    received: dict[str, int] = {}
    for e in events:
        if isinstance(e, ev.SignalReceived):
            received[e.name] = received.get(e.name, 0) + 1
    for e in events:
        if isinstance(e, ev.SignalWaitStarted) and e.seq not in timed_out:
            if received.get(e.name, 0) > 0:
                received[e.name] -= 1
                continue
            out.append(e)
    return out


async def explain(client: Client, workflow_id: str, run_id: str | None = None) -> Diagnosis:
    """Reasons, most important first, why the run is where it is."""
    run = run_id or await client.latest_run_id(workflow_id)
    batches = await client.history.read(workflow_id, run)
    events = [e for b in batches for e in b.events]
    state = RunState.from_history([(b.input_id, b.events) for b in batches])
    now = time.time()
    reasons: list[str] = []
    if state.status != RunStatus.RUNNING:
        terminal = state.terminal
        when = _when(terminal.at, now) if terminal is not None else "?"
        line = f"the run is closed: {state.status} at {when}"
        summary = state.summary()
        if summary.failure is not None:
            line += f" — {summary.failure.describe()}"
        if summary.new_run_id:
            line += f"; it continued as run {summary.new_run_id}"
        return Diagnosis(workflow_id, run, state.status, (line,))
    queue = state.started.task_queue
    wt = await queue_state(client, client.layout.workflow_consumer(queue))
    if state.last_wft_failure is not None:
        f = state.last_wft_failure
        first = f.failure.message.splitlines()[0] if f.failure.message else ""
        reasons.append(
            f"workflow task failing: {f.failure.type} at event {f.event_id}: {first} — it is "
            "retried with backoff; deploy code that replays this history (see "
            "`df workflow replay-check`)"
        )
    if state.cancel_requested:
        reasons.append("cancellation was requested; the workflow is running its cleanup")
    if state.last_deliverable_event_id > state.last_command_event_id:
        line = (
            f"event {state.last_deliverable_event_id} has not been handled by the workflow "
            "code yet (a workflow task is due)"
        )
        problem = _no_worker(wt, queue, "workflow", now)
        reasons.append(line + (f"; {problem}" if problem else ""))
    for act in state.activities.values():
        if act.closed:
            continue
        aq_name = act.options.task_queue or queue
        label = f"activity {act.name!r} (#{act.seq}) attempt {act.attempt}"
        failure = f"; last failure: {act.last_failure.describe()}" if act.last_failure else ""
        if act.retry_at is not None and act.retry_at > now and act.started_at is None:
            reasons.append(
                f"waiting for {label}: next retry at {_when(act.retry_at, now)}{failure}"
            )
        elif act.started_at is not None:
            reasons.append(f"{label} is running since {_when(act.started_at, now)}{failure}")
        else:
            aq = await queue_state(client, client.layout.activity_consumer(aq_name))
            problem = _no_worker(aq, aq_name, "activity", now)
            line = f"{label} is waiting for a worker on task queue {aq_name!r}"
            if problem:
                line += f"; {problem}"
            elif aq.in_flight:
                line += f" ({aq.in_flight} task(s) in flight there, {aq.pending} queued)"
            reasons.append(line + failure)
    for seq, fire_at in sorted(state.timers.items()):
        reasons.append(f"sleeping: timer #{seq} fires at {_when(fire_at, now)}")
    for wait in _waiting_signals(events):
        line = f"waiting for signal {wait.name!r}"
        if wait.deadline is not None:
            line += f" (times out at {_when(wait.deadline, now)})"
        reasons.append(line)
    for child in state.open_children():
        started = f"run {child.run_id}" if child.run_id else "not started yet"
        reasons.append(
            f"waiting for child workflow {child.workflow_type!r} id {child.workflow_id!r} "
            f"({started})"
        )
    if not reasons:
        reasons.append(
            "nothing is pending in history: the workflow code is waiting for something that "
            "has not happened (a signal, or a result of a command it has not yet issued)"
        )
    return Diagnosis(workflow_id, run, state.status, tuple(reasons))
