"""Chaos: SIGKILL random components again and again while workflows run; nothing is lost.

Two servers and two workers share the namespace; any of them, or nats-server, is killed at
random moments and restarted.

The bounded variant runs in CI; the long one is marked slow (`pytest -m slow`).
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

import durablefuture as df
from durablefuture.natsserver import NatsServer
from tests.conftest import Daemons, wait_namespace
from tests.integration.flows import chaos_workflow, expected_chaos
from tests.integration.helpers import check_history

WF = ("--workflows", "tests.integration.flows:WORKFLOWS")
ACT = ("--activities", "tests.integration.flows:ACTIVITIES")


async def _chaos(daemons: Daemons, nats: NatsServer, n: int, seconds: float, seed: int) -> None:
    rng = random.Random(seed)
    daemons.env["DF_TEST_ACTIVITY_SECONDS"] = "0.05"
    alive = {
        "server": daemons.server(),
        "server-2": daemons.server(),
        "worker-a": daemons.worker(*WF, *ACT),
        "worker-b": daemons.worker(*WF, *ACT),
    }
    restart = {
        "server": lambda: daemons.server(),
        "server-2": lambda: daemons.server(),
        "worker-a": lambda: daemons.worker(*WF, *ACT),
        "worker-b": lambda: daemons.worker(*WF, *ACT),
    }
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url, connect_timeout=30)
    client.request_timeout = 120
    kills: list[str] = []
    try:
        ids = [f"chaos-{seed}-{i}" for i in range(n)]
        starts = asyncio.gather(
            *(
                client.start_workflow(chaos_workflow, i, id=wid, task_queue="tests")
                for i, wid in enumerate(ids)
            )
        )
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:  # bounded in time and in count
            await asyncio.sleep(rng.uniform(0.3, 1.0))
            victim = rng.choice([*alive, "nats"])
            kills.append(victim)
            if victim == "nats":
                nats.stop(kill=True)
                await asyncio.sleep(0.3)
                nats.start()
            else:
                alive[victim].kill()
                alive[victim] = restart[victim]()
        await starts
        results = await asyncio.gather(
            *(client.get_workflow_handle(wid).result(timeout=180) for wid in ids)
        )
        for i, result in enumerate(results):
            assert result == expected_chaos(i), (ids[i], result)
        for wid in ids:
            check_history(wid, await client.get_workflow_handle(wid).fetch_history())
    except BaseException:
        print("kills:", kills)
        print(daemons.logs())
        raise
    finally:
        await client.close()


async def test_chaos_bounded(daemons: Daemons, nats_server: NatsServer) -> None:
    await _chaos(daemons, nats_server, n=40, seconds=6.0, seed=7)


@pytest.mark.slow
async def test_chaos_soak(daemons: Daemons, nats_server: NatsServer) -> None:
    await _chaos(daemons, nats_server, n=300, seconds=60.0, seed=11)
