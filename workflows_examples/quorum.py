"""Quorum: wait until enough reviewers approved (signals), or give up after a deadline.

A signal handler only changes state; ``df.wait_condition`` waits on that state with a
durable timeout, so "two approvals or two days" needs no hand-written loop.
"""

from __future__ import annotations

from datetime import timedelta

import durablefuture as df
from workflows_examples.approval import notify_requester


def quorum_workflow(request_id: str, needed: int = 2, timeout_seconds: float = 172800.0):  # type: ignore[no-untyped-def]
    approvers: list[str] = []
    df.workflow.set_signal_handler("approve", approvers.append)
    df.workflow.set_query_handler("approvers", lambda: approvers)
    quorum = yield df.wait_condition(
        lambda: len(set(approvers)) >= needed, timeout=timedelta(seconds=timeout_seconds)
    )
    decision = "approved" if quorum else "expired"
    yield df.activity(notify_requester, request_id, decision)
    return {"request_id": request_id, "decision": decision, "approvers": sorted(set(approvers))}


async def two_reviewers(handle: df.WorkflowHandle) -> None:
    """What ``df dev --run quorum`` does while the workflow waits: two reviewers approve."""
    await handle.signal("approve", "ann")
    await handle.signal("approve", "ann")  # the same reviewer twice counts once
    await handle.signal("approve", "bob")
