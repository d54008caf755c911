"""A burst of starts through df-server's start admission (``server/admission.py``): starts
waiting for a place are handled later, never lost or doubled, also when df-server is killed
while they wait."""

from __future__ import annotations

import asyncio

import pytest

import durablefuture as df
from tests.conftest import Daemons, wait_namespace
from tests.integration.flows import add_workflow
from tests.integration.helpers import check_all

pytestmark = pytest.mark.asyncio

WF = ("--workflows", "tests.integration.flows:WORKFLOWS")
ACT = ("--activities", "tests.integration.flows:ACTIVITIES")


async def test_sigkill_of_df_server_while_starts_wait_loses_none(daemons: Daemons) -> None:
    daemons.env["DF_TEST_ACTIVITY_SECONDS"] = "0.01"
    server = daemons.server("--start-concurrency", "1")
    daemons.worker(*WF, *ACT)
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    client.request_timeout = 60
    n = 300
    ids = [f"burst-{i}" for i in range(n)]
    try:
        starts = [
            asyncio.create_task(client.start_workflow(add_workflow, i, id=wid, task_queue="tests"))
            for i, wid in enumerate(ids)
        ]
        done, pending = await asyncio.wait(starts, return_when=asyncio.FIRST_COMPLETED)
        # one start at a time: the first is answered while most still wait for their place
        assert len(pending) > n // 2, f"{len(done)} of {n} starts were answered at once"
        server.kill()
        daemons.server("--start-concurrency", "1")
        await asyncio.gather(*starts)
        await check_all(client, ids, timeout=120)  # each completed once, histories clean
    except BaseException:
        print(daemons.logs())
        raise
    finally:
        await client.close()
