"""A start asked of df-server as a request, with df-server and the client both SIGKILLed
while df-server makes it: the run completes once, or it never exists and the client got no
answer; never a run left without its first workflow task (``server/starts.py``).

The df-server (``tests/integration/held_start.py``) stops either after writing the run's
first workflow task and before its WorkflowStarted append, or after the append and before
the status entry and the answer; the test then kills it and the client waiting for the
answer, by PID. Nothing is stored for the start itself, so nothing is redelivered: what
follows comes from the messages stored before the kill, and a df-server started again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.natsserver import NatsServer
from tests.conftest import Daemons, connected, wait_for
from tests.integration.flows import expected_add
from tests.integration.helpers import unanswered_start

pytestmark = pytest.mark.asyncio

OPTIONS = df.WorkflowOptions(task_queue="tests", request_id="req-1", execution_timeout=300)


@pytest.mark.parametrize("where", ["before", "after"])
async def test_sigkill_of_df_server_and_client_while_a_start_request_is_made(
    daemons: Daemons, nats_server: NatsServer, tmp_path: Path, where: str
) -> None:
    url = nats_server.url
    held = tmp_path / "held"
    daemons.env["DF_TEST_HOLD"] = where
    daemons.env["DF_TEST_HELD"] = str(held)
    daemons.env["DF_TEST_ACTIVITY_SECONDS"] = "0"
    # --eager-start-wait 0: the run's first workflow task is stored before its WorkflowStarted,
    # the path this test is about (eager starts: test_eager_starts_crash.py)
    args = ["server", "--nats", url, "--input-ack-wait", "2", "--eager-start-wait", "0"]
    server = daemons.special("held-server", "tests.integration.held_start", *args)
    daemons.worker(
        "--workflows",
        "tests.integration.flows:WORKFLOWS",
        "--activities",
        "tests.integration.flows:ACTIVITIES",
    )
    async with connected(daemons) as client:
        await unanswered_start(daemons, server, held, url, "held", "req-1")
        daemons.server()  # a df-server again, as after any crash

        if where == "after":
            # the WorkflowStarted is stored, and so is the first workflow task: the run goes
            # on without anyone asking again
            handle = client.get_workflow_handle("held")
            assert await handle.result(timeout=60) == expected_add(1)
            runs = {run for run, _ in await client.history.read_workflow("held")}
            assert len(runs) == 1
            history = [type(e) for e in await handle.fetch_history()]
            assert history.count(ev.WorkflowStarted) == 1
            assert history.count(ev.WorkflowCompleted) == 1
            assert (await handle.describe()).status == "completed"
            run = next(iter(runs))
            # the client's retry with the same request id is answered with that run
            again = await client.start_workflow("add_workflow", 1, id="held", options=OPTIONS)
            assert again.run_id == run
        else:
            # only the task was stored: a worker ran it, and its report for a run that does
            # not exist was refused as a dead letter with the reason; no run exists
            layout = client.layout
            js = client.pub.js
            dead: list[str] = []

            async def refused() -> bool:
                try:
                    m = await js.get_last_msg(layout.stream, layout.dead_letter("server-input"))
                except Exception:
                    return False
                dead.append((m.headers or {}).get("Df-Reason", ""))
                return True

            await wait_for(refused, 60)
            assert "unknown run" in dead[-1], dead[-1]
            assert await client.history.read_workflow("held") == []
            # the client's retry with the same request id starts the run, once
            handle = await client.start_workflow("add_workflow", 1, id="held", options=OPTIONS)
            assert await handle.result(timeout=60) == expected_add(1)
            runs = {run for run, _ in await client.history.read_workflow("held")}
            assert runs == {handle.run_id}
            history = [type(e) for e in await handle.fetch_history()]
            assert history.count(ev.WorkflowCompleted) == 1
