"""A change to a schedule (an update, a pause, an unpause) applied as of the time it was asked
for, not the time df-server got to it.

A request can wait in the stream: no df-server ran, or the one that took it died and its
redelivery came after the ack wait. Applied as of the time it was handled, every fire time in
between would be passed over: neither started nor recorded. So ``step_as_of`` steps the old
definition up to ``at`` (the time nats-server stored the request, see ``as_of``), applies the
change there, and steps the new definition on to ``now``. Both parts judge lateness at
``now``: a fire time older than the catch-up window is recorded as missed, with its reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from attrs import evolve

from durablefuture.core.schedule_draft import Draft
from durablefuture.core.schedule_model import Observed, ScheduleState, Step
from durablefuture.core.schedules import step

__all__ = ["Change", "as_of", "step_as_of"]

Change = Callable[[ScheduleState, float], ScheduleState]
"""The change, given the state stepped up to a time and that time (it applies there)."""


def as_of(stored: float | None, state: ScheduleState, now: float) -> float:
    """When a request stored at ``stored`` (None: unknown) takes effect: then, but not before
    the times the record has handled already, nor after ``now``."""
    if stored is None:
        return now
    return min(now, max(stored, state.processed_upto))


def step_as_of(
    state: ScheduleState,
    change: Change,
    at: float,
    now: float,
    observed: Mapping[str, Observed],
    poll: float = 5.0,
    lead: float = 0.0,
) -> Step:
    """The old definition stepped to ``at`` (as judged at ``now``), then ``change`` applied at
    ``at``, then the new definition stepped to ``now``: one step, its effects those of both.

    At most ``MAX_STEPS`` of the old definition's times are handled: if more were due before
    ``at``, the change applies as of the last one handled (and its journal entry says when).
    """
    at = min(at, now)
    d = Draft(state, now)
    d.observe(observed)
    upto = state.processed_upto
    if d.paused:  # nothing of the old definition is taken up to ``at``
        upto = max(upto, at)
    else:
        upto = d.take_due(upto, state.schedule.policy.overlap, 0.0, until=at)
        at = min(at, upto)
    d.drain_buffer()
    d.s = evolve(state, processed_upto=upto)
    before = d.finish(poll)
    after = step(change(before.state, at), now, {}, poll, lead)
    return Step(
        after.state,
        after.effects,
        after.wake_at,
        before.taken + after.taken,
        before.skipped + after.skipped,
        before.missed + after.missed,
        before.lateness + after.lateness,
    )
