"""Eager starts with a process SIGKILLed midway: every workflow completes once, or it never
exists and its client got no answer (a retried start by the same request id gives one run);
an activity never runs for a run that was not created.

- df-server (``tests/integration/held_start.py`` with ``--eager-start-wait``) stops after a
  worker answered its offer: ``before`` the first batch is appended (the batch's activity
  task is stored, guarded, right before), or ``after`` (the status entry, the receipt and the
  answer are not sent); the test kills it and the client waiting for the answer, by PID.
  ``before``: the task is never run; the client's retry makes the run, and the task is then
  dead-lettered ("never created").
- A worker (``tests/integration/held_offer.py``) holds an offer without answering and is
  killed: df-server stops waiting and creates the run as before; another worker runs it.

``slow_add`` writes every execution to ``DF_TEST_EXEC_LOG``.
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
WORKER = ("--workflows", "tests.integration.flows:WORKFLOWS")
ACTIVITIES = ("--activities", "tests.integration.flows:ACTIVITIES")
EXECUTED = ["slow_add 1 1 attempt 1", "slow_add 4 10 attempt 1"]


def _executions(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


async def _completed_once(client: df.Client, workflow_id: str) -> tuple[str, list[list[type]]]:
    """The one run of ``workflow_id``, completed once; its id and its batches' event types."""
    handle = client.get_workflow_handle(workflow_id)
    assert await handle.result(timeout=60) == expected_add(1)
    runs = {run for run, _ in await client.history.read_workflow(workflow_id)}
    assert len(runs) == 1
    history = [type(e) for e in await handle.fetch_history()]
    assert history.count(ev.WorkflowStarted) == 1
    assert history.count(ev.WorkflowCompleted) == 1
    run = next(iter(runs))
    batches = await client.history.read(workflow_id, run)
    return run, [[type(e) for e in b.events] for b in batches]


@pytest.mark.parametrize("where", ["before", "after"])
async def test_sigkill_of_df_server_after_its_eager_offer_was_answered(
    daemons: Daemons, nats_server: NatsServer, tmp_path: Path, where: str
) -> None:
    url = nats_server.url
    held, log = tmp_path / "held", tmp_path / "executions"
    daemons.env["DF_TEST_HOLD"] = where
    daemons.env["DF_TEST_HELD"] = str(held)
    daemons.env["DF_TEST_ACTIVITY_SECONDS"] = "0"
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    args = ["server", "--nats", url, "--input-ack-wait", "2", "--eager-start-wait", "0.5"]
    server = daemons.special("held-server", "tests.integration.held_start", *args)
    # --no-eager: the first batch's activity task is stored (Df-First-Batch), the path this
    # test is about (granted attempts: test_eager_starts_grants_crash.py)
    worker = daemons.worker(*WORKER, *ACTIVITIES, "--no-eager")
    async with connected(daemons) as client:
        await wait_for(lambda: "polling task queue" in worker.log(), 30)  # it takes offers
        await unanswered_start(daemons, server, held, url, "held", "req-1")
        daemons.server("--eager-start-wait", "0.5")  # a df-server again, as after any crash
        if where == "after":
            # the first batch is stored, and its activity task before it: the run goes on
            # without anyone asking again
            run, batches = await _completed_once(client, "held")
            assert batches[0] == [ev.WorkflowStarted, ev.ActivityScheduled]  # eager
            assert _executions(log) == EXECUTED
            # the client's retry with the same request id is answered with that run
            again = await client.start_workflow("add_workflow", 1, id="held", options=OPTIONS)
            assert again.run_id == run
        else:
            # only the batch's activity task was stored: no run exists, and the worker does
            # not run the task while the workflow has no history (it looks again later)
            layout, js = client.layout, client.pub.js
            assert await client.history.read_workflow("held") == []
            # the client's retry with the same request id starts the run, once
            await client.start_workflow("add_workflow", 1, id="held", options=OPTIONS)
            await _completed_once(client, "held")
            # the task's next look finds another run's batch: dead-lettered with the reason
            reasons: list[str] = []

            async def dead_lettered() -> bool:
                try:
                    m = await js.get_last_msg(layout.stream, layout.dead_letter("worker"))
                except Exception:
                    return False
                reasons.append((m.headers or {}).get("Df-Reason", ""))
                return True

            await wait_for(dead_lettered, 60)
            assert "never created" in reasons[-1], reasons[-1]
            assert _executions(log) == EXECUTED  # the held run's activity never ran


async def test_sigkill_of_a_worker_holding_an_offer_creates_the_run_as_before(
    daemons: Daemons, nats_server: NatsServer, tmp_path: Path
) -> None:
    held, log = tmp_path / "held", tmp_path / "executions"
    daemons.env["DF_TEST_HELD"] = str(held)
    daemons.env["DF_TEST_ACTIVITY_SECONDS"] = "0"
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    # --sticky-timeout 1: the run's workflow task, sticky to the killed holder, goes to the
    # task queue after 1 s, not the default 5 s
    daemons.server("--eager-start-wait", "0.5", "--sticky-timeout", "1")
    # --workflow-task-timeout 2 (as every test worker): a workflow task handed to the killed
    # holder's pull is delivered again after 2 s, not the default 10 s
    args = ["--nats", nats_server.url, "--task-queue", "tests", "--workflow-task-timeout", "2"]
    args += WORKER
    holder = daemons.special("holder", "tests.integration.held_offer", *args)
    async with connected(daemons) as client:
        # once the holder listens (it logs so once subscribed), a start is offered to it
        await wait_for(lambda: "polling task queue" in holder.log(), 30)
        await client.start_workflow("add_workflow", 1, id="offered", options=OPTIONS)
        await wait_for(held.exists, 30)
        holder.kill()
        daemons.worker(*WORKER, *ACTIVITIES)
        _, batches = await _completed_once(client, "offered")
        assert batches[0] == [ev.WorkflowStarted]  # created as before, with its workflow task
        assert _executions(log) == EXECUTED
