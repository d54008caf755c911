"""The step for one input of a schedule that exists (a tick that needs a whole step, or a
control request other than create and delete): the pure functions of ``core.schedules``,
given what the runtime knows (when the request was stored, the settings)."""

from __future__ import annotations

from collections.abc import Mapping

from durablefuture.codec.schedules import ScheduleInput
from durablefuture.core.errors import InvalidArgumentError
from durablefuture.core.schedule_asof import Change, as_of, step_as_of
from durablefuture.core.schedules import (
    Observed,
    ScheduleState,
    Step,
    apply_backfill,
    apply_pause,
    apply_trigger,
    apply_update,
    step,
)
from durablefuture.server.schedule_options import ScheduleOptions

__all__ = ["request_step"]


def request_step(
    state: ScheduleState,
    message: ScheduleInput,
    now: float,
    stored: float | None,
    observed: Mapping[str, Observed],
    options: ScheduleOptions,
) -> Step:
    """Apply ``message`` (stored by nats-server at ``stored``) to ``state`` at ``now``. An
    update, a pause and an unpause apply as of the time they were stored (``schedule_asof``);
    a request already applied (a redelivery) only steps the schedule."""
    poll, lead, keep = options.poll_interval, options.ahead, options.remember_for
    kind, req = message.kind, message.request_id
    if (req and req in state.requests) or kind == "tick":
        return step(state, now, observed, poll, lead)
    if kind == "update":
        schedule = message.schedule
        if schedule is None:
            raise InvalidArgumentError("update needs a schedule")

        def change(s: ScheduleState, at: float) -> ScheduleState:
            return apply_update(s, schedule, now, req, at, keep)

    elif kind in ("pause", "unpause"):
        pause, note = kind == "pause", message.note

        def change(s: ScheduleState, at: float) -> ScheduleState:
            return apply_pause(s, pause, note, now, req, at, keep)

    elif kind == "trigger":
        return apply_trigger(state, message.overlap, now, req, observed, poll, lead, keep)
    else:  # backfill
        if message.start is None or message.end is None:
            raise InvalidArgumentError("backfill needs a start and an end")
        return apply_backfill(
            state, message.start, message.end, message.overlap, now, req, observed, poll, lead, keep
        )
    applied: Change = change
    return step_as_of(state, applied, as_of(stored, state, now), now, observed, poll, lead)
