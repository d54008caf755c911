"""Durable timer keys: what a timer guards, typed, and its string form on the wire.

Every durable timer of a run has a key. The orchestration core arms timers with
``TimerKey(...).encode()`` and reads a due timer back with ``TimerKey.parse(key)``; nothing else
in the core builds or splits these strings. The string form is part of the wire format (it is in
timer subjects, message ids and stored histories' inputs) and must never change:

=====================  ==========================================================
``wf.exec``            the run's execution timeout
``wft.<attempt>``      retry a workflow task that failed on attempt ``attempt``
``t<seq>``             the timer of ``df.sleep`` command ``seq``
``s<seq>``             the timeout of ``df.wait_signal`` command ``seq``
``a<seq>.s2c``         schedule_to_close timeout of activity ``seq`` (all attempts)
``a<seq>.<n>.s2s``     schedule_to_start timeout of attempt ``n`` of activity ``seq``
``a<seq>.<n>.stc``     start_to_close timeout of attempt ``n``
``a<seq>.<n>.hb``      heartbeat timeout of attempt ``n``
=====================  ==========================================================
"""

from __future__ import annotations

import enum

from attrs import field, frozen
from attrs.validators import ge

from durablefuture.core import events as ev

__all__ = ["TimerKey", "TimerKind", "names_a_spent_timer", "spent_by"]


class TimerKind(enum.Enum):
    """What a durable timer guards."""

    EXECUTION = "wf.exec"
    WORKFLOW_TASK_RETRY = "wft"
    TIMER = "t"
    SIGNAL_WAIT = "s"
    SCHEDULE_TO_CLOSE = "s2c"
    SCHEDULE_TO_START = "s2s"
    START_TO_CLOSE = "stc"
    HEARTBEAT = "hb"


_PER_ATTEMPT = frozenset(
    {TimerKind.SCHEDULE_TO_START, TimerKind.START_TO_CLOSE, TimerKind.HEARTBEAT}
)
ACTIVITY_KINDS = frozenset({TimerKind.SCHEDULE_TO_CLOSE, *_PER_ATTEMPT})
"""The kinds that guard an activity (``seq`` is its activity id)."""

_BY_SUFFIX = {kind.value: kind for kind in _PER_ATTEMPT}


def _int(text: str) -> int | None:
    # isdigit() alone accepts characters int() rejects, such as '²'
    return int(text) if text.isascii() and text.isdigit() else None


@frozen
class TimerKey:
    """A durable timer's key: its ``kind``, the command ``seq`` and the ``attempt`` it guards.

    ``seq`` is 0 for the run-level kinds (execution timeout, workflow task retry); ``attempt``
    is 0 for kinds that guard no single attempt (execution, timer, signal wait,
    schedule_to_close).
    """

    kind: TimerKind
    seq: int = field(default=0, validator=ge(0))
    attempt: int = field(default=0, validator=ge(0))

    @classmethod
    def execution(cls) -> TimerKey:
        return cls(TimerKind.EXECUTION)

    @classmethod
    def workflow_task_retry(cls, attempt: int) -> TimerKey:
        return cls(TimerKind.WORKFLOW_TASK_RETRY, attempt=attempt)

    @classmethod
    def timer(cls, seq: int) -> TimerKey:
        return cls(TimerKind.TIMER, seq)

    @classmethod
    def signal_wait(cls, seq: int) -> TimerKey:
        return cls(TimerKind.SIGNAL_WAIT, seq)

    @classmethod
    def activity(cls, kind: TimerKind, seq: int, attempt: int = 0) -> TimerKey:
        """An activity timer; ``attempt`` is ignored for schedule_to_close."""
        return cls(kind, seq, 0 if kind is TimerKind.SCHEDULE_TO_CLOSE else attempt)

    @property
    def is_activity(self) -> bool:
        return self.kind in ACTIVITY_KINDS

    def encode(self) -> str:
        """The wire form (see the module docstring); ``parse(key.encode()) == key``."""
        kind = self.kind
        if kind is TimerKind.EXECUTION:
            return "wf.exec"
        if kind is TimerKind.WORKFLOW_TASK_RETRY:
            return f"wft.{self.attempt}"
        if kind in (TimerKind.TIMER, TimerKind.SIGNAL_WAIT):
            return f"{'t' if kind is TimerKind.TIMER else 's'}{self.seq}"
        if kind is TimerKind.SCHEDULE_TO_CLOSE:
            return f"a{self.seq}.s2c"
        return f"a{self.seq}.{self.attempt}.{kind.value}"

    @classmethod
    def parse(cls, key: str) -> TimerKey | None:
        """The key a wire string names, or None if it names none (the string is untrusted).

        Numbers are ASCII digits only; leading zeros are accepted, as they always were.
        """
        if key == TimerKind.EXECUTION.value:
            return cls.execution()
        if key.startswith("wft."):
            attempt = _int(key[4:])
            return None if attempt is None else cls.workflow_task_retry(attempt)
        if key[:1] in ("t", "s"):
            seq = _int(key[1:])
            return None if seq is None else cls(TimerKind(key[0]), seq)
        if not key.startswith("a"):
            return None
        parts = key[1:].split(".")
        seq = _int(parts[0])
        if seq is None:
            return None
        if parts[1:] == ["s2c"]:
            return cls(TimerKind.SCHEDULE_TO_CLOSE, seq)
        if len(parts) != 3:
            return None
        attempt, kind = _int(parts[1]), _BY_SUFFIX.get(parts[2])
        if attempt is None or kind is None:
            return None
        return cls(kind, seq, attempt)


def names_a_spent_timer(key: str) -> bool:
    """Whether ``key``, which :meth:`TimerKey.parse` refused, has the shape of a sleep, a
    signal-wait or a workflow task retry key: such a key names nothing that can still be due
    (it is ignored), where any other unreadable key is refused."""
    return key[:1] in (TimerKind.TIMER.value, TimerKind.SIGNAL_WAIT.value) or key.startswith(
        f"{TimerKind.WORKFLOW_TASK_RETRY.value}."
    )


def spent_by(event: ev.Event) -> str | None:
    """The durable timers ``event`` leaves with nothing to guard, as a key pattern (``*`` one
    dot-separated part, ``>`` the rest, as in NATS subjects), or None.

    Every timer of an activity that closed (completed, failed, timed out); the per-attempt
    timers of an attempt that failed and is retried (the activity's schedule_to_close stays);
    the timer of a cancelled ``df.sleep`` (a cancelled command that is no sleep has no timer
    under that key). Cancelling such a timer early only saves its firing: a timer that fires
    with nothing to guard is ignored.
    """
    if isinstance(event, ev.ActivityCompleted | ev.ActivityFailed | ev.ActivityTimedOut):
        return f"a{event.seq}.>"
    if isinstance(event, ev.ActivityRetryScheduled):
        return f"a{event.seq}.{event.attempt}.*"
    if isinstance(event, ev.CancellationRequested):
        return TimerKey.timer(event.target).encode()
    return None
