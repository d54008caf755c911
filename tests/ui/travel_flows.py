"""A workflow for the time-travel tests: an activity that fails once, a timer, a signal wait,
and query handlers whose answers change along the way. Run by an in-process worker, and
given to ``df ui --workflows tests.ui.travel_flows:WORKFLOWS``."""

from __future__ import annotations

import durablefuture as df

TASK_QUEUE = "travel-tests"
RETRY = df.ActivityOptions(
    start_to_close_timeout=10,
    retry_policy=df.RetryPolicy(initial_interval=0.05, maximum_attempts=3),
)


def reserve(order_id: str) -> str:
    """Fails on its first attempt, so history holds a retry."""
    if df.activity_info().attempt == 1:
        raise df.ApplicationError("the warehouse is busy (attempt 1)")
    return f"R-{order_id}"


def travel_flow(order_id: str):  # type: ignore[no-untyped-def]
    progress = {"stage": "reserving", "reservation": None}
    df.workflow.set_query_handler("progress", lambda: dict(progress))
    df.workflow.set_query_handler("echo", lambda text: text)  # takes an argument
    reservation = yield df.activity(reserve, order_id, options=RETRY)  # @reserve
    progress.update(stage="cooling down", reservation=reservation)
    yield df.sleep(0.05)  # @sleep
    progress["stage"] = "waiting for approval"
    df.workflow.set_query_handler("approver", lambda: "nobody yet")
    decision = yield df.wait_signal("approve")  # @wait
    progress["stage"] = f"approved by {decision}"
    return {"reservation": reservation, "approved_by": decision}


WORKFLOWS = [travel_flow]
ACTIVITIES = [reserve]
