"""The server's state machine, as pure functions.

``decide(state, input, now)`` returns the events an input adds to a run's history (or says why
it adds none: a duplicate, a stale or late report, an impossible request). After the server has
appended those events, ``effects_for(state, events)`` says what to do about them: dispatch
tasks, arm timers, notify a parent, start the next run. Effects are derived, never stored, so a
redelivered input whose events are already in history simply has its effects derived again.

``decide_start`` arbitrates a start request against the latest run of the same workflow id
(reuse policy, idempotent retries, signal-with-start).

Layout: ``_decision`` (the Decision type and its outcomes), ``_dispatch`` (``decide``: which
handler an input goes to), ``_workflow_tasks`` (recording a workflow task's commands),
``_activities`` (activity attempts, retries and timeouts), ``_timers`` (a due durable timer),
``_effects`` (``effects_for``, ``effects_again``), ``_starts`` (``decide_start``, ``start_events``).
"""

from __future__ import annotations

from durablefuture.core.effects import activity_task
from durablefuture.core.orchestration._decision import (
    APPLIED,
    DUPLICATE,
    IGNORED,
    REJECTED,
    TIMER_TOLERANCE,
    Decision,
    wft_retry_delay,
)
from durablefuture.core.orchestration._dispatch import decide
from durablefuture.core.orchestration._effects import effects_again, effects_for
from durablefuture.core.orchestration._starts import (
    LatestRun,
    StartDecision,
    decide_start,
    start_events,
)

__all__ = [
    "APPLIED",
    "DUPLICATE",
    "IGNORED",
    "REJECTED",
    "TIMER_TOLERANCE",
    "Decision",
    "LatestRun",
    "StartDecision",
    "activity_task",
    "decide",
    "decide_start",
    "effects_again",
    "effects_for",
    "start_events",
    "wft_retry_delay",
]
