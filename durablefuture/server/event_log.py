"""Metrics and log lines of the events df-server records."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from durablefuture import metrics
from durablefuture.core import events as ev
from durablefuture.core.state import status_of
from durablefuture.server.runs import RunCache

__all__ = ["count_events"]

log = logging.getLogger("durablefuture.server")

_NOTEWORTHY = (
    ev.ActivityRetryScheduled,
    ev.ActivityFailed,
    ev.ActivityTimedOut,
    ev.WorkflowTaskFailed,
    *ev.TERMINAL_EVENTS,
)
"""Events logged at info level; every other recorded event is logged at debug."""


def count_events(ns: str, cache: RunCache, events: Sequence[ev.Event]) -> None:
    """Metrics and one log line per recorded event (debug; failures and closes at info)."""
    for e in events:
        _log_event(cache, e)
        if isinstance(e, ev.ActivityCompleted):
            metrics.ACTIVITY_OUTCOMES.inc(ns, "completed")
        elif isinstance(e, ev.ActivityRetryScheduled):
            metrics.ACTIVITY_OUTCOMES.inc(ns, "retried")
            if e.failure.timeout_type:
                metrics.ACTIVITY_TIMEOUTS.inc(ns, e.failure.timeout_type)
        elif isinstance(e, ev.ActivityFailed):
            metrics.ACTIVITY_OUTCOMES.inc(ns, "failed")
        elif isinstance(e, ev.ActivityTimedOut):
            metrics.ACTIVITY_OUTCOMES.inc(ns, "timed_out")
            metrics.ACTIVITY_TIMEOUTS.inc(ns, e.timeout_type)
        elif isinstance(e, ev.TERMINAL_EVENTS):
            metrics.WORKFLOWS_CLOSED.inc(ns, status_of(e))


def _log_event(cache: RunCache, e: ev.Event) -> None:
    important = isinstance(e, _NOTEWORTHY)
    level = logging.INFO if important else logging.DEBUG
    if not log.isEnabledFor(level):
        return
    extra: dict[str, object] = {
        "workflow_id": cache.workflow_id,
        "run_id": cache.state.run_id,
        "event_id": e.event_id,
        "event": type(e).__name__,
    }
    seq = getattr(e, "seq", None)
    if seq is not None:
        extra["command_id"] = seq
        if isinstance(e, ev.ACTIVITY_EVENTS):
            extra["activity_id"] = seq
    attempt = getattr(e, "attempt", None)
    if attempt is not None:
        extra["attempt"] = attempt
    failure = getattr(e, "failure", None)
    if failure is not None:
        extra["error"] = failure.describe()
    log.log(level, "recorded %s", type(e).__name__, extra=extra)
