"""Processes for the start-request crash tests, run as ``python -m tests.integration.held_start``.

``server ARGS...``: a df-server (``daemons.df_server`` with ARGS) whose history appends of new
runs stop where ``DF_TEST_HOLD`` says, ``before`` (the run's first workflow task is written
and flushed to nats-server, its WorkflowStarted is not) or ``after`` (the WorkflowStarted is
stored, the status entry and the answer are not): it writes the file ``DF_TEST_HELD`` and
waits there (at most a minute) for the test to SIGKILL it. A test may kill it the moment
the file exists: what the file says is done has left the process.

``client URL WORKFLOW_ID REQUEST_ID [TEXT_BYTES]``: asks for a start of ``add_workflow(1)``,
or given TEXT_BYTES of ``three_texts`` with three texts that long (waiting a minute for the
answer, so it never stores the start itself), and prints the run id it is answered with.
"""

from __future__ import annotations

import asyncio
import os
import runpy
import sys
from pathlib import Path
from typing import Any

import durablefuture as df
from durablefuture.transport.history import HistoryStore


def _hold() -> None:
    real = HistoryStore.append_sized
    where = os.environ["DF_TEST_HOLD"]
    held = Path(os.environ["DF_TEST_HELD"])

    async def wait_to_be_killed() -> None:
        held.write_text(where)
        for _ in range(1200):  # bounded: the test kills this process long before
            await asyncio.sleep(0.05)

    async def append_sized(self: HistoryStore, *args: Any, **kwargs: Any) -> tuple[int, int]:
        new_run = kwargs.get("whole_workflow", False) and args[2] == "start"
        if new_run and where == "before":
            # the task was only handed to the connection (its publish is not awaited before
            # the append: ``server/starts.py``); until the connection's flusher has run it has
            # not left this process, and a SIGKILL now would take it along
            await self.nc.flush()
            await wait_to_be_killed()
        out = await real(self, *args, **kwargs)
        if new_run and where == "after":
            await wait_to_be_killed()
        return out

    HistoryStore.append_sized = append_sized  # type: ignore[method-assign]


async def _client(url: str, workflow_id: str, request_id: str, text_bytes: str = "") -> None:
    client = await df.Client.connect(url)
    client.start_wait = 60.0
    options = df.WorkflowOptions(task_queue="tests", request_id=request_id, execution_timeout=300)
    workflow, args = "add_workflow", list[object]([1])
    if text_bytes:
        text = "x" * int(text_bytes)
        workflow, args = "three_texts", [text, text, text]
    handle = await client.start_workflow(workflow, *args, id=workflow_id, options=options)
    print(f"started {handle.run_id}", flush=True)
    await client.close()


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    if role == "server":
        _hold()
        sys.argv = ["df-server", *rest]
        runpy.run_module("daemons.df_server", run_name="__main__")
    else:
        asyncio.run(_client(*rest))
