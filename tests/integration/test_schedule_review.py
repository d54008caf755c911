"""Schedules under crashes, exactly once: a real nats-server and real df-server processes,
SIGKILLed by PID, and what each fire time became (started once, or recorded as skipped or
missed with a reason in ``describe()``).

Each takes from 10 s to a minute (fire times and a retention go by): they run with
``-m slow``; the pure tests of their logic (tests/core/test_schedule_asof.py,
test_schedule_unseen.py) run in CI."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
from collections.abc import Awaitable
from pathlib import Path

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.core.schedule_spec import iso
from tests.conftest import Daemon, Daemons, connected, wait_for

pytestmark = pytest.mark.slow

HOUR = 3600
"""One fire time in the test's reach: the others are an hour away."""


def hourly(first: float, note: str = "", paused: bool = False) -> df.Schedule:
    """Every hour, the first time at ``first`` (a whole second); SKIP; no worker runs the
    action (its run starting is what counts)."""
    return df.Schedule(
        action=df.ScheduleStartWorkflow("quick", 1, id_prefix="rv", task_queue="none"),
        spec=df.ScheduleSpec(intervals=[df.Interval(every=HOUR, offset=int(first) % HOUR)]),
        paused=paused,
        note=note,
    )


async def runs_of(client: df.Client, wid: str) -> int:
    """How many runs of ``wid`` started."""
    n = 0
    for _run, batch in await client.history.read_workflow(wid):
        if isinstance(batch.events[0], ev.WorkflowStarted):
            n += 1
    return n


async def inputs_settled(client: df.Client) -> bool:
    """Every schedule input stored so far is handled (none pending, none delivered unacked)."""
    info = await client.nc.jetstream().consumer_info(
        client.layout.stream, client.layout.schedule_consumer
    )
    return info.num_pending == 0 and info.num_ack_pending == 0


async def recorded(handle: df.ScheduleHandle, nominal: float) -> list[str]:
    """The journal's entries that account for ``nominal`` not running (skipped, missed)."""
    d = await handle.describe()
    return [
        f"{j.kind}: {j.detail}"
        for j in d.journal
        if j.nominal == nominal and j.kind in ("skipped", "missed")
    ]


async def _queued_while_down(daemons: Daemons, paused: bool) -> None:
    """df-server is SIGKILLed before the fire time ``T``; a request (an update that keeps the
    spec, or an unpause) is stored while no df-server runs, before ``T``; ``T`` passes; a
    df-server starts and applies the request, then the timer's tick for ``T``. ``T`` is within
    the catch-up window (a year): it must run once, or be recorded as skipped or missed."""
    server = daemons.server()
    async with connected(daemons) as client:
        client.request_timeout = 120
        first = float(math.ceil(time.time() + 8))
        handle = await client.create_schedule("rv", hourly(first, paused=paused))
        # created, its timer armed and its input acked: nothing of it is left to redo
        await wait_for(lambda: inputs_settled(client), timeout=30)
        server.kill()
        assert time.time() < first - 1, "the machine is too slow for this test"
        if paused:
            request = asyncio.ensure_future(handle.unpause("go on"))
        else:  # the same spec, a new note
            request = asyncio.ensure_future(handle.update(hourly(first, note="new note")))

        async def stored() -> bool:  # the request is in the stream before ``first``
            info = await client.nc.jetstream().consumer_info(
                client.layout.stream, client.layout.schedule_consumer
            )
            return info.num_pending >= 1

        await wait_for(stored, timeout=30)
        assert time.time() < first, "the machine is too slow for this test"
        await wait_for(lambda: time.time() > first + 1.0, timeout=60)  # the tick fired
        daemons.server()
        await asyncio.wait_for(request, 60)
        await wait_for(lambda: inputs_settled(client), timeout=60)
        wid = f"rv-{iso(first)}"
        ran = await runs_of(client, wid)
        why = await recorded(handle, first)
        d = await handle.describe()
        assert not d.paused
        assert ran == 1 or (ran == 0 and why), (
            f"{wid}: {ran} runs, journal {[(j.kind, j.nominal, j.detail) for j in d.journal]}"
        )


async def test_an_update_stored_while_df_server_is_down_keeps_the_due_times(
    daemons: Daemons,
) -> None:
    await _queued_while_down(daemons, paused=False)


async def test_an_unpause_stored_while_df_server_is_down_keeps_the_due_times(
    daemons: Daemons,
) -> None:
    await _queued_while_down(daemons, paused=True)


async def test_a_pause_overtaking_the_tick_a_killed_df_server_held_keeps_its_fire_time(
    daemons: Daemons,
) -> None:
    """ALLOW_ALL at each fire time (``--schedule-ahead 0``), every 10 s. df-server A is frozen
    (SIGSTOP) just before a fire time ``T``; the tick of ``T`` is delivered to it (a frozen
    process still has its pull request at nats-server) and it is SIGKILLed without acking. The
    pause is asked for after ``T`` and a df-server started: the pause is handled at once, the
    tick only after its ack wait. ``T`` fell due before the pause was asked for: it must run,
    or be recorded as skipped or missed."""
    period = 10
    server = daemons.server("--schedule-ahead", "0")
    async with connected(daemons) as client:
        client.request_timeout = 120
        js = client.nc.jetstream()

        async def consumer() -> tuple[int, int]:
            info = await js.consumer_info(client.layout.stream, client.layout.schedule_consumer)
            return info.num_pending, info.num_ack_pending

        first = float(math.ceil(time.time() + 4))
        handle = await client.create_schedule(
            "rv",
            df.Schedule(
                action=df.ScheduleStartWorkflow("quick", 1, id_prefix="rv", task_queue="none"),
                spec=df.ScheduleSpec(
                    intervals=[df.Interval(every=period, offset=int(first) % period)]
                ),
                policy=df.SchedulePolicy(overlap=df.Overlap.ALLOW_ALL),
            ),
        )
        held = 0.0
        for fire in (first + period * k for k in range(1, 4)):  # 3 tries at most
            # A has stepped the time before (it ran) and is idle: freeze it just before ``fire``
            await wait_for(lambda f=fire - period: runs_of(client, f"rv-{iso(f)}"), timeout=60)
            await wait_for(lambda: inputs_settled(client), timeout=60)
            await wait_for(lambda f=fire: time.time() > f - 0.3, timeout=period + 5)
            if time.time() > fire - 0.1:  # a slow machine: too late for this one
                continue
            assert server.proc is not None
            os.kill(server.proc.pid, signal.SIGSTOP)
            # delivered to A (unacked), or not (its pull request ran out while it was frozen)
            state = await wait_for(lambda: _nonzero(consumer()), timeout=30)
            if state[1]:
                held = fire
                break
            os.kill(server.proc.pid, signal.SIGCONT)  # not this time: A takes it, try again
        assert held, "the tick never reached the frozen df-server in 3 tries"
        server.kill()
        request = asyncio.ensure_future(handle.pause("stop here"))
        await wait_for(lambda: _nonzero(consumer(), pending=True), timeout=30)  # pause stored
        daemons.server("--schedule-ahead", "0")
        await asyncio.wait_for(request, 60)
        await wait_for(lambda: inputs_settled(client), timeout=60)  # the tick came back too
        wid = f"rv-{iso(held)}"
        ran = await runs_of(client, wid)
        why = await recorded(handle, held)
        d = await handle.describe()
        assert ran == 1 or (ran == 0 and why), (
            f"{wid}: {ran} runs, journal {[(j.kind, j.nominal, j.detail) for j in d.journal]}"
        )


async def _nonzero(
    counts: Awaitable[tuple[int, int]], pending: bool = False
) -> tuple[int, int] | None:
    """``counts`` (pending, unacked) once the tick is there: delivered or not (or, with
    ``pending``, once something waits to be delivered)."""
    n = await counts
    if pending:
        return n if n[0] else None
    return n if n[0] or n[1] else None


async def test_an_action_whose_run_was_removed_before_it_was_seen_is_not_started_again(
    daemons: Daemons,
) -> None:
    """df-servers A and B (retention 2 s), a worker, a schedule every 30 s. B is frozen while
    A takes the tick of ``T`` and starts its action, then A is SIGKILLed and B goes on: the
    run completes, retention removes it, and the timer A armed for ``T + 30`` fires at B.
    ``T``'s action ran once: it must not start again."""
    period = 30
    opts = ("--retention", "2s", "--schedule-poll-interval", "60")
    a = daemons.server(*opts)
    daemons.worker("--workflows", "tests.integration.schedule_flows:WORKFLOWS", task_queue="sched")
    async with connected(daemons) as client:
        client.request_timeout = 120
        b, first, handle = await _only_a_takes_the_tick(client, daemons, opts, period)
        wid = f"rv-{iso(first)}"
        await wait_for(lambda: runs_of(client, wid), timeout=60)  # A started it
        await wait_for(lambda: inputs_settled(client), timeout=60)  # and acked the tick
        a.kill()
        assert b.proc is not None
        os.kill(b.proc.pid, signal.SIGCONT)
        await client.get_workflow_handle(wid).signal("go", "ok")

        async def removed() -> bool:
            return not await client.history.read_workflow(wid)

        await wait_for(removed, timeout=60)  # completed, and removed by retention
        nxt = first + period

        async def stepped() -> bool:  # the next fire time was handled: taken or skipped
            return bool(await runs_of(client, f"rv-{iso(nxt)}") or await recorded(handle, nxt))

        await wait_for(stepped, timeout=period + 30)
        await wait_for(lambda: inputs_settled(client), timeout=30)  # its starts are done
        assert await runs_of(client, wid) == 0, f"{wid} started again"
        d = await handle.describe()
        assert [(r.workflow_id, r.status) for r in d.recent_actions if r.workflow_id == wid] == [
            (wid, "lost")
        ], d.recent_actions
        assert any(j.kind == "lost" and j.nominal == first for j in d.journal), d.journal


async def _at_least(n: Awaitable[int], least: int) -> bool:
    return await n >= least


async def _at_most(n: Awaitable[int], most: int) -> bool:
    return await n <= most


async def _only_a_takes_the_tick(
    client: df.Client, daemons: Daemons, opts: tuple[str, ...], period: int
) -> tuple[Daemon, float, df.ScheduleHandle]:
    """Start df-server B beside A and wait until it has reconciled (its start-up tick of a
    probe schedule is handled), then freeze it until its pull request has run out (so only A
    takes schedule inputs, and B has never stepped the schedule made next); then create a
    schedule of ``gated`` every ``period`` s, the first time 15 s away. B, frozen, is returned."""
    js = client.nc.jetstream()
    stream, name = client.layout.stream, client.layout.schedule_consumer

    async def delivered() -> int:
        return int((await js.consumer_info(stream, name)).delivered.consumer_seq or 0)

    async def waiting() -> int:
        return (await js.consumer_info(stream, name)).num_waiting or 0

    await client.create_schedule("probe", hourly(time.time() + HOUR / 2))
    await wait_for(lambda: inputs_settled(client), timeout=60)
    before = await delivered()
    b = daemons.server(*opts)
    await wait_for(lambda: _at_least(delivered(), before + 1), timeout=60)  # B reconciled
    await wait_for(lambda: inputs_settled(client), timeout=60)
    await wait_for(lambda: _at_least(waiting(), 2), timeout=30)  # both pull
    assert b.proc is not None
    os.kill(b.proc.pid, signal.SIGSTOP)
    await wait_for(lambda: _at_most(waiting(), 1), timeout=30)  # B's pull ran out
    first = float(math.ceil(time.time() + 15))
    handle = await client.create_schedule(
        "rv",
        df.Schedule(
            action=df.ScheduleStartWorkflow("gated", 1, id_prefix="rv", task_queue="sched"),
            spec=df.ScheduleSpec(intervals=[df.Interval(every=period, offset=int(first) % period)]),
        ),
    )
    # created before its first time (else that time is not due, and nothing runs as ``first``)
    assert time.time() < first, "the machine is too slow for this test"
    return b, first, handle


async def test_a_running_action_removed_before_its_close_was_seen_does_not_block_the_schedule(
    daemons: Daemons,
) -> None:
    """As above, but A looks at the schedule 1 s after the start and records the run as
    running before it is SIGKILLed: only A followed the run's closed notice. The run
    completes and is removed; at ``T + 30`` B steps the schedule: the action must be seen as
    closed (not running) and ``T + 30`` start."""
    period = 30
    opts = ("--retention", "2s", "--schedule-poll-interval", "1")
    a = daemons.server(*opts)
    daemons.worker("--workflows", "tests.integration.schedule_flows:WORKFLOWS", task_queue="sched")
    async with connected(daemons) as client:
        client.request_timeout = 120
        b, first, handle = await _only_a_takes_the_tick(client, daemons, opts, period)
        wid = f"rv-{iso(first)}"

        async def seen() -> bool:
            d = await handle.describe()
            return any(r.workflow_id == wid and r.run_id for r in d.running_actions)

        await wait_for(seen, timeout=60)  # A recorded the run as running
        await wait_for(lambda: inputs_settled(client), timeout=60)
        a.kill()
        assert b.proc is not None
        os.kill(b.proc.pid, signal.SIGCONT)
        await client.get_workflow_handle(wid).signal("go", "ok")

        async def removed() -> bool:
            return not await client.history.read_workflow(wid)

        await wait_for(removed, timeout=60)
        nxt = first + period

        async def stepped() -> bool:
            return bool(await runs_of(client, f"rv-{iso(nxt)}") or await recorded(handle, nxt))

        await wait_for(stepped, timeout=period + 30)
        d = await handle.describe()
        assert [r.workflow_id for r in d.running_actions] != [wid], (
            f"{wid} closed and removed, still running: {await recorded(handle, nxt)}"
        )
        assert await runs_of(client, f"rv-{iso(nxt)}") == 1
        done = [(r.workflow_id, r.status) for r in d.recent_actions if r.workflow_id == wid]
        assert done == [(wid, "removed")], d.recent_actions


async def test_a_trigger_redelivered_after_twenty_other_requests_runs_once(
    daemons: Daemons, tmp_path: Path
) -> None:
    """df-server A applies a trigger and stops in the action's start (its WorkflowStarted
    stored: ``held_start``); it is SIGKILLed, the trigger's input unacked. Another df-server
    applies 20 updates (a note each) before the trigger comes back: one trigger, one run."""
    held = tmp_path / "held"
    daemons.env["DF_TEST_HOLD"] = "after"
    daemons.env["DF_TEST_HELD"] = str(held)
    a = daemons.special(
        "held-server", "tests.integration.held_start", "server", "--nats", daemons.url
    )
    async with connected(daemons) as client:
        client.request_timeout = 120
        first = time.time() + HOUR / 2
        handle = await client.create_schedule("rv", hourly(first))
        trigger = asyncio.ensure_future(handle.trigger(df.Overlap.ALLOW_ALL))
        await wait_for(held.exists, timeout=60)  # applied, its run stored, not acked
        a.kill()
        daemons.server()
        await asyncio.gather(*(handle.update(hourly(first, note=f"n{i}")) for i in range(20)))
        await asyncio.wait_for(trigger, 60)  # answered once the trigger came back
        await wait_for(lambda: inputs_settled(client), timeout=60)
        d = await handle.describe()
        triggered = [r for r in (*d.running_actions, *d.recent_actions) if r.source == "trigger"]
        applied = [j.at for j in d.journal if j.kind == "triggered"]
        assert len(triggered) == 1 and len(applied) == 1, (
            [r.workflow_id for r in triggered],
            applied,
        )
