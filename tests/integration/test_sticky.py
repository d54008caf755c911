"""Sticky workflow tasks: a run's workflow tasks go to the worker that caches its generator,
and to the task queue when that worker does not take them (it died, or does not pull)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import durablefuture as df
from durablefuture import metrics
from durablefuture.core import events as ev
from durablefuture.natsserver import free_port
from durablefuture.server import Server, ServerOptions
from durablefuture.transport.subjects import Layout, sticky_token
from tests.conftest import Daemons, wait_for, wait_namespace
from tests.integration.flows import held_signal, sleepy_steps
from tests.integration.helpers import check_history, settled
from tests.integration.test_metrics import scrape, total

pytestmark = pytest.mark.asyncio

FLOWS = ("--workflows", "tests.integration.flows:WORKFLOWS")


async def _scrapable(*ports: int) -> None:
    def up() -> bool:
        try:
            for port in ports:
                scrape(port)
            return True
        except OSError:
            return False

    await wait_for(up, 30)


async def test_workflow_tasks_go_to_the_worker_holding_the_run(daemons: Daemons) -> None:
    sport, w1, w2 = free_port(), free_port(), free_port()
    # eager start off: the test follows each run from its first workflow task as stored on
    # the task queue (an eager start's offer goes to a worker before anything is stored)
    daemons.server("--metrics-port", str(sport), "--eager-start-wait", "0")
    # small pulls: the task queue's tasks are spread over both workers (one pull for many
    # tasks would give a lightly loaded queue's tasks all to one worker)
    for port in (w1, w2):
        daemons.worker(*FLOWS, "--metrics-port", str(port), "--max-concurrent-workflow-tasks", "2")
    await wait_namespace(daemons.url)
    await _scrapable(sport, w1, w2)
    client = await df.Client.connect(daemons.url)
    try:
        layout = client.layout

        async def both_polling() -> bool:
            shared = layout.workflow_consumer("tests")
            try:
                info = await client.pub.js.consumer_info(layout.stream, shared)
            except Exception:
                return False  # not created yet
            return (info.num_waiting or 0) >= 2

        await wait_for(both_polling, 30)
        results = await asyncio.gather(
            *(
                client.execute_workflow(
                    sleepy_steps, 6, id=f"sticky-{i}", task_queue="tests", timeout=60
                )
                for i in range(12)
            )
        )
    finally:
        await client.close()
    assert results == [6] * 12, daemons.logs()
    a, b, s = scrape(w1), scrape(w2), scrape(sport)
    hits = sum(total(x, "df_cache_lookups_total", component="worker", result="hit") for x in (a, b))
    misses = sum(
        total(x, "df_cache_lookups_total", component="worker", result="miss") for x in (a, b)
    )
    new = sum(total(x, "df_cache_lookups_total", component="worker", result="new") for x in (a, b))
    # each run's first task goes to the queue (nobody holds it yet); each of its 6 timers
    # wakes it on the worker that took that first task
    assert new == 12, daemons.logs()
    assert hits >= 12 * 6 and misses == 0, (hits, misses, daemons.logs())
    for x in (a, b):
        if total(x, "df_cache_lookups_total", component="worker", result="hit"):
            assert total(x, "df_worker_cache_hit_ratio") == 1.0
    # both workers took runs (the first tasks are shared), and nothing had to be moved
    assert all(total(x, "df_cache_lookups_total", result="new") > 0 for x in (a, b))
    assert total(s, "df_sticky_tasks_total", route="sticky") >= 12 * 6
    assert total(s, "df_sticky_tasks_total", route="moved") == 0


async def test_sigkill_of_the_sticky_worker_mid_task(daemons: Daemons, tmp_path: Path) -> None:
    """The worker holding a run dies while it runs the run's workflow task: the task (stored
    on its sticky subject) is moved to the queue once the worker is gone, and the run
    completes once, on the other worker."""
    sport = free_port()
    daemons.server("--metrics-port", str(sport), "--sticky-timeout", "1")
    ports = [free_port(), free_port()]
    workers = [
        daemons.worker(*FLOWS, "--metrics-port", str(p), "--liveness-interval", "0.5")
        for p in ports
    ]
    await wait_namespace(daemons.url)
    await _scrapable(sport, *ports)
    marker = tmp_path / "taken"
    client = await df.Client.connect(daemons.url)
    try:
        handle = await client.start_workflow(
            held_signal, str(marker), id="held", task_queue="tests"
        )

        def holder() -> int | None:
            for i, port in enumerate(ports):
                if total(scrape(port), "df_cache_lookups_total", result="new"):
                    return i
            return None

        await wait_for(lambda: holder() is not None, 30)
        first = holder()
        assert first is not None
        await handle.signal("go", "now")
        await wait_for(marker.exists, 30)
        assert int(marker.read_text()) == workers[first].proc.pid  # type: ignore[union-attr]
        workers[first].kill()
        assert await handle.result(timeout=60) == "now", daemons.logs()
        history = await handle.fetch_history()
    finally:
        await client.close()
    check_history("held", history)
    assert sum(isinstance(e, ev.SignalReceived) for e in history) == 1
    assert total(scrape(sport), "df_sticky_tasks_total", route="moved") >= 1, daemons.logs()


@pytest.mark.parametrize("how", ["stops pulling", "consumer removed"])
async def test_a_task_the_holder_does_not_take_goes_to_the_queue(
    nats_server: object, how: str
) -> None:
    """A live worker that does not take its sticky tasks: one that stops pulling has them moved
    to the task queue after the sticky timeout, where a worker takes them; one whose consumer
    is removed under it binds it again (or has them moved), and does not ask a missing consumer
    in a hot loop. A second copy of a task delivered later changes nothing."""
    url = nats_server.url  # type: ignore[attr-defined]
    metrics.record()
    server = await Server.connect(url, ServerOptions(sticky_timeout=2.0))
    await server.start()
    serving = asyncio.create_task(server.run())
    client = await df.Client.connect(url)
    try:
        worker = df.Worker(client, "tq", workflows=[held_signal])
        async with worker:
            handle = await client.start_workflow(held_signal, "", id="stalled", task_queue="tq")

            async def decided() -> bool:
                return any(
                    isinstance(e, ev.SignalWaitStarted) for e in await handle.fetch_history()
                )

            await wait_for(decided, 30)
            # stop taking sticky tasks (the worker stays alive and keeps the shared queue)
            layout = Layout("default")
            name = layout.sticky_consumer("tq", sticky_token(worker.identity))
            stalled = [c for c in worker._consumers if c.consumer == name]
            assert len(stalled) == 1
            if how == "stops pulling":
                await stalled[0].stop()
            else:
                await client.pub.js.delete_consumer(layout.stream, name)
                requests = stalled[0].requests
            await handle.signal("go", 7)
            js = client.pub.js
            subject = layout.sticky_tasks("tq", sticky_token(worker.identity))
            copies: list[bytes] = []

            async def stored() -> bool:
                copies.append((await js.get_last_msg(layout.stream, subject)).data)
                return True

            await wait_for(stored, 10)
            assert await handle.result(timeout=30) == 7
            if how == "stops pulling":
                await wait_for(lambda: server.stats["sticky_moved"] >= 1, 10)
            else:
                # the worker noticed and bound its consumer again (or the task was moved)
                async def bound_again() -> bool:
                    try:
                        await client.pub.js.consumer_info(layout.stream, name)
                    except Exception:
                        return server.stats["sticky_moved"] >= 1
                    return True

                await wait_for(bound_again, 10)
            # the same workflow task once more (as if both copies had been delivered)
            history = await handle.fetch_history()
            tasks = worker.stats["workflow_tasks"]
            await client.pub.publish(
                layout.workflow_tasks("tq"), copies[-1], {"Nats-Msg-Id": "second-copy"}
            )
            await wait_for(lambda: worker.stats["workflow_tasks"] > tasks, 10)
            await settled(client, "tq")
            assert await handle.fetch_history() == history
            if how == "consumer removed":
                # a pause after each "no responders": a handful of pull requests, not thousands
                assert stalled[0].requests - requests < 50
    finally:
        await client.close()
        await server.shutdown()
        serving.cancel()
        metrics.record(False)
