"""Eager start: a new run's first workflow task run by a worker before anything is stored.

With ``eager_start_wait`` df-server offers the first workflow task to a worker of the run's
queue; the answer's activities go into the run's first history batch. Compared with the same
workflow started without it (in the same test): no workflow task stored and one history batch
fewer, and the run completes once. An offer nobody answers (no worker, a worker that does not
take it) creates the run as before, and so does a forged answer (hostile bytes); a worker
answers ``busy`` to hostile offers.
"""

from __future__ import annotations

import pytest

import durablefuture as df
from durablefuture.codec.wire import InputEnvelope, default_codec
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.commands import CompleteWorkflow, ScheduleActivity
from durablefuture.server import eager_starts
from durablefuture.server.eager_starts import MAX_OFFER_BYTES
from durablefuture.server.options import ServerOptions
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.headers import RECEIPT_HEADER
from durablefuture.transport.messages import Msg
from durablefuture.transport.replies import Watch
from durablefuture.worker.eager_starts import BUSY
from durablefuture.worker.eager_starts import MAX_COMMANDS as WORKER_MAX_COMMANDS
from tests.integration.orders import OPTS, charge, order, ship
from tests.integration.test_fuzz import _dead_letters

pytestmark = pytest.mark.asyncio

CODEC = default_codec()


def _options(wait: float) -> ServerOptions:
    return ServerOptions(namespace="default", status_delay=0, eager_start_wait=wait)


async def _run_one(wait: float, wid: str) -> tuple[int, int, dict[str, int], list[str]]:
    """Start and finish one order; (workflow tasks stored, history batches stored, the
    server's stats, the run's event types)."""
    async with LocalEnvironment(server_options=_options(wait)) as env:
        server = env.server
        assert server is not None
        nc, layout = env.client.nc, env.client.layout
        tasks = await Watch.open(nc, f"{layout.prefix}.wt.>")
        batches = await Watch.open(nc, f"{layout.prefix}.h.>")
        try:
            async with env.worker(workflows=[order], activities=[charge, ship]):
                h = await env.client.start_workflow(order, wid, id=wid)
                assert await h.result(timeout=15) == [f"charged {wid}", f"shipped {wid}"]
                events = [type(e).__name__ for e in await h.fetch_history()]
            await nc.flush()
            runs = await env.client.history.read_workflow(wid)
            assert {run for run, _ in runs} == {h.run_id}  # one run, completed once
            return len(tasks.received), len(batches.received), dict(server.stats), events
        finally:
            await tasks.close()
            await batches.close()


async def test_an_eager_start_stores_no_workflow_task_and_one_batch_fewer() -> None:
    tasks_before, batches_before, stats_before, events_before = await _run_one(0, "o-plain")
    tasks, batches, stats, events = await _run_one(0.5, "o-eager")
    assert stats_before.get("eager_starts", 0) == 0
    assert tasks_before == 1  # the first workflow task (the activities' results are fused)
    assert stats["eager_starts"] == 1
    assert tasks == 0
    assert batches == batches_before - 1
    assert events == events_before  # the same history, one batch fewer
    assert events.count("WorkflowCompleted") == 1


async def test_an_offer_nobody_answers_creates_the_run_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(eager_starts, "PAUSE", 600.0)  # longer than the test
    async with LocalEnvironment(server_options=_options(0.2)) as env:
        server = env.server
        assert server is not None
        # no worker listening yet: no responders, the run is created with its workflow task
        h = await env.client.start_workflow(order, "o-1", id="o-1")
        assert server.stats.get("eager_unanswered", 0) == 1
        assert server.stats.get("eager_starts", 0) == 0
        async with env.worker(workflows=[order], activities=[charge, ship]):
            # the queue's offers are paused: this start is not offered, though a worker listens
            h2 = await env.client.start_workflow(order, "o-2", id="o-2")
            assert await h.result(timeout=15) == ["charged o-1", "shipped o-1"]
            assert await h2.result(timeout=15) == ["charged o-2", "shipped o-2"]
        assert server.stats.get("eager_unanswered", 0) == 1
        assert server.stats.get("eager_starts", 0) == 0


def _forged_answers(run_id: str, history: str) -> list[tuple[bytes, dict[str, str]]]:
    """Answers df-server must discard: junk, another run's report, a decision it cannot take
    eagerly, a receipt subject that is no inbox (a run's history)."""
    inbox = "_INBOX.forger"
    schedule = ScheduleActivity(seq=1, name="charge", args=("x",), options=OPTS)
    report = inp.CompleteWorkflowTask(run_id, 1, (schedule,))
    other = inp.CompleteWorkflowTask("0" * 32, 1, (schedule,))
    done = inp.CompleteWorkflowTask(run_id, 1, (CompleteWorkflow(result="forged"),))
    env = CODEC.encode_input
    return [
        (b"\x00junk" * 100, {RECEIPT_HEADER: inbox}),
        (env(InputEnvelope("o-1", input=other)), {RECEIPT_HEADER: inbox}),
        (env(InputEnvelope("o-1", input=done)), {RECEIPT_HEADER: inbox}),
        (env(InputEnvelope("o-1", input=report)), {RECEIPT_HEADER: history}),
        (b"x" * (MAX_OFFER_BYTES + 1), {RECEIPT_HEADER: inbox}),
    ]


@pytest.mark.parametrize("forgery", range(5))
async def test_a_forged_answer_is_discarded_and_the_run_created_as_before(forgery: int) -> None:
    async with LocalEnvironment(server_options=_options(0.5)) as env:
        server = env.server
        assert server is not None
        nc, layout = env.client.nc, env.client.layout
        offered: list[bytes] = []

        async def forger(msg: Msg) -> None:
            offer = CODEC.decode_workflow_task(msg.data)
            offered.append(msg.data)
            history = layout.history("o-1", offer.task.run_id)
            data, headers = _forged_answers(offer.task.run_id, history)[forgery]
            await nc.publish(msg.reply, data, headers=headers)

        sub = await nc.subscribe(layout.eager_starts("default"), cb=forger)
        try:
            h = await env.client.start_workflow(order, "o-1", id="o-1")
        finally:
            await sub.unsubscribe()
        assert len(offered) == 1
        assert server.stats.get("eager_declined", 0) == 1
        assert server.stats.get("eager_starts", 0) == 0
        async with env.worker(workflows=[order], activities=[charge, ship]):
            assert await h.result(timeout=15) == ["charged o-1", "shipped o-1"]
        batches = await env.client.history.read("o-1", h.run_id or "")
        # created as before: the first batch is the WorkflowStarted alone, nothing forged
        assert [type(e) for e in batches[0].events] == [ev.WorkflowStarted]
        events = [type(e).__name__ for b in batches for e in b.events]
        assert events.count("WorkflowCompleted") == 1


async def test_a_worker_answers_busy_to_hostile_offers_and_goes_on() -> None:
    async with LocalEnvironment(server_options=_options(0.5)) as env:
        nc, layout = env.client.nc, env.client.layout
        subject = layout.eager_starts("default")
        async with env.worker(workflows=[order], activities=[charge, ship]):
            for junk in (b"", b"{}", b"\xff" * 1000, b"x" * (MAX_OFFER_BYTES + 1)):
                answer = await nc.request(subject, junk, timeout=5)
                assert answer.data == BUSY
            h = await env.client.start_workflow(order, "o-1", id="o-1")
            assert await h.result(timeout=15) == ["charged o-1", "shipped o-1"]


def napper(order_id: str):  # type: ignore[no-untyped-def]
    yield df.sleep(0.2)
    c = yield df.activity(charge, order_id, options=OPTS)
    return c


LOCAL_RUNS: list[str] = []


def local_note(order_id: str) -> str:
    LOCAL_RUNS.append(order_id)
    return f"noted {order_id}"


def noter(order_id: str):  # type: ignore[no-untyped-def]
    n = yield df.local_activity(local_note, order_id, options=OPTS)
    c = yield df.activity(charge, order_id, options=OPTS)
    return [n, c]


async def test_a_first_timer_is_started_eagerly_and_fires() -> None:
    async with LocalEnvironment(server_options=_options(0.5)) as env:
        server = env.server
        assert server is not None
        async with env.worker(workflows=[napper], activities=[charge]):
            h = await env.client.start_workflow(napper, "n-1", id="n-1")
            assert await h.result(timeout=15) == "charged n-1"
        assert server.stats.get("eager_starts", 0) == 1
        batches = await env.client.history.read("n-1", h.run_id or "")
        assert [type(e) for e in batches[0].events] == [ev.WorkflowStarted, ev.TimerStarted]
        events = [type(e).__name__ for b in batches for e in b.events]
        assert events.count("TimerFired") == 1
        assert events.count("WorkflowCompleted") == 1


async def test_a_first_task_waiting_on_a_local_activity_is_declined_before_it_runs() -> None:
    LOCAL_RUNS.clear()
    async with LocalEnvironment(server_options=_options(0.5)) as env:
        server = env.server
        assert server is not None
        async with env.worker(workflows=[noter], activities=[charge, local_note]) as worker:
            h = await env.client.start_workflow(noter, "l-1", id="l-1")
            assert await h.result(timeout=15) == ["noted l-1", "charged l-1"]
            assert worker.stats.get("eager_starts", 0) == 0
        assert server.stats.get("eager_declined", 0) == 1  # answered busy
        assert server.stats.get("eager_starts", 0) == 0
        assert LOCAL_RUNS == ["l-1"]  # run once, by the stored task


def fan_out(n: int):  # type: ignore[no-untyped-def]
    results = yield df.all_of(*(df.activity(charge, f"o-{i}", options=OPTS) for i in range(n)))
    return len(results)


@pytest.mark.parametrize("n", [WORKER_MAX_COMMANDS, WORKER_MAX_COMMANDS + 1])
async def test_a_first_fan_out_is_eager_up_to_the_command_limit(n: int) -> None:
    assert WORKER_MAX_COMMANDS == eager_starts.MAX_COMMANDS  # what df-server takes
    async with LocalEnvironment(server_options=_options(0.5)) as env:
        server = env.server
        assert server is not None
        async with env.worker(workflows=[fan_out], activities=[charge]):
            h = await env.client.start_workflow(fan_out, n, id="f-1")
            assert await h.result(timeout=30) == n
        eager = n <= WORKER_MAX_COMMANDS
        assert server.stats.get("eager_starts", 0) == int(eager)
        assert server.stats.get("eager_declined", 0) == int(not eager)  # answered busy
        batches = await env.client.history.read("f-1", h.run_id or "")
        assert len(batches[0].events) == (1 + n if eager else 1)


async def test_an_activity_worker_without_the_run_reads_that_it_exists() -> None:
    """The first batch's activity task reaches a worker that did not take the offer: it
    finds the run's batch in history and runs it."""
    async with LocalEnvironment(server_options=_options(0.5)) as env:
        server = env.server
        assert server is not None
        async with (
            env.worker(workflows=[order]) as deciding,
            env.worker(activities=[charge, ship]) as acting,
        ):
            h = await env.client.start_workflow(order, "o-1", id="o-1")
            assert await h.result(timeout=15) == ["charged o-1", "shipped o-1"]
            assert deciding.stats.get("eager_starts", 0) == 1
            assert acting.stats["activity_tasks"] == 2
        assert server.stats.get("eager_starts", 0) == 1
        dead = await _dead_letters(env)
        assert dead == []
