"""An update survives a SIGKILL of the worker running its handler and of the df-server: it
completes exactly once (one recorded outcome) and the waiting caller gets the result."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.testing import Replayer
from tests.conftest import Daemons, wait_for, wait_namespace


def slow_counter() -> Generator[Any, Any, Any]:
    total = [0]
    stop: list[bool] = []

    def bump(step: int) -> int:
        # test instrumentation (not deterministic on purpose): note each run of the handler
        # and hold it while the block file exists, so the worker dies in the middle of it
        with open(os.environ["DF_TEST_EXEC_LOG"], "a") as f:
            f.write(f"bump {step}\n")
        block = Path(os.environ["DF_TEST_BLOCK"])
        deadline = time.monotonic() + 60
        while block.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        total[0] += step
        return total[0]

    df.workflow.set_update_handler("bump", bump)
    df.workflow.set_signal_handler("stop", lambda: stop.append(True))
    yield df.wait_condition(lambda: bool(stop))
    return total[0]


WORKFLOWS = [slow_counter]


async def test_sigkill_of_worker_and_server_in_the_middle_of_an_update(
    daemons: Daemons, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, block = tmp_path / "exec.log", tmp_path / "block"
    log.touch()
    block.touch()
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    daemons.env["DF_TEST_BLOCK"] = str(block)
    args = ("--workflows", "tests.integration.test_update_crash:WORKFLOWS")
    # the killed worker's tasks go to the task queue after the sticky timeout (1 s, not 5 s)
    sticky = ("--sticky-timeout", "1")
    server = daemons.server(*sticky)
    worker = daemons.worker(*args)
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    client.request_timeout = 30
    try:
        await wait_for(lambda: "polling task queue" in worker.log(), 30)
        handle = await client.start_workflow(slow_counter, id="slow", task_queue="tests")
        pending = asyncio.create_task(handle.update("bump", 5, update_id="crash-1"))
        await wait_for(lambda: "bump 5" in log.read_text(), 30)  # the handler is running
        worker.kill()
        server.kill()
        block.unlink()
        server = daemons.server(*sticky)
        daemons.worker(*args)
        assert await asyncio.wait_for(pending, 90) == 5
        # an update sent while no df-server runs is stored, and recorded once one is back
        server.kill()
        later = asyncio.create_task(handle.update("bump", 1, update_id="while-down"))
        daemons.server(*sticky)
        assert await asyncio.wait_for(later, 90) == 6
        # the same id again returns the recorded result; a new update goes on from it
        assert await handle.update("bump", 5, update_id="crash-1") == 5
        assert await handle.update("bump", 2) == 8
        await handle.signal("stop")
        assert await handle.result(timeout=60) == 8
        history = await handle.fetch_history()
    finally:
        await client.close()
    accepted = [e for e in history if isinstance(e, ev.UpdateAccepted)]
    completed = [e for e in history if isinstance(e, ev.UpdateCompleted)]
    assert [e.update_id for e in accepted][:2] == ["crash-1", "while-down"]
    assert len(accepted) == 3
    assert [(e.update_id, e.result) for e in completed][:1] == [("crash-1", 5)]
    assert len(completed) == 3
    # the handler ran again on the new worker (replay), its outcome was recorded once
    assert log.read_text().splitlines().count("bump 5") >= 2
    # a replay runs the handler again, and must come to the recorded outcome
    monkeypatch.setenv("DF_TEST_EXEC_LOG", str(log))
    monkeypatch.setenv("DF_TEST_BLOCK", str(block))
    Replayer(WORKFLOWS).replay(history)
