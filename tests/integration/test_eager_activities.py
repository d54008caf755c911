"""Eager activity dispatch (``server/grants.py``, ``server/checks.py``, ``worker/eager.py``):
a worker that decides an activity of its own task queue runs its first attempt itself, with no
stored activity task and no lease until ``eager_claim_after``; the check list that covers the
grant records the attempt timed out when nobody reported it or claimed its lease (it is
retried through a stored task), and never has an attempt run twice."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from nats.aio.msg import Msg

from durablefuture.codec.checks import MAX_CHECK_LIST, CheckedAttempt, encode_check_list
from durablefuture.core import events as ev
from durablefuture.server import ServerOptions
from durablefuture.testing import LocalEnvironment
from durablefuture.worker import WorkerOptions
from durablefuture.worker.eager import AFTER_GRANT_HOOK
from tests.conftest import wait_for
from tests.integration.helpers import watch
from tests.integration.orders import PAUSE, charge, order, ran, ship, wait_then_charge
from tests.integration.test_fuzz import _dead_letters

pytestmark = pytest.mark.asyncio


async def _watch_leases(env: LocalEnvironment) -> list[Msg]:
    """Every attempt lease written from now on."""
    return await watch(env.client, f"$KV.{env.client.layout.activity_bucket}.lease.>")


async def test_eager_activities_complete_with_no_activity_task_stored() -> None:
    """Short eager attempts store neither a task nor a lease."""
    async with LocalEnvironment(server_options=ServerOptions(eager_check=1.0)) as env:
        server = env.server
        assert server is not None
        tasks = await watch(env.client, f"{env.client.layout.prefix}.at.>")
        leases = await _watch_leases(env)
        async with env.worker(workflows=[order], activities=[charge, ship]) as worker:
            ids = [f"e-{i}" for i in range(5)]
            results = await asyncio.gather(
                *(env.client.execute_workflow(order, w, id=w) for w in ids)
            )
            assert worker.stats["activity_tasks"] == 2 * len(ids)  # each taken here
            # every check list fires and finds each attempt's outcome recorded
            await wait_for(lambda: server.stats["checks_done"] == 2 * len(ids), 15)
            assert server.stats["checks_timed_out"] == server.stats["checks_later"] == 0
        await env.client.pub.nc.flush()
        assert results == [[f"charged {w}", f"shipped {w}"] for w in ids]
        assert sorted(ran) == sorted([f"charge {w}" for w in ids] + [f"ship {w}" for w in ids])
        assert server.stats["eager_granted"] == 2 * len(ids)
        assert tasks == []  # no activity task was ever stored
        assert leases == []  # nor any attempt lease
        for w in ids:
            history = await env.client.get_workflow_handle(w).fetch_history()
            assert [type(e) for e in history].count(ev.ActivityCompleted) == 2


async def test_a_check_list_times_out_a_granted_attempt_nobody_ran(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker leaves every attempt granted to it unrun (as one that stopped or died right
    after the answer would): each check list fires, finds no outcome and no lease, and
    records the attempt timed out (lost with its worker); attempt 2 goes through its stored
    task. The task of attempt 1 is never published, and each activity runs once."""
    monkeypatch.setenv(AFTER_GRANT_HOOK, "skip")
    async with LocalEnvironment(server_options=ServerOptions(eager_check=1.0)) as env:
        server = env.server
        assert server is not None
        tasks = await watch(env.client, f"{env.client.layout.prefix}.at.>")
        async with env.worker(workflows=[order], activities=[charge, ship]):
            h = await env.client.start_workflow(order, "s-1", id="s-1")
            assert await h.result(timeout=30) == ["charged s-1", "shipped s-1"]
        await env.client.pub.nc.flush()
        assert ran == ["charge s-1", "ship s-1"]
        assert server.stats["eager_granted"] == 2
        assert server.stats["checks_timed_out"] == 2
        stored = [env.client.codec.decode_activity_task(m.data) for m in tasks]
        assert [(t.run_id, t.seq, t.attempt) for t in stored] == [
            (h.run_id, 1, 2),
            (h.run_id, 2, 2),
        ]
        history = await h.fetch_history()
        retries = [e for e in history if isinstance(e, ev.ActivityRetryScheduled)]
        assert [(e.seq, e.attempt) for e in retries] == [(1, 1), (2, 1)]
        for e in retries:
            assert e.failure.timeout_type == "start_to_close"
            assert "lost with its worker" in e.failure.message
        completed = [e for e in history if isinstance(e, ev.ActivityCompleted)]
        assert [(e.seq, e.attempt) for e in completed] == [(1, 2), (2, 2)]
        assert [type(e) for e in history].count(ev.WorkflowCompleted) == 1


async def test_a_long_eager_activity_outliving_its_check_is_not_run_twice() -> None:
    """``charge`` runs three times longer than the check: it claims its lease after
    ``eager_claim_after``, each check finds the lease renewed by a live holder and lists it
    again; once it is done, the next check finds its outcome. No task is stored, the
    activity runs once, and only the long attempt wrote a lease."""
    PAUSE["charge"] = 3.0
    async with LocalEnvironment(server_options=ServerOptions(eager_check=1.0)) as env:
        server = env.server
        assert server is not None
        tasks = await watch(env.client, f"{env.client.layout.prefix}.at.>")
        leases = await _watch_leases(env)
        options = WorkerOptions(eager_claim_after=0.3, activity_lease=2.0)
        async with env.worker(workflows=[order], activities=[charge, ship], options=options):
            h = await env.client.start_workflow(order, "l-1", id="l-1")
            assert await h.result(timeout=30) == ["charged l-1", "shipped l-1"]
            await wait_for(lambda: server.stats["checks_done"] >= 2, 15)
        await env.client.pub.nc.flush()
        assert ran == ["charge l-1", "ship l-1"]
        assert server.stats["checks_later"] >= 1
        assert server.stats["checks_timed_out"] == 0
        assert tasks == []
        lease = env.client.layout.lease_key(h.run_id or "", 1, 1)
        assert leases and {m.subject.rsplit(".", 4)[-4:] == lease.split(".") for m in leases} == {
            True
        }
        history = [type(e) for e in await h.fetch_history()]
        assert ev.ActivityRetryScheduled not in history


async def test_junk_check_lists_are_dead_lettered_and_a_stale_one_does_nothing() -> None:
    """A check list is believed only from df-server's own subjects (``df auth init`` keeps
    users off them), and still checked: junk is dead-lettered with the reason; a list naming
    an attempt whose outcome is recorded, or a run that does not exist, publishes nothing."""
    # the signalled run's workflow task, sticky to the stopped worker, goes to the task queue
    # after 1 s, not the default 5 s
    async with LocalEnvironment(server_options=ServerOptions(sticky_timeout=1.0)) as env:
        server = env.server
        assert server is not None
        layout = env.client.layout
        async with env.worker(workflows=[order, wait_then_charge], activities=[charge, ship]):
            h = await env.client.start_workflow(order, "j-1", id="j-1")
            assert await h.result(timeout=15) == ["charged j-1", "shipped j-1"]
            waiting = await env.client.start_workflow(wait_then_charge, "j-2", id="j-2")

            async def waits() -> bool:
                history = await waiting.fetch_history()
                return any(isinstance(e, ev.SignalWaitStarted) for e in history)

            await wait_for(waits, 15)
        tasks = await watch(env.client, f"{layout.prefix}.at.>")
        target = layout.removal("check-list")
        too_many = [CheckedAttempt("w", "r", i, 1) for i in range(MAX_CHECK_LIST + 1)]
        junk = [
            b"not json",
            orjson.dumps({"attempts": []}),
            orjson.dumps({"attempts": [["w", "bad run id!", 1, 1]]}),
            orjson.dumps({"attempts": [["w", "r", -1, 1]]}),
            orjson.dumps({"attempts": [["w", "r", 1, 0]]}),
            encode_check_list(too_many),
        ]
        for body in junk:
            await env.client.pub.publish(target, body)
        # an attempt whose outcome is recorded; a run that does not exist; an open run's
        # attempt that no decision scheduled (a list sent beside an append that then failed)
        stale = [
            CheckedAttempt("j-1", h.run_id or "", 1, 1),
            CheckedAttempt("nobody", "r1", 1, 1),
            CheckedAttempt("j-2", waiting.run_id or "", 1, 1),
        ]
        await env.client.pub.publish(target, encode_check_list(stale))

        async def all_handled() -> bool:
            letters = await _dead_letters(env)
            return len(letters) == len(junk) and server.stats["checks_done"] == 3

        await wait_for(all_handled, 15)
        letters = await _dead_letters(env)
        assert all("check list" in d.reason for d in letters), [d.reason for d in letters]
        assert tasks == []
        assert ran == ["charge j-1", "ship j-1"]
        async with env.worker(workflows=[order, wait_then_charge], activities=[charge, ship]):
            await waiting.signal("go", "now")
            assert await waiting.result(timeout=15) == "charged j-2 now"
        assert ran == ["charge j-1", "ship j-1", "charge j-2"]


async def test_a_worker_that_caches_no_run_is_granted_nothing() -> None:
    """A grant is run from the run's cached generator: a worker that caches no run offers
    nothing, and its activities go through their stored tasks at once (not after a check)."""
    async with LocalEnvironment() as env:
        server = env.server
        assert server is not None
        tasks = await watch(env.client, f"{env.client.layout.prefix}.at.>")
        async with env.worker(workflows=[order], activities=[charge, ship], max_cached_workflows=0):
            h = await env.client.start_workflow(order, "n-1", id="n-1")
            assert await h.result(timeout=10) == ["charged n-1", "shipped n-1"]
        await env.client.pub.nc.flush()
        assert ran == ["charge n-1", "ship n-1"]
        assert server.stats["eager_granted"] == 0
        assert len(tasks) == 2
