"""The order example end to end through real df-server and df-worker processes."""

from __future__ import annotations

import pytest

import durablefuture as df
from tests.conftest import Daemons, wait_namespace

pytestmark = pytest.mark.asyncio


async def test_order_example_through_daemons(daemons: Daemons) -> None:
    daemons.server()
    daemons.worker(
        "--workflows",
        "workflows_examples:WORKFLOWS",
        "--activities",
        "workflows_examples:ACTIVITIES",
        task_queue="examples",
    )
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    try:
        from workflows_examples.order import order_workflow

        result = await client.execute_workflow(
            order_workflow, "o-1", 42.0, id="o-1", task_queue="examples", timeout=30
        )
    finally:
        await client.close()
    assert result == {
        "charge": {"order_id": "o-1", "amount": 42.0, "status": "charged"},
        "tracking": "TRACK-O-1",
    }, daemons.logs()
