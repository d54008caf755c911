"""Chaos: SIGKILL random components again and again while workflows run; nothing is lost.

Two servers and two workers share the namespace; any of them, or nats-server, is killed at
random moments and restarted.

The bounded variant runs in CI; the long one is marked slow (`pytest -m slow`).
"""

from __future__ import annotations

import asyncio
import random
import re
import time

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.natsserver import NatsServer
from tests.conftest import Daemons, wait_namespace
from tests.integration.flows import chaos_rich, chaos_workflow, expected_chaos, expected_rich
from tests.integration.helpers import check_history, until_signal_recorded

WF = ("--workflows", "tests.integration.flows:WORKFLOWS")
ACT = ("--activities", "tests.integration.flows:ACTIVITIES")


HOPS = 2


async def _chaos(
    daemons: Daemons, nats: NatsServer, n: int, seconds: float, seed: int, rich: int = 0
) -> None:
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
    lost_replies: list[str] = []
    try:
        ids = [f"chaos-{seed}-{i}" for i in range(n)]
        rich_ids = [f"rich-{seed}-{i}" for i in range(rich)]
        starts = asyncio.gather(
            *(
                client.start_workflow(chaos_workflow, i, id=wid, task_queue="tests")
                for i, wid in enumerate(ids)
            ),
            *(
                client.start_workflow(chaos_rich, i, HOPS, [], id=wid, task_queue="tests")
                for i, wid in enumerate(rich_ids)
            ),
        )

        async def send_signals(wid: str) -> None:
            handle = client.get_workflow_handle(wid)
            for k in range(HOPS + 1):  # one per run of the continue-as-new chain
                await asyncio.sleep(rng.uniform(0.0, seconds / (HOPS + 1)))
                try:
                    await handle.signal("go", f"g{k}")
                except df.ServerUnavailableError:
                    # stored, but the reply was lost: a df-server that reconnected to the
                    # restarted nats-server before this client did answered to nobody. The
                    # signal is applied all the same; sending it again would be a second one
                    lost_replies.append(wid)
                    await until_signal_recorded(client, wid, "go", f"g{k}", time.monotonic() + 120)

        await starts
        signals = asyncio.gather(*(send_signals(wid) for wid in rich_ids))
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
        await signals
        results = await asyncio.gather(
            *(client.get_workflow_handle(wid).result(timeout=180) for wid in ids)
        )
        for i, result in enumerate(results):
            assert result == expected_chaos(i), (ids[i], result)
        for wid in ids:
            check_history(wid, await client.get_workflow_handle(wid).fetch_history())
        rich_results = await asyncio.gather(
            *(client.get_workflow_handle(wid).result(timeout=180) for wid in rich_ids)
        )
        for i, result in enumerate(rich_results):
            assert result == expected_rich(i, HOPS), (rich_ids[i], result)
        print(f"kills: {kills}; signal replies lost (signal applied): {lost_replies}")
    except BaseException as exc:
        todo = list(set(re.findall(r"'((?:rich|chaos)-[0-9-]+)'", str(exc))))
        while todo:  # the named workflows and their children
            wid = todo.pop()
            print(f"history of {wid} (every run):")
            for run_id, batch in await client.history.read_workflow(wid):
                print(f"  run {run_id} seq {batch.stream_seq} input {batch.input_id}")
                for e in batch.events:
                    print(f"    {e}")
                    if isinstance(e, ev.ChildWorkflowScheduled):
                        todo.append(e.workflow_id)
        print("kills:", kills)
        print("signal replies lost:", lost_replies)
        print(daemons.logs())
        raise
    finally:
        await client.close()


async def test_chaos_bounded(daemons: Daemons, nats_server: NatsServer) -> None:
    await _chaos(daemons, nats_server, n=30, seconds=6.0, seed=7, rich=10)


@pytest.mark.slow
async def test_chaos_soak(daemons: Daemons, nats_server: NatsServer) -> None:
    await _chaos(daemons, nats_server, n=300, seconds=60.0, seed=11, rich=60)
