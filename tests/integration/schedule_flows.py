"""Workflows the schedule policy tests run in a df-worker process
(``--workflows tests.integration.schedule_flows:WORKFLOWS``)."""

from __future__ import annotations

import durablefuture as df

TASK_QUEUE = "sched"


def gated(n: int):  # type: ignore[no-untyped-def]
    """Runs until signalled ``go``; then completes (``"ok"``) or fails (``"fail"``)."""
    verdict = yield df.wait_signal("go", timeout=600)
    if verdict == "fail":
        raise df.ApplicationError("told to fail", type="ToldToFail", non_retryable=True)
    return n


WORKFLOWS = [gated]
