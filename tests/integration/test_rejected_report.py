"""A workflow-task report the server rejects must not cost the run its next workflow task.

The race (seen after a nats-server restart): a worker answers a redelivered workflow task from
a cached generator that has already seen an activity result the server has not stored yet; the
server rejects that report ("based on event 3 but history has only 2 events"). A moment later
the result is stored and a workflow task is dispatched. The answer to that task has the same
`based_on` as the rejected report, and it must be recorded, not dropped as its duplicate.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import durablefuture as df
from durablefuture.codec.wire import WorkflowTaskMessage
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.commands import CompleteWorkflow
from durablefuture.core.effects import WorkflowTask
from durablefuture.server.options import ServerOptions
from durablefuture.testing import LocalEnvironment
from tests.conftest import wait_for

pytestmark = pytest.mark.asyncio

_gate: asyncio.Event | None = None


async def gated(tag: str) -> str:
    assert _gate is not None
    await _gate.wait()
    return f"{tag} done"


def gated_flow(tag: str):  # type: ignore[no-untyped-def]
    return (yield df.activity(gated, tag, options=df.ActivityOptions(start_to_close_timeout=30)))


async def test_an_answer_with_the_same_base_as_a_rejected_report_is_recorded() -> None:
    global _gate
    _gate = asyncio.Event()
    async with LocalEnvironment() as env:
        server = env.server
        assert server is not None
        # workflow code and activities on separate workers: the result reaches the server as a
        # plain report, and the workflow worker answers the workflow task it causes
        async with (
            env.worker(task_queue="q", workflows=[gated_flow]) as wf_worker,
            env.worker(task_queue="q", activities=[gated]),
        ):
            handle = await env.client.start_workflow(gated_flow, "race", id="race", task_queue="q")
            run_id = handle.run_id or ""

            async def scheduled() -> bool:
                return any(
                    isinstance(e, ev.ActivityScheduled) for e in await handle.fetch_history()
                )

            await wait_for(scheduled, 10)
            # what the worker sends when it answers a redelivered first workflow task from a
            # generator that already saw the (not yet stored) result: based on event 3
            early = inp.CompleteWorkflowTask(
                run_id, 3, (CompleteWorkflow("race done"),), wf_worker.identity
            )
            first_task = WorkflowTask(
                env.client.layout.namespace, "race", run_id, "gated_flow", "q", trigger=1
            )
            await wf_worker._reports.send("race", early, task=WorkflowTaskMessage(first_task))
            await wait_for(lambda: server.stats["rejected"] >= 1, 10)
            _gate.set()  # the result is stored now; a workflow task follows
            assert await handle.result(timeout=15) == "race done"
            history = await handle.fetch_history()
    assert [type(e) for e in history] == [
        ev.WorkflowStarted,
        ev.ActivityScheduled,
        ev.ActivityCompleted,
        ev.WorkflowCompleted,
    ]


async def test_a_redelivered_workflow_task_is_not_answered_from_an_unconfirmed_result() -> None:
    """The worker that runs both the workflow and its activity feeds the result to its cached
    generator and reports it with the decisions. Until the server records that report, a copy
    of an earlier workflow task (redelivered after a nats-server restart) must not be answered
    from the generator: that answer would be based on an event history does not have."""
    global _gate
    _gate = asyncio.Event()
    release = asyncio.Event()
    # eager start off: the test redelivers the run's first workflow task as stored
    options = ServerOptions(namespace="default", status_delay=0, eager_start_wait=0)
    async with LocalEnvironment(server_options=options) as env:
        server = env.server
        assert server is not None
        handle_input = server._handle_run_input

        async def held(workflow_id: str, message: inp.RunInput, *args: Any, **kw: Any) -> Any:
            if isinstance(message, inp.CompleteActivityTask):
                await release.wait()  # the result's report is stored, not yet recorded
            return await handle_input(workflow_id, message, *args, **kw)

        server._handle_run_input = held  # type: ignore[method-assign]
        layout = env.client.layout
        js = env.client.pub.js
        async with env.worker(task_queue="q", workflows=[gated_flow], activities=[gated]) as w:
            handle = await env.client.start_workflow(
                gated_flow, "fused", id="fused", task_queue="q"
            )

            async def scheduled() -> bool:
                history = await handle.fetch_history()
                return any(isinstance(e, ev.ActivityScheduled) for e in history)

            await wait_for(scheduled, 10)  # the first workflow task was answered, so it exists
            first_task = await js.get_last_msg(layout.stream, layout.workflow_tasks("q"))
            _gate.set()
            await wait_for(lambda: w.stats["activity_tasks"] == 1 and not w._running, 10)
            # the first workflow task again, as a restarted nats-server may hand it out
            await env.client.pub.publish(layout.workflow_tasks("q"), first_task.data or b"")
            wf_consumer = layout.workflow_consumer("q")

            async def answered() -> bool:  # handled and acked
                info = await js.consumer_info(layout.stream, wf_consumer)
                return info.num_pending == 0 and info.num_ack_pending == 0

            await wait_for(lambda: w.stats["workflow_tasks"] == 2, 10)
            await wait_for(answered, 10)
            release.set()
            assert await handle.result(timeout=15) == "fused done"
            assert server.stats["rejected"] == 0
