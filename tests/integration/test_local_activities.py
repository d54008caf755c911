"""Local activities through df-server and df-worker processes: retried in the workflow worker,
recorded as one event each, never sent to a task queue."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.testing import Replayer
from tests.conftest import Daemons, wait_for, wait_namespace

RETRIED = df.ActivityOptions(
    start_to_close_timeout=5, retry_policy=df.RetryPolicy(initial_interval=0.1)
)


def flaky_lookup(key: str) -> str:
    """Fails its first two attempts (counted in a file: the worker is another process)."""
    path = Path(os.environ["DF_TEST_EXEC_LOG"])
    with path.open("a") as f:
        f.write(f"{key}\n")
    if path.read_text().splitlines().count(key) < 3:
        raise df.ApplicationError("not yet", type="NotYet")
    return key.upper()


async def async_price(item: str) -> float:
    await asyncio.sleep(0.01)
    return 9.5 if item == "tea" else 1.0


def locals_flow(item: str) -> Generator[Any, Any, Any]:
    name = yield df.local_activity(flaky_lookup, item, options=RETRIED)
    price = yield df.local_activity(async_price, item, options=RETRIED)
    return [name, price]


WORKFLOWS = [locals_flow]


async def test_local_activities_through_the_daemons(daemons: Daemons, tmp_path: Path) -> None:
    log = tmp_path / "exec.log"
    log.touch()
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    daemons.server()
    worker = daemons.worker("--workflows", "tests.integration.test_local_activities:WORKFLOWS")
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    client.request_timeout = 30
    try:
        await wait_for(lambda: "polling task queue" in worker.log(), 30)
        result = await client.execute_workflow(
            locals_flow, "tea", id="locals", task_queue="tests", timeout=30
        )
        history = await client.get_workflow_handle("locals").fetch_history()
    finally:
        await client.close()
    assert result == ["TEA", 9.5]
    assert log.read_text().splitlines() == ["tea", "tea", "tea"]
    recorded = [e for e in history if isinstance(e, ev.LocalActivityRecorded)]
    assert [(e.name, e.attempts) for e in recorded] == [("flaky_lookup", 3), ("async_price", 1)]
    assert not [e for e in history if isinstance(e, ev.ActivityScheduled)]
    Replayer(WORKFLOWS).replay(history)
