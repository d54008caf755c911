"""A start asked of df-server whose first workflow task is too large to carry the run's
history (inputs under the by-reference threshold each, over ``MAX_TASK_BYTES`` together):
df-server and the client that asked are SIGKILLed after the run's WorkflowStarted is stored
and before the answer. The run must still complete, once, with nobody asking again
(``server/starts.py``: a WorkflowStarted in history always has its first workflow task).
Such a task is written after the append, so df-server has such a start stored (answers
``store``): its redelivery after the crash dispatches the task."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.natsserver import NatsServer
from tests.conftest import ROOT, Daemon, Daemons, wait_for, wait_namespace

pytestmark = pytest.mark.asyncio

TEXT = 200 * 1024  # each under the 256 KiB by-reference threshold; ~600 KiB together

ASK = f"""
import asyncio
import durablefuture as df

async def main() -> None:
    client = await df.Client.connect({{url!r}})
    client.start_wait = 60.0  # never stores the start itself
    options = df.WorkflowOptions(task_queue="tests", request_id="req-big", execution_timeout=300)
    t = "x" * {TEXT}
    handle = await client.start_workflow("three_texts", t, t, t, id="big", options=options)
    print("started", handle.run_id, flush=True)

asyncio.run(main())
"""


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


async def test_sigkill_after_the_append_of_a_start_whose_task_is_too_large_to_carry_history(
    daemons: Daemons, nats_server: NatsServer, tmp_path: Path
) -> None:
    url = nats_server.url
    held = tmp_path / "held"
    daemons.env["DF_TEST_HOLD"] = "after"
    daemons.env["DF_TEST_HELD"] = str(held)
    server = Daemon(
        "held-server",
        ["tests.integration.held_start", "server", "--nats", url, "--input-ack-wait", "2"],
        tmp_path / "held-server.log",
        daemons.env,
    )
    daemons.started.append(server.start())
    daemons.worker("--workflows", "tests.integration.flows:WORKFLOWS")
    await wait_namespace(url)
    asker = subprocess.Popen(
        [sys.executable, "-c", ASK.format(url=url)],
        cwd=ROOT,
        env=daemons.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    client = await df.Client.connect(url)
    try:
        await wait_for(held.exists, 30)
        assert server.proc is not None
        _kill(server.proc)
        _kill(asker)
        assert asker.stdout is not None
        said = asker.stdout.read().decode(errors="replace")
        assert "started" not in said, said  # the client was answered nothing
        daemons.server()  # a df-server again, as after any crash

        runs = {run for run, _ in await client.history.read_workflow("big")}
        assert len(runs) == 1  # the WorkflowStarted is stored: the run exists
        handle = client.get_workflow_handle("big")
        # nobody asks again: the run goes on from what was stored before the kill
        assert await handle.result(timeout=60) == 3 * TEXT
        history = [type(e) for e in await handle.fetch_history()]
        assert history.count(ev.WorkflowStarted) == 1
        assert history.count(ev.WorkflowCompleted) == 1
    except BaseException:
        print(daemons.logs())
        raise
    finally:
        _kill(asker)
        await client.close()
