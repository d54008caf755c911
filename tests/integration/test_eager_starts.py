"""Eager start: a new run's first workflow task run by a worker before anything is stored.

With ``eager_start_wait`` df-server offers the first workflow task to a worker of the run's
queue; the answer's activities go into the run's first history batch. Compared with the same
workflow started without it (in the same test): no workflow task stored and one history batch
fewer, and the run completes once. An offer nobody answers (no worker, a worker that does not
take it) creates the run as before.
"""

from __future__ import annotations

import pytest

import durablefuture as df
from durablefuture.server.options import ServerOptions
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.replies import Watch

pytestmark = pytest.mark.asyncio

OPTS = df.ActivityOptions(start_to_close_timeout=10)


async def charge(order_id: str) -> str:
    return f"charged {order_id}"


async def ship(order_id: str) -> str:
    return f"shipped {order_id}"


def order(order_id: str):  # type: ignore[no-untyped-def]
    c = yield df.activity(charge, order_id, options=OPTS)
    s = yield df.activity(ship, order_id, options=OPTS)
    return [c, s]


def _options(wait: float) -> ServerOptions:
    return ServerOptions(namespace="default", status_delay=0, eager_start_wait=wait)


async def _run_one(wait: float, wid: str) -> tuple[int, int, dict[str, int], list[str]]:
    """Start and finish one order; (workflow tasks stored, history batches stored, the
    server's stats, the run's event types)."""
    async with LocalEnvironment(server_options=_options(wait)) as env:
        server = env.server
        assert server is not None
        nc, layout = env.client.nc, env.client.layout
        tasks = await Watch.open(nc, f"{layout.prefix}.wt.>")
        batches = await Watch.open(nc, f"{layout.prefix}.h.>")
        try:
            async with env.worker(workflows=[order], activities=[charge, ship]):
                h = await env.client.start_workflow(order, wid, id=wid)
                assert await h.result(timeout=15) == [f"charged {wid}", f"shipped {wid}"]
                events = [type(e).__name__ for e in await h.fetch_history()]
            await nc.flush()
            runs = await env.client.history.read_workflow(wid)
            assert {run for run, _ in runs} == {h.run_id}  # one run, completed once
            return len(tasks.received), len(batches.received), dict(server.stats), events
        finally:
            await tasks.close()
            await batches.close()


async def test_an_eager_start_stores_no_workflow_task_and_one_batch_fewer() -> None:
    tasks_before, batches_before, stats_before, events_before = await _run_one(0, "o-plain")
    tasks, batches, stats, events = await _run_one(0.5, "o-eager")
    assert stats_before.get("eager_starts", 0) == 0
    assert tasks_before == 1  # the first workflow task (the activities' results are fused)
    assert stats["eager_starts"] == 1
    assert tasks == 0
    assert batches == batches_before - 1
    assert events == events_before  # the same history, one batch fewer
    assert events.count("WorkflowCompleted") == 1


async def test_an_offer_nobody_answers_creates_the_run_as_before() -> None:
    async with LocalEnvironment(server_options=_options(0.2)) as env:
        server = env.server
        assert server is not None
        # no worker listening yet: no responders, the run is created with its workflow task
        h = await env.client.start_workflow(order, "o-1", id="o-1")
        assert server.stats.get("eager_unanswered", 0) == 1
        assert server.stats.get("eager_starts", 0) == 0
        async with env.worker(workflows=[order], activities=[charge, ship]):
            assert await h.result(timeout=15) == ["charged o-1", "shipped o-1"]
