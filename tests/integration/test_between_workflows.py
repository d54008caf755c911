"""Workflows that signal and cancel other workflows, through df-server and df-worker."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.testing import Replayer
from tests.conftest import Daemons, wait_for, wait_namespace
from workflows_examples.coordinator import coordinator_workflow, part_workflow


def victim() -> Generator[Any, Any, Any]:
    try:
        yield df.wait_signal("never")
    except df.CancelledError:
        yield df.signal_workflow("observer", "victim cleaned up", df.workflow.info().workflow_id)
        raise


def observer() -> Generator[Any, Any, Any]:
    return (yield df.wait_signal("victim cleaned up"))


def canceller(target: str) -> Generator[Any, Any, Any]:
    yield df.cancel_workflow(target, "the order was withdrawn")
    return "asked"


WORKFLOWS = [coordinator_workflow, part_workflow, victim, observer, canceller]


async def test_signal_and_cancel_other_workflows_through_the_daemons(daemons: Daemons) -> None:
    daemons.server()
    worker = daemons.worker("--workflows", "tests.integration.test_between_workflows:WORKFLOWS")
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    client.request_timeout = 30
    try:
        await wait_for(lambda: "polling task queue" in worker.log(), 30)
        parts = await client.execute_workflow(
            coordinator_workflow, 4, id="coord", task_queue="tests", timeout=60
        )
        coord_history = await client.get_workflow_handle("coord").fetch_history()
        watching = await client.start_workflow(observer, id="observer", task_queue="tests")
        doomed = await client.start_workflow(victim, id="victim", task_queue="tests")

        async def waiting() -> bool:
            return any(isinstance(e, ev.SignalWaitStarted) for e in await doomed.fetch_history())

        await wait_for(waiting, 20)
        asked = await client.execute_workflow(
            canceller, "victim", id="canceller", task_queue="tests", timeout=30
        )
        with pytest.raises(df.WorkflowCancelledError):
            await doomed.result(timeout=30)
        cleaned = await watching.result(timeout=30)
        victim_history = await doomed.fetch_history()
    except BaseException:
        print(daemons.logs())
        raise
    finally:
        await client.close()
    assert parts == [f"part {i}: done" for i in range(1, 5)]
    assert len([e for e in coord_history if isinstance(e, ev.ExternalWorkflowSignalled)]) == 4
    assert asked == "asked" and cleaned == "victim"
    (cancel,) = [e for e in victim_history if isinstance(e, ev.CancelRequested)]
    assert cancel.reason == "the order was withdrawn"
    Replayer(WORKFLOWS).replay(coord_history)
    Replayer(WORKFLOWS).replay(victim_history)
