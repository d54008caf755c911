"""A start asked of df-server whose first workflow task is too large to carry the run's
history (inputs under the by-reference threshold each, over ``MAX_TASK_BYTES`` together):
df-server and the client that asked are SIGKILLed after the run's WorkflowStarted is stored
and before the answer. The run must still complete, once, with nobody asking again
(``server/starts.py``: a WorkflowStarted in history always has its first workflow task).
Such a task is written after the append, so df-server has such a start stored (answers
``store``): its redelivery after the crash dispatches the task."""

from __future__ import annotations

from pathlib import Path

import pytest

from durablefuture.core import events as ev
from durablefuture.natsserver import NatsServer
from tests.conftest import Daemons, connected
from tests.integration.helpers import unanswered_start

pytestmark = pytest.mark.asyncio

TEXT = 200 * 1024  # each under the 256 KiB by-reference threshold; ~600 KiB together


async def test_sigkill_after_the_append_of_a_start_whose_task_is_too_large_to_carry_history(
    daemons: Daemons, nats_server: NatsServer, tmp_path: Path
) -> None:
    url = nats_server.url
    held = tmp_path / "held"
    daemons.env["DF_TEST_HOLD"] = "after"
    daemons.env["DF_TEST_HELD"] = str(held)
    args = ["server", "--nats", url, "--input-ack-wait", "2"]
    server = daemons.special("held-server", "tests.integration.held_start", *args)
    daemons.worker("--workflows", "tests.integration.flows:WORKFLOWS")
    async with connected(daemons) as client:
        # asks for the start, waiting a minute for the answer: it never stores the start itself
        await unanswered_start(daemons, server, held, url, "big", "req-big", str(TEXT))
        daemons.server()  # a df-server again, as after any crash

        runs = {run for run, _ in await client.history.read_workflow("big")}
        assert len(runs) == 1  # the WorkflowStarted is stored: the run exists
        handle = client.get_workflow_handle("big")
        # nobody asks again: the run goes on from what was stored before the kill
        assert await handle.result(timeout=60) == 3 * TEXT
        history = [type(e) for e in await handle.fetch_history()]
        assert history.count(ev.WorkflowStarted) == 1
        assert history.count(ev.WorkflowCompleted) == 1
