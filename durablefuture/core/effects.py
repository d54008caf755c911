"""What the server must do after recording events: dispatch tasks, arm timers, notify others.

Effects are derived from recorded events and the run's current state (``effects_for`` in
``orchestration``), never stored. Every effect is idempotent on the wire (its message id comes
from stable facts), so deriving it again after a crash is harmless.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from attrs import field, frozen

from durablefuture.core.events import ActivityScheduled, ParentRef, WorkflowStarted
from durablefuture.core.failure import Failure
from durablefuture.core.inputs import RequestCancel, SignalWorkflow, StartWorkflowRequest
from durablefuture.core.options import ActivityOptions
from durablefuture.core.search_attributes import SearchAttributes
from durablefuture.core.types import JsonValue, payloads

if TYPE_CHECKING:
    from durablefuture.core.state import ActivityState, RunState

__all__ = [
    "ActivityTask",
    "ArmTimer",
    "CancelActivities",
    "CancelChildRun",
    "DeliverInput",
    "DispatchActivityTask",
    "DispatchWorkflowTask",
    "Effect",
    "IndexRun",
    "NotifyParent",
    "RunStatus",
    "RunSummary",
    "StartRun",
    "TerminateChildRun",
    "UpdateStatus",
    "WorkflowTask",
    "activity_task",
    "first_attempt_tasks",
    "workflow_task",
]


class RunStatus:
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TERMINATED = "terminated"
    TIMED_OUT = "timed_out"
    CONTINUED_AS_NEW = "continued_as_new"
    CORRUPT = "corrupt"
    """Not a close: the run's history holds a message that cannot be read or folded, so the
    run cannot go on (its status entry's ``failure`` names the message and why)."""

    CLOSED = frozenset({COMPLETED, FAILED, CANCELLED, TERMINATED, TIMED_OUT, CONTINUED_AS_NEW})
    FAILED_LIKE = frozenset({FAILED, CANCELLED, TERMINATED, TIMED_OUT})


@frozen
class WorkflowTask:
    """Run the workflow code of ``run_id`` up to the end of its history."""

    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    trigger: int
    attempt: int = 1


@frozen
class ActivityTask:
    """Run attempt ``attempt`` of activity ``seq`` of ``run_id``."""

    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    seq: int
    attempt: int
    name: str
    task_queue: str
    options: ActivityOptions
    scheduled_at: float
    attempt_scheduled_at: float
    args: tuple[JsonValue, ...] = field(default=(), converter=payloads)
    heartbeat_details: tuple[JsonValue, ...] = field(default=(), converter=payloads)
    headers: dict[str, str] = field(factory=dict)


@frozen
class RunSummary:
    """The status index entry of a run (what ``list``/``describe``/``result`` read first)."""

    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    status: str
    start_time: float
    request_id: str = ""
    close_time: float | None = None
    result: JsonValue = None
    failure: Failure | None = None
    history_length: int = 0
    new_run_id: str | None = None
    parent: ParentRef | None = None
    search_attributes: SearchAttributes = field(factory=dict)
    memo: dict[str, JsonValue] = field(factory=dict)
    expires_at: float | None = None
    """When a closed run is removed: its close + the namespace's retention then (None: open,
    or closed by a df-server that did not record it)."""


@frozen
class DispatchWorkflowTask:
    task: WorkflowTask


@frozen
class DispatchActivityTask:
    task: ActivityTask
    deliver_at: float | None = None


@frozen
class ArmTimer:
    key: str
    fire_at: float


@frozen
class StartRun:
    """Start another run: a child workflow, or the next run after continue-as-new."""

    request: StartWorkflowRequest


@frozen
class CancelChildRun:
    workflow_id: str
    run_id: str | None
    request_id: str
    reason: str


@frozen
class TerminateChildRun:
    workflow_id: str
    run_id: str | None
    request_id: str
    reason: str


@frozen
class CancelActivities:
    """Tell running attempts (through their heartbeats) that they should stop."""

    seqs: tuple[int, ...]
    reason: str


@frozen
class NotifyParent:
    parent: ParentRef
    child_run_id: str
    result: JsonValue = None
    failure: Failure | None = None
    started: bool = False


@frozen
class DeliverInput:
    """Send ``input`` to the running run of workflow ``workflow_id`` (its ``run_id`` is "":
    whichever run is current); idempotent by the input's request id. Nothing happens if no
    run of that workflow is running, nor if the one running started after the input was
    decided (its ``decided_at``: derived again late, it was meant for a run closed since)."""

    workflow_id: str
    input: SignalWorkflow | RequestCancel


@frozen
class UpdateStatus:
    summary: RunSummary


@frozen
class IndexRun:
    """The open run's search attributes changed: rewrite its status entry, unless the entry
    has closed meanwhile or already holds a later state (``summary.history_length``)."""

    summary: RunSummary


Effect = (
    DispatchWorkflowTask
    | DispatchActivityTask
    | ArmTimer
    | StartRun
    | CancelChildRun
    | TerminateChildRun
    | CancelActivities
    | NotifyParent
    | DeliverInput
    | UpdateStatus
    | IndexRun
)


def workflow_task(state: RunState, trigger: int, attempt: int = 1) -> WorkflowTask:
    """The workflow task of ``state``'s run, triggered by event ``trigger``."""
    s = state.started
    return WorkflowTask(
        namespace=s.namespace,
        workflow_id=s.workflow_id,
        run_id=s.run_id,
        workflow_type=s.workflow_type,
        task_queue=s.task_queue,
        trigger=trigger,
        attempt=attempt,
    )


def activity_task(state: RunState, act: ActivityState) -> ActivityTask:
    """The task of ``act``'s current attempt."""
    s = state.started
    opts = act.options
    return ActivityTask(
        namespace=s.namespace,
        workflow_id=s.workflow_id,
        run_id=s.run_id,
        workflow_type=s.workflow_type,
        seq=act.seq,
        attempt=act.attempt,
        name=act.name,
        task_queue=opts.task_queue or s.task_queue,
        options=opts,
        scheduled_at=act.scheduled_at,
        attempt_scheduled_at=act.attempt_scheduled_at,
        args=act.args,
        heartbeat_details=act.heartbeat_details,
        headers=s.headers,
    )


def first_attempt_tasks(
    started: WorkflowStarted, events: Sequence[object], seqs: Collection[int]
) -> list[ActivityTask]:
    """The first attempts' tasks of the activities of ``seqs`` that ``events`` schedule, as
    :func:`activity_task` makes them for df-server to dispatch (attempts granted to the
    worker that decided them: ``server/grants.py``)."""
    s = started
    return [
        ActivityTask(
            namespace=s.namespace,
            workflow_id=s.workflow_id,
            run_id=s.run_id,
            workflow_type=s.workflow_type,
            seq=e.seq,
            attempt=1,
            name=e.name,
            task_queue=e.options.task_queue or s.task_queue,
            options=e.options,
            scheduled_at=e.at,
            attempt_scheduled_at=e.at,
            args=e.args,
            heartbeat_details=(),
            headers=s.headers,
        )
        for e in events
        if isinstance(e, ActivityScheduled) and e.seq in seqs
    ]
