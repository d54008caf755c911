"""Reports asked of df-server as core-NATS requests (``dfev.<ns>.report``).

A worker's report is recorded by df-server and answered ``recorded`` without the report being
stored; with no df-server listening it is stored on ``df.<ns>.in.report`` as before. Every
request is hostile input: junk, forged inputs and reports for runs that do not exist are each
stored as a dead letter with a reason and answered ``refused``; requests without a reply
subject are dropped; the daemons stay up and the runs in flight complete.
"""

from __future__ import annotations

import asyncio
import random
import time

import nats
import orjson
import pytest

import durablefuture as df
from durablefuture.codec.wire import InputEnvelope, default_codec
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.commands import StartTimer
from durablefuture.core.definitions import WorkflowDefinition
from durablefuture.core.effects import DispatchActivityTask
from durablefuture.core.errors import TransportError
from durablefuture.core.failure import Failure
from durablefuture.core.orchestration import APPLIED, decide
from durablefuture.core.replay import WorkflowExecution
from durablefuture.server import Server, ServerOptions
from durablefuture.server import effects as effects_mod
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.headers import RUN_HEADER
from durablefuture.transport.layout import open_bucket
from durablefuture.transport.leases import AttemptLeases
from durablefuture.transport.publisher import MSG_ID
from durablefuture.transport.report_requests import REFUSED
from durablefuture.worker import reports as reports_mod
from tests.conftest import wait_for
from tests.integration.fuzzing import mangle
from tests.integration.test_fuzz import _dead_letters, _history_bytes, _stored

pytestmark = pytest.mark.asyncio

CODEC = default_codec()
OPTS = df.ActivityOptions(start_to_close_timeout=10)


async def charge(order_id: str) -> str:
    return f"charged {order_id}"


async def ship(order_id: str) -> str:
    return f"shipped {order_id}"


def order(order_id: str):  # type: ignore[no-untyped-def]
    c = yield df.activity(charge, order_id, options=OPTS)
    s = yield df.activity(ship, order_id, options=OPTS)
    return f"{c}/{s}"


def wait_then_charge(order_id: str):  # type: ignore[no-untyped-def]
    go = yield df.wait_signal("go")
    c = yield df.activity(charge, order_id, options=OPTS)
    return f"{c} {go}"


def retried_charge(order_id: str):  # type: ignore[no-untyped-def]
    retry = df.RetryPolicy(initial_interval=0.1, maximum_attempts=3)
    opts = df.ActivityOptions(start_to_close_timeout=10, retry_policy=retry)
    return (yield df.activity(charge, order_id, options=opts))


def wait_then_nap(order_id: str):  # type: ignore[no-untyped-def]
    go = yield df.wait_signal("go")
    yield df.sleep(0.2)
    return f"{order_id} {go}"


async def _until(h: df.WorkflowHandle, kind: type, n: int = 1) -> None:
    """Wait until the run's history holds ``n`` events of ``kind``."""

    async def there() -> bool:
        return sum(isinstance(e, kind) for e in await h.fetch_history()) == n

    await wait_for(there, 15)


async def _append_without_effects(
    server: Server, workflow_id: str, run: str, report: inp.RunInput
) -> list[ev.Event]:
    """Append what ``report`` records, as df-server does, and send none of its effects (a
    df-server that failed right after the append)."""
    cache = await server._load(workflow_id, run)
    async with cache.lock:
        await server._refresh(cache)
        decision = decide(cache.state, report, time.time())
        assert decision.outcome == APPLIED
        await server.history.append_sized(
            workflow_id, run, report.input_id, list(decision.events), cache.last_seq
        )
    return list(decision.events)


def _first_dispatch_fails(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """df-server's first activity task send fails (no PubAck, as when its stream leader stops
    answering); the names of the tasks that failed so are in the list returned."""
    failed: list[str] = []
    real = effects_mod._Sender.dispatch_activity_task

    async def dispatch_once(self: effects_mod._Sender, e: DispatchActivityTask) -> None:
        if not failed:
            failed.append(e.task.name)
            raise TransportError(f"no PubAck for the activity task {e.task.name!r} (injected)")
        await real(self, e)

    monkeypatch.setattr(effects_mod._Sender, "dispatch_activity_task", dispatch_once)
    return failed


async def _lost_lease(env: LocalEnvironment, run: str) -> None:
    """Attempt 1 of activity 1 held by a worker that is gone (its lease is a minute old)."""
    client = env.client
    kv = await open_bucket(client.pub.js, client.layout.activity_bucket)
    leases = AttemptLeases(client.pub, kv, client.layout, CODEC)
    assert await leases.claim(run, 1, 1, "lost", 1.0, time.time() - 60) is None


NO_EAGER_START = ServerOptions(namespace="default", status_delay=0, eager_start_wait=0)
"""Eager start off where a test counts a run's reports or breaks its first decision's
dispatch: an eager start's first decision is an offer's answer, not a report."""


async def test_reports_are_recorded_by_request_and_not_stored() -> None:
    async with LocalEnvironment(server_options=NO_EAGER_START) as env:
        server = env.server
        assert server is not None
        async with env.worker(workflows=[order], activities=[charge, ship]):
            before = dict(server.stats)
            requests: list[dict[str, str]] = []

            async def seen(msg: nats.aio.msg.Msg) -> None:
                requests.append(dict(msg.headers or {}))

            spy = await env.client.nc.subscribe(env.client.layout.report_requests, cb=seen)
            h = await env.client.start_workflow(order, "o-1", id="o-1")
            assert await h.result(timeout=15) == "charged o-1/shipped o-1"
            # one report per step: the first decision, then each result fused with the next
            asked = server.stats["report_requests"] - before["report_requests"]
            assert asked == 3
            await wait_for(lambda: len(requests) == 3, 15)
            await spy.unsubscribe()
            # a request carries no message id (that is for the stream's duplicate window) but
            # what df-server reads: the receipt subject and the ask for it in the answer
            assert [MSG_ID in r for r in requests] == [False] * 3
            assert all(r.get("Df-Receipt", "").startswith("_INBOX.") for r in requests)
            # the server handled one stored input (the start) besides the three requests
            assert server.stats["inputs"] - before["inputs"] == 1 + asked
            assert await _stored(env, env.client.layout.input("report")) == []


async def test_reports_are_stored_while_no_server_answers() -> None:
    async with LocalEnvironment(server_options=NO_EAGER_START) as env:
        server = env.server
        assert server is not None
        async with env.worker(workflows=[order], activities=[charge, ship]):
            await server._stop_report_requests()  # nobody listens: the stored fallback
            before = dict(server.stats)
            h = await env.client.start_workflow(order, "o-2", id="o-2")
            assert await h.result(timeout=15) == "charged o-2/shipped o-2"
            assert server.stats["report_requests"] == before["report_requests"]
            assert server.stats["inputs"] - before["inputs"] == 4  # start + 3 stored reports
            history = [type(e).__name__ for e in await h.fetch_history()]
            assert history.count("ActivityCompleted") == 2  # each result recorded once
            # a stored report keeps its message id (the stream's duplicate window)
            stored = await _stored(env, env.client.layout.input("report"))
            assert len(stored) == 3
            assert all((m.headers or {}).get(MSG_ID) for m in stored)


@pytest.mark.parametrize("how", ["asked", "stored", "asked apart"])
async def test_receipts_ride_in_the_answers_to_asked_reports(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An asked report's receipt (the batch recorded for it) comes in its ``recorded``
    answer: nothing reaches the worker's receipt subject, and the cached generator still
    fuses each activity result with what the code decides next (three reports). A stored
    report has no answer: its receipt comes on the receipt subject as before; so does an
    asked one's when the worker does not ask for it in the answer (a worker that does not
    know the header)."""
    if how == "asked apart":
        monkeypatch.setattr(reports_mod, "ANSWER_RECEIPT_HEADER", "Df-Unknown-Header")
    async with LocalEnvironment(server_options=NO_EAGER_START) as env:
        server = env.server
        assert server is not None
        options = df.WorkerOptions(ask_reports=how != "stored")
        async with env.worker(
            workflows=[order], activities=[charge, ship], options=options
        ) as worker:
            inbox = worker._reports.receipts
            assert inbox
            seen: list[str] = []
            spy = await nats.connect(env.nats_url)
            try:

                async def on(msg: nats.aio.msg.Msg) -> None:
                    seen.append((msg.headers or {}).get(RUN_HEADER, ""))

                await spy.subscribe(inbox, cb=on)
                await spy.flush()
                before = dict(server.stats)
                h = await env.client.start_workflow(order, f"o-{how}", id=f"o-{how}")
                assert await h.result(timeout=15) == f"charged o-{how}/shipped o-{how}"
                if how != "asked":
                    # the last receipt is sent once the closing batch's effects are stored,
                    # which the result does not wait for
                    await wait_for(lambda: len(seen) >= 3, 10)
                await spy.flush()
            finally:
                await spy.close()
            inputs = server.stats["inputs"] - before["inputs"]
            asked = server.stats["report_requests"] - before["report_requests"]
        assert inputs == 4  # the start, then one report per step (each result fused)
        history = [type(e) for e in await h.fetch_history()]
        assert history.count(ev.ActivityCompleted) == 2
        assert history.count(ev.WorkflowCompleted) == 1
        if how == "asked":
            assert asked == 3
            assert seen == []  # every receipt came with its answer
        else:
            assert asked == (0 if how == "stored" else 3)
            # each of the three reports gets its receipt there
            assert seen == [h.run_id] * 3, seen


charged: list[str] = []


async def count_charge(order_id: str) -> str:
    charged.append(order_id)
    return order_id


def fan_out(n: int):  # type: ignore[no-untyped-def]
    done = yield df.all_of(*(df.activity(count_charge, f"p-{i}", options=OPTS) for i in range(n)))
    return len(done)


async def test_a_decision_in_parts_goes_on_from_the_receipts_in_the_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ten activities reported three commands at a time: each part's answer carries its
    receipt, and the next part goes out from it (or from the workflow task df-server sends
    for the rest, whichever comes first); every activity is scheduled and runs once, and no
    receipt comes apart."""
    monkeypatch.setattr(reports_mod, "MAX_REPORT_COMMANDS", 3)
    charged.clear()
    async with LocalEnvironment() as env:
        server = env.server
        assert server is not None
        async with env.worker(workflows=[fan_out], activities=[count_charge]) as worker:
            seen: list[bytes] = []
            spy = await nats.connect(env.nats_url)
            try:

                async def on(msg: nats.aio.msg.Msg) -> None:
                    seen.append(msg.data)

                await spy.subscribe(worker._reports.receipts, cb=on)
                await spy.flush()
                before = dict(server.stats)
                h = await env.client.start_workflow(fan_out, 10, id="parts")
                assert await h.result(timeout=20) == 10
                await spy.flush()
            finally:
                await spy.close()
            asked = server.stats["report_requests"] - before["report_requests"]
        assert asked >= 4  # at least four parts, each asked
        assert seen == []
        assert sorted(charged) == sorted(f"p-{i}" for i in range(10))
        history = [type(e) for e in await h.fetch_history()]
        assert history.count(ev.ActivityScheduled) == 10
        assert history.count(ev.ActivityCompleted) == 10
        assert history.count(ev.WorkflowCompleted) == 1


async def test_junk_report_requests_are_refused_and_dead_lettered() -> None:
    rng = random.Random(21)
    async with LocalEnvironment() as env:
        server = env.server
        assert server is not None
        async with env.worker(workflows=[wait_then_charge], activities=[charge]) as worker:
            waiting = [
                await env.client.start_workflow(wait_then_charge, f"w{i}", id=f"wait-{i}")
                for i in range(3)
            ]

            async def all_waiting() -> bool:
                for h in waiting:
                    events = await h.fetch_history()
                    if not any(isinstance(e, ev.SignalWaitStarted) for e in events):
                        return False
                return True

            await wait_for(all_waiting, 15)
            histories = await _history_bytes(env)
            run = waiting[0].run_id or ""
            valid = [
                # a report for a run that does not exist
                orjson.loads(
                    CODEC.encode_input(
                        InputEnvelope("fz", inp.CompleteActivityTask("f" * 32, 1, 1, "r"))
                    )
                ),
                # not a report: a signal forged by whoever may send reports
                orjson.loads(
                    CODEC.encode_input(
                        InputEnvelope("wait-0", inp.SignalWorkflow(run, "go", "s1", ("x",)))
                    )
                ),
            ]
            attacker = await nats.connect(env.nats_url)
            subject = env.client.layout.report_requests
            answers = []
            try:
                bodies = [orjson.dumps(v) for v in valid]  # decodable, still refused
                bodies += [mangle(rng, rng.choice(valid)) for _ in range(150)]
                for body in bodies:
                    reply = await attacker.request(subject, body, timeout=10)
                    answers.append(reply.data)
                # no reply subject: nobody waits, nothing is recorded
                for _ in range(20):
                    await attacker.publish(subject, rng.randbytes(40))
                await attacker.flush()
            finally:
                await attacker.close()
            assert answers == [REFUSED] * len(answers)

            async def all_dead_lettered() -> bool:
                return len(await _dead_letters(env)) >= len(answers)

            await wait_for(all_dead_lettered, 30)
            reasons = await _dead_letters(env)
            assert len(reasons) == len(answers) and all(reasons), "each says why"
            letters = await _stored(env, env.client.layout.dead_letters())
            assert {(m.headers or {}).get("Df-Subject") for m in letters} == {subject}

            async def unanswered_dropped() -> bool:
                return server.stats["report_requests_unanswered"] >= 20

            await wait_for(unanswered_dropped, 15)
            assert env._server_task is not None and not env._server_task.done()
            assert worker._run_task is not None and not worker._run_task.done()
            after = await _history_bytes(env)
            assert {k: after[k] for k in histories} == histories, "histories changed"
            for i, h in enumerate(waiting):
                await h.signal("go", "late")
                assert await h.result(timeout=15) == f"charged w{i} late"


async def test_a_decision_recorded_without_its_effects_gets_them_when_its_task_comes_back() -> None:
    """A df-server appended a decision asked of it and then failed at its effects (here: the
    append alone, as by a server whose stream leader went away right after it), and the
    worker that asked was lost before it stored the report: nothing stored would finish it.
    The workflow task comes back; its replay finds the decision as the run's newest batch and
    reports it again, and df-server derives its effects: the timer is armed, the run
    completes once."""
    async with LocalEnvironment() as env:
        server = env.server
        assert server is not None
        options = df.WorkerOptions(sticky=False)
        async with env.worker(workflows=[wait_then_nap], options=options):
            h = await env.client.start_workflow(wait_then_nap, "n-1", id="n-1")
            await _until(h, ev.SignalWaitStarted)
        run = h.run_id or ""
        await h.signal("go", "now")  # its workflow task is stored; no worker takes it yet
        await _until(h, ev.SignalReceived)
        # what a worker decides on the signal, appended by df-server with none of its effects
        execution = WorkflowExecution(WorkflowDefinition.from_fn(wait_then_nap), CODEC.payloads)
        activation = execution.feed(list(await h.fetch_history()))
        assert [type(c) for c in activation.commands] == [StartTimer]
        report = inp.CompleteWorkflowTask(run, activation.based_on, activation.commands, "lost")
        await _append_without_effects(server, "n-1", run, report)
        assert [type(e) for e in await h.fetch_history()].count(ev.TimerStarted) == 1

        async with env.worker(workflows=[wait_then_nap], options=options) as worker:
            assert await h.result(timeout=20) == "n-1 now"
            assert worker.stats["reports_redone"] == 1
        history = [type(e) for e in await h.fetch_history()]
        assert history.count(ev.TimerStarted) == 1  # the decision recorded once
        assert history.count(ev.TimerFired) == 1
        assert history.count(ev.WorkflowCompleted) == 1


async def test_an_activity_result_recorded_without_its_effects_gets_them_on_redelivery() -> None:
    """The same for an activity's result: the worker that ran ``charge`` and asked df-server
    to record it was lost (its attempt lease stays), df-server appended the result and none
    of its effects (the workflow task that schedules ``ship``). The activity task comes back;
    the worker that takes it finds the lease of another, and the outcome in history as the
    run's newest batch: it reports it again, and the run completes once."""
    # the run's next workflow task goes to the worker that has left; it is sent to the task
    # queue once that one has been gone for the sticky timeout (1 s here, 5 s by default)
    async with LocalEnvironment(server_options=ServerOptions(sticky_timeout=1.0)) as env:
        server = env.server
        assert server is not None
        async with env.worker(workflows=[order]):  # no activities: `charge` stays queued
            h = await env.client.start_workflow(order, "o-3", id="o-3")
            await _until(h, ev.ActivityScheduled)
        run = h.run_id or ""
        await _lost_lease(env, run)
        report = inp.CompleteActivityTask(run, 1, 1, "charged o-3")
        await _append_without_effects(server, "o-3", run, report)

        async with env.worker(workflows=[order], activities=[charge, ship]):
            assert await h.result(timeout=20) == "charged o-3/shipped o-3"
        history = [type(e) for e in await h.fetch_history()]
        assert history.count(ev.ActivityCompleted) == 2  # `charge` recorded once
        assert history.count(ev.WorkflowCompleted) == 1


@pytest.mark.parametrize("ask", [True, False], ids=["asked", "stored"])
async def test_a_decision_whose_activity_task_was_not_stored_gets_it_again(
    monkeypatch: pytest.MonkeyPatch, ask: bool
) -> None:
    """A df-server appended a workflow task's decision (``charge`` scheduled) and then failed
    to store its activity task, as one whose stream leader stopped answering would (no
    PubAck). Asked, it answers ``store``, and the report the worker stores is a duplicate
    whose effects df-server derives again; stored, the report itself is delivered again,
    with the same outcome. The activity runs once and the run completes once."""
    failed = _first_dispatch_fails(monkeypatch)
    async with LocalEnvironment(server_options=NO_EAGER_START) as env:
        server = env.server
        assert server is not None
        options = df.WorkerOptions(ask_reports=ask)
        async with env.worker(workflows=[order], activities=[charge, ship], options=options):
            h = await env.client.start_workflow(order, "o-4", id="o-4")
            assert await h.result(timeout=20) == "charged o-4/shipped o-4"
        assert failed == ["charge"]
        assert server.stats["duplicates"] >= 1  # the report, recorded once, came back
        history = [type(e) for e in await h.fetch_history()]
        assert history.count(ev.ActivityScheduled) == 2  # the decision recorded once
        assert history.count(ev.ActivityCompleted) == 2
        assert history.count(ev.WorkflowCompleted) == 1


async def test_a_receipt_kept_for_an_answer_that_says_store_comes_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A df-server appended an asked report's decision (``charge`` scheduled), kept its
    receipt for the answer, and then failed to store the activity task: the answer is
    ``store``, which carries no receipt. The receipt still reaches the worker, on its receipt
    subject, so its cached generator stays current (no replay) while the stored report, a
    duplicate, has the effects derived again. The activity runs once, the run completes
    once."""
    failed = _first_dispatch_fails(monkeypatch)
    async with LocalEnvironment(server_options=NO_EAGER_START) as env:
        server = env.server
        assert server is not None
        async with env.worker(workflows=[order], activities=[charge, ship]) as worker:
            seen: list[str] = []
            spy = await nats.connect(env.nats_url)
            try:

                async def on(msg: nats.aio.msg.Msg) -> None:
                    seen.append((msg.headers or {}).get(RUN_HEADER, ""))

                await spy.subscribe(worker._reports.receipts, cb=on)
                await spy.flush()
                h = await env.client.start_workflow(order, "o-5", id="o-5")
                assert await h.result(timeout=20) == "charged o-5/shipped o-5"
                await spy.flush()
            finally:
                await spy.close()
            misses = worker.stats["cache_misses"]
        assert failed == ["charge"]
        assert server.stats["duplicates"] >= 1  # the stored report, recorded once
        assert seen == [h.run_id]  # the one receipt the answer could not carry
        assert misses == 0  # the cached generator went on from it
        history = [type(e) for e in await h.fetch_history()]
        assert history.count(ev.ActivityScheduled) == 2  # the decision recorded once
        assert history.count(ev.ActivityCompleted) == 2
        assert history.count(ev.WorkflowCompleted) == 1


async def test_a_receipt_whose_answer_comes_too_late_comes_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A df-server appended an asked report's decision (``charge`` scheduled), but storing
    its activity task took longer than the worker waits for an answer: the worker stored the
    report (a duplicate, which gets no receipt), and the ``recorded`` answer that carries the
    receipt reaches nobody. The receipt comes on the receipt subject as well. The activity
    runs once, the run completes once."""
    slowed: list[str] = []
    real = effects_mod._Sender.dispatch_activity_task
    stored = asyncio.Event()

    async def dispatch_late(self: effects_mod._Sender, e: DispatchActivityTask) -> None:
        if not slowed:
            slowed.append(e.task.name)
            # until the worker, tired of waiting, has stored its report
            await asyncio.wait_for(stored.wait(), 15)
        await real(self, e)

    monkeypatch.setattr(effects_mod._Sender, "dispatch_activity_task", dispatch_late)
    async with LocalEnvironment(server_options=NO_EAGER_START) as env:
        server = env.server
        assert server is not None
        async with env.worker(workflows=[order], activities=[charge, ship]) as worker:
            seen: list[str] = []
            spy = await nats.connect(env.nats_url)
            try:

                async def on(msg: nats.aio.msg.Msg) -> None:
                    seen.append((msg.headers or {}).get(RUN_HEADER, ""))

                async def on_report(msg: nats.aio.msg.Msg) -> None:
                    stored.set()

                await spy.subscribe(worker._reports.receipts, cb=on)
                await spy.subscribe(worker.layout.input("report"), cb=on_report)
                await spy.flush()
                h = await env.client.start_workflow(order, "o-6", id="o-6")
                assert await h.result(timeout=20) == "charged o-6/shipped o-6"
                await spy.flush()
            finally:
                await spy.close()
        assert slowed == ["charge"]
        assert server.stats["duplicates"] >= 1  # the stored report, recorded once
        assert seen == [h.run_id]  # the one receipt whose answer came too late
        history = [type(e) for e in await h.fetch_history()]
        assert history.count(ev.ActivityScheduled) == 2  # the decision recorded once
        assert history.count(ev.ActivityCompleted) == 2
        assert history.count(ev.WorkflowCompleted) == 1


async def test_a_decision_without_its_effects_gets_them_under_later_inputs() -> None:
    """As above, a decision (``charge`` scheduled) appended with none of its effects, its
    worker lost; but before its workflow task comes back another input is recorded on top
    of it (a signal the code does not wait for; in a fan-out, the result of the branch whose
    task was stored). The decision is no longer the run's newest batch: the replay finds it
    all the same, reports it again, and ``charge`` is dispatched; the run completes once."""
    async with LocalEnvironment() as env:
        server = env.server
        assert server is not None
        options = df.WorkerOptions(sticky=False)
        async with env.worker(workflows=[wait_then_charge], options=options):
            h = await env.client.start_workflow(wait_then_charge, "c-1", id="c-1")
            await _until(h, ev.SignalWaitStarted)
        run = h.run_id or ""
        await h.signal("go", "now")  # its workflow task is stored; no worker takes it yet
        await _until(h, ev.SignalReceived)
        execution = WorkflowExecution(WorkflowDefinition.from_fn(wait_then_charge), CODEC.payloads)
        activation = execution.feed(list(await h.fetch_history()))
        assert [type(c).__name__ for c in activation.commands] == ["ScheduleActivity"]
        report = inp.CompleteWorkflowTask(run, activation.based_on, activation.commands, "lost")
        await _append_without_effects(server, "c-1", run, report)
        await h.signal("unrelated", 1)  # recorded on top of the decision
        await _until(h, ev.SignalReceived, 2)

        async with env.worker(
            workflows=[wait_then_charge], activities=[charge], options=options
        ) as worker:
            assert await h.result(timeout=20) == "charged c-1 now"
            assert worker.stats["reports_redone"] == 1
        history = [type(e) for e in await h.fetch_history()]
        assert history.count(ev.ActivityScheduled) == 1  # the decision recorded once
        assert history.count(ev.ActivityCompleted) == 1
        assert history.count(ev.WorkflowCompleted) == 1


async def test_an_attempt_failure_without_its_effects_gets_them_under_later_inputs() -> None:
    """The worker running attempt 1 of ``charge`` was lost after df-server appended its
    failure (the retry scheduled) and before the next attempt's task was stored; then an
    input is recorded on top (a signal here; in a fan-out, the other branch's result). The
    attempt's task comes back to a worker that finds another's lease and the attempt's
    outcome in history, not as the newest batch: it reports it again all the same, and
    attempt 2 is dispatched and completes the run."""
    async with LocalEnvironment(server_options=ServerOptions(sticky_timeout=1.0)) as env:
        server = env.server
        assert server is not None
        async with env.worker(workflows=[retried_charge]):  # no activities: `charge` stays queued
            h = await env.client.start_workflow(retried_charge, "r-1", id="r-1")
            await _until(h, ev.ActivityScheduled)
        run = h.run_id or ""
        await _lost_lease(env, run)
        report = inp.FailActivityTask(run, 1, 1, Failure("card reader unplugged"))
        events = await _append_without_effects(server, "r-1", run, report)
        assert [type(e) for e in events] == [ev.ActivityRetryScheduled]
        await h.signal("unrelated", 1)  # recorded on top of the failure
        await _until(h, ev.SignalReceived)

        async with env.worker(workflows=[retried_charge], activities=[charge]):
            assert await h.result(timeout=20) == "charged r-1"
        history = await h.fetch_history()
        kinds = [type(e) for e in history]
        assert kinds.count(ev.ActivityRetryScheduled) == 1  # the failure recorded once
        assert [e.attempt for e in history if isinstance(e, ev.ActivityCompleted)] == [2]
        assert kinds.count(ev.WorkflowCompleted) == 1
