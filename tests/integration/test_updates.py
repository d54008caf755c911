"""Workflow updates through df-server and df-worker processes (the cart example)."""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

import orjson
import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.server import ServerOptions
from durablefuture.testing import LocalEnvironment, Replayer
from durablefuture.ui.timeline import build_timeline
from tests.conftest import Daemons, wait_for, wait_namespace
from tests.integration.test_cli import df_cli
from workflows_examples import ACTIVITIES, TASK_QUEUE
from workflows_examples import WORKFLOWS as EXAMPLE_WORKFLOWS
from workflows_examples.cart import cart_workflow, charge_cart


def counter() -> Generator[Any, Any, Any]:
    """Its ``bump`` handler raises on negative steps: the update fails, the run goes on."""
    total = [0]
    done: list[bool] = []

    def bump(step: int) -> int:
        if step < 0:
            raise ValueError(f"cannot bump by {step}")
        total[0] += step
        return total[0]

    def charge(amount: float) -> Generator[Any, Any, Any]:
        # a generator handler: its activity runs on an activity worker, then it returns
        receipt = yield df.activity(charge_cart, "counter", amount)
        total[0] += int(amount)
        return receipt

    df.workflow.set_update_handler("bump", bump)
    df.workflow.set_update_handler("charge", charge)
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
        with pytest.raises(df.UpdateFailedError, match="has finished"):
            await cart.update("add_item", "bread")  # a closed run takes no update
        assert await cart.fetch_history() == history
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
        assert await run.update("charge", 4.0) == "charged counter 4.00"
        await run.signal("stop")
        assert await run.result(timeout=30) == 9
        history = await run.fetch_history()
    finally:
        await client.close()
    failed_events = [e for e in history if isinstance(e, ev.UpdateCompleted) and e.failure]
    assert [e.update_id for e in failed_events] == ["neg"]
    assert _kinds(history).count("UpdateAccepted") == 4
    assert _kinds(history).count("ActivityScheduled") == 1
    Replayer([counter]).replay(history)


async def test_df_workflow_update_df_why_and_the_timeline_show_updates() -> None:
    # the update waits for a worker that has left; its task is sent to the task queue once that
    # one has been gone for the sticky timeout (1 s here, 5 s by default)
    async with LocalEnvironment(server_options=ServerOptions(sticky_timeout=1.0)) as env:
        async with env.worker(
            task_queue=TASK_QUEUE, workflows=EXAMPLE_WORKFLOWS, activities=ACTIVITIES
        ):
            cart = await env.client.start_workflow(
                cart_workflow, "cli", id="cli-cart", task_queue=TASK_QUEUE
            )
            out = await df_cli(
                env, "workflow", "update", "cli-cart", "add_item", "--input", '["apple", 2]'
            )
            assert out.returncode == 0, out.stderr
            assert orjson.loads(out.stdout) == {"apple": 2}
            out = await df_cli(
                env, "workflow", "update", "cli-cart", "add_item", "--input", '["caviar"]'
            )
            assert out.returncode != 0 and "unknown item 'caviar'" in out.stderr, out.stderr
        # no worker now: an update accepted while its worker is gone stays open, and df why
        # says so (the client checks updates with a worker first: send the recorded input)
        run_id = await env.client.latest_run_id("cli-cart")
        await cart._send(inp.AcceptUpdate(run_id, "pending-1", "add_item", ("bread",)))
        out = await df_cli(env, "why", "cli-cart", json=False)
        assert "update 'add_item' (id 'pending-1', accepted at event" in out.stdout, out.stdout
        history = await cart.fetch_history()
        timeline = build_timeline(history, time.time())
        labels = [m["label"] for m in timeline["markers"]]  # type: ignore[index,union-attr]
        assert "update 'add_item' accepted" in labels
        assert "update 'add_item' id=" in " ".join(labels)  # the completion, from the vocabulary
        # a worker comes back: the open update completes and its caller can still wait for it
        async with env.worker(
            task_queue=TASK_QUEUE, workflows=EXAMPLE_WORKFLOWS, activities=ACTIVITIES
        ):
            got = await cart.update("add_item", "bread", update_id="pending-1", timeout=30)
            assert got == {"apple": 2, "bread": 1}
            await cart.signal("checkout")
            assert (await cart.result(timeout=30))["total"] == 3.25
