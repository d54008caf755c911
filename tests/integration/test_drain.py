"""SIGTERM of df-worker: running activities finish and are reported before it exits; a drain
that times out exits at once and leaves the attempt to its lease. No finished result is lost."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from tests.conftest import Daemons, wait_for, wait_namespace

pytestmark = pytest.mark.asyncio


def slow_sync(tag: str, seconds: float, retry_seconds: float | None = None) -> str:
    """A sync activity (thread pool) that logs when it starts and when it ends; it takes
    ``seconds`` on its first attempt and ``retry_seconds`` (if given) on the later ones."""
    log = os.environ["DF_TEST_EXEC_LOG"]
    info = df.activity_info()
    with open(log, "a") as f:
        f.write(f"start {tag} {info.attempt}\n")
    time.sleep(seconds if retry_seconds is None or info.attempt == 1 else retry_seconds)
    with open(log, "a") as f:
        f.write(f"end {tag} {info.attempt}\n")
    return f"{tag} done on attempt {info.attempt}"


def slow_flow(tag: str, seconds: float, retry_seconds: float | None = None):  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(
        start_to_close_timeout=timedelta(seconds=60),
        retry_policy=df.RetryPolicy(initial_interval=0.1, maximum_attempts=5),
    )
    return (yield df.activity(slow_sync, tag, seconds, retry_seconds, options=opts))


ARGS = (
    "--workflows",
    "tests.integration.test_drain:slow_flow",
    "--activities",
    "tests.integration.test_drain:slow_sync",
)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def test_sigterm_waits_for_a_running_activity_and_reports_it(
    daemons: Daemons, tmp_path: Path
) -> None:
    log = tmp_path / "exec.log"
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    daemons.server()
    worker = daemons.worker(*ARGS, "--drain-timeout", "60")
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    try:
        handle = await client.start_workflow(
            slow_flow, "drain", 3.0, id="drain", task_queue="tests"
        )
        await wait_for(lambda: "start drain 1" in lines(log), 30)
        assert worker.proc is not None
        os.kill(worker.proc.pid, signal.SIGTERM)
        assert worker.proc.wait(60) == 0, worker.log()
        # no other worker ran: the completion was reported by the draining one before it left
        completed = [e for e in await handle.fetch_history() if isinstance(e, ev.ActivityCompleted)]
        assert [e.attempt for e in completed] == [1]
        daemons.worker(*ARGS)  # the workflow's next step needs a worker
        assert await handle.result(timeout=60) == "drain done on attempt 1"
        history = await handle.fetch_history()
    finally:
        await client.close()
    assert lines(log) == ["start drain 1", "end drain 1"]  # ran once
    assert not [e for e in history if isinstance(e, ev.ActivityRetryScheduled)]
    assert "draining" in worker.log()


async def test_a_drain_that_times_out_exits_and_the_attempt_is_retried(
    daemons: Daemons, tmp_path: Path
) -> None:
    log = tmp_path / "exec.log"
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    # the first attempt is granted to the worker that decided it (eager, no lease): once
    # that worker has left, df-server times it out at its eager check (3 s, not 30 s)
    daemons.server("--eager-check", "3")
    worker = daemons.worker(*ARGS, "--drain-timeout", "0.5", "--eager-claim-after", "1")
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    try:
        # 8 s: the drain (0.5 s) ends long before the first attempt would; the retry is quick
        handle = await client.start_workflow(
            slow_flow, "cut", 8.0, 0.1, id="cut", task_queue="tests"
        )
        await wait_for(lambda: "start cut 1" in lines(log), 30)
        assert worker.proc is not None
        os.kill(worker.proc.pid, signal.SIGTERM)
        assert worker.proc.wait(30) == 0, worker.log()
        # it left without waiting for the 8 s attempt (which never reported)
        assert "end cut 1" not in lines(log)
        assert "abandoned" in worker.log()
        daemons.worker(*ARGS)  # another worker takes the attempt over when its lease ends
        assert await handle.result(timeout=60) == "cut done on attempt 2"
    finally:
        await client.close()
