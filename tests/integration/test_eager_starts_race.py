"""Two df-servers creating the same workflow id at the same instant, both eagerly.

Server A stores its first batch's activity task (the guard holds: the id has no history) and
is held before its append; server B creates the id meanwhile; A's append then fails its
guard. A's activity task, stored for a run that is never created, reaches a worker, which
finds the id's newest batch to be another run's and dead-letters it without running it: the
activity runs once, for B's run, which completes; A's client is answered that the id is taken.

With ``grants`` the worker that answers the offers also runs the activities: A lists the
first attempt on a check list (stored before its append) instead of storing its task; the
list fires, finds no run of A's run id, and does nothing: the activity runs once, for B's run.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import durablefuture as df
from durablefuture.codec.wire import Reply
from durablefuture.core import inputs as inp
from durablefuture.core.options import IdReusePolicy
from durablefuture.server import Server, ServerOptions
from durablefuture.testing import LocalEnvironment
from tests.conftest import wait_for
from tests.integration.test_fuzz import _dead_letters

pytestmark = pytest.mark.asyncio

OPTS = df.ActivityOptions(start_to_close_timeout=10)
EXECUTED: list[str] = []


async def counted_charge(order_id: str) -> str:
    EXECUTED.append(order_id)
    return f"charged {order_id}"


def counted_order(order_id: str):  # type: ignore[no-untyped-def]
    c = yield df.activity(counted_charge, order_id, options=OPTS)
    return c


def _options() -> ServerOptions:
    return ServerOptions(namespace="default", status_delay=0, eager_start_wait=1.0, eager_check=0.5)


@pytest.mark.parametrize("grants", [False, True])
async def test_two_servers_creating_one_id_at_once_run_its_first_activity_once(
    grants: bool,
) -> None:
    EXECUTED.clear()
    # without grants: the first batch's task is stored, the path this test was written for
    worker_options = df.WorkerOptions(eager_activities=grants)
    async with LocalEnvironment(server_options=_options()) as env:
        a = env.server
        assert a is not None
        b = await Server.connect(env.nats_url, _options())
        await b.start()
        b_task = asyncio.create_task(b.run())
        try:
            async with env.worker(
                workflows=[counted_order], activities=[counted_charge], options=worker_options
            ):
                args = env.client.codec.payloads.to_payloads(("race",), "counted_order")

                def request(request_id: str) -> inp.StartWorkflowRequest:
                    return inp.StartWorkflowRequest(
                        workflow_id="race",
                        workflow_type="counted_order",
                        task_queue="default",
                        request_id=request_id,
                        args=args,
                        # however far B's run has got when A decides again, the id is taken
                        id_reuse_policy=IdReusePolicy.REJECT_DUPLICATE,
                    )

                held, b_done = asyncio.Event(), asyncio.Event()
                real = a._append_start

                async def held_append(*call: Any, **kw: Any) -> int:
                    held.set()  # A's activity task is sent (guarded), its append is not
                    await asyncio.wait_for(b_done.wait(), 30)
                    return await real(*call, **kw)

                a._append_start = held_append  # type: ignore[method-assign]
                replies_a: list[Reply] = []
                replies_b: list[Reply] = []

                async def keep_a(r: Reply) -> None:
                    replies_a.append(r)

                async def keep_b(r: Reply) -> None:
                    replies_b.append(r)

                started_a = asyncio.create_task(a._handle_start(request("req-a"), "", keep_a))
                await asyncio.wait_for(held.wait(), 30)
                await b._handle_start(request("req-b"), "", keep_b)
                b_done.set()
                await started_a
                assert b.stats.get("eager_starts", 0) == 1
                assert replies_b and replies_b[0].ok
                run_b = replies_b[0].run_id
                # A's append failed its guard; decided again, the id is taken by B's run
                assert replies_a and not replies_a[0].ok
                assert replies_a[0].error_type == "WorkflowAlreadyStartedError"
                assert replies_a[0].run_id == run_b
                handle = env.client.get_workflow_handle("race")
                assert await handle.result(timeout=15) == "charged race"

                async def dead_lettered() -> bool:
                    return any("never created" in d.reason for d in await _dead_letters(env))

                if grants:
                    assert a.stats["eager_granted"] == 0  # its append failed: nothing granted
                    assert b.stats["eager_granted"] == 1
                    # A's list and B's: both checked, neither stores a task
                    checked = ("checks_done", "checks_published", "checks_later")
                    await wait_for(
                        lambda: sum(s.stats[k] for s in (a, b) for k in checked) >= 2, 30
                    )
                    assert a.stats["checks_published"] + b.stats["checks_published"] == 0
                    assert await _dead_letters(env) == []
                else:
                    await wait_for(dead_lettered, 30)
            assert EXECUTED == ["race"]  # once, for B's run
            runs = {run for run, _ in await env.client.history.read_workflow("race")}
            assert runs == {run_b}
        finally:
            await b.shutdown()
            b_task.cancel()
            await asyncio.gather(b_task, return_exceptions=True)
