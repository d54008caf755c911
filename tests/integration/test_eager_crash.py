"""Eager activity attempts through SIGKILL: of the worker they were granted to (right after the
grant), of a df-server mid-burst, and of nats-server. Every workflow completes once, no
attempt runs more than once, and every execution is one history records."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.natsserver import NatsServer, free_port
from durablefuture.worker.eager import AFTER_GRANT_HOOK
from tests.conftest import Daemons, wait_for, wait_namespace
from tests.integration.eager_flows import STEPS, logged_flow
from tests.integration.helpers import check_history, watch
from tests.integration.test_metrics import scrape, total

pytestmark = pytest.mark.asyncio

MODULE = "tests.integration.eager_flows"
ARGS = ("--workflows", f"{MODULE}:logged_flow", "--activities", f"{MODULE}:logged_step")


def executions(path: Path) -> Counter[tuple[str, int, int]]:
    """(tag, step, attempt) -> how often it ran."""
    out: Counter[tuple[str, int, int]] = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:  # a line being written is skipped
                out[(parts[0], int(parts[1]), int(parts[2]))] += 1
    return out


def recorded(history: list[ev.Event]) -> set[tuple[int, int]]:
    """(activity seq, attempt) of every attempt history scheduled."""
    out: set[tuple[int, int]] = set()
    for e in history:
        if isinstance(e, ev.ActivityScheduled):
            out.add((e.seq, 1))
        elif isinstance(e, ev.ActivityRetryScheduled):
            out.add((e.seq, e.attempt + 1))
    return out


async def _finish(
    client: df.Client, ids: list[str], log: Path, *, once: bool
) -> dict[str, list[ev.Event]]:
    """Every run completed once with its result; every execution is one history records;
    with ``once``, every step ran exactly once (no attempt but the first)."""
    results = await asyncio.gather(
        *(client.get_workflow_handle(w).result(timeout=120) for w in ids)
    )
    histories = {w: await client.get_workflow_handle(w).fetch_history() for w in ids}
    for wid, result in zip(ids, results, strict=True):
        assert result == [f"{wid}:{s}" for s in range(STEPS)], (wid, result)
        check_history(wid, histories[wid])
    ran = executions(log)
    twice = {k: n for k, n in ran.items() if n > 1}
    assert not twice, f"attempts that ran more than once: {sorted(twice.items())}"
    unrecorded = [k for k in ran if (k[1] + 1, k[2]) not in recorded(histories[k[0]])]
    assert not unrecorded, f"executions history does not record: {unrecorded}"
    if once:
        assert sorted(ran) == sorted((w, s, 1) for w in ids for s in range(STEPS))
    return histories


async def test_a_worker_killed_right_after_its_grant_costs_the_attempt_a_timeout(
    daemons: Daemons, tmp_path: Path
) -> None:
    """The worker that decided ``logged_step`` dies (SIGKILL) as the answer grants it the
    attempt: the check list fires, finds no outcome and no lease, and records attempt 1 timed
    out (lost with its worker); attempt 2 goes through its stored task and another worker
    runs it once. Attempt 1's task is never published. The next step is granted to that
    worker and runs there with no task."""
    log = tmp_path / "exec.log"
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    sport = free_port()
    daemons.server("--eager-check", "1", "--sticky-timeout", "1", "--metrics-port", str(sport))
    doomed_env = dict(daemons.env, **{AFTER_GRANT_HOOK: "die"})
    doomed = daemons.special(
        "doomed",
        "daemons.df_worker",
        "--nats",
        daemons.url,
        "--task-queue",
        "tests",
        "--activity-lease",
        "2",
        *ARGS,
        env=doomed_env,
    )
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    try:
        tasks = await watch(client, f"{client.layout.prefix}.at.>")
        h = await client.start_workflow(logged_flow, "k-1", id="k-1", task_queue="tests")
        assert doomed.proc is not None
        await wait_for(lambda: doomed.proc is not None and doomed.proc.poll() is not None, 30)
        assert doomed.proc.returncode == -9  # killed by the hook, after its grant
        assert not log.exists()  # it ran nothing
        daemons.worker(*ARGS, "--eager-claim-after", "0.3")
        histories = await _finish(client, ["k-1"], log, once=False)
        assert sorted(executions(log)) == [("k-1", 0, 2), ("k-1", 1, 1)]
        history = histories["k-1"]
        retries = [e for e in history if isinstance(e, ev.ActivityRetryScheduled)]
        assert [(e.seq, e.attempt, e.failure.timeout_type) for e in retries] == [
            (1, 1, "start_to_close")
        ]
        assert "lost with its worker" in retries[0].failure.message
        await client.pub.nc.flush()
        # only attempt 2 of the first step was stored; the second step ran eagerly
        stored = [client.codec.decode_activity_task(m.data) for m in tasks]
        assert [(t.run_id, t.seq, t.attempt) for t in stored] == [(h.run_id, 1, 2)]

        def counted(outcome: str) -> float:
            return total(scrape(sport), "df_eager_attempts_total", outcome=outcome)

        assert counted("granted") == STEPS
        assert counted("timed_out") == 1
        await wait_for(lambda: counted("done") == 1, 15)  # the second step's check
    finally:
        await client.close()


async def test_df_server_sigkill_mid_burst(daemons: Daemons, tmp_path: Path) -> None:
    """Two df-servers, two workers running workflows and activities (eager attempts); one
    df-server is SIGKILLed while the burst is in flight and another started: every run
    completes once and every step runs exactly once: a step granted by the victim in an
    answer it never sent (killed between the append and the answer) has its task stored from
    the report its worker stores, and a report sent to the victim after the step ran is
    stored and recorded well before the step's check (``--eager-check 10``) could time it
    out. Were one timed out, it would be as lost with its worker, and no other retry."""
    log = tmp_path / "exec.log"
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    daemons.env["DF_TEST_ACTIVITY_SECONDS"] = "0.2"
    server_args = ("--eager-check", "10", "--sticky-timeout", "1")
    victim = daemons.server(*server_args)
    daemons.server(*server_args)
    daemons.worker(*ARGS, "--eager-claim-after", "0.3")
    daemons.worker(*ARGS, "--eager-claim-after", "0.3")
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    client.request_timeout = 60
    ids = [f"burst-{i}" for i in range(60)]
    try:
        tasks = await watch(client, f"{client.layout.prefix}.at.>")
        await asyncio.gather(
            *(client.start_workflow(logged_flow, w, id=w, task_queue="tests") for w in ids)
        )
        await wait_for(lambda: len(executions(log)) >= 20, 60, 0.005)  # mid-burst
        victim.kill()
        daemons.server(*server_args)
        histories = await _finish(client, ids, log, once=True)
        for wid, history in histories.items():
            for e in history:
                if isinstance(e, ev.ActivityRetryScheduled):
                    assert "lost with its worker" in e.failure.message, (wid, e.failure)
        await client.pub.nc.flush()
        # a step's first attempt is granted (marked in history: run where it was decided,
        # no task stored, unless its df-server died before the answer) or has its task
        # stored; how many are granted depends on how soon the df-servers answer (under load,
        # fewer), so the test asserts the partition, and that steps were granted at all
        stored = {
            (t.run_id, t.seq)
            for t in (client.codec.decode_activity_task(m.data) for m in tasks)
            if t.attempt == 1
        }
        marked: set[tuple[str, int]] = set()
        unmarked: set[tuple[str, int]] = set()
        for history in histories.values():
            run_id = history[0].run_id if isinstance(history[0], ev.WorkflowStarted) else ""
            for e in history:
                if isinstance(e, ev.ActivityScheduled):
                    (marked if e.eager else unmarked).add((run_id, e.seq))
        assert len(marked) + len(unmarked) == len(ids) * STEPS
        assert marked, "no step was granted"
        assert unmarked <= stored, sorted(unmarked - stored)
    finally:
        await client.close()


async def test_nats_server_sigkill_with_eager_attempts_in_flight(
    daemons: Daemons, nats_server: NatsServer, tmp_path: Path
) -> None:
    """nats-server is SIGKILLed while eager attempts run and report, and restarted on the same
    store: every run completes once; no attempt runs twice (an attempt retried after a lease
    lost with the outage is a recorded attempt of its own)."""
    log = tmp_path / "exec.log"
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    daemons.env["DF_TEST_ACTIVITY_SECONDS"] = "0.2"
    daemons.server("--eager-check", "2", "--input-ack-wait", "10")
    lazy = ("--eager-claim-after", "0.5")
    daemons.worker(*ARGS, "--activity-lease", "30", "--workflow-task-timeout", "10", *lazy)
    daemons.worker(*ARGS, "--activity-lease", "30", "--workflow-task-timeout", "10", *lazy)
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url, connect_timeout=30)
    client.request_timeout = 60
    ids = [f"nats-{i}" for i in range(40)]
    try:
        await asyncio.gather(
            *(client.start_workflow(logged_flow, w, id=w, task_queue="tests") for w in ids)
        )
        await wait_for(lambda: len(executions(log)) >= 10, 60, 0.005)  # mid-flight
        nats_server.stop(kill=True)
        await asyncio.sleep(2.0)  # nats-server is down this long (not a wait for a condition)
        nats_server.start()
        await _finish(client, ids, log, once=False)
    finally:
        await client.close()
