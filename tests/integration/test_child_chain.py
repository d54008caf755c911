"""A parent's close policy and cancellation reach its child's latest run, after the child
continued as new (a child is its chain of runs, not the run that first started)."""

from __future__ import annotations

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.testing import LocalEnvironment
from tests.conftest import wait_for


def chained_child(n: int):  # type: ignore[no-untyped-def]
    if n == 0:
        yield df.continue_as_new(1)
    return (yield df.wait_signal("finish", timeout=3600))


def closing_parent(policy: str):  # type: ignore[no-untyped-def]
    child = df.child_workflow(
        chained_child,
        0,
        id=f"{df.workflow.info().workflow_id}-child",
        parent_close_policy=df.ParentClosePolicy(policy),
    )
    index, _ = yield df.any_of(child, df.wait_signal("close"))
    return index


async def _second_run_waits(client: df.Client, wid: str) -> bool:
    try:
        history = await client.get_workflow_handle(wid).fetch_history()
    except df.WorkflowNotFoundError:
        return False
    started = history[0]
    return (
        isinstance(started, ev.WorkflowStarted)
        and started.continued_from is not None
        and any(isinstance(e, ev.SignalWaitStarted) for e in history)
    )


@pytest.mark.parametrize(
    ("policy", "error"),
    [("terminate", df.WorkflowTerminatedError), ("request_cancel", df.WorkflowCancelledError)],
)
async def test_parent_close_policy_reaches_the_child_after_continue_as_new(
    policy: str, error: type[Exception]
) -> None:
    async with LocalEnvironment() as env:
        client = env.client
        async with env.worker(workflows=[closing_parent, chained_child]):
            parent = await client.start_workflow(closing_parent, policy, id=f"p-{policy}")
            await wait_for(lambda: _second_run_waits(client, f"p-{policy}-child"), 15)
            await parent.signal("close")
            assert await parent.result(timeout=15) == 1
            with pytest.raises(error):
                await client.get_workflow_handle(f"p-{policy}-child").result(timeout=15)
