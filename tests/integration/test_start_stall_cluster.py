"""On a clustered stream a new run's first workflow task is stored (and replicated) before its
WorkflowStarted append is even sent (``server/starts.py``). A worker may take that task, run
it and report before the append lands; had the report been refused at once as one for a run
that does not exist, the worker would drop the task and the run created a moment later would
have no workflow task and never move. A workflow-task report for a run not found waits for its
WorkflowStarted (``server.inputs.FIRST_APPEND_WAIT``). Here df-server's event loop runs other
work at that await for half that time (what a loaded machine does); the run must complete."""

from __future__ import annotations

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.server.inputs import FIRST_APPEND_WAIT
from tests.cluster import NatsCluster
from tests.conftest import Daemons, connected
from tests.integration.flows import expected_add

pytestmark = pytest.mark.asyncio


async def test_a_report_before_the_append_on_a_cluster_leaves_no_run_stuck(
    cluster_daemons: Daemons, nats_cluster: NatsCluster
) -> None:
    daemons = cluster_daemons
    url = nats_cluster.url
    # a stall within FIRST_APPEND_WAIT: the report waits for the append instead of being refused
    daemons.env["DF_TEST_STALL"] = str(FIRST_APPEND_WAIT / 2)
    daemons.env["DF_TEST_ACTIVITY_SECONDS"] = "0"
    args = ["--nats", url, "--replicas", "3"]
    daemons.special("stalled-server", "tests.integration.stalled_start", *args)
    daemons.worker(
        "--workflows",
        "tests.integration.flows:WORKFLOWS",
        "--activities",
        "tests.integration.flows:ACTIVITIES",
    )
    async with connected(daemons) as client:
        options = df.WorkflowOptions(task_queue="tests", execution_timeout=300)
        handle = await client.start_workflow("add_workflow", 1, id="stall", options=options)
        assert await handle.result(timeout=40) == expected_add(1)
        history = [type(e) for e in await handle.fetch_history()]
        assert history.count(ev.WorkflowStarted) == 1
        assert history.count(ev.WorkflowCompleted) == 1
