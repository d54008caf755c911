"""A burst of starts through df-server's start admission (``server/admission.py``): starts
waiting for a place are handled later, never lost or doubled, also when df-server is killed
while they wait; the inputs of the runs already going (a signal) do not wait behind them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

import durablefuture as df
from durablefuture.server import ServerOptions, start_requests
from durablefuture.server.admission import StartGate
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.connection import connect
from durablefuture.transport.layout import ConsumerSettings, ensure_consumer, ensure_namespace
from durablefuture.transport.publisher import Publisher
from durablefuture.transport.subjects import Layout
from tests.conftest import Daemons, wait_for, wait_namespace
from tests.integration.flows import add_workflow, double, expected_add, slow_add, waiting_add
from tests.integration.helpers import check_all

pytestmark = pytest.mark.asyncio

ACTS = [slow_add, double]
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
    finally:
        await client.close()


async def _burst(
    client: df.Client, n: int, task_queue: str, workflow: Any = add_workflow
) -> tuple[list[asyncio.Task[df.WorkflowHandle]], list[int]]:
    """``n`` starts at once; the list counts the ones answered so far."""
    answered = [0]

    async def one(i: int) -> df.WorkflowHandle:
        wid = f"burst-{i}"
        handle = await client.start_workflow(workflow, i, id=wid, task_queue=task_queue)
        answered[0] += 1
        return handle

    return [asyncio.create_task(one(i)) for i in range(n)], answered


async def _first_answered(
    starts: list[asyncio.Task[df.WorkflowHandle]], timeout: float = 60
) -> None:
    """Return as soon as one start of a burst is answered (woken by it, not polling: a
    polling interval would let a loaded machine answer most of the burst meanwhile)."""
    done, _ = await asyncio.wait(starts, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    assert done, f"no start of the burst was answered within {timeout}s"


async def test_a_signal_sent_during_a_burst_of_starts_does_not_wait_behind_them() -> None:
    """16 inputs pulled at once, one start handled at a time: the 200 starts stored ahead of
    the signal would hold every pull place (each waiting for its turn), and the signal would
    be recorded only once nearly all of them were. Pulled apart, it is recorded at once."""
    n = 200
    options = ServerOptions(concurrency=16, start_concurrency=1)
    async with LocalEnvironment(server_options=options) as env:
        client = env.client
        client.request_timeout = 120
        async with env.worker(task_queue="q", workflows=[waiting_add], activities=[double]):
            probe = await client.start_workflow(waiting_add, 5, id="probe", task_queue="q")
            # no worker serves "idle": a start is recorded and left waiting for one
            starts, answered = await _burst(client, n, "idle")
            await _first_answered(starts)
            before = answered[0]
            await probe.signal("go", 1)  # answered once recorded
            meanwhile = answered[0] - before
            # waiting behind the burst, it would be recorded once (nearly) all the starts
            # still unanswered were
            assert meanwhile < (n - before) // 2, (
                f"the signal was recorded only after {meanwhile} of the {n - before} starts "
                "still unanswered when it was sent"
            )
            handles = await asyncio.gather(*starts)
            assert answered[0] == n
            assert await probe.result(timeout=30) == 2 * (5 + 1)
            history = await probe.fetch_history()
            signals = [e for e in history if type(e).__name__ == "SignalReceived"]
            assert len(signals) == 1, signals
            # every start of the burst was recorded once
            for i, handle in enumerate(handles):
                events = await handle.fetch_history()
                assert [type(e).__name__ for e in events].count("WorkflowStarted") == 1, i
                assert (await handle.describe()).status == "running"


async def test_sigkill_of_df_server_during_a_burst_of_starts_and_a_signal_loses_none(
    daemons: Daemons,
) -> None:
    daemons.env["DF_TEST_ACTIVITY_SECONDS"] = "0.01"
    server = daemons.server("--start-concurrency", "1")
    daemons.worker(*WF, *ACT)
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    client.request_timeout = 60
    n = 300
    try:
        probe = await client.start_workflow(waiting_add, 3, id="probe", task_queue="tests")
        starts, answered = await _burst(client, n, "tests")
        await _first_answered(starts)
        signal = asyncio.create_task(probe.signal("go", 1))
        assert answered[0] < n // 2, f"{answered[0]} of {n} starts were answered at once"
        server.kill()  # starts waiting, pulled or not, and the signal perhaps in flight
        daemons.server("--start-concurrency", "1")
        await signal
        await asyncio.gather(*starts)
        assert await probe.result(timeout=60) == 2 * (3 + 1)
        history = await probe.fetch_history()
        assert [type(e).__name__ for e in history].count("SignalReceived") == 1
        await check_all(client, [f"burst-{i}" for i in range(n)], timeout=120)
    finally:
        await client.close()


async def test_starts_stored_for_a_server_consumer_of_every_input_are_started_once(
    daemons: Daemons,
) -> None:
    """A namespace set up before starts had a consumer of their own: its server consumer read
    every input (``in.>``). A df-server narrows it to the other inputs, and its starts
    consumer takes the starts stored meanwhile, each started once."""
    daemons.env["DF_TEST_ACTIVITY_SECONDS"] = "0.01"
    layout = Layout("default")
    nc = await connect(daemons.url)
    client = None
    try:
        js = Publisher(nc).js
        await ensure_namespace(js, layout, 1)
        settings = ConsumerSettings(ack_wait=10, max_deliver=10)
        await ensure_consumer(js, layout, layout.server_consumer, layout.inputs, settings)
        client = await df.Client.connect(daemons.url)
        client.request_timeout = 60
        ids = [f"stored-{i}" for i in range(20)]
        starts = [
            asyncio.create_task(client.start_workflow(add_workflow, i, id=wid, task_queue="tests"))
            for i, wid in enumerate(ids)
        ]

        async def all_stored() -> bool:
            info = await js.stream_info(layout.stream, subjects_filter=layout.input("start"))
            return sum((info.state.subjects or {}).values()) == len(ids)

        await wait_for(all_stored, timeout=30)
        daemons.server()
        daemons.worker(*WF, *ACT)
        await asyncio.gather(*starts)
        await check_all(client, ids, timeout=120)
        info = await js.consumer_info(layout.stream, layout.server_consumer)
        assert sorted(info.config.filter_subjects or []) == sorted(layout.run_inputs)
        assert not info.config.filter_subject
        starts_info = await js.consumer_info(layout.stream, layout.start_consumer)
        assert starts_info.config.filter_subject == layout.input("start")
    finally:
        if client is not None:
            await client.close()
        await nc.close()


@contextlib.asynccontextmanager
async def _one_place(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[LocalEnvironment, StartGate]]:
    """An environment whose df-server takes one start at a time, where only a first report
    gives a held place back: no start goes ahead for having waited (two minutes, for it and
    its client), and no hold runs out on its own."""
    monkeypatch.setattr(start_requests, "REQUEST_WAIT", 120.0)
    options = ServerOptions(start_concurrency=1)
    async with LocalEnvironment(server_options=options) as env:
        assert env.server is not None
        gate = env.server._gate
        gate.hold = gate.min_hold = gate.max_wait = 120
        env.client.request_timeout = 120
        yield env, gate


async def test_each_start_of_a_burst_waits_until_the_runs_before_are_going(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new run is waited for until its first workflow task is reported: with one start
    place (two new runs waiting at most), a burst asked before any worker runs has two runs
    made; each later run is created only after the one two places before it had its first
    task recorded (its SignalWaitStarted), so first tasks never pile up behind the starts."""
    n = 12
    async with _one_place(monkeypatch) as (env, gate):
        gate.live_for = 600  # queue q keeps counting as served while its worker is away
        client = env.client
        async with env.worker(task_queue="q", workflows=[add_workflow], activities=ACTS):
            earlier = await client.start_workflow(add_workflow, 1, id="earlier", task_queue="q")
            await earlier.result(timeout=60)  # queue q has had a worker
        starts, answered = await _burst(client, n, "q", waiting_add)

        async def two() -> bool:
            return answered[0] >= 2

        await wait_for(two, timeout=60)
        async with env.worker(task_queue="q", workflows=[waiting_add], activities=[double]):
            handles = await asyncio.gather(*starts)
            runs: list[tuple[float, float, int]] = []  # (started, first task recorded, i)
            for i, handle in enumerate(handles):

                async def waiting(h: df.WorkflowHandle = handle) -> bool:
                    events = await h.fetch_history()
                    return any(type(e).__name__ == "SignalWaitStarted" for e in events)

                await wait_for(waiting, timeout=60)
                events = await handle.fetch_history()
                first = next(e for e in events if type(e).__name__ == "SignalWaitStarted")
                runs.append((events[0].at, first.at, i))
            runs.sort()
            for (_, going, before), (started, _, after) in zip(runs, runs[2:], strict=False):
                assert started >= going, (
                    f"burst-{after} was started {going - started:.3f}s before burst-{before}'s "
                    "first workflow task was recorded"
                )
            for handle in handles:
                await handle.signal("go", 1)
            for i, handle in enumerate(handles):
                assert await handle.result(timeout=60) == 2 * (i + 1)
                history = await handle.fetch_history()
                assert [type(e).__name__ for e in history].count("WorkflowStarted") == 1
        assert gate.held == 0 and gate.overdue == 0


async def test_starts_to_a_queue_without_workers_are_not_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Starts asked before any worker of their queue runs (deployed first): no report comes
    to pace them by, so no start waits for their runs; every run is created at once and
    completes once its worker comes."""
    n = 12
    async with _one_place(monkeypatch) as (env, gate):
        client = env.client
        starts, answered = await _burst(client, n, "later", add_workflow)

        async def all_answered() -> bool:
            return answered[0] == n

        await wait_for(all_answered, timeout=30)
        assert gate.held == 0 and gate.overdue == 0
        handles = await asyncio.gather(*starts)
        async with env.worker(task_queue="later", workflows=[add_workflow], activities=ACTS):
            for i, handle in enumerate(handles):
                assert await handle.result(timeout=60) == expected_add(i)
                history = await handle.fetch_history()
                assert [type(e).__name__ for e in history].count("WorkflowStarted") == 1
