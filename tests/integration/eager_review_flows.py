"""Workflows of the eager review tests (imported by daemon subprocesses too)."""

from __future__ import annotations

from datetime import timedelta

import durablefuture as df
from tests.integration.eager_flows import logged_step


def step_then_sleep(tag: str):  # type: ignore[no-untyped-def]
    """One logged step, then a durable sleep: the batch recording the step's outcome has the
    timer as its only effect."""
    opts = df.ActivityOptions(start_to_close_timeout=timedelta(seconds=60))
    done = yield df.activity(logged_step, tag, 0, options=opts)
    yield df.sleep(0.2)
    return done
