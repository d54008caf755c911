"""Options users pass: retry policy, activity options, workflow options.

Every class validates itself on construction, so an invalid option cannot exist; errors say
which field to set and to what.
"""

from __future__ import annotations

import enum

from attrs import evolve, field, frozen

from durablefuture.core.errors import InvalidArgumentError
from durablefuture.core.search_attributes import SearchAttributes, check_memo, search_attributes
from durablefuture.core.types import Duration, check_name, optional_seconds, seconds

__all__ = [
    "DEFAULT_START_TO_CLOSE",
    "ActivityCancellationType",
    "ActivityOptions",
    "Backoff",
    "IdReusePolicy",
    "ParentClosePolicy",
    "RetryPolicy",
    "WorkflowOptions",
]

DEFAULT_START_TO_CLOSE = 300.0
"""Applied when an activity sets neither ``start_to_close_timeout`` nor
``schedule_to_close_timeout``: 5 minutes per attempt."""


class Backoff(enum.Enum):
    """How the delay between activity attempts grows."""

    EXPONENTIAL = "exponential"
    """``initial_interval * backoff_coefficient ** (n - 1)`` before attempt ``n + 1``."""
    LINEAR = "linear"
    """``initial_interval * (1 + backoff_coefficient * (n - 1))``: grows by a fixed step."""
    FIXED = "fixed"
    """Always ``initial_interval``."""


class IdReusePolicy(enum.Enum):
    """Whether a new run may start under a workflow id whose last run is closed."""

    ALLOW_DUPLICATE = "allow_duplicate"
    """Allow after the previous run closed, however it closed (the default)."""
    ALLOW_DUPLICATE_FAILED_ONLY = "allow_duplicate_failed_only"
    """Allow only if the previous run failed, timed out, was cancelled or terminated."""
    REJECT_DUPLICATE = "reject_duplicate"
    """Never reuse an id that has been used in this namespace."""


class ActivityCancellationType(enum.Enum):
    """What ``yield df.cancel(task)`` (or losing a ``df.any_of``) waits for, for an activity."""

    TRY_CANCEL = "try_cancel"
    """Ask the running attempt to stop and go on at once: the handle raises ActivityError
    (cause CancelledError) now. The default."""
    WAIT_CANCELLATION_COMPLETED = "wait_cancellation_completed"
    """Ask the attempt to stop; the handle resolves when the activity ends (cancelled, or with
    the result or error it ended with anyway)."""
    ABANDON = "abandon"
    """Do not tell the activity; the handle raises ActivityError (cause CancelledError) now."""


def _cancellation_type(value: object) -> ActivityCancellationType:
    if isinstance(value, ActivityCancellationType):
        return value
    if isinstance(value, str):
        try:
            return ActivityCancellationType(value.lower())
        except ValueError:
            pass
    raise InvalidArgumentError(
        "cancellation_type must be one of "
        + ", ".join(f"df.ActivityCancellationType.{t.name}" for t in ActivityCancellationType)
        + f", got {value!r}"
    )


class ParentClosePolicy(enum.Enum):
    """What happens to a running child workflow when its parent run closes."""

    REQUEST_CANCEL = "request_cancel"
    """Ask the child to cancel (it can clean up); the default."""
    TERMINATE = "terminate"
    """End the child at once."""
    ABANDON = "abandon"
    """Leave the child running."""


def _initial_interval(value: Duration) -> float:
    return seconds(value, "RetryPolicy.initial_interval")


def _maximum_interval(value: Duration | None) -> float | None:
    return optional_seconds(value, "RetryPolicy.maximum_interval")


def _s2c(value: Duration | None) -> float | None:
    return optional_seconds(value, "schedule_to_close_timeout")


def _stc(value: Duration | None) -> float | None:
    return optional_seconds(value, "start_to_close_timeout")


def _s2s(value: Duration | None) -> float | None:
    return optional_seconds(value, "schedule_to_start_timeout")


def _hb(value: Duration | None) -> float | None:
    return optional_seconds(value, "heartbeat_timeout")


def _exec(value: Duration | None) -> float | None:
    return optional_seconds(value, "execution_timeout")


def _names(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, type):
        return (value.__name__,)
    if isinstance(value, list | tuple | set | frozenset):
        out: list[str] = []
        for v in value:
            if isinstance(v, str):
                out.append(v)
            elif isinstance(v, type):
                out.append(v.__name__)
            else:
                raise InvalidArgumentError(
                    "RetryPolicy.non_retryable_error_types takes error type names or exception "
                    f"classes, got {v!r}"
                )
        return tuple(out)
    raise InvalidArgumentError(
        f"RetryPolicy.non_retryable_error_types takes a list of error type names, got {value!r}"
    )


def _backoff(value: object) -> Backoff:
    if isinstance(value, Backoff):
        return value
    if isinstance(value, str):
        try:
            return Backoff(value.lower())
        except ValueError:
            pass
    raise InvalidArgumentError(
        f"RetryPolicy.backoff must be Backoff.EXPONENTIAL, LINEAR or FIXED, got {value!r}"
    )


@frozen
class RetryPolicy:
    """How a failed activity attempt is retried.

    Defaults match the field leader: first retry after 1 s, doubling, capped at 100 x the
    initial interval, unlimited attempts (bound them with ``maximum_attempts`` or a
    ``schedule_to_close_timeout``).
    """

    initial_interval: float = field(default=1.0, converter=_initial_interval)
    backoff_coefficient: float = 2.0
    maximum_interval: float | None = field(default=None, converter=_maximum_interval)
    maximum_attempts: int = 0
    backoff: Backoff = field(default=Backoff.EXPONENTIAL, converter=_backoff)
    non_retryable_error_types: tuple[str, ...] = field(default=(), converter=_names)
    jitter: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.initial_interval <= 0:
            raise InvalidArgumentError(
                f"RetryPolicy.initial_interval must be > 0 seconds, got {self.initial_interval}; "
                "set e.g. initial_interval=timedelta(seconds=1)"
            )
        coef = self.backoff_coefficient
        if isinstance(coef, bool) or not isinstance(coef, int | float) or coef != coef:
            raise InvalidArgumentError(
                f"RetryPolicy.backoff_coefficient must be a number, got {coef!r}"
            )
        if self.backoff is Backoff.EXPONENTIAL and coef < 1:
            raise InvalidArgumentError(
                f"RetryPolicy.backoff_coefficient must be >= 1 for EXPONENTIAL backoff, got "
                f"{coef}; use 2.0 to double the delay, or backoff=Backoff.FIXED for a constant one"
            )
        if self.backoff is Backoff.LINEAR and coef < 0:
            raise InvalidArgumentError(
                f"RetryPolicy.backoff_coefficient must be >= 0 for LINEAR backoff, got {coef}"
            )
        if self.maximum_interval is not None and self.maximum_interval < self.initial_interval:
            raise InvalidArgumentError(
                f"RetryPolicy.maximum_interval ({self.maximum_interval} s) is shorter than "
                f"initial_interval ({self.initial_interval} s); raise it or leave it None "
                "(100 x initial_interval)"
            )
        attempts = self.maximum_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0:
            raise InvalidArgumentError(
                f"RetryPolicy.maximum_attempts must be an int >= 0 (0 = unlimited), got "
                f"{attempts!r}"
            )
        jitter = self.jitter
        if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter <= 1:
            raise InvalidArgumentError(
                f"RetryPolicy.jitter must be a fraction between 0 and 1, got {jitter!r}"
            )

    @property
    def effective_maximum_interval(self) -> float:
        if self.maximum_interval is not None:
            return self.maximum_interval
        return 100.0 * self.initial_interval


def _retry_policy(value: object) -> RetryPolicy | None:
    if value is None or isinstance(value, RetryPolicy):
        return value
    raise InvalidArgumentError(f"retry_policy must be a df.RetryPolicy, got {value!r}")


def _opt_queue(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgumentError(f"task_queue must be a string, got {value!r}")
    return check_name(value)


@frozen
class ActivityOptions:
    """Timeouts, retries and routing of one activity call.

    At least one of ``schedule_to_close_timeout`` and ``start_to_close_timeout`` should be set;
    when neither is, ``start_to_close_timeout`` defaults to 5 minutes.
    """

    task_queue: str | None = field(default=None, converter=_opt_queue)
    schedule_to_close_timeout: float | None = field(default=None, converter=_s2c)
    start_to_close_timeout: float | None = field(default=None, converter=_stc)
    schedule_to_start_timeout: float | None = field(default=None, converter=_s2s)
    heartbeat_timeout: float | None = field(default=None, converter=_hb)
    retry_policy: RetryPolicy | None = field(default=None, converter=_retry_policy)
    cancellation_type: ActivityCancellationType = field(
        default=ActivityCancellationType.TRY_CANCEL, converter=_cancellation_type
    )

    def __attrs_post_init__(self) -> None:
        for name in (
            "schedule_to_close_timeout",
            "start_to_close_timeout",
            "schedule_to_start_timeout",
            "heartbeat_timeout",
        ):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise InvalidArgumentError(
                    f"ActivityOptions.{name} must be > 0 seconds, got {value}; "
                    "leave it None for no timeout"
                )

    def resolved(self, default_task_queue: str) -> ActivityOptions:
        """Fill in defaults: the task queue, the 5-minute start-to-close, the retry policy."""
        if self.task_queue and self.start_to_close_timeout is not None and self.retry_policy:
            # resolved already (what a worker sends, what a command is recorded with): a copy
            # would be equal, and would cost its converters and checks on every command
            return self
        stc = self.start_to_close_timeout
        if stc is None:
            stc = (
                self.schedule_to_close_timeout
                if self.schedule_to_close_timeout is not None
                else DEFAULT_START_TO_CLOSE
            )
        return evolve(
            self,
            task_queue=self.task_queue or default_task_queue,
            start_to_close_timeout=stc,
            retry_policy=self.retry_policy or RetryPolicy(),
        )


def _reuse(value: object) -> IdReusePolicy:
    if isinstance(value, IdReusePolicy):
        return value
    if isinstance(value, str):
        try:
            return IdReusePolicy(value.lower())
        except ValueError:
            pass
    raise InvalidArgumentError(
        "id_reuse_policy must be one of "
        + ", ".join(f"IdReusePolicy.{p.name}" for p in IdReusePolicy)
        + f", got {value!r}"
    )


def _parent_close(value: object) -> ParentClosePolicy:
    if isinstance(value, ParentClosePolicy):
        return value
    if isinstance(value, str):
        try:
            return ParentClosePolicy(value.lower())
        except ValueError:
            pass
    raise InvalidArgumentError(
        "parent_close_policy must be one of "
        + ", ".join(f"ParentClosePolicy.{p.name}" for p in ParentClosePolicy)
        + f", got {value!r}"
    )


def _queue(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidArgumentError(f"task_queue must be a string, got {value!r}")
    return check_name(value)


@frozen
class WorkflowOptions:
    """Options of a workflow run (also used for child workflows)."""

    task_queue: str = field(default="default", converter=_queue)
    namespace: str | None = None
    execution_timeout: float | None = field(default=None, converter=_exec)
    id_reuse_policy: IdReusePolicy = field(default=IdReusePolicy.ALLOW_DUPLICATE, converter=_reuse)
    parent_close_policy: ParentClosePolicy = field(
        default=ParentClosePolicy.REQUEST_CANCEL, converter=_parent_close
    )
    request_id: str | None = None
    search_attributes: SearchAttributes = field(factory=dict, converter=search_attributes)
    """Typed values the run can be found by (``list_workflows(query=...)``); see
    ``durablefuture.core.search_attributes`` for the types, names and bounds."""
    memo: dict[str, object] = field(factory=dict, converter=check_memo)
    """Notes shown with the run (``describe()``, the UI), not indexed; values are payloads."""

    def __attrs_post_init__(self) -> None:
        if self.execution_timeout is not None and self.execution_timeout <= 0:
            raise InvalidArgumentError(
                f"WorkflowOptions.execution_timeout must be > 0 seconds, got "
                f"{self.execution_timeout}; leave it None for no limit"
            )
