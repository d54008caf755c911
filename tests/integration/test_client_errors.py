"""Every error a client call raises is one of ours, named for what happened.

A wait that times out, a request for a run that has closed or that the server refused, an
unreadable query answer and a lost NATS connection each raise a ``df.DurableFutureError``
subclass (never the bare root, a built-in or a nats-py exception).
"""

from __future__ import annotations

import asyncio

import pytest

import durablefuture as df
from durablefuture.core.effects import RunStatus
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.consumer import Msg
from tests.conftest import wait_for

pytestmark = pytest.mark.asyncio


def waits(name: str):  # type: ignore[no-untyped-def]
    return (yield df.wait_signal(name))


async def test_a_result_that_takes_too_long_raises_result_timeout_error() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(task_queue="q", workflows=[waits]):
            handle = await env.client.start_workflow(waits, "go", id="slow", task_queue="q")
            with pytest.raises(df.ResultTimeoutError) as caught:
                await handle.result(timeout=0.2)
            err = caught.value
            assert isinstance(err, df.DurableFutureError) and isinstance(err, TimeoutError)
            assert err.workflow_id == "slow" and err.run_id == handle.run_id
            await handle.signal("go", 7)  # the run went on
            assert await handle.result(timeout=10) == 7


async def test_requests_for_a_closed_run_raise_workflow_not_running_error() -> None:
    async with LocalEnvironment() as env:  # no worker: the run only moves by our requests
        handle = await env.client.start_workflow(waits, "go", id="closed", task_queue="none")
        await handle.terminate("done with it")
        with pytest.raises(df.WorkflowTerminatedError):
            await handle.result(timeout=10)
        for request in (handle.signal("go"), handle.cancel(), handle.terminate()):
            with pytest.raises(df.WorkflowNotRunningError) as caught:
                await request
            assert isinstance(caught.value, df.RequestRejectedError)
            assert caught.value.workflow_id == "closed"
            assert RunStatus.TERMINATED in str(caught.value)


async def test_a_refused_request_for_a_running_run_raises_request_rejected_error() -> None:
    async with LocalEnvironment() as env:
        handle = await env.client.start_workflow(waits, "go", id="twice", task_queue="none")
        await handle.cancel()
        with pytest.raises(df.RequestRejectedError) as caught:
            await handle.cancel()
        assert not isinstance(caught.value, df.WorkflowNotRunningError)
        assert "already requested" in str(caught.value)
        with pytest.raises(df.WorkflowNotFoundError):
            await env.client.get_workflow_handle("nobody").signal("go")


async def test_an_unreadable_query_answer_raises_query_failed_error() -> None:
    async with LocalEnvironment() as env:
        handle = await env.client.start_workflow(waits, "go", id="asked", task_queue="fake")
        answers = iter([b"\x00 not json", b"[1, 2]", b'{"ok": "yes"}', b'{"ok": false}'])

        async def impostor(msg: Msg) -> None:
            await msg.respond(next(answers, b'{"ok": false, "message": "boom"}'))

        sub = await env.client.nc.subscribe(env.client.layout.query("fake"), cb=impostor)
        try:
            for expected in ("unreadable", "unreadable", "unreadable", "failed", "boom"):
                with pytest.raises(df.QueryFailedError, match=expected):
                    await handle.query("state", timeout=5)
        finally:
            await sub.unsubscribe()
        with pytest.raises(df.QueryFailedError, match="no workflow worker"):
            await handle.query("state", timeout=5)


async def test_a_lost_connection_raises_transport_errors_not_nats_ones() -> None:
    async with LocalEnvironment() as env:
        handle = await env.client.start_workflow(waits, "go", id="lost", task_queue="none")
        client = await df.Client.connect(env.nats_url)
        assert await wait_for(lambda: client.summary("lost", handle.run_id or ""), 10)
        await client.nc.close()
        client.request_timeout = 2.0
        again = client.get_workflow_handle("lost", run_id=handle.run_id)
        calls = {
            "summary": client.summary("lost", handle.run_id or ""),
            "list_workflows": client.list_workflows(),
            "queue_depths": client.queue_depths("none"),
            "describe": again.describe(),
            "fetch_history": again.fetch_history(),
            "signal": again.signal("go"),
            "result": again.result(timeout=5),
            "query": again.query("state", timeout=1),
        }
        for name, call in calls.items():
            with pytest.raises(df.TransportError):
                await asyncio.wait_for(call, 10)
            assert name  # named in the traceback if it fails
