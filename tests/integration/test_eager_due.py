"""A granted (eager) activity attempt is checked no later than its start_to_close
(``server/grants.py``, ``check_deadline``): one lost with its worker is recorded timed out
and retried then, not only at ``eager_check``; one still renewed by a holder past its
start_to_close is timed out as a stored attempt's start_to_close timer would; a long one
within its start_to_close is only ever listed again, never timed out early. Check lists
whose attempts fall due at different times never share a list (``server/expiries.py``).
A worker killed right after its grant (SIGKILL) costs the attempt its start_to_close only."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

import durablefuture as df
from durablefuture.codec.checks import (
    CHECK_LIST_BYTES,
    MAX_CHECK_LIST,
    CheckedAttempt,
    check_list_size,
    decode_check_list,
    encode_check_list,
)
from durablefuture.codec.wire import default_codec
from durablefuture.core import events as ev
from durablefuture.natsserver import NatsServer
from durablefuture.server import ServerOptions
from durablefuture.server.expiries import ScheduleLists
from durablefuture.server.grants import CHECK_GRACE, CHECK_SPREAD, check_deadline
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.compaction import purge
from durablefuture.transport.connection import connect
from durablefuture.transport.layout import ensure_namespace, open_bucket
from durablefuture.transport.leases import AttemptLeases
from durablefuture.transport.publisher import SCHEDULE, Publisher, schedule_at
from durablefuture.transport.report_requests import ANSWER_WAIT
from durablefuture.transport.subjects import Layout
from durablefuture.worker import WorkerOptions
from durablefuture.worker.eager import AFTER_GRANT_HOOK
from durablefuture.worker.eager_starts import RECEIPT_WAIT
from tests.conftest import Daemons, wait_for, wait_namespace
from tests.integration.eager_flows import STEPS, brief_logged_flow
from tests.integration.helpers import check_history, watch
from tests.integration.orders import PAUSE, charge, ran, ship
from tests.integration.test_eager_crash import executions

pytestmark = pytest.mark.asyncio

BRIEF = df.ActivityOptions(start_to_close_timeout=2)
SOON = df.ActivityOptions(start_to_close_timeout=1)
LONGER = df.ActivityOptions(start_to_close_timeout=6)
CODEC = default_codec()


def brief_order(order_id: str):  # type: ignore[no-untyped-def]
    c = yield df.activity(charge, order_id, options=BRIEF)
    s = yield df.activity(ship, order_id, options=BRIEF)
    return [c, s]


def soon_charge(order_id: str):  # type: ignore[no-untyped-def]
    return (yield df.activity(charge, order_id, options=SOON))


def longer_charge(order_id: str):  # type: ignore[no-untyped-def]
    return (yield df.activity(charge, order_id, options=LONGER))


async def _retried(handle: df.WorkflowHandle, seq: int) -> ev.ActivityRetryScheduled | None:
    for e in await handle.fetch_history():
        if isinstance(e, ev.ActivityRetryScheduled) and e.seq == seq:
            return e
    return None


async def test_the_grace_covers_the_longest_wait_for_a_grant() -> None:
    """A worker starts a granted attempt at most ``ANSWER_WAIT`` (a report's answer) or
    ``RECEIPT_WAIT`` (an eager start's receipt) after its batch: the check waits that long
    past the start_to_close, and a second more for the worker's own timeout report."""
    assert max(ANSWER_WAIT, RECEIPT_WAIT) + 1.0 <= CHECK_GRACE
    assert check_deadline(BRIEF.resolved("q"), 100.0) == 102.0 + CHECK_GRACE
    opts = df.ActivityOptions(schedule_to_close_timeout=7).resolved("q")
    assert check_deadline(opts, 100.0) == 107.0 + CHECK_GRACE  # (resolved: its stc is 7 s)


async def test_a_granted_attempt_nobody_ran_times_out_at_its_start_to_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker leaves each granted attempt unrun (as one that died right after its
    answer); the check is an hour away, but each attempt's start_to_close is 2 s: its check
    falls due then, finds no outcome and no lease, and records it timed out (lost with its
    worker), no earlier than its start_to_close. Attempt 2 runs from its stored task; the
    workflow completes once, each activity ran once."""
    monkeypatch.setenv(AFTER_GRANT_HOOK, "skip")
    async with LocalEnvironment(server_options=ServerOptions(eager_check=3600.0)) as env:
        server = env.server
        assert server is not None
        tasks = await watch(env.client, f"{env.client.layout.prefix}.at.>")
        async with env.worker(workflows=[brief_order], activities=[charge, ship]):
            h = await env.client.start_workflow(brief_order, "b-1", id="b-1")
            first = await wait_for(lambda: _retried(h, 1), 30)
            assert await h.result(timeout=30) == ["charged b-1", "shipped b-1"]
        await env.client.pub.nc.flush()
        assert ran == ["charge b-1", "ship b-1"]
        assert server.stats["eager_granted"] == 2
        assert server.stats["checks_timed_out"] == 2
        stored = [env.client.codec.decode_activity_task(m.data) for m in tasks]
        assert [(t.run_id, t.seq, t.attempt) for t in stored] == [
            (h.run_id, 1, 2),
            (h.run_id, 2, 2),
        ]
        history = await h.fetch_history()
        scheduled = {e.seq: e for e in history if isinstance(e, ev.ActivityScheduled)}
        assert all(e.eager for e in scheduled.values())
        retries = [e for e in history if isinstance(e, ev.ActivityRetryScheduled)]
        assert [(e.seq, e.attempt) for e in retries] == [(1, 1), (2, 1)]
        assert retries[0] == first
        for e in retries:
            assert e.failure.timeout_type == "start_to_close"
            assert "lost with its worker" in e.failure.message
            # never before its start_to_close (and the grace its worker may need)
            assert e.at - scheduled[e.seq].at >= 2.0 + CHECK_GRACE - 0.3
        completed = [e for e in history if isinstance(e, ev.ActivityCompleted)]
        assert [(e.seq, e.attempt) for e in completed] == [(1, 2), (2, 2)]
        assert [type(e) for e in history].count(ev.WorkflowCompleted) == 1


async def test_a_worker_killed_after_its_grant_costs_only_the_start_to_close(
    daemons: Daemons, tmp_path: Path
) -> None:
    """The worker that decided the first step dies (SIGKILL) as the answer grants it the
    attempt; df-server checks only hourly, but the step's start_to_close is 2 s: attempt 1 is
    recorded timed out (lost with its worker) then, attempt 2 runs once on another worker
    from its stored task, the second step runs once there, eagerly, and the workflow
    completes once."""
    log = tmp_path / "exec.log"
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    daemons.server("--eager-check", "3600")
    flows = "tests.integration.eager_flows"
    args = ("--workflows", f"{flows}:brief_logged_flow", "--activities", f"{flows}:logged_step")
    doomed = daemons.special(
        "doomed",
        "daemons.df_worker",
        "--nats",
        daemons.url,
        "--task-queue",
        "tests",
        *args,
        env=dict(daemons.env, **{AFTER_GRANT_HOOK: "die"}),
    )
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    try:
        h = await client.start_workflow(brief_logged_flow, "d-1", id="d-1", task_queue="tests")
        await wait_for(lambda: doomed.proc is not None and doomed.proc.poll() is not None, 30)
        assert doomed.proc is not None and doomed.proc.returncode == -9  # killed by the hook
        assert not log.exists()  # it ran nothing
        daemons.worker(*args)
        result = await h.result(timeout=60)
        assert result == [f"d-1:{s}" for s in range(STEPS)]
        history = await h.fetch_history()
        check_history("d-1", history)
        assert sorted(executions(log)) == [("d-1", 0, 2), ("d-1", 1, 1)]
        retries = [e for e in history if isinstance(e, ev.ActivityRetryScheduled)]
        assert [(e.seq, e.attempt, e.failure.timeout_type) for e in retries] == [
            (1, 1, "start_to_close")
        ]
        assert "lost with its worker" in retries[0].failure.message
        assert [type(e) for e in history].count(ev.WorkflowCompleted) == 1
    finally:
        await client.close()


async def test_a_granted_attempt_renewed_past_its_start_to_close_is_timed_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stalled holder keeps renewing the lease of a granted attempt (its worker left it
    unrun; this test renews the lease as that worker would): past its start_to_close its
    check records it timed out (start_to_close, not lost), as a stored attempt's timer would
    whatever its lease, instead of listing it again. Attempt 2 runs once from its stored
    task (its own lease), and the workflow completes once."""
    monkeypatch.setenv(AFTER_GRANT_HOOK, "skip")
    async with LocalEnvironment(server_options=ServerOptions(eager_check=3600.0)) as env:
        server = env.server
        assert server is not None
        client = env.client
        kv = await open_bucket(client.pub.js, client.layout.activity_bucket)
        leases = AttemptLeases(client.pub, kv, client.layout, CODEC)
        async with env.worker(workflows=[soon_charge], activities=[charge]):
            h = await client.start_workflow(soon_charge, "r-1", id="r-1")
            run = h.run_id or ""
            assert await leases.claim(run, 1, 1, "stalled", 2.0, time.time()) is None

            async def renew() -> None:
                while True:
                    await (await leases.renew(run, 1, 1, "stalled", 2.0, time.time()))
                    await asyncio.sleep(0.3)

            renewing = asyncio.create_task(renew())
            try:
                first = await wait_for(lambda: _retried(h, 1), 30)
            finally:
                renewing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewing
            assert await h.result(timeout=30) == "charged r-1"
        assert ran == ["charge r-1"]  # attempt 2 only: attempt 1 was never run
        assert server.stats["checks_timed_out"] == 1
        assert server.stats["checks_later"] == 0  # found alive once, past its start_to_close
        assert first.failure.timeout_type == "start_to_close"
        assert "did not finish within its start_to_close_timeout of 1s" in first.failure.message
        history = await h.fetch_history()
        completed = [e for e in history if isinstance(e, ev.ActivityCompleted)]
        assert [(e.seq, e.attempt) for e in completed] == [(1, 2)]
        assert [type(e) for e in history].count(ev.WorkflowCompleted) == 1


async def test_a_long_attempt_within_its_start_to_close_is_only_listed_again() -> None:
    """``charge`` runs 3 s, its check comes every second, its start_to_close is 6 s: it claims
    its lease, each check finds it alive and lists it again (due no later than its
    start_to_close), and once it is done a check finds its outcome. Never timed out, run
    once, no task stored."""
    PAUSE["charge"] = 3.0
    async with LocalEnvironment(server_options=ServerOptions(eager_check=1.0)) as env:
        server = env.server
        assert server is not None
        tasks = await watch(env.client, f"{env.client.layout.prefix}.at.>")
        options = WorkerOptions(eager_claim_after=0.3, activity_lease=2.0)
        async with env.worker(workflows=[longer_charge], activities=[charge], options=options):
            h = await env.client.start_workflow(longer_charge, "g-1", id="g-1")
            assert await h.result(timeout=30) == "charged g-1"
            await wait_for(lambda: server.stats["checks_done"] >= 1, 15)
        await env.client.pub.nc.flush()
        assert ran == ["charge g-1"]
        assert server.stats["checks_later"] >= 1
        assert server.stats["checks_timed_out"] == 0
        assert tasks == []
        history = [type(e) for e in await h.fetch_history()]
        assert ev.ActivityRetryScheduled not in history
        assert history.count(ev.ActivityCompleted) == 1


async def test_attempts_due_apart_never_share_a_check_list(nats_server: NatsServer) -> None:
    """Attempts listed while a list is on its way share the next one only with attempts due
    within ``CHECK_SPREAD`` of theirs: one due in a few seconds is never held back by one due
    in half a minute. Each list fires at the latest due time it names."""
    layout = Layout("default")
    nc = await connect(nats_server.url)
    pub = Publisher(nc)
    try:
        await ensure_namespace(pub.js, layout)
        tasks: set[asyncio.Task[None]] = set()
        lists: ScheduleLists[CheckedAttempt] = ScheduleLists(
            pub,
            lambda c: tasks.add(asyncio.create_task(c)),
            subject=layout.check_list,
            target=layout.removal("check-list"),
            encode=encode_check_list,
            size=check_list_size,
            max_items=MAX_CHECK_LIST,
            max_bytes=CHECK_LIST_BYTES,
            spread=CHECK_SPREAD,
        )
        base = time.time() + 3600  # never fires during the test
        dues = [base]
        dues += [base + 30 + i * 0.01 for i in range(5)]
        dues += [base + 2 + i * 0.01 for i in range(5)]
        items = [CheckedAttempt("w", f"r{i}", i + 1, 1) for i in range(len(dues))]
        futures = await asyncio.gather(*(lists.arm(a, d) for a, d in zip(items, dues, strict=True)))
        acks = [await f for f in futures]
        # the first went out alone; then one list of those due at +30, one of those at +2
        assert lists.sent == 3
        assert len({a.seq for a in acks}) == 3
        state = await pub.js.stream_info(layout.stream, subjects_filter=f"{layout.prefix}.ck.>")
        subjects = state.state.subjects or {}
        by_due: dict[str, list[int]] = {}
        for subject in subjects:
            msg = await pub.js.get_last_msg(layout.stream, subject)
            by_due[(msg.headers or {})[SCHEDULE]] = [
                a.seq for a in decode_check_list(msg.data or b"")
            ]
        assert by_due == {
            schedule_at(base): [1],
            schedule_at(base + 30.04): [2, 3, 4, 5, 6],
            schedule_at(base + 2.04): [7, 8, 9, 10, 11],
        }
        await purge(nc, layout.stream, f"{layout.prefix}.ck.>")
    finally:
        await nc.close()
