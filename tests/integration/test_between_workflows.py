"""Workflows that signal and cancel other workflows, through df-server and df-worker."""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

import pytest

import durablefuture as df
from durablefuture.codec.wire import InputEnvelope, default_codec
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.definitions import WorkflowDefinition
from durablefuture.core.inputs import DECIDED_AT_MARGIN
from durablefuture.core.replay import WorkflowExecution
from durablefuture.testing import LocalEnvironment, Replayer
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


CODEC = default_codec()
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
    finally:
        await client.close()
    assert parts == [f"part {i}: done" for i in range(1, 5)]
    assert len([e for e in coord_history if isinstance(e, ev.ExternalWorkflowSignalled)]) == 4
    assert asked == "asked" and cleaned == "victim"
    (cancel,) = [e for e in victim_history if isinstance(e, ev.CancelRequested)]
    assert cancel.reason == "the order was withdrawn"
    Replayer(WORKFLOWS).replay(coord_history)
    Replayer(WORKFLOWS).replay(victim_history)


def waiter() -> Generator[Any, Any, Any]:
    return (yield df.wait_signal("go"))


def sender(target: str, how: str) -> Generator[Any, Any, Any]:
    if how == "signal":
        yield df.signal_workflow(target, "go", "meant for the first run")
    else:
        yield df.cancel_workflow(target, "meant for the first run")
    return "sent"


async def _until(h: df.WorkflowHandle, kind: type) -> None:
    async def there() -> bool:
        return any(isinstance(e, kind) for e in await h.fetch_history())

    await wait_for(there, 15)


@pytest.mark.parametrize("how", ["signal", "cancel"])
async def test_an_input_derived_again_late_never_reaches_a_newer_run(how: str) -> None:
    """A workflow signals (or cancels) workflow ``t``; its first run takes it and closes, and
    a new run of ``t`` starts. Then the sender's report comes back (a stored report
    delivered again, as after a df-server that died before acknowledging it), past
    JetStream's duplicate window (shortened to 1 s on this stream): its effects are derived
    again and the input is sent again, for "the current run" of ``t``. That run started
    after the input was decided: it gets nothing, as no run got anything had the input
    first arrived between the two runs; it completes on its own signal."""
    async with LocalEnvironment() as env:
        server = env.server
        assert server is not None
        client = env.client
        js, layout = client.pub.js, client.layout
        config = (await js.stream_info(layout.stream)).config
        config.duplicate_window = 1.0
        await js.update_stream(config)
        async with env.worker(workflows=[waiter, sender]):
            first = await client.start_workflow(waiter, id="t")
            await _until(first, ev.SignalWaitStarted)
            src = await client.start_workflow(sender, "t", how, id="src")
            assert await src.result(timeout=20) == "sent"
            if how == "signal":
                assert await first.result(timeout=20) == "meant for the first run"
            else:
                with pytest.raises(df.WorkflowCancelledError):
                    await first.result(timeout=20)
            history = await src.fetch_history()
            (sent,) = [
                e
                for e in history
                if isinstance(e, ev.ExternalWorkflowSignalled | ev.ExternalCancelRequested)
            ]

            # JetStream forgets the input's message id (a probe stored after it is forgotten)
            probe = f"{layout.prefix}.probe.late-input"

            async def forgotten() -> bool:
                ack = await js.publish(probe, b"", headers={"Nats-Msg-Id": "probe"})
                return not ack.duplicate

            assert await forgotten()
            await wait_for(forgotten, 10, interval=0.2)
            # and the new run starts later than the decision by more than the clock margin
            await wait_for(lambda: time.time() > sent.at + DECIDED_AT_MARGIN + 0.1, 15)
            second = await client.start_workflow(waiter, id="t")
            assert second.run_id != first.run_id
            await _until(second, ev.SignalWaitStarted)
            started = (await second.fetch_history())[0]
            assert isinstance(started, ev.WorkflowStarted)
            assert started.at > sent.at + DECIDED_AT_MARGIN

            # the sender's decision report, stored again
            execution = WorkflowExecution(WorkflowDefinition.from_fn(sender), CODEC.payloads)
            activation = execution.feed([e for e in history if e.event_id < sent.event_id])
            run = src.run_id or ""
            report = inp.CompleteWorkflowTask(run, activation.based_on, activation.commands, "x")
            assert report.based_on == sent.based_on
            duplicates, ignored = server.stats["duplicates"], server.stats["ignored"]
            data = CODEC.encode_input(InputEnvelope("src", input=report))
            await js.publish(layout.input("report"), data, headers={"Nats-Msg-Id": "late"})

            async def handled() -> bool:
                kinds = [type(e) for e in await second.fetch_history()]
                late = ev.SignalReceived in kinds or ev.CancelRequested in kinds
                return server.stats["duplicates"] > duplicates and (
                    late or server.stats["ignored"] > ignored
                )

            await wait_for(handled, 20)
            kinds = [type(e) for e in await second.fetch_history()]
            assert ev.SignalReceived not in kinds and ev.CancelRequested not in kinds
            await second.signal("go", "for the second run")
            assert await second.result(timeout=20) == "for the second run"
        src_kinds = [type(e) for e in await src.fetch_history()]
        assert src_kinds.count(ev.WorkflowCompleted) == 1
        first_kinds = [type(e) for e in await first.fetch_history()]
        assert first_kinds.count(ev.SignalReceived) + first_kinds.count(ev.CancelRequested) == 1
        second_kinds = [type(e) for e in await second.fetch_history()]
        assert second_kinds.count(ev.SignalReceived) == 1
        assert second_kinds.count(ev.WorkflowCompleted) == 1
        assert ev.CancelRequested not in second_kinds
