"""``df why``: explain why a run is (not) progressing, from its history, live queue state and
the liveness records workers publish (who serves each queue, what it registers, what it runs).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from attrs import frozen

from durablefuture.client import Client
from durablefuture.core import events as ev
from durablefuture.core.effects import RunStatus
from durablefuture.core.errors import CorruptHistoryError, WorkflowNotFoundError
from durablefuture.core.failure import WORKER_LOST
from durablefuture.core.liveness import (
    WorkerRecord,
    describe_worker,
    registered_names,
    registers_activity,
    running_attempt,
    unserved_workflow,
    workers_of,
)
from durablefuture.core.namespace import history_verdict
from durablefuture.core.state import ActivityState
from durablefuture.transport.history import fold
from durablefuture.transport.namespace_settings import read_settings
from durablefuture.transport.queues import QueueState
from durablefuture.transport.queues import queue_state as _queue_state

__all__ = [
    "ActivityDiagnosis",
    "AttemptState",
    "Diagnosis",
    "QueueState",
    "QueueWorkers",
    "explain",
    "render",
]

MAX_WORKERS_SHOWN = 10


class AttemptState:
    """Where an open activity's current attempt is."""

    WAITING = "waiting"
    """Dispatched; no worker runs it (yet)."""
    RETRY_SCHEDULED = "retry_scheduled"
    RUNNING = "running"
    """On a live worker (or on one whose liveness cannot be checked)."""
    WORKER_GONE = "worker_gone"
    """Started on a worker whose liveness record expired: it crashed, hangs or is cut off."""


@frozen
class ActivityDiagnosis:
    activity_id: int
    name: str
    attempt: int
    task_queue: str
    state: str
    worker: str = ""
    registered: bool | None = None
    """Whether a live worker of ``task_queue`` registers ``name`` (None: cannot be told)."""


@frozen
class QueueWorkers:
    """The live workers of one task queue the run uses."""

    task_queue: str
    workers: tuple[WorkerRecord, ...] = ()


@frozen
class Diagnosis:
    workflow_id: str
    run_id: str
    status: str
    reasons: tuple[str, ...]
    activities: tuple[ActivityDiagnosis, ...] = ()
    workers: tuple[QueueWorkers, ...] = ()
    liveness_known: bool = True
    """False when the namespace has no workers bucket (created by an older df-server)."""
    checked_at: float = 0.0
    corrupt_at: int | None = None
    """With status ``corrupt``: the stream sequence of the history message that cannot be
    read or folded."""


def moment(ts: float, now: float) -> str:
    """``ts`` for people: its UTC time, and how far it is from ``now``."""
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
    """The live state of ``consumer`` in the client's namespace."""
    return await _queue_state(client.pub.js, client.layout.stream, consumer)


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


def _live(records: list[WorkerRecord] | None, queue: str, activities: bool) -> list[WorkerRecord]:
    """Live workers of ``queue`` that poll activity (or workflow) tasks."""
    if records is None:
        return []
    return [
        r
        for r in workers_of(records, queue)
        if (r.polls_activities if activities else r.polls_workflows)
    ]


def _unregistered_activity(
    records: list[WorkerRecord] | None, act: ActivityState, queue: str
) -> tuple[bool | None, str]:
    """Whether a live worker of ``queue`` registers the activity, and a problem to report."""
    if records is None:
        return None, ""
    polling = _live(records, queue, activities=True)
    if not polling:
        return False, (
            f"no live worker polls task queue {queue!r} for activity tasks (none has published "
            "liveness recently)"
        )
    registered = registers_activity(polling, act.name)
    if registered is False:
        return False, (
            f"no live worker on task queue {queue!r} registers activity {act.name!r}; they "
            f"register: {registered_names(polling, activities=True)}"
        )
    return registered, ""


def _gone_line(
    label: str, act: ActivityState, q: QueueState, problem: str, now: float, queue: str
) -> str:
    started = act.started_at if act.started_at is not None else now
    line = (
        f"{label} started {moment(started, now)} on worker {act.worker}, which is gone: its "
        "liveness record expired (the worker crashed, hangs or lost its NATS connection)"
    )
    then = []
    lease = f" of {q.ack_wait:g}s" if q.ack_wait else ""
    then.append(f"when its lease{lease} runs out another worker takes the attempt over")
    stc = act.options.start_to_close_timeout
    if stc is not None:
        then.append(f"its start_to_close_timeout ends at {moment(started + stc, now)}")
    line += "; " + ", or ".join(then)
    if problem:
        line += f"; {problem}"
    elif not q.exists or q.pollers == 0:
        line += f"; no worker is polling activity tasks on task queue {queue!r} right now"
    return line


async def explain(client: Client, workflow_id: str, run_id: str | None = None) -> Diagnosis:
    """Reasons, most important first, why the run is where it is."""
    run = run_id or await client.latest_run_id(workflow_id)
    now = time.time()
    try:
        batches = await client.history.read(workflow_id, run)
        if not batches:
            raise WorkflowNotFoundError(f"no history for workflow {workflow_id!r} run {run}")
        state = fold(workflow_id, run, batches)
    except CorruptHistoryError as exc:
        # the run stops at that message: nothing else about it can be told
        return Diagnosis(
            workflow_id,
            run,
            RunStatus.CORRUPT,
            (str(exc),),
            corrupt_at=exc.stream_seq,
            checked_at=now,
        )
    reasons: list[str] = []
    if state.status != RunStatus.RUNNING:
        terminal = state.terminal
        when = moment(terminal.at, now) if terminal is not None else "?"
        line = f"the run is closed: {state.status} at {when}"
        summary = state.summary()
        if summary.failure is not None:
            line += f" — {summary.failure.describe()}"
        if summary.new_run_id:
            line += f"; it continued as run {summary.new_run_id}"
        return Diagnosis(workflow_id, run, state.status, (line,), checked_at=now)
    records = await client.workers()
    queue = state.started.task_queue
    wt = await queue_state(client, client.layout.workflow_consumer(queue))
    if state.last_wft_failure is not None:
        f = state.last_wft_failure
        first = f.failure.message.splitlines()[0] if f.failure.message else ""
        fix = (
            "fix the workflow code so it does not kill its worker process"
            if f.failure.type == WORKER_LOST
            else "deploy code that replays this history (see `df workflow replay-check`)"
        )
        reasons.append(
            f"workflow task failing: {f.failure.type} at event {f.event_id}: {first} — it is "
            f"retried with backoff; {fix}"
        )
    if records is not None:
        unserved = unserved_workflow(records, queue, state.started.workflow_type)
        if unserved:
            reasons.append(unserved)
    if state.cancel_requested:
        reasons.append("cancellation was requested; the workflow is running its cleanup")
    if state.last_deliverable_event_id > state.last_command_event_id:
        line = (
            f"event {state.last_deliverable_event_id} has not been handled by the workflow "
            "code yet (a workflow task is due)"
        )
        problem = _no_worker(wt, queue, "workflow", now)
        reasons.append(line + (f"; {problem}" if problem else ""))
    queues = [queue]
    attempts: list[ActivityDiagnosis] = []
    live = {r.identity: r for r in records or ()}
    for act in state.activities.values():
        if act.closed:
            continue
        aq_name = act.options.task_queue or queue
        if aq_name not in queues:
            queues.append(aq_name)
        label = f"activity {act.name!r} (#{act.seq}) attempt {act.attempt}"
        if act.cancel_requested:
            label += " (cancelled by the workflow; its attempt is asked to stop)"
        failure = f"; last failure: {act.last_failure.describe()}" if act.last_failure else ""
        registered, unregistered = _unregistered_activity(records, act, aq_name)
        found = running_attempt(records or (), run, act.seq, act.attempt)
        worker = act.worker or (found[0].identity if found is not None else "")
        if act.retry_at is not None and act.retry_at > now and act.started_at is None:
            attempt_state = AttemptState.RETRY_SCHEDULED
            line = f"waiting for {label}: next retry at {moment(act.retry_at, now)}"
            if unregistered:
                line += f"; {unregistered}"
            reasons.append(line + failure)
        elif (
            act.started_at is not None
            and act.worker
            and records is not None
            and act.worker not in live
            and found is None
        ):
            attempt_state = AttemptState.WORKER_GONE
            aq = await queue_state(client, client.layout.activity_consumer(aq_name))
            reasons.append(_gone_line(label, act, aq, unregistered, now, aq_name) + failure)
        elif act.started_at is not None or found is not None:
            attempt_state = AttemptState.RUNNING
            since = act.started_at
            if since is None and found is not None:
                since = found[1].since
            line = f"{label} is running since {moment(since or now, now)}"
            if worker:
                line += f" on worker {worker}"
                if worker in live:
                    line += f" (last seen {max(0.0, now - live[worker].last_seen):.0f}s ago)"
            reasons.append(line + failure)
        else:
            attempt_state = AttemptState.WAITING
            aq = await queue_state(client, client.layout.activity_consumer(aq_name))
            problem = _no_worker(aq, aq_name, "activity", now)
            line = f"{label} is waiting for a worker on task queue {aq_name!r}"
            if unregistered:
                line += f"; {unregistered}"
            elif problem:
                line += f"; {problem}"
            elif aq.in_flight:
                line += f" ({aq.in_flight} task(s) in flight there, {aq.pending} queued)"
            reasons.append(line + failure)
        attempts.append(
            ActivityDiagnosis(
                activity_id=act.seq,
                name=act.name,
                attempt=act.attempt,
                task_queue=aq_name,
                state=attempt_state,
                worker=worker,
                registered=registered,
            )
        )
    for seq, fire_at in sorted(state.timers.items()):
        reasons.append(
            f"timer #{seq} (a sleep, or the timeout of a wait) fires at {moment(fire_at, now)}"
        )
    for _, wait in sorted(state.waiting_for_signals.items()):
        line = f"waiting for signal {wait.name!r}"
        if wait.deadline is not None:
            line += f" (times out at {moment(wait.deadline, now)})"
        reasons.append(line)
    for upd in state.updates.values():
        if isinstance(upd, ev.UpdateAccepted):
            reasons.append(
                f"update {upd.name!r} (id {upd.update_id!r}, accepted at event {upd.event_id}) "
                "has not completed: its handler runs when the workflow code reaches that event "
                f"and has a handler {upd.name!r} registered"
            )
    for child in state.open_children():
        started = f"run {child.run_id}" if child.run_id else "not started yet"
        reasons.append(
            f"waiting for child workflow {child.workflow_type!r} id {child.workflow_id!r} "
            f"({started})"
        )
    size = history_verdict(
        await read_settings(client.pub.js, client.layout),
        len([e for b in batches for e in b.events]),
        sum(b.size for b in batches),
    )
    if size.warn:
        reasons.insert(0, size.message)
    if len(reasons) == int(size.warn):
        reasons.append(
            "nothing is pending in history: the workflow code is waiting for something that "
            "has not happened (a signal, or a result of a command it has not yet issued)"
        )
    workers = tuple(QueueWorkers(q, tuple(workers_of(records or (), q))) for q in queues)
    return Diagnosis(
        workflow_id,
        run,
        state.status,
        tuple(reasons),
        activities=tuple(attempts),
        workers=workers if records is not None else (),
        liveness_known=records is not None,
        checked_at=now,
    )


def render(d: Diagnosis) -> str:
    """``df why`` as text: the reasons, then who serves the run's task queues."""
    lines = [f"{d.workflow_id} (run {d.run_id}) is {d.status}:"]
    lines += [f"  - {r}" for r in d.reasons]
    if d.status != RunStatus.RUNNING:
        return "\n".join(lines)
    if not d.liveness_known:
        lines.append(
            "workers: unknown (the namespace has no workers bucket; restart df-server with "
            "this version to create it)"
        )
        return "\n".join(lines)
    for qw in d.workers:
        if not qw.workers:
            lines.append(f"workers on task queue {qw.task_queue!r}: none alive")
            continue
        lines.append(f"workers on task queue {qw.task_queue!r}:")
        shown = qw.workers[:MAX_WORKERS_SHOWN]
        lines += [f"  - {describe_worker(r, d.checked_at)}" for r in shown]
        if len(qw.workers) > len(shown):
            lines.append(f"  - and {len(qw.workers) - len(shown)} more")
    return "\n".join(lines)
