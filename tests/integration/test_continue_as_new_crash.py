"""df-server SIGKILLed while it creates a run continued as new, after the new run's first
workflow task is written and before its WorkflowStarted append (``server/starts.py``). A
worker runs that task and its report finds no run (it does not exist yet); the stored
start input is redelivered to a df-server started again, which creates the run under the
same run id (chosen by the ContinuedAsNew). The run must get a first workflow task and
complete, once: a task written again under the first one's message id would be dropped by
the stream as a duplicate."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.natsserver import NatsServer
from tests.conftest import Daemon, Daemons, wait_for, wait_namespace

pytestmark = pytest.mark.asyncio


async def test_sigkill_between_the_task_and_the_append_of_a_run_continued_as_new(
    daemons: Daemons, nats_server: NatsServer, tmp_path: Path
) -> None:
    url = nats_server.url
    held = tmp_path / "held"
    daemons.env["DF_TEST_HELD"] = str(held)
    server = Daemon(
        "held-server",
        ["tests.integration.held_continue", "--nats", url, "--input-ack-wait", "2"],
        tmp_path / "held-server.log",
        daemons.env,
    )
    daemons.started.append(server.start())
    daemons.worker("--workflows", "tests.integration.flows:WORKFLOWS")
    await wait_namespace(url)
    client = await df.Client.connect(url)
    try:
        options = df.WorkflowOptions(task_queue="tests", execution_timeout=300)
        first = await client.start_workflow("hop", 1, id="hop", options=options)
        await wait_for(held.exists, 30)
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(10)
        layout = client.layout
        js = client.pub.js

        async def reported() -> bool:
            # the worker ran the written task: with no df-server to ask, its report is stored
            # (or, had a server refused it for an unknown run, dead-lettered)
            for subject in (layout.input("report"), layout.dead_letter("server-input")):
                try:
                    await js.get_last_msg(layout.stream, subject)
                except Exception:
                    continue
                return True
            return False

        await wait_for(reported, 60)
        daemons.server()  # a df-server again: the stored start input is redelivered

        handle = client.get_workflow_handle("hop")
        assert await handle.result(timeout=60) == "done"
        runs = {run for run, _ in await client.history.read_workflow("hop")}
        assert len(runs) == 2 and first.run_id in runs
        history = [type(e) for e in await handle.fetch_history()]
        assert history.count(ev.WorkflowStarted) == 1
        assert history.count(ev.WorkflowCompleted) == 1
    except BaseException:
        print(daemons.logs())
        raise
    finally:
        await client.close()
