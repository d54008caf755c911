"""Eager start grants run lazily, as a report's do: the first batch's activity attempts granted
to the answering worker are marked ``eager`` (the id the worker named, ``Df-Eager-Ask``) in
the stored batch, run with no lease until ``eager_claim_after``, and nothing but their check
may publish a task for them. Effects of the first batch derived again (recovery, a redo)
while such an attempt runs list it again instead of publishing its task, which another
worker, finding no lease, would run a second time."""

from __future__ import annotations

import pytest

from durablefuture.core import events as ev
from durablefuture.core.effects import DispatchActivityTask
from durablefuture.core.orchestration import effects_again
from durablefuture.server.options import ServerOptions
from durablefuture.testing import LocalEnvironment
from durablefuture.worker import WorkerOptions
from tests.conftest import wait_for
from tests.integration.helpers import watch
from tests.integration.orders import PAUSE, charge, order, ran, ship

pytestmark = pytest.mark.asyncio


async def test_first_batch_effects_derived_again_list_a_granted_attempt() -> None:
    """``charge``, granted with the eager start, runs on the answering worker with no lease
    when the first batch's effects are derived again: its attempt is listed again, not
    published (a second worker with ``charge`` is idle, and would run a published task a
    second time). ``charge`` runs once, its check finds it done; no task is stored."""
    PAUSE["charge"] = 1.5
    options = ServerOptions(
        namespace="default", status_delay=0, eager_start_wait=0.5, eager_check=3.0
    )
    async with LocalEnvironment(server_options=options) as env:
        server = env.server
        assert server is not None
        tasks = await watch(env.client, f"{env.client.layout.prefix}.at.>")
        lazy = WorkerOptions(eager_claim_after=1.0)
        async with (
            env.worker(workflows=[order], activities=[charge, ship], options=lazy) as worker,
            env.worker(activities=[charge, ship]),
        ):
            h = await env.client.start_workflow(order, "z-1", id="z-1")
            await wait_for(lambda: "charge z-1" in ran, 15)
            assert worker.stats.get("eager_starts", 0) == 1
            batches = await env.client.history.read("z-1", h.run_id or "")
            first = batches[0].events
            scheduled = [e for e in first if isinstance(e, ev.ActivityScheduled)]
            assert [(e.seq, bool(e.eager)) for e in scheduled] == [(1, True)]
            cache = await server._load("z-1", h.run_id or "")
            async with cache.lock:
                again = effects_again(cache.state, cache.events, 1, len(first))
                assert [
                    (e.task.seq, e.task.attempt)
                    for e in again
                    if isinstance(e, DispatchActivityTask)
                ] == [(1, 1)]
                relisted = server.stats["eager_relisted"]
                await server._execute(cache, again)
            assert server.stats["eager_relisted"] == relisted + 1
            assert await h.result(timeout=15) == ["charged z-1", "shipped z-1"]
            await wait_for(lambda: server.stats["checks_done"] >= 3, 15)
        await env.client.pub.nc.flush()
        assert ran == ["charge z-1", "ship z-1"]  # each once
        assert tasks == []
        assert server.stats["checks_timed_out"] == 0
        assert server.stats["checks_published"] == 0
        history = await h.fetch_history()
        assert [type(e) for e in history].count(ev.ActivityCompleted) == 2
        assert ev.ActivityRetryScheduled not in [type(e) for e in history]
        assert [type(e) for e in history].count(ev.WorkflowCompleted) == 1
