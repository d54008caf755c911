"""Approval: wait for a human decision (a signal), with a timeout that auto-rejects."""

from __future__ import annotations

from datetime import timedelta

import durablefuture as df


def notify_requester(request_id: str, decision: str) -> str:
    return f"request {request_id}: {decision}"


def approval_workflow(request_id: str, timeout_seconds: float = 3600.0):  # type: ignore[no-untyped-def]
    status = {"state": "waiting for a decision"}
    df.workflow.set_query_handler("status", lambda: status)
    try:
        decision = yield df.wait_signal("decision", timeout=timedelta(seconds=timeout_seconds))
    except df.TimeoutError:
        decision = "rejected (no decision in time)"
    status["state"] = decision
    message = yield df.activity(notify_requester, request_id, decision)
    return {"request_id": request_id, "decision": decision, "notified": message}


async def approve(handle: df.WorkflowHandle) -> None:
    """What ``df dev --run approval`` does while the workflow waits: a reviewer approves."""
    await handle.signal("decision", "approved")
