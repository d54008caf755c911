"""What a schedule is and what its state machine reads and returns: the definition
(``Schedule``: action, spec, policy), the state df-server stores (``ScheduleState``), what the
runtime observed of its actions (``Observed``) and the outcome of a step (``Step``: new state,
effects, next wake-up). The transitions are in ``core/schedules.py``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta

from attrs import field, frozen

from durablefuture.core.definitions import name_of
from durablefuture.core.errors import InvalidArgumentError
from durablefuture.core.options import WorkflowOptions
from durablefuture.core.schedule_spec import ScheduleSpec, iso
from durablefuture.core.types import check_name, check_workflow_id

__all__ = [
    "JOURNAL",
    "MAX_BACKFILL",
    "MAX_REQUESTS",
    "MAX_STEPS",
    "RECENT",
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
]

STARTING = "starting"
"""Status of an action that is recorded but whose run has not been observed yet."""

RECENT = 20
MAX_REQUESTS = 400
"""Request ids a record keeps at most (those applied within the redelivery horizon, see
``core/schedules.py`` ``_remember``): about 20 KB of a record under a flood of requests."""
JOURNAL = 50
MAX_STEPS = 2_000
"""Due times handled in one step at most (the rest in the next step, right away)."""
MAX_BACKFILL = 10_000


class Overlap(enum.Enum):
    """What to do when an action is due while an earlier action of the schedule still runs."""

    SKIP = "skip"
    """Do not start it (the default)."""
    BUFFER_ONE = "buffer_one"
    """Start it when the running one closes; at most one waits, later ones are skipped."""
    BUFFER_ALL = "buffer_all"
    """Start every due action, one after the other, each when the previous one closes."""
    CANCEL_OTHER = "cancel_other"
    """Request cancellation of the running one; start the new one once it has closed."""
    TERMINATE_OTHER = "terminate_other"
    """Terminate the running one and start the new one at once."""
    ALLOW_ALL = "allow_all"
    """Start it regardless; any number may run at once."""


def _td(value: timedelta | float | int) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(seconds=float(value))


@frozen
class SchedulePolicy:
    overlap: Overlap = Overlap.SKIP
    catchup_window: timedelta = field(default=timedelta(days=365), converter=_td)
    """After downtime, due actions older than this are recorded as missed instead of run."""
    pause_on_failure: bool = False
    """Pause the schedule when an action's run fails, times out, is cancelled or terminated."""

    def __attrs_post_init__(self) -> None:
        if self.catchup_window < timedelta(seconds=1):
            raise InvalidArgumentError("SchedulePolicy.catchup_window must be at least 1 s")


def _args(value: Iterable[object]) -> tuple[object, ...]:
    return tuple(value)


@frozen(init=False)
class ScheduleStartWorkflow:
    """The action: start ``workflow`` with ``args``; its id is ``<id_prefix>-<scheduled time>``.

    ``ScheduleStartWorkflow(report, "daily", id_prefix="report", task_queue="reports")``.
    ``id_prefix`` defaults to the schedule id.
    """

    workflow_type: str
    args: tuple[object, ...] = field(converter=_args)
    id_prefix: str | None
    task_queue: str
    execution_timeout: float | None

    def __init__(
        self,
        workflow: Callable[..., object] | str,
        *args: object,
        id_prefix: str | None = None,
        task_queue: str | None = None,
        options: WorkflowOptions | None = None,
        execution_timeout: float | None = None,
    ) -> None:
        wf = name_of(workflow, "workflow")
        queue = task_queue or (options.task_queue if options else "default")
        timeout = execution_timeout
        if timeout is None and options is not None:
            timeout = options.execution_timeout
        if id_prefix is not None:
            check_workflow_id(id_prefix, "id_prefix")
        self.__attrs_init__(wf, args, id_prefix, check_name(queue), timeout)

    @classmethod
    def of(
        cls,
        workflow_type: str,
        args: Sequence[object],
        id_prefix: str | None,
        task_queue: str,
        execution_timeout: float | None,
    ) -> ScheduleStartWorkflow:
        return cls(
            workflow_type,
            *args,
            id_prefix=id_prefix,
            task_queue=task_queue,
            execution_timeout=execution_timeout,
        )


@frozen
class Schedule:
    """What a schedule does (``action``), when (``spec``) and how (``policy``)."""

    action: ScheduleStartWorkflow
    spec: ScheduleSpec
    policy: SchedulePolicy = field(factory=SchedulePolicy)
    paused: bool = False
    note: str = ""


@frozen
class ActionRecord:
    """One action the schedule took."""

    nominal: float
    """Its scheduled time (the time in its workflow id)."""
    taken_at: float
    workflow_id: str
    source: str = "spec"
    """``spec``, ``trigger`` or ``backfill``."""
    run_id: str = ""
    status: str = STARTING
    """``starting`` until its run is seen, then a RunStatus value."""
    fire_at: float | None = None
    """When its start is due, for an action recorded ahead of its time (None: at once). Until
    then it is *pending*: recorded, not started, and withdrawn by a pause or an update."""

    def pending(self, now: float) -> bool:
        """Recorded ahead and not due yet at ``now``."""
        return self.fire_at is not None and self.fire_at > now and self.status == STARTING


@frozen
class Buffered:
    nominal: float
    overlap: Overlap
    source: str = "spec"


@frozen
class JournalEntry:
    """A fact in the schedule's history: created, updated, paused, unpaused, skipped, missed,
    buffered, triggered, backfilled, cancel_requested, terminated."""

    at: float
    kind: str
    nominal: float | None = None
    detail: str = ""


@frozen
class Stop:
    workflow_id: str
    terminate: bool


@frozen
class ScheduleState:
    schedule_id: str
    schedule: Schedule
    created_at: float
    updated_at: float
    processed_upto: float
    """Nominal times up to here have been handled (taken, skipped, buffered or missed)."""
    running: tuple[ActionRecord, ...] = ()
    buffered: tuple[Buffered, ...] = ()
    recent: tuple[ActionRecord, ...] = ()
    """The latest closed actions, newest last."""
    journal: tuple[JournalEntry, ...] = ()
    actions: int = 0
    skipped: int = 0
    missed: int = 0
    stopping: tuple[Stop, ...] = ()
    """Runs this schedule asked to cancel or terminate (until they close)."""
    requests: tuple[str, ...] = ()
    """Ids of the control requests applied lately (a redelivered request is not applied twice):
    the last ``RECENT``, and any applied within the redelivery horizon."""
    requests_at: tuple[float, ...] = ()
    """When each of ``requests`` was applied, aligned at the end (a record written before this
    field existed has none: its ids count as applied long ago)."""

    @property
    def paused(self) -> bool:
        return self.schedule.paused

    def action_id(self, nominal: float) -> str:
        prefix = self.schedule.action.id_prefix or self.schedule_id
        return f"{prefix}-{iso(nominal)}"

    def request_id(self, nominal: float) -> str:
        return f"sch:{self.schedule_id}:{iso(nominal)}"


# ------------------------------------------------------------------ effects


@frozen
class StartAction:
    workflow_id: str
    request_id: str
    nominal: float


@frozen
class CancelAction:
    workflow_id: str
    run_id: str
    request_id: str


@frozen
class TerminateAction:
    workflow_id: str
    run_id: str
    request_id: str


ScheduleEffect = StartAction | CancelAction | TerminateAction


@frozen
class Observed:
    """What the runtime saw of an action's workflow id: its latest run (``run_id`` empty: no
    run yet) and that run's status."""

    run_id: str = ""
    status: str = ""


@frozen
class Step:
    state: ScheduleState
    effects: tuple[ScheduleEffect, ...]
    wake_at: float | None
    """When to step again (None: never, unless something asks)."""
    taken: int = 0
    skipped: int = 0
    missed: int = 0
    lateness: tuple[float, ...] = ()
    """Seconds between each spec action's fire time and ``now``."""
