"""Continue-as-new hands on the signals a worker's cached generator was fed after deciding.

The interleaving of a lost signal seen under chaos: a worker's report is taken by a df-server
that dies before recording it, another df-server records signals first, and the report is
recorded only when it is redelivered. Here the dying server is this test's own pull on the
server's input consumer, holding the report unacked; everything else is real.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import pytest

import durablefuture as df
from durablefuture.codec.wire import default_codec
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.commands import PendingSignal, StartSignalWait
from durablefuture.natsserver import NatsServer
from durablefuture.server import Server, ServerOptions
from tests.conftest import wait_for

pytestmark = pytest.mark.asyncio

QUEUE = "handover"


def handover(hops: int, got: list[Any]) -> Generator[Any, Any, Any]:
    got = [*got, (yield df.wait_signal("go"))]
    if hops > 0:
        yield df.continue_as_new(hops - 1, got)
    return got


@contextlib.asynccontextmanager
async def df_server(url: str) -> AsyncIterator[Server]:
    server = await Server.connect(url, ServerOptions())
    await server.start()
    task = asyncio.create_task(server.run())
    try:
        yield server
    finally:
        await server.shutdown()
        with contextlib.suppress(BaseException):
            await task


async def test_a_report_recorded_after_signals_hands_the_unconsumed_ones_on(
    tmp_path: Path,
) -> None:
    nats = NatsServer(str(tmp_path / "nats"))
    nats.start()
    try:
        async with df_server(nats.url):
            client = await df.Client.connect(nats.url)
            # the run's first workflow task waits in its queue: no worker is running yet
            handle = await client.start_workflow(handover, 1, [], id="h", task_queue=QUEUE)
        run_id = handle.run_id
        assert run_id is not None
        layout = client.layout
        codec = default_codec()
        # the server that takes the worker's report and dies before recording it
        dying = await client.nc.jetstream().pull_subscribe_bind(
            durable=layout.server_consumer, stream=layout.stream
        )
        worker_client = await df.Client.connect(nats.url)
        try:
            async with df.Worker(worker_client, QUEUE, workflows=[handover]) as worker:
                # a full replay of event 1 decides "wait for go" and reports it
                held = (await dying.fetch(1, timeout=15))[0]
                report = codec.decode_input(held.data).input
                assert isinstance(report, inp.CompleteWorkflowTask)
                assert [type(c) for c in report.commands] == [StartSignalWait]
                assert report.based_on == 1
                async with df_server(nats.url):
                    # another server records g0 and g1 first; the worker's cached generator
                    # is fed them while its report is still on its way: g0 answers the wait,
                    # the code continues as new, and g1 arrives after that decision
                    await handle.signal("go", "g0")
                    await handle.signal("go", "g1")
                    await wait_for(
                        lambda: (
                            run_id in worker._cache
                            and worker._cache[run_id].execution.last_event_id == 3
                        ),
                        10,
                    )
                    # the report is redelivered and recorded after the signals (event 4,
                    # decided after event 1); the continue-as-new follows, based on event 4
                    await held.nak()
                    first_run = client.get_workflow_handle("h", run_id=run_id)

                    async def closed() -> list[ev.Event] | None:
                        history = await first_run.fetch_history()
                        return history if isinstance(history[-1], ev.TERMINAL_EVENTS) else None

                    first = await wait_for(closed, 15)
                    assert [type(e).__name__ for e in first] == [
                        "WorkflowStarted",
                        "SignalReceived",
                        "SignalReceived",
                        "SignalWaitStarted",
                        "WorkflowContinuedAsNew",
                    ]
                    wait, can = first[3], first[4]
                    assert isinstance(wait, ev.SignalWaitStarted) and wait.based_on == 1
                    assert isinstance(can, ev.WorkflowContinuedAsNew)
                    assert can.args == (0, ["g0"])
                    assert can.signals == (PendingSignal("go", ("g1",)),)
                    # the next run takes g1 instead of waiting for ever
                    result = await client.get_workflow_handle("h").result(timeout=30)
                    assert result == ["g0", "g1"]
        finally:
            await dying.unsubscribe()
            await worker_client.close()
            await client.close()
    finally:
        nats.stop()
