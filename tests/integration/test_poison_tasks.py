"""Tasks and inputs whose every handling kills the process handling it (a poison workflow,
activity or input: its code SIGKILLs, OOM-kills or exits its worker / df-server) end with a
recorded reason, never silently stuck once the consumer's ``max_deliver`` is reached.

The daemons run ``tests/integration/poison.py``; a daemon that dies is replaced (a bounded
number of times), as a supervisor would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.core.effects import RunStatus
from durablefuture.core.failure import WORKER_LOST
from durablefuture.diagnose import explain
from durablefuture.natsserver import NatsServer
from tests.conftest import Daemon, Daemons, connected, wait_for
from tests.integration.poison import doomed as doomed_workflow

MAX_DAEMONS = 12


class Supervisor:
    """Keeps one poison daemon of a kind running: a dead one is replaced (at most
    MAX_DAEMONS), with the environment ``env`` holds when it is replaced."""

    def __init__(self, daemons: Daemons, args: list[str], env: dict[str, str]):
        self.daemons = daemons
        self.args = args
        self.env = env
        self.started: list[Daemon] = []
        self.spawn()

    def spawn(self) -> None:
        assert len(self.started) < MAX_DAEMONS, "too many daemons died:\n" + self.daemons.logs()
        name = f"poison{len(self.daemons.started)}"
        args = ["tests.integration.poison", *self.args]
        self.started.append(self.daemons.special(name, *args, env=dict(self.env)))

    @property
    def died(self) -> int:
        return sum(d.proc is not None and d.proc.poll() is not None for d in self.started)

    def keep_alive(self) -> None:
        last = self.started[-1]
        if last.proc is not None and last.proc.poll() is not None:
            self.spawn()

    def replace_all(self, env: dict[str, str]) -> None:
        """Deploy other code: every running daemon is killed, one with ``env`` started."""
        self.env = env
        for d in self.started:
            d.kill()
        self.spawn()


async def until(sup: Supervisor, predicate: Callable[[], object], timeout: float) -> None:
    async def check() -> bool:
        sup.keep_alive()
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        return bool(value)

    await wait_for(check, timeout, interval=0.1)  # failing: `connected` prints the logs


async def test_a_workflow_task_that_kills_each_worker_is_recorded_failed_and_retried(
    daemons: Daemons,
) -> None:
    daemons.server()
    async with connected(daemons) as client:
        poisoned = {**daemons.env, "DF_TEST_POISON_WORKFLOW": "1"}
        # consumers allowing 4 deliveries: a task is given up on after 2
        sup = Supervisor(daemons, ["worker", daemons.url, "4", "workflows"], poisoned)
        handle = await client.start_workflow("doomed", "ann", id="doomed", task_queue="poison")

        async def failure_recorded() -> bool:
            return (await handle.describe()).last_workflow_task_failure is not None

        await until(sup, failure_recorded, 60)
        assert sup.died >= 2
        d = await handle.describe()
        assert d.status == RunStatus.RUNNING  # retried with backoff, not closed
        failure = d.last_workflow_task_failure
        assert failure is not None and failure.type == WORKER_LOST
        assert "delivered 2 times" in failure.message and "died" in failure.message
        why = await explain(client, "doomed")
        assert WORKER_LOST in why.reasons[0] and "delivered 2 times" in why.reasons[0]
        assert "does not kill its worker process" in why.reasons[0]
        layout = client.layout
        dead = await client.pub.js.get_last_msg(layout.stream, layout.dead_letter("worker"))
        assert "delivered 2 times" in (dead.headers or {}).get("Df-Reason", "")

        # code that does not kill its worker is deployed: the run goes on from its history
        sup.replace_all(daemons.env)
        result = asyncio.ensure_future(handle.result(timeout=90))
        await until(sup, result.done, 95)
        assert result.result() == "hello ann"
        history = await handle.fetch_history()
        assert sum(isinstance(e, ev.WorkflowCompleted) for e in history) == 1
        failed = [e for e in history if isinstance(e, ev.WorkflowTaskFailed)]
        assert failed and all(e.failure.type == WORKER_LOST for e in failed)


async def test_an_activity_that_kills_each_worker_fails_its_attempts_per_retry_policy(
    daemons: Daemons,
) -> None:
    daemons.server()
    async with connected(daemons) as client:
        Supervisor(daemons, ["worker", daemons.url, "4", "workflows"], daemons.env)
        poisoned = {**daemons.env, "DF_TEST_POISON_ACTIVITY": "1"}
        sup = Supervisor(daemons, ["worker", daemons.url, "4", "activities"], poisoned)
        handle = await client.start_workflow(
            "calls_doomed_activity", "bob", id="doomed-activity", task_queue="poison"
        )
        result = asyncio.ensure_future(handle.result(timeout=90))
        await until(sup, result.done, 95)
        with pytest.raises(df.WorkflowFailedError) as failed:
            result.result()
        assert sup.died >= 2  # one per attempt
        history = await handle.fetch_history()
        (retry,) = (e for e in history if isinstance(e, ev.ActivityRetryScheduled))
        assert retry.attempt == 1 and "stopped responding" in retry.failure.message
        (timed_out,) = (e for e in history if isinstance(e, ev.ActivityTimedOut))
        assert timed_out.attempt == 2 and "stopped responding" in timed_out.failure.message
        assert "stopped responding" in str(failed.value.cause)
        assert sum(isinstance(e, ev.WorkflowFailed) for e in history) == 1


async def test_an_input_that_kills_each_df_server_is_dead_lettered_with_its_reason(
    daemons: Daemons,
) -> None:
    # an input consumer allowing 4 deliveries: a failing input is given up on after 3
    sup = Supervisor(daemons, ["server", daemons.url, "4"], daemons.env)
    async with connected(daemons) as client:
        Supervisor(daemons, ["worker", daemons.url, "20", "workflows"], daemons.env)
        handle = await client.start_workflow(
            "waits_for_go", id="poisoned-input", task_queue="poison"
        )
        poison = asyncio.ensure_future(handle.signal("poison"))
        poison.add_done_callback(lambda f: f.cancelled() or f.exception())  # no answer: fine
        layout = client.layout

        async def dead_lettered() -> bool:
            try:
                await client.pub.js.get_last_msg(layout.stream, layout.dead_letter("server-input"))
                return True
            except Exception:
                return False

        await until(sup, dead_lettered, 60)
        assert sup.died == 3
        dead = await client.pub.js.get_last_msg(layout.stream, layout.dead_letter("server-input"))
        reason = (dead.headers or {}).get("Df-Reason", "")
        assert "delivered 3 times" in reason and "died" in reason
        poison.cancel()
        await handle.signal("go", "on")
        result = asyncio.ensure_future(handle.result(timeout=30))
        await until(sup, result.done, 35)
        assert result.result() == "on"
        history = await handle.fetch_history()
        signals = [e.name for e in history if isinstance(e, ev.SignalReceived)]
        assert signals == ["go"]


async def test_the_give_up_limit_follows_the_consumer_as_created(env: object) -> None:
    """A worker binding a task consumer another worker created with other settings gives up
    below that consumer's max_deliver, not its own."""
    from durablefuture.testing import LocalEnvironment
    from durablefuture.transport.layout import ConsumerSettings, ensure_consumer

    assert isinstance(env, LocalEnvironment)
    js, layout = env.client.pub.js, env.client.layout
    name, subject = layout.workflow_consumer("q"), layout.workflow_tasks("q")
    assert await ensure_consumer(js, layout, name, subject, ConsumerSettings(1.0, 4)) == 4
    assert await ensure_consumer(js, layout, name, subject, ConsumerSettings(1.0, 20)) == 4


async def test_a_worker_refuses_a_max_deliver_that_leaves_no_room_to_give_up(env: object) -> None:
    from durablefuture.testing import LocalEnvironment
    from durablefuture.worker.options import WorkerOptions

    assert isinstance(env, LocalEnvironment)
    with pytest.raises(df.InvalidArgumentError, match="task_max_deliver must be >= 3"):
        options = WorkerOptions(task_max_deliver=2)
        df.Worker(env.client, workflows=[doomed_workflow], options=options)


async def test_server_inputs_delivered_past_their_retries_are_dead_lettered_unhandled(
    nats_server: NatsServer,
) -> None:
    """A run input, schedule input or removal whose deliveries all ended without an outcome
    (the df-servers that took them died) is dead-lettered by the next df-server that gets it,
    with that reason, before it is handled again. The deliveries that "died" are taken here
    and never acknowledged (each comes back after its ack wait)."""
    import nats

    from durablefuture.server import Server, ServerOptions
    from durablefuture.server.schedules import ScheduleOptions

    options = ServerOptions(
        input_ack_wait=0.5,
        input_max_deliver=3,
        schedules=ScheduleOptions(ack_wait=0.5, max_deliver=3),
    )
    server = await Server.connect(nats_server.url, options)
    await server.start()
    await server.shutdown()
    layout = server.layout
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        queues = (
            (layout.input("run"), layout.server_consumer, "server-input", "input"),
            (layout.schedule_input("tick"), layout.schedule_consumer, "schedule-input", "schedule"),
            (layout.removal("delete"), layout.removal_consumer, "removal", "removal"),
        )
        for subject, consumer, _, _ in queues:
            await js.publish(subject, b"whatever")
            sub = await js.pull_subscribe_bind(consumer, layout.stream)
            for _ in range(2):  # two deliveries whose handler "dies": never acknowledged
                (msg,) = await sub.fetch(1, timeout=10)
                assert msg.data == b"whatever"
            await sub.unsubscribe()
        server = await Server.connect(nats_server.url, options)
        await server.start()
        runner = asyncio.create_task(server.run())
        try:
            for _, _, source, what in queues:

                async def dead_lettered(source: str = source) -> bool:
                    try:
                        await js.get_last_msg(layout.stream, layout.dead_letter(source))
                        return True
                    except nats.js.errors.NotFoundError:
                        return False

                await wait_for(dead_lettered, 20)
                dead = await js.get_last_msg(layout.stream, layout.dead_letter(source))
                reason = (dead.headers or {}).get("Df-Reason", "")
                assert f"the {what}" in reason and "delivered 2 times" in reason, reason
                assert "died" in reason
        finally:
            await server.shutdown()
            await runner
    finally:
        await nc.close()


def quick(name: str) -> str:
    return f"done {name}"


def calls_quick(name: str):  # type: ignore[no-untyped-def]
    options = df.ActivityOptions(
        task_queue="acts",
        start_to_close_timeout=timedelta(seconds=60),
        retry_policy=df.RetryPolicy(initial_interval=0.1, maximum_attempts=3),
    )
    result = yield df.activity(quick, name, options=options)
    return result


async def test_an_activity_task_whose_workers_died_before_claiming_it_fails_its_attempt(
    env: object,
) -> None:
    """Workers that die before they claim the attempt (e.g. out of memory decoding its
    arguments) leave no lease behind to time out: the delivery past the limit fails the
    attempt as timed out, with the reason, and the retry policy goes on."""
    import nats

    from durablefuture.testing import LocalEnvironment
    from durablefuture.transport.layout import ConsumerSettings, ensure_consumer
    from durablefuture.worker.options import WorkerOptions

    assert isinstance(env, LocalEnvironment)
    js, layout = env.client.pub.js, env.client.layout
    consumer = layout.activity_consumer("acts")
    # 4 deliveries at most: given up on after 2
    await ensure_consumer(
        js, layout, consumer, layout.activity_tasks("acts"), ConsumerSettings(0.5, 4)
    )
    async with env.worker(task_queue="flows", workflows=[calls_quick]):
        handle = await env.client.start_workflow(
            calls_quick, "cy", id="unclaimed", task_queue="flows"
        )
        nc = await nats.connect(env.nats_url)
        try:
            sub = await nc.jetstream().pull_subscribe_bind(consumer, layout.stream)
            for n in (1, 2):  # two deliveries whose worker "dies" before claiming the attempt
                (task,) = await sub.fetch(1, timeout=10)
                assert task.metadata.num_delivered == n
            await sub.unsubscribe()
        finally:
            await nc.close()
        options = WorkerOptions(task_max_deliver=4, activity_lease=0.5)
        async with env.worker(task_queue="acts", activities=[quick], options=options):
            assert await handle.result(timeout=30) == "done cy"
    history = await handle.fetch_history()
    (retry,) = (e for e in history if isinstance(e, ev.ActivityRetryScheduled))
    assert retry.attempt == 1 and retry.failure.type == "TimeoutError"
    assert "the activity task was delivered 2 times" in retry.failure.message
    assert "died" in retry.failure.message
    (done,) = (e for e in history if isinstance(e, ev.ActivityCompleted))
    assert done.attempt == 2
