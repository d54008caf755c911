"""What a worker says about itself: its registrations and that it is alive.

Each worker stores a :class:`WorkerRecord` every few seconds under its identity (the transport
keeps them in a KV bucket with a per-key TTL, so a worker that stops writing disappears on its
own). The functions here read a set of live records: who serves a task queue, whether anyone
registers a workflow type or an activity, who runs an activity attempt. They are pure: the
caller passes in the records (and the time, where it matters).

A record's name lists are capped (:data:`MAX_NAMES`, :data:`MAX_RUNNING`); ``*_more`` counts
what was left out, and a check that cannot see a whole list answers "unknown" (None) rather
than guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from attrs import field, frozen

__all__ = [
    "MAX_NAMES",
    "MAX_RUNNING",
    "AttemptClaim",
    "RunningAttempt",
    "WorkerRecord",
    "capped",
    "describe_names",
    "describe_worker",
    "registered_names",
    "registers_activity",
    "registers_workflow",
    "running_attempt",
    "unserved_workflow",
    "workers_of",
]

MAX_NAMES = 100
"""At most this many workflow types (and as many activity names) in one record."""
MAX_RUNNING = 50
"""At most this many running activity attempts in one record."""


def _names(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@frozen
class AttemptClaim:
    """A worker's claim on an activity attempt: it runs the attempt, and said so at ``at``.

    A live holder writes it again within ``lease`` seconds (the transport keeps one per
    attempt, created only if none exists, so one worker runs the attempt).
    """

    holder: str
    at: float
    lease: float


@frozen
class RunningAttempt:
    """An activity attempt a worker is running right now."""

    workflow_id: str
    run_id: str
    activity_id: int
    name: str
    attempt: int
    since: float


@frozen
class WorkerRecord:
    """One worker's registrations and liveness (schema: see ``codec.wire``)."""

    identity: str
    namespace: str
    task_queue: str
    host: str = ""
    pid: int = 0
    started_at: float = 0.0
    last_seen: float = 0.0
    interval: float = 0.0
    """Seconds between two records of this worker."""
    ttl: float = 0.0
    """The record disappears this long after ``last_seen`` unless the worker writes again."""
    workflows: tuple[str, ...] = field(default=(), converter=_names)
    workflows_more: int = 0
    activities: tuple[str, ...] = field(default=(), converter=_names)
    activities_more: int = 0
    running: tuple[RunningAttempt, ...] = ()
    running_more: int = 0

    @property
    def polls_workflows(self) -> bool:
        return bool(self.workflows or self.workflows_more)

    @property
    def polls_activities(self) -> bool:
        return bool(self.activities or self.activities_more)


def capped(names: Iterable[str], limit: int = MAX_NAMES) -> tuple[tuple[str, ...], int]:
    """The first ``limit`` of the sorted ``names`` and how many were left out."""
    ordered = sorted(names)
    return tuple(ordered[:limit]), max(0, len(ordered) - limit)


def describe_names(names: Sequence[str], more: int = 0, none: str = "none") -> str:
    """``a, b and 3 more`` (``none`` when there is nothing)."""
    if not names and not more:
        return none
    text = ", ".join(names)
    if more:
        text = f"{text} and {more} more" if text else f"{more} names"
    return text


def workers_of(records: Iterable[WorkerRecord], task_queue: str) -> list[WorkerRecord]:
    """The records of ``task_queue``'s workers, oldest worker first."""
    return sorted(
        (r for r in records if r.task_queue == task_queue),
        key=lambda r: (r.started_at, r.identity),
    )


def registers_workflow(records: Iterable[WorkerRecord], workflow_type: str) -> bool | None:
    """Whether one of ``records`` registers ``workflow_type`` (None: a list was capped)."""
    capped_lists = False
    for r in records:
        if workflow_type in r.workflows:
            return True
        capped_lists = capped_lists or r.workflows_more > 0
    return None if capped_lists else False


def registers_activity(records: Iterable[WorkerRecord], name: str) -> bool | None:
    """Whether one of ``records`` registers activity ``name`` (None: a list was capped)."""
    capped_lists = False
    for r in records:
        if name in r.activities:
            return True
        capped_lists = capped_lists or r.activities_more > 0
    return None if capped_lists else False


def running_attempt(
    records: Iterable[WorkerRecord], run_id: str, activity_id: int, attempt: int
) -> tuple[WorkerRecord, RunningAttempt] | None:
    """The live worker that lists this attempt as running (and its entry), if any."""
    for r in records:
        for a in r.running:
            if a.run_id == run_id and a.activity_id == activity_id and a.attempt == attempt:
                return r, a
    return None


def registered_names(records: Sequence[WorkerRecord], activities: bool = False) -> str:
    """The workflow types (or activity names) ``records`` register together, capped."""
    if activities:
        names = sorted({n for r in records for n in r.activities})
        more = sum(r.activities_more for r in records)
    else:
        names = sorted({n for r in records for n in r.workflows})
        more = sum(r.workflows_more for r in records)
    shown, left_out = capped(names, 20)
    return describe_names(shown, more + left_out)


def unserved_workflow(
    records: Iterable[WorkerRecord], task_queue: str, workflow_type: str
) -> str | None:
    """Why no live worker would run ``workflow_type`` on ``task_queue`` (None: one would, or
    it cannot be told because a registration list was capped)."""
    polling = [r for r in workers_of(records, task_queue) if r.polls_workflows]
    if not polling:
        return (
            f"no live worker polls task queue {task_queue!r} for workflow tasks; the run "
            f"waits until a worker that registers {workflow_type!r} starts on that queue"
        )
    if registers_workflow(polling, workflow_type) is not False:
        return None
    return (
        f"no live worker on task queue {task_queue!r} registers workflow type "
        f"{workflow_type!r}; the {len(polling)} live worker(s) there register: "
        f"{registered_names(polling)}. The run waits until a worker that registers it polls "
        "that queue (check the type name and --task-queue)"
    )


def describe_worker(r: WorkerRecord, now: float) -> str:
    """One line about a worker: where it runs, what it registers, what it runs, last seen."""
    parts = []
    if r.host or r.pid:
        parts.append(f"pid {r.pid} on {r.host}")
    if r.polls_workflows:
        parts.append(f"workflows: {describe_names(r.workflows, r.workflows_more)}")
    if r.polls_activities:
        parts.append(f"activities: {describe_names(r.activities, r.activities_more)}")
    running = len(r.running) + r.running_more
    if running:
        parts.append(f"running {running} activity attempt(s)")
    parts.append(f"last seen {max(0.0, now - r.last_seen):.0f}s ago")
    return f"{r.identity} ({'; '.join(parts)})"
