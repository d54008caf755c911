"""Client starts asked of df-server as core-NATS requests (``dfev.<ns>.start``).

A start is made by df-server and answered without being stored; with no df-server listening
it is stored on ``df.<ns>.in.start`` as before. A retry with the same request id is answered
with the run already started. A start that finds its workflow id taken stores nothing for a
new run. Every request is hostile input: junk and forged starts are each stored as a dead
letter with a reason and answered with a refusal; the daemons stay up.
"""

from __future__ import annotations

import random

import attrs
import nats
import orjson
import pytest

import durablefuture as df
from durablefuture import auth
from durablefuture.codec.wire import InputEnvelope, default_codec
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.server.options import ServerOptions
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.replies import Watch
from durablefuture.transport.subjects import Layout
from tests.conftest import wait_for
from tests.integration.fuzzing import mangle
from tests.integration.test_fuzz import _dead_letters, _stored

pytestmark = pytest.mark.asyncio

CODEC = default_codec()
OPTS = df.ActivityOptions(start_to_close_timeout=10)


async def charge(order_id: str) -> str:
    return f"charged {order_id}"


def order(order_id: str):  # type: ignore[no-untyped-def]
    c = yield df.activity(charge, order_id, options=OPTS)
    return c


def forever():  # type: ignore[no-untyped-def]
    yield df.wait_signal("never")


async def test_starts_are_made_by_request_and_not_stored() -> None:
    async with LocalEnvironment() as env:
        server = env.server
        assert server is not None
        layout = env.client.layout
        stored = await Watch.open(env.client.nc, layout.input("start"))
        try:
            async with env.worker(workflows=[order], activities=[charge]):
                before = dict(server.stats)
                options = df.WorkflowOptions(request_id="r-1")
                h = await env.client.start_workflow(order, "o-1", id="o-1", options=options)
                assert await h.result(timeout=15) == "charged o-1"
                assert server.stats["start_requests"] - before["start_requests"] == 1
                # asked again with the same request id (a client that lost the answer): the
                # same run, nothing new
                again = await env.client.start_workflow(order, "o-1", id="o-1", options=options)
                assert again.run_id == h.run_id
                assert server.stats["start_requests"] - before["start_requests"] == 2
                runs = {run for run, _ in await env.client.history.read_workflow("o-1")}
                assert runs == {h.run_id}
            await env.client.nc.flush()
            assert stored.received == []  # no start was stored
        finally:
            await stored.close()


async def test_a_start_that_finds_its_id_taken_stores_nothing() -> None:
    """The run's first workflow task is written before its WorkflowStarted, with the same
    check: a start refused because the id is running stores no task for a run that is not."""
    async with LocalEnvironment() as env:  # no worker: the tasks stay stored
        layout = env.client.layout
        first = await env.client.start_workflow(forever, id="busy")
        tasks = layout.workflow_tasks("default")
        assert len(await _stored(env, tasks)) == 1
        with pytest.raises(df.WorkflowAlreadyStartedError):
            await env.client.start_workflow(forever, id="busy")
        assert len(await _stored(env, tasks)) == 1
        assert {run for run, _ in await env.client.history.read_workflow("busy")} == {first.run_id}
        assert await _dead_letters(env) == []


async def test_the_execution_timer_stored_before_the_start_fires() -> None:
    """The durable execution timer is written before the WorkflowStarted (with the same
    check) and fires: the run times out with no worker and no local timer."""
    options = ServerOptions(local_timers=False)
    async with LocalEnvironment(server_options=options) as env:
        server = env.server
        assert server is not None
        wf = df.WorkflowOptions(execution_timeout=1)
        stored = await Watch.open(env.client.nc, env.client.layout.input("start"))
        try:
            h = await env.client.start_workflow(forever, id="late", options=wf)
            await env.client.nc.flush()
            assert stored.received == []  # made by request, with no fallback
        finally:
            await stored.close()
        assert server.stats["start_requests"] == 1
        with pytest.raises(df.WorkflowTimedOutError):
            await h.result(timeout=20)
        history = [type(e) for e in await h.fetch_history()]
        assert history.count(ev.WorkflowStarted) == 1
        assert history[-1] is ev.WorkflowTimedOut


async def test_starts_are_stored_while_no_server_answers() -> None:
    async with LocalEnvironment() as env:
        server = env.server
        assert server is not None
        async with env.worker(workflows=[order], activities=[charge]):
            await server._stop_start_requests()  # nobody listens: the stored fallback
            before = dict(server.stats)
            h = await env.client.start_workflow(order, "o-2", id="o-2")
            assert await h.result(timeout=15) == "charged o-2"
            assert server.stats["start_requests"] == before["start_requests"]
            history = [type(e) for e in await h.fetch_history()]
            assert history.count(ev.WorkflowStarted) == 1
            assert history.count(ev.WorkflowCompleted) == 1


async def test_junk_start_requests_are_refused_and_dead_lettered() -> None:
    rng = random.Random(7)
    async with LocalEnvironment() as env:
        server = env.server
        assert server is not None
        async with env.worker(workflows=[order], activities=[charge]):
            start = inp.StartWorkflowRequest("fz", "order", "default", "r-fz", args=("x",))
            forged = inp.StartWorkflowRequest(
                "fz", "order", "default", "r-fz2", args=("x",), run_id="f" * 32
            )
            valid = [orjson.loads(CODEC.encode_input(InputEnvelope("fz", start=start)))]
            bodies = [CODEC.encode_input(InputEnvelope("fz", start=forged))]  # run id: forged
            bodies += [
                CODEC.encode_input(InputEnvelope("fz", inp.SignalWorkflow("", "go", "s", ())))
            ]
            bodies += [mangle(rng, rng.choice(valid)) for _ in range(100)]
            attacker = await nats.connect(env.nats_url)
            subject = env.client.layout.start_requests
            answers = []
            try:
                for body in bodies:
                    reply = await attacker.request(subject, body, timeout=10)
                    answers.append(CODEC.decode_reply(reply.data))
                for _ in range(20):  # no reply subject: nobody waits, nothing is made
                    await attacker.publish(subject, rng.randbytes(40))
                await attacker.flush()
            finally:
                await attacker.close()
            refused = [a for a in answers if not a.ok]
            # a mangled body may still be a valid start (of some id): made once, answered ok
            made = [a for a in answers if a.ok]
            assert all(a.error_type == "RequestRejectedError" and a.message for a in refused)
            assert answers[0] in refused and answers[1] in refused
            assert "run_id" in (answers[0].message or "")

            async def all_dead_lettered() -> bool:
                return len(await _dead_letters(env)) >= len(refused)

            await wait_for(all_dead_lettered, 30)
            assert len(await _dead_letters(env)) == len(refused)
            assert all(letter.reason for letter in await _dead_letters(env))

            async def unanswered_dropped() -> bool:
                return server.stats["start_requests_unanswered"] >= 20

            await wait_for(unanswered_dropped, 15)
            assert env._server_task is not None and not env._server_task.done()
            for a in made:  # whatever was started runs like any run
                assert a.run_id
            h = await env.client.start_workflow(order, "o-3", id="o-3")
            assert await h.result(timeout=15) == "charged o-3"


async def test_a_start_request_nobody_answers_is_stored() -> None:
    """A listener that never answers (as a df-server killed while it holds requests): each
    start is stored after ``start_wait`` and made from there, once."""
    async with LocalEnvironment() as env:
        server = env.server
        assert server is not None
        await server._stop_start_requests()
        silent = await Watch.open(env.client.nc, env.client.layout.start_requests)
        try:
            async with env.worker(workflows=[order], activities=[charge]):
                env.client.start_wait = 0.3
                for i in range(2):
                    h = await env.client.start_workflow(order, f"s-{i}", id=f"s-{i}")
                    assert await h.result(timeout=15) == f"charged s-{i}"
                assert len(silent.received) == 2
                assert server.stats["start_requests"] == 0
        finally:
            await silent.close()


async def test_credentials_without_the_start_subject_store_their_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Auth files made before ``dfev.<ns>.start`` existed: nats-server refuses the request
    (nobody answers); the client stores that start, and its next ones without asking."""
    real = auth.permissions

    def before_the_subject(role: str, namespace: str, public_key: str) -> auth.Permissions:
        p = real(role, namespace, public_key)
        subject = Layout(namespace).start_requests
        return attrs.evolve(p, publish_allow=tuple(x for x in p.publish_allow if x != subject))

    monkeypatch.setattr(auth, "permissions", before_the_subject)
    async with LocalEnvironment(auth=True) as env:
        server = env.server
        assert server is not None
        async with env.worker(workflows=[order], activities=[charge]):
            env.client.start_wait = 0.5
            for i in range(3):
                h = await env.client.start_workflow(order, f"p-{i}", id=f"p-{i}")
                assert await h.result(timeout=15) == f"charged p-{i}"
            assert server.stats["start_requests"] == 0
            assert env.client._ask_starts_at > 0  # stopped asking
