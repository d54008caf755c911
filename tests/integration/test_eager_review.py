"""Eager activity dispatch and eager start under crashes and hostile input: lost effects of
an eager attempt's outcome, a check list naming a corrupt run, a grant answered after its run
or an eager start's receipt came after its run was evicted (run here all the same, from the
WorkflowStarted taken when the report went out, or from the offer)."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

import durablefuture as df
from durablefuture.codec.checks import CheckedAttempt, encode_check_list
from durablefuture.core import events as ev
from durablefuture.server import ServerOptions
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.headers import RUN_HEADER
from durablefuture.transport.publisher import MSG_ID
from durablefuture.worker.eager import AFTER_GRANT_HOOK
from durablefuture.worker.receipts import Receipts
from tests.conftest import Daemons, wait_for, wait_namespace
from tests.integration.helpers import watch
from tests.integration.orders import charge, one_charge
from tests.integration.test_fuzz import _dead_letters

pytestmark = pytest.mark.asyncio

FLOWS = "tests.integration.eager_review_flows"
STEPS = "tests.integration.eager_flows"
ARGS = ("--workflows", f"{FLOWS}:step_then_sleep", "--activities", f"{STEPS}:logged_step")


async def test_effects_of_an_eager_attempts_outcome_lost_with_both_processes_are_derived_again(
    daemons: Daemons, tmp_path: Path
) -> None:
    """The worker granted the attempt runs it and reports it with its next decision (a
    sleep); df-server appends that batch and is SIGKILLed before its effects (the timer),
    and so is the worker waiting for the answer. A new df-server and worker must finish the
    run: the attempt's check list fires and finds its outcome recorded."""
    held, victim = tmp_path / "held", tmp_path / "victim"
    daemons.env["DF_TEST_EXEC_LOG"] = str(tmp_path / "exec.log")
    env = dict(daemons.env, DF_TEST_HELD=str(held), DF_TEST_KILL_PID=str(victim))
    server = daemons.special(
        "halting",
        "tests.integration.halting_server",
        "--nats",
        daemons.url,
        "--input-ack-wait",
        "2",
        "--eager-check",
        "1",
        env=env,
    )
    worker = daemons.worker(*ARGS)
    assert worker.proc is not None
    victim.write_text(str(worker.proc.pid))
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    try:
        handle = await client.start_workflow("step_then_sleep", "h-1", id="h-1", task_queue="tests")
        await wait_for(held.exists, 30)
        await wait_for(lambda: server.proc is not None and server.proc.poll() is not None, 15)
        await wait_for(lambda: worker.proc is not None and worker.proc.poll() is not None, 15)
        assert server.proc is not None and server.proc.returncode == -9
        assert worker.proc.returncode == -9
        history = await handle.fetch_history()
        kinds = [type(e) for e in history]
        # the batch is stored: the step's outcome and the timer its decision started
        assert ev.ActivityCompleted in kinds and ev.TimerStarted in kinds, kinds
        assert ev.TimerFired not in kinds
        daemons.server("--eager-check", "1")
        daemons.worker(*ARGS)
        # the check list (due a second after the grant) has long fired by now
        assert await handle.result(timeout=30) == "h-1:0"
    finally:
        await client.close()


def waits(order_id: str):  # type: ignore[no-untyped-def]
    return (yield df.wait_signal("go"))


async def test_a_check_list_naming_a_corrupt_run_still_checks_the_other_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A list groups the attempts of many runs. Run ``c`` has a corrupt history; run ``a``
    was granted its attempt to a worker that never ran it (as one that died right after the
    answer). The list naming both must still check ``a``: its attempt 1 is recorded timed
    out (lost with its worker) and attempt 2's task is stored."""
    monkeypatch.setenv(AFTER_GRANT_HOOK, "skip")
    options = ServerOptions(eager_check=3600.0, input_max_deliver=3)  # only our list fires
    async with LocalEnvironment(server_options=options) as env:
        client, layout = env.client, env.client.layout
        tasks = await watch(client, f"{layout.prefix}.at.>")
        async with env.worker(workflows=[one_charge, waits], activities=[charge]) as worker:
            bad = await client.start_workflow(waits, "c", id="c")
            good = await client.start_workflow(one_charge, "a", id="a")

            async def granted_and_waiting() -> bool:
                history = await bad.fetch_history()
                return worker.stats.get("activity_tasks", 0) == 0 and any(
                    isinstance(e, ev.SignalWaitStarted) for e in history
                )

            await wait_for(granted_and_waiting, 15)
            await wait_for(
                lambda: env.server is not None and env.server.stats["eager_granted"] == 1, 15
            )
            nc = await nats.connect(env.nats_url)
            try:
                subject = layout.history("c", bad.run_id or "")
                await nc.jetstream().publish(subject, b"\x00\xffnot a history message")
            finally:
                await nc.close()
            listed = [
                CheckedAttempt("c", bad.run_id or "", 1, 1),
                CheckedAttempt("a", good.run_id or "", 1, 1),
            ]
            await client.pub.publish(layout.removal("check-list"), encode_check_list(listed))
            ids = lambda: [(m.headers or {}).get(MSG_ID) for m in tasks]  # noqa: E731

            async def handled() -> bool:
                return bool(ids()) or bool(await _dead_letters(env))

            await wait_for(handled, 30)
            stored = [client.codec.decode_activity_task(m.data) for m in tasks]
            assert [(t.run_id, t.seq, t.attempt) for t in stored] == [(good.run_id, 1, 2)], [
                d.reason for d in await _dead_letters(env)
            ]
            assert await good.result(timeout=15) == "charged a"


async def test_a_grant_answered_after_its_run_was_evicted_still_runs_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker's cache drops the run while its report waits for the answer (as a cache
    of one does when another run's task is taken meanwhile): the attempt granted in the
    answer is still the worker's to run, with no task stored."""
    evicted: list[str] = []
    on_answered = Receipts.on_answered

    async def evicting(
        self: Receipts, run_id: str, seq: int, data: bytes, granted: tuple[int, ...] = ()
    ) -> None:
        if granted and not evicted:
            evicted.append(run_id)
            self.cache.pop(run_id)  # what keep() of another run does to the oldest
        await on_answered(self, run_id, seq, data, granted)

    monkeypatch.setattr(Receipts, "on_answered", evicting)
    async with LocalEnvironment(server_options=ServerOptions(eager_check=1.0)) as env:
        server = env.server
        assert server is not None
        async with env.worker(workflows=[one_charge], activities=[charge]):
            h = await env.client.start_workflow(one_charge, "v-1", id="v-1")
            assert await h.result(timeout=30) == "charged v-1"
        assert evicted == [h.run_id]
        assert server.stats["eager_granted"] == 1
        # run where it was granted: not timed out (nor published) by its check
        assert server.stats["checks_timed_out"] == 0 and server.stats["checks_published"] == 0
        kinds = [type(e) for e in await h.fetch_history()]
        assert kinds.count(ev.ActivityCompleted) == 1, kinds  # attempt 1, once
        assert ev.ActivityTimedOut not in kinds and ev.ActivityRetryScheduled not in kinds


async def test_an_eager_starts_grant_answered_after_its_run_was_evicted_still_runs_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same for an eager start: the generator taken from the offer leaves the cache
    while it waits for its receipt; the first batch's attempt granted in that receipt is
    still the worker's to run (the generator is replayed from history for the rest)."""
    evicted: list[str] = []
    on_receipt = Receipts.on_receipt

    async def evicting(self: Receipts, msg: Msg) -> None:
        run_id = (msg.headers or {}).get(RUN_HEADER, "")
        if run_id in self.expected and not evicted:
            evicted.append(run_id)
            self.cache.pop(run_id)  # what keep() of another run does to the oldest
        await on_receipt(self, msg)

    monkeypatch.setattr(Receipts, "on_receipt", evicting)
    options = ServerOptions(eager_check=1.0, eager_start_wait=1.0, status_delay=0)
    async with LocalEnvironment(server_options=options) as env:
        server = env.server
        assert server is not None
        async with env.worker(workflows=[one_charge], activities=[charge]) as worker:
            h = await env.client.start_workflow(one_charge, "s-1", id="s-1")
            assert await h.result(timeout=30) == "charged s-1"
            assert worker.stats.get("eager_starts", 0) == 0  # its generator was dropped
        assert evicted == [h.run_id]
        assert server.stats.get("eager_starts", 0) == 1
        assert server.stats["eager_granted"] == 1
        assert server.stats["checks_timed_out"] == 0 and server.stats["checks_published"] == 0
        kinds = [type(e) for e in await h.fetch_history()]
        assert kinds.count(ev.ActivityCompleted) == 1, kinds
        assert ev.ActivityTimedOut not in kinds and ev.ActivityRetryScheduled not in kinds
