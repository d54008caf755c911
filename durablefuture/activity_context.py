"""What activity code can ask for: ``df.activity_info()`` and ``df.heartbeat(*details)``.

Both read the context the worker sets while it runs an attempt; they work in sync activities
(run in a thread) and async ones (run on the loop) alike.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from datetime import UTC, datetime

from attrs import field, frozen

from durablefuture.core.effects import ActivityTask
from durablefuture.core.errors import DurableFutureError
from durablefuture.core.types import JsonValue, payloads

__all__ = [
    "ActivityContext",
    "ActivityInfo",
    "activity_info",
    "current_activity",
    "heartbeat",
    "info_for",
]


@frozen
class ActivityInfo:
    """Facts about the running activity attempt."""

    activity_id: int
    activity_name: str
    attempt: int
    workflow_id: str
    workflow_type: str
    run_id: str
    namespace: str
    task_queue: str
    scheduled_time: datetime
    started_time: datetime
    schedule_to_close_deadline: datetime | None = None
    start_to_close_deadline: datetime | None = None
    heartbeat_timeout: float | None = None
    heartbeat_details: tuple[JsonValue, ...] = field(default=(), converter=payloads)
    """Details passed to ``df.heartbeat`` by the previous attempt (empty on the first)."""

    @property
    def is_cancelled(self) -> bool:
        """True once the workflow cancelled this activity (``df.cancel``, a lost ``any_of``,
        or the run's cancellation): a sync activity should stop soon (``df.heartbeat()``
        raises ``df.CancelledError`` too). Read inside the activity."""
        ctx = _current.get()
        return ctx is not None and ctx.cancelled


class ActivityContext:
    """The worker's handle on a running attempt (heartbeats and cancellation)."""

    def __init__(
        self,
        info: ActivityInfo,
        on_heartbeat: Callable[[tuple[object, ...]], None],
        is_cancelled: Callable[[], bool],
    ) -> None:
        self.info = info
        self._on_heartbeat = on_heartbeat
        self._is_cancelled = is_cancelled

    def heartbeat(self, details: tuple[object, ...]) -> None:
        self._on_heartbeat(details)

    @property
    def cancelled(self) -> bool:
        return self._is_cancelled()


_current: contextvars.ContextVar[ActivityContext | None] = contextvars.ContextVar(
    "durablefuture_activity_context", default=None
)


def current_activity() -> ActivityContext:
    ctx = _current.get()
    if ctx is None:
        raise DurableFutureError(
            "df.activity_info() and df.heartbeat() only work inside an activity run by a "
            "DurableFuture worker"
        )
    return ctx


def set_activity_context(ctx: ActivityContext | None) -> contextvars.Token[ActivityContext | None]:
    return _current.set(ctx)


def reset_activity_context(token: contextvars.Token[ActivityContext | None]) -> None:
    _current.reset(token)


def activity_info() -> ActivityInfo:
    """Attempt number, ids, deadlines and the previous attempt's heartbeat details."""
    return current_activity().info


def heartbeat(*details: object) -> None:
    """Report progress. Cheap to call often: the worker sends at most one heartbeat per
    interval (a fraction of ``heartbeat_timeout``) and keeps the latest details, which the next
    attempt sees in ``df.activity_info().heartbeat_details`` if this one fails.

    Raises ``df.CancelledError`` if the workflow asked this activity to stop.
    """
    ctx = current_activity()
    ctx.heartbeat(details)
    if ctx.cancelled:
        from durablefuture.core.errors import CancelledError

        raise CancelledError("activity cancelled: the workflow no longer needs its result")


def info_for(task: ActivityTask, started: float) -> ActivityInfo:
    """What ``df.activity_info()`` says about ``task``'s attempt, begun at ``started``."""
    opts = task.options
    return ActivityInfo(
        activity_id=task.seq,
        activity_name=task.name,
        attempt=task.attempt,
        workflow_id=task.workflow_id,
        workflow_type=task.workflow_type,
        run_id=task.run_id,
        namespace=task.namespace,
        task_queue=task.task_queue,
        scheduled_time=utc(task.scheduled_at),
        started_time=utc(started),
        schedule_to_close_deadline=(
            None
            if opts.schedule_to_close_timeout is None
            else utc(task.scheduled_at + opts.schedule_to_close_timeout)
        ),
        start_to_close_deadline=(
            None
            if opts.start_to_close_timeout is None
            else utc(started + opts.start_to_close_timeout)
        ),
        heartbeat_timeout=opts.heartbeat_timeout,
        heartbeat_details=task.heartbeat_details,
    )


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)
