"""A decision: what one input adds to a run's history, and the helpers that build it."""

from __future__ import annotations

from typing import Any

from attrs import frozen

from durablefuture.core import events as ev
from durablefuture.core.effects import Effect
from durablefuture.core.failure import Failure, FailureKind
from durablefuture.core.state import RunState

APPLIED = "applied"
DUPLICATE = "duplicate"
IGNORED = "ignored"
REJECTED = "rejected"

TIMER_TOLERANCE = 0.05


@frozen
class Decision:
    """What an input does to a run.

    ``outcome`` is APPLIED (``events`` are new), DUPLICATE (already recorded as events
    ``recorded``; re-derive their effects), IGNORED (stale/late/no-op; ``reason`` says why) or
    REJECTED (impossible; the server double-checks it has the latest history, then drops it).
    ``effects`` are extra effects that come from no event (re-arming a timer, retrying a
    workflow task).
    """

    outcome: str
    events: tuple[ev.Event, ...] = ()
    effects: tuple[Effect, ...] = ()
    reason: str = ""
    recorded: tuple[int, int] | None = None
    decided_through: int = 0
    """The workflow code has already seen ``events`` up to this id (a fused activity report
    that decided nothing new): no workflow task is needed for them."""


class _Builder:
    def __init__(self, state: RunState, now: float) -> None:
        self.next_id = state.last_event_id + 1
        self.now = now
        self.events: list[ev.Event] = []

    def add(self, cls: type[ev.Event], **fields: Any) -> None:
        event = cls(event_id=self.next_id, at=self.now, **fields)
        self.events.append(event)
        self.next_id += 1

    def decision(self, effects: tuple[Effect, ...] = ()) -> Decision:
        return Decision(APPLIED, tuple(self.events), effects)


def _ignored(reason: str, effects: tuple[Effect, ...] = ()) -> Decision:
    return Decision(IGNORED, effects=effects, reason=reason)


def _rejected(reason: str) -> Decision:
    return Decision(REJECTED, reason=reason)


def wft_retry_delay(attempt: int) -> float:
    """Backoff between workflow task retries: 1 s doubling, capped at 60 s."""
    return float(min(60.0, 2.0 ** max(0, min(attempt - 1, 10))))


def _timeout_failure(timeout_type: str, message: str) -> Failure:
    return Failure(
        message=message, type="TimeoutError", kind=FailureKind.TIMEOUT, timeout_type=timeout_type
    )
