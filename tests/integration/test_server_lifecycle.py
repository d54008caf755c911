"""A df-server pulls inputs only while it handles them.

``Server.start()`` prepares the namespace and the services beside the inputs; the inputs are
pulled by ``run()``. A server that was started but is not running (yet) must not hold inputs
another server could handle: it would sit on them until their ack wait ran out.
"""

from __future__ import annotations

import pytest
from attrs import evolve

import durablefuture as df
from durablefuture.testing import LocalEnvironment

pytestmark = pytest.mark.asyncio


def echo(n: int):  # type: ignore[no-untyped-def]
    return n
    yield  # a generator: a workflow


async def test_a_started_server_that_does_not_run_holds_no_input() -> None:
    from durablefuture.server import Server

    async with LocalEnvironment() as env, env.worker("lc", workflows=[echo]):
        assert env.server is not None
        # inputs a server holds come back only after a minute: far beyond the waits below
        idle = await Server.connect(env.nats_url, evolve(env.server.options, input_ack_wait=60.0))
        await idle.start()
        try:
            opts = df.WorkflowOptions(task_queue="lc")
            results = [
                await env.client.execute_workflow(echo, i, id=f"lc-{i}", options=opts, timeout=30)
                for i in range(8)
            ]
        finally:
            await idle.shutdown()
    assert results == list(range(8))
