"""Workflow updates through df-server and df-worker processes (the cart example)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.testing import Replayer
from tests.conftest import Daemons, wait_for, wait_namespace
from workflows_examples.cart import cart_workflow


def counter() -> Generator[Any, Any, Any]:
    """Its ``bump`` handler raises on negative steps: the update fails, the run goes on."""
    total = [0]
    done: list[bool] = []

    def bump(step: int) -> int:
        if step < 0:
            raise ValueError(f"cannot bump by {step}")
        total[0] += step
        return total[0]

    df.workflow.set_update_handler("bump", bump)
    df.workflow.set_signal_handler("stop", lambda: done.append(True))
    yield df.wait_condition(lambda: bool(done))
    return total[0]


WORKFLOWS = [cart_workflow, counter]
WORKERS = (
    "--workflows",
    "tests.integration.test_updates:WORKFLOWS",
    "--activities",
    "workflows_examples:ACTIVITIES",
)


def _kinds(history: list[ev.Event]) -> list[str]:
    return [type(e).__name__ for e in history]


async def test_updates_return_results_reject_without_a_trace_and_are_idempotent(
    daemons: Daemons,
) -> None:
    daemons.server()
    worker = daemons.worker(*WORKERS)
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    client.request_timeout = 30
    try:
        await wait_for(lambda: "polling task queue" in worker.log(), 30)
        cart = await client.start_workflow(cart_workflow, "ann", id="cart", task_queue="tests")
        assert await cart.update("add_item", "apple", 2) == {"apple": 2}
        assert await cart.update("add_item", "pear", update_id="pear-1") == {"apple": 2, "pear": 1}
        before = await cart.fetch_history()
        # the validator rejects: nothing is recorded
        with pytest.raises(df.UpdateFailedError, match="unknown item 'caviar'"):
            await cart.update("add_item", "caviar")
        with pytest.raises(df.UpdateFailedError, match="no update handler 'nope'"):
            await cart.update("nope")
        assert await cart.fetch_history() == before
        # the same update id again: the first result, no second execution
        assert await cart.update("add_item", "pear", update_id="pear-1") == {"apple": 2, "pear": 1}
        assert await cart.query("items") == {"apple": 2, "pear": 1}
        assert await cart.update("remove_item", "pear") == {"apple": 2}
        await cart.signal("checkout")
        result = await cart.result(timeout=30)
        history = await cart.fetch_history()
    except BaseException:
        print(daemons.logs())
        raise
    finally:
        await client.close()
    assert result["items"] == {"apple": 2} and result["receipt"] == "charged ann 1.00"
    kinds = _kinds(history)
    assert kinds.count("UpdateAccepted") == 3 and kinds.count("UpdateCompleted") == 3
    done = [e for e in history if isinstance(e, ev.UpdateCompleted)]
    assert [d.name for d in done] == ["add_item", "add_item", "remove_item"]
    assert all(d.failure is None for d in done)
    Replayer([cart_workflow]).replay(history)


async def test_an_update_whose_handler_raises_fails_the_update_not_the_run(
    daemons: Daemons,
) -> None:
    daemons.server()
    worker = daemons.worker(*WORKERS)
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    client.request_timeout = 30
    try:
        await wait_for(lambda: "polling task queue" in worker.log(), 30)
        run = await client.start_workflow(counter, id="counter", task_queue="tests")
        assert await run.update("bump", 2) == 2
        with pytest.raises(df.UpdateFailedError, match="cannot bump by -1") as failed:
            await run.update("bump", -1, update_id="neg")
        cause = failed.value.__cause__
        assert isinstance(cause, df.ApplicationError) and cause.type == "ValueError"
        # asked again with the same id: the recorded failure, the handler does not run again
        with pytest.raises(df.UpdateFailedError, match="cannot bump by -1"):
            await run.update("bump", -1, update_id="neg")
        assert await run.update("bump", 3) == 5
        await run.signal("stop")
        assert await run.result(timeout=30) == 5
        history = await run.fetch_history()
    finally:
        await client.close()
    failed_events = [e for e in history if isinstance(e, ev.UpdateCompleted) and e.failure]
    assert [e.update_id for e in failed_events] == ["neg"]
    assert _kinds(history).count("UpdateAccepted") == 3
    Replayer([counter]).replay(history)
