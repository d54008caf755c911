"""What ``handle.describe()`` and ``client.list_workflows()`` return, built from a run's
state, its status entry, or the reason its history cannot be read."""

from __future__ import annotations

from datetime import UTC, datetime

from attrs import evolve, field, frozen

from durablefuture.core.effects import RunStatus, RunSummary
from durablefuture.core.errors import CorruptHistoryError
from durablefuture.core.failure import Failure
from durablefuture.core.search_attributes import row_values
from durablefuture.core.state import RunState

__all__ = [
    "PendingActivity",
    "SignalWait",
    "WorkflowDescription",
    "describe_corrupt",
    "describe_state",
    "describe_summary",
]


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


@frozen
class PendingActivity:
    activity_id: int
    name: str
    attempt: int
    task_queue: str
    scheduled_time: datetime
    started: bool
    last_failure: Failure | None = None
    next_retry_time: datetime | None = None
    worker: str = ""
    """The worker that reported this attempt as started (empty until one has)."""


@frozen
class SignalWait:
    """The workflow code waits for signal ``name`` (``deadline``: when the wait times out)."""

    wait_id: int
    name: str
    since: datetime
    deadline: datetime | None = None


@frozen
class WorkflowDescription:
    """What ``handle.describe()`` and ``client.list_workflows()`` return."""

    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    status: str
    start_time: datetime
    close_time: datetime | None = None
    history_length: int = 0
    result: object = None
    failure: Failure | None = None
    pending_activities: tuple[PendingActivity, ...] = field(default=())
    pending_timers: tuple[tuple[int, datetime], ...] = field(default=())
    signal_waits: tuple[SignalWait, ...] = field(default=())
    cancel_requested: bool = False
    new_run_id: str | None = None
    last_workflow_task_failure: Failure | None = None
    corrupt_at: int | None = None
    """With status ``corrupt``: the stream sequence of the history message that cannot be read
    or folded (``failure`` says why)."""
    search_attributes: dict[str, object] = field(factory=dict)
    """The run's search attributes (name -> value: str, int, float, bool, datetime, list)."""
    memo: dict[str, object] = field(factory=dict)
    """The memo given at start (values as JSON)."""

    @property
    def is_open(self) -> bool:
        return self.status == RunStatus.RUNNING


def describe_summary(s: RunSummary) -> WorkflowDescription:
    return WorkflowDescription(
        workflow_id=s.workflow_id,
        run_id=s.run_id,
        workflow_type=s.workflow_type,
        task_queue=s.task_queue,
        status=s.status,
        start_time=datetime.fromtimestamp(s.start_time, tz=UTC),
        close_time=_ts(s.close_time),
        history_length=s.history_length,
        result=s.result,
        failure=s.failure,
        new_run_id=s.new_run_id,
        search_attributes=dict(row_values(s.search_attributes)),
        memo=dict(s.memo),
    )


def describe_corrupt(exc: CorruptHistoryError, summary: RunSummary | None) -> WorkflowDescription:
    """A run whose history cannot be read: what its status entry knows, and where and why
    the history is corrupt."""
    if summary is None:
        summary = RunSummary(exc.workflow_id, exc.run_id, "", "", RunStatus.CORRUPT, 0.0)
    failure = Failure(
        message=str(exc),
        type="CorruptHistoryError",
        details=(exc.stream_seq, exc.reason),
    )
    summary = evolve(summary, status=RunStatus.CORRUPT, failure=failure)
    return evolve(describe_summary(summary), corrupt_at=exc.stream_seq)


def describe_state(state: RunState) -> WorkflowDescription:
    s = state.summary()
    pending = []
    for act in state.activities.values():
        if act.closed:
            continue
        pending.append(
            PendingActivity(
                activity_id=act.seq,
                name=act.name,
                attempt=act.attempt,
                task_queue=act.options.task_queue or state.started.task_queue,
                scheduled_time=datetime.fromtimestamp(act.scheduled_at, tz=UTC),
                started=act.started_at is not None,
                last_failure=act.last_failure,
                next_retry_time=_ts(act.retry_at) if act.attempt > 1 else None,
                worker=act.worker,
            )
        )
    waits = tuple(
        SignalWait(
            wait_id=w.seq,
            name=w.name,
            since=datetime.fromtimestamp(w.at, tz=UTC),
            deadline=_ts(w.deadline),
        )
        for _, w in sorted(state.waiting_for_signals.items())
    )
    timers = tuple(
        (seq, datetime.fromtimestamp(at, tz=UTC)) for seq, at in sorted(state.timers.items())
    )
    wft = state.last_wft_failure
    return evolve(
        describe_summary(s),
        pending_activities=tuple(pending),
        pending_timers=timers,
        signal_waits=waits,
        cancel_requested=state.cancel_requested,
        last_workflow_task_failure=wft.failure if wft is not None else None,
    )
