"""Many workflows through several servers and workers; SIGKILL of every component mid-work."""

from __future__ import annotations

import asyncio

import pytest

import durablefuture as df
from durablefuture.natsserver import NatsServer
from tests.conftest import Daemons, wait_namespace
from tests.integration.helpers import check_all, start_many

pytestmark = pytest.mark.asyncio

WF = ("--workflows", "tests.integration.flows:WORKFLOWS")
ACT = ("--activities", "tests.integration.flows:ACTIVITIES")


async def _client(url: str) -> df.Client:
    client = await df.Client.connect(url)
    client.request_timeout = 60
    return client


async def test_200_workflows_two_servers_two_workers(daemons: Daemons) -> None:
    daemons.env["DF_TEST_ACTIVITY_SECONDS"] = "0.01"
    daemons.server()
    daemons.server()
    daemons.worker(*WF, *ACT)
    daemons.worker(*WF, *ACT)
    await wait_namespace(daemons.url)
    client = await _client(daemons.url)
    try:
        ids = await start_many(client, 200, "many")
        await check_all(client, ids)
    finally:
        await client.close()


async def _crash_scenario(daemons: Daemons, victim: str, nats: NatsServer | None = None) -> None:
    daemons.env["DF_TEST_ACTIVITY_SECONDS"] = "0.3"
    # a killed worker's workflow tasks go to the task queue after 1 s, not 5 s
    sticky = ("--sticky-timeout", "1")
    server = daemons.server(*sticky)
    wf_worker = daemons.worker(*WF)
    act_worker = daemons.worker(*ACT)
    await wait_namespace(daemons.url)
    client = await _client(daemons.url)
    try:
        ids = await start_many(client, 50, f"crash-{victim}")
        await asyncio.sleep(0.5)  # activities and workflow tasks are in flight now
        if victim == "activity-worker":
            act_worker.kill()
            daemons.worker(*ACT)
        elif victim == "workflow-worker":
            wf_worker.kill()
            daemons.worker(*WF)
        elif victim == "server":
            server.kill()
            daemons.server(*sticky)
        elif victim == "nats":
            assert nats is not None
            nats.stop(kill=True)
            await asyncio.sleep(0.5)
            nats.start()
        await check_all(client, ids, timeout=120)
    finally:
        await client.close()


@pytest.mark.parametrize("victim", ["activity-worker", "workflow-worker", "server"])
async def test_sigkill_mid_work_loses_nothing(daemons: Daemons, victim: str) -> None:
    await _crash_scenario(daemons, victim)


async def test_nats_server_sigkill_and_restart_on_same_store(
    daemons: Daemons, nats_server: NatsServer
) -> None:
    await _crash_scenario(daemons, "nats", nats_server)
