"""SIGKILL of nats-server while many runs are in flight, restarted on the same store.

Every run completes exactly once, no run hangs, and no activity attempt runs more often than
history records it: an attempt's task that comes back after the restart (acks that were not
yet on disk, a delivery count that starts over) is not started again while that attempt is
running or after it has finished.

The bounded variant runs in CI; the larger one is marked slow (`pytest -m slow`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.natsserver import NatsServer
from tests.conftest import Daemons, wait_for, wait_namespace
from tests.integration.helpers import check_history

pytestmark = pytest.mark.asyncio

MODULE = "tests.integration.test_nats_restart"
STEPS = 3


def restart_step(tag: str, step: int) -> str:
    """Logs every execution (which attempt of which step of which run), then takes a while."""
    info = df.activity_info()
    with open(os.environ["DF_TEST_EXEC_LOG"], "a") as f:
        f.write(f"{tag} {step} {info.attempt} {time.time():.3f}\n")
    time.sleep(float(os.environ.get("DF_TEST_ACTIVITY_SECONDS", "0.3")))
    return f"{tag}:{step}"


def restart_flow(tag: str):  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(
        start_to_close_timeout=timedelta(seconds=60),
        retry_policy=df.RetryPolicy(initial_interval=0.2, maximum_interval=1.0),
    )
    done = []
    for step in range(STEPS):
        done.append((yield df.activity(restart_step, tag, step, options=opts)))
    return done


ARGS = ("--workflows", f"{MODULE}:restart_flow", "--activities", f"{MODULE}:restart_step")


def executions(path: Path) -> Counter[tuple[str, int, int]]:
    if not path.exists():
        return Counter()
    out: Counter[tuple[str, int, int]] = Counter()
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4:  # a line being written is skipped
            out[(parts[0], int(parts[1]), int(parts[2]))] += 1
    return out


def recorded_attempts(history: list[ev.Event]) -> dict[int, set[int]]:
    """Per activity seq, the attempts history scheduled (the first, and each retry's next)."""
    attempts: dict[int, set[int]] = {}
    for e in history:
        if isinstance(e, ev.ActivityScheduled):
            attempts.setdefault(e.seq, set()).add(1)
        elif isinstance(e, ev.ActivityRetryScheduled):
            attempts.setdefault(e.seq, set()).add(e.attempt + 1)
    return attempts


# the production defaults (the fixtures shorten them): an attempt's task is not redelivered for
# a lost lease within the test, so every second execution comes from the restart itself
WORKER_ARGS = ("--activity-lease", "30", "--workflow-task-timeout", "10")
SERVER_ARGS = ("--input-ack-wait", "10")
NOT_RUN_AGAIN = "not run again"


async def _kill_nats_mid_flight(
    daemons: Daemons,
    nats: NatsServer,
    tmp_path: Path,
    *,
    runs: int,
    kills: tuple[tuple[int, float], ...],
    down: float = 3.0,
    workers: int = 2,
) -> None:
    """Run ``runs`` workflows; for each ``(step, after)`` of ``kills``, SIGKILL nats-server
    ``after`` seconds after the first execution of that step (0: as the step's tasks are being
    handed out; about the activity's duration: as its reports are being sent), restart it on
    the same store ``down`` seconds later."""
    log = tmp_path / "exec.log"
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    daemons.env["DF_TEST_ACTIVITY_SECONDS"] = "0.3"
    daemons.server(*SERVER_ARGS)
    for _ in range(workers):
        daemons.worker(*ARGS, *WORKER_ARGS)
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url, connect_timeout=30)
    client.request_timeout = 60
    ids = [f"restart-{i}" for i in range(runs)]
    try:
        await asyncio.gather(
            *(client.start_workflow(restart_flow, wid, id=wid, task_queue="tests") for wid in ids)
        )
        for step, after in kills:
            await wait_for(lambda s=step: any(k[1] == s for k in executions(log)), 60, 0.005)
            await asyncio.sleep(after)  # the moment of the kill, not a wait for a condition
            nats.stop(kill=True)
            await asyncio.sleep(down)  # nats-server is down this long
            nats.start()
        results = await asyncio.gather(
            *(client.get_workflow_handle(wid).result(timeout=90) for wid in ids)
        )
        histories = {wid: await client.get_workflow_handle(wid).fetch_history() for wid in ids}
    finally:
        await client.close()
    for wid, result in zip(ids, results, strict=True):
        assert result == [f"{wid}:{s}" for s in range(STEPS)], (wid, result)
        check_history(wid, histories[wid])
    ran = executions(log)
    twice = {k: n for k, n in ran.items() if n > 1}
    unrecorded = []
    for wid, step, attempt in ran:
        seq = step + 1  # one activity per step, in order: commands #1..#3
        if attempt not in recorded_attempts(histories[wid]).get(seq, set()):
            unrecorded.append((wid, step, attempt))
    held_back = sum(d.log().count(NOT_RUN_AGAIN) for d in daemons.started)
    print(
        f"{runs} runs, {len(kills)} nats-server kill(s): {sum(ran.values())} executions, "
        f"{len(twice)} attempts ran more than once, {len(unrecorded)} not in history; "
        f"{held_back} deliveries of attempts already running or finished were not run again"
    )
    assert not twice, f"attempts that ran more than once: {sorted(twice.items())}"
    assert not unrecorded, f"executions of attempts history does not have: {unrecorded}"


async def test_nats_sigkill_with_runs_in_flight(
    daemons: Daemons, nats_server: NatsServer, tmp_path: Path
) -> None:
    # as the first activities are handed out, then as the last ones report
    await _kill_nats_mid_flight(daemons, nats_server, tmp_path, runs=50, kills=((0, 0.0), (2, 0.3)))


@pytest.mark.slow
async def test_nats_sigkill_repeatedly_with_many_runs_in_flight(
    daemons: Daemons, nats_server: NatsServer, tmp_path: Path
) -> None:
    kills = ((0, 0.0), (0, 0.3), (1, 0.1), (1, 0.35), (2, 0.2))
    await _kill_nats_mid_flight(daemons, nats_server, tmp_path, runs=200, kills=kills, workers=3)
