"""Eager activity dispatch (``server/grants.py``, ``server/checks.py``, ``worker/eager.py``):
a worker that decides an activity of its own task queue runs its first attempt itself, with no
stored activity task; the check list that covers the grant publishes the task when nobody ran
it, and never has an attempt run twice."""

from __future__ import annotations

import asyncio

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.server import ServerOptions
from durablefuture.testing import LocalEnvironment
from durablefuture.worker.eager import AFTER_GRANT_HOOK
from tests.conftest import wait_for
from tests.integration.test_fuzz import _stored

pytestmark = pytest.mark.asyncio

OPTS = df.ActivityOptions(start_to_close_timeout=30)
ran: list[str] = []


async def charge(order_id: str) -> str:
    ran.append(f"charge {order_id}")
    return f"charged {order_id}"


async def ship(order_id: str) -> str:
    ran.append(f"ship {order_id}")
    return f"shipped {order_id}"


def order(order_id: str):  # type: ignore[no-untyped-def]
    c = yield df.activity(charge, order_id, options=OPTS)
    s = yield df.activity(ship, order_id, options=OPTS)
    return f"{c}/{s}"


async def test_eager_activities_complete_with_no_activity_task_stored() -> None:
    ran.clear()
    async with LocalEnvironment() as env:
        server = env.server
        assert server is not None
        tasks = await env.client.pub.js.subscribe(
            f"{env.client.layout.prefix}.at.>", ordered_consumer=True
        )
        async with env.worker(workflows=[order], activities=[charge, ship]):
            ids = [f"e-{i}" for i in range(5)]
            results = await asyncio.gather(
                *(env.client.execute_workflow(order, w, id=w) for w in ids)
            )
        assert results == [f"charged {w}/shipped {w}" for w in ids]
        assert sorted(ran) == sorted([f"charge {w}" for w in ids] + [f"ship {w}" for w in ids])
        assert server.stats["eager_granted"] == 2 * len(ids)
        assert await _stored(env, f"{env.client.layout.prefix}.at.>") == []
        with pytest.raises(Exception):
            await tasks.next_msg(timeout=0.5)  # none was ever stored
        for w in ids:
            history = await env.client.get_workflow_handle(w).fetch_history()
            assert [type(e) for e in history].count(ev.ActivityCompleted) == 2
