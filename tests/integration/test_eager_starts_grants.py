"""Eager start with grants: the first batch's activity attempts go to the worker that answered
the offer (``server/eager_starts.py``, ``worker/eager_starts.py``), listed on a check list
stored before the batch instead of stored as tasks, and run only once the receipt came. A W1
order then stores no task at all. A check list entry for a run that was never created finds
no run and does nothing. A first task that calls ``df.side_effect`` is declined before the
side effect runs; once the run exists, side effects run as usual.
"""

from __future__ import annotations

import asyncio
import secrets

import pytest

import durablefuture as df
from durablefuture.codec.checks import CheckedAttempt
from durablefuture.core import events as ev
from durablefuture.server.options import ServerOptions
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.publisher import MSG_ID
from tests.conftest import wait_for
from tests.integration.helpers import watch
from tests.integration.orders import OPTS, charge, order, ran, ship
from tests.integration.test_fuzz import _dead_letters

pytestmark = pytest.mark.asyncio

noted: list[str] = []


def note(order_id: str) -> str:
    noted.append(order_id)
    return f"noted {order_id}"


def note_first(order_id: str):  # type: ignore[no-untyped-def]
    n = yield df.side_effect(lambda: note(order_id))
    c = yield df.activity(charge, order_id, options=OPTS)
    return [n, c]


def note_later(order_id: str):  # type: ignore[no-untyped-def]
    c = yield df.activity(charge, order_id, options=OPTS)
    n = yield df.side_effect(lambda: note(order_id))
    return [c, n]


def _options(wait: float, check: float = 30.0) -> ServerOptions:
    return ServerOptions(
        namespace="default", status_delay=0, eager_start_wait=wait, eager_check=check
    )


async def test_an_eager_start_with_grants_stores_no_task_at_all() -> None:
    async with LocalEnvironment(server_options=_options(0.5)) as env:
        server = env.server
        assert server is not None
        prefix = env.client.layout.prefix
        workflow_tasks = await watch(env.client, f"{prefix}.wt.>")
        activity_tasks = await watch(env.client, f"{prefix}.at.>")
        async with env.worker(workflows=[order], activities=[charge, ship]) as worker:
            h = await env.client.start_workflow(order, "g-1", id="g-1")
            assert await h.result(timeout=15) == ["charged g-1", "shipped g-1"]
            assert worker.stats.get("eager_starts", 0) == 1
        await env.client.pub.nc.flush()
        assert workflow_tasks == []
        assert activity_tasks == []
        assert server.stats.get("eager_starts", 0) == 1
        assert server.stats["eager_granted"] == 2  # the first batch's, and the next report's
        assert ran == ["charge g-1", "ship g-1"]  # each once
        batches = await env.client.history.read("g-1", h.run_id or "")
        assert [type(e) for e in batches[0].events] == [ev.WorkflowStarted, ev.ActivityScheduled]
        events = [type(e).__name__ for b in batches for e in b.events]
        assert events.count("WorkflowCompleted") == 1
        assert await _dead_letters(env) == []


async def test_a_worker_without_the_activity_is_granted_nothing_at_its_start() -> None:
    """The deciding worker runs activities, but not the first one: it offers nothing, and
    the first batch's task is stored (``Df-First-Batch``) for a worker that has it."""
    async with LocalEnvironment(server_options=_options(0.5)) as env:
        server = env.server
        assert server is not None
        activity_tasks = await watch(env.client, f"{env.client.layout.prefix}.at.>")
        async with (
            env.worker(workflows=[order], activities=[ship]) as deciding,
            env.worker(activities=[charge]),
        ):
            h = await env.client.start_workflow(order, "g-2", id="g-2")
            assert await h.result(timeout=15) == ["charged g-2", "shipped g-2"]
            assert deciding.stats.get("eager_starts", 0) == 1
        await env.client.pub.nc.flush()
        headers = [m.headers or {} for m in activity_tasks]
        assert [h.get(MSG_ID) for h in headers][:1] == [f"at:{h.run_id}:1:1"]
        assert headers[0].get("Df-First-Batch") == "1"
        assert ran.count("charge g-2") == 1
        assert ran.count("ship g-2") == 1


async def test_a_check_for_a_run_that_was_never_created_does_nothing() -> None:
    """A list entry naming a run id that was never created (df-server died between the list
    and the append; the client's retry made another run of the id) fires, finds no run and
    stores no task; so does one for an id with no history at all."""
    async with LocalEnvironment(server_options=_options(0.5, check=0.3)) as env:
        server = env.server
        assert server is not None
        activity_tasks = await watch(env.client, f"{env.client.layout.prefix}.at.>")
        async with env.worker(workflows=[order], activities=[charge, ship]):
            h = await env.client.start_workflow(order, "g-3", id="g-3")
            assert await h.result(timeout=15) == ["charged g-3", "shipped g-3"]
            await wait_for(lambda: server.stats["checks_done"] >= 2, 15)  # the run's own
            done = server.stats["checks_done"]
            ghosts = [
                CheckedAttempt("g-3", secrets.token_hex(16), 1, 1),  # another run's id
                CheckedAttempt("g-never", secrets.token_hex(16), 1, 1),  # no history at all
            ]
            for ghost in ghosts:
                await (await server._check_later(ghost))
            await wait_for(lambda: server.stats["checks_done"] >= done + 2, 15)
        await env.client.pub.nc.flush()
        assert server.stats["checks_published"] == 0
        assert server.stats["checks_later"] == 0
        assert activity_tasks == []
        assert await env.client.history.read_workflow("g-never") == []
        assert {run for run, _ in await env.client.history.read_workflow("g-3")} == {h.run_id}


async def test_a_first_task_calling_a_side_effect_is_declined_before_it_runs() -> None:
    noted.clear()
    async with LocalEnvironment(server_options=_options(0.5)) as env:
        server = env.server
        assert server is not None
        async with env.worker(workflows=[note_first], activities=[charge]) as worker:
            h = await env.client.start_workflow(note_first, "s-1", id="s-1")
            assert await h.result(timeout=15) == ["noted s-1", "charged s-1"]
            assert worker.stats.get("eager_starts", 0) == 0
        assert server.stats.get("eager_declined", 0) == 1  # answered busy
        assert server.stats.get("eager_starts", 0) == 0
        assert noted == ["s-1"]  # run once, by the stored task
        batches = await env.client.history.read("s-1", h.run_id or "")
        assert [type(e) for e in batches[0].events] == [ev.WorkflowStarted]  # as before


async def test_a_side_effect_after_an_eager_start_runs_once_the_run_exists() -> None:
    noted.clear()
    async with LocalEnvironment(server_options=_options(0.5)) as env:
        server = env.server
        assert server is not None
        async with env.worker(workflows=[note_later], activities=[charge]) as worker:
            h = await env.client.start_workflow(note_later, "s-2", id="s-2")
            assert await h.result(timeout=15) == ["charged s-2", "noted s-2"]
            assert worker.stats.get("eager_starts", 0) == 1
        assert server.stats.get("eager_starts", 0) == 1
        assert noted == ["s-2"]
        events = [type(e) for e in await h.fetch_history()]
        assert events.count(ev.SideEffectRecorded) == 1
        assert events.count(ev.WorkflowCompleted) == 1


async def test_many_eager_starts_with_grants_complete_once() -> None:
    async with LocalEnvironment(server_options=_options(0.5)) as env:
        async with env.worker(workflows=[order], activities=[charge, ship]):
            ids = [f"m-{i}" for i in range(30)]
            handles = await asyncio.gather(
                *(env.client.start_workflow(order, w, id=w) for w in ids)
            )
            results = await asyncio.gather(*(h.result(timeout=30) for h in handles))
        assert results == [[f"charged {w}", f"shipped {w}"] for w in ids]
        assert sorted(ran) == sorted([f"charge {w}" for w in ids] + [f"ship {w}" for w in ids])
