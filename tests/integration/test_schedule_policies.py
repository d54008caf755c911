"""Overlap policies BUFFER_ALL and CANCEL_OTHER, and pause_on_failure, with real daemons: a
nats-server, a df-server and a df-worker process each. Every test accounts for every action:
each due time was either started exactly once (and its run ended as the policy says) or
journaled as skipped with no run at all."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.core.schedule_spec import iso
from tests.conftest import Daemons, wait_for, wait_namespace
from tests.integration.schedule_flows import TASK_QUEUE, gated
from tests.integration.test_schedules import _action_runs

WORKER_ARGS = ("--workflows", "tests.integration.schedule_flows:WORKFLOWS")


@pytest.fixture
async def client(daemons: Daemons) -> AsyncIterator[df.Client]:
    # an action started is seen (its run id recorded) at the next poll: 1 s, not 5 s, so that
    # each one released is running with its run id soon after the previous one closed
    daemons.server("--schedule-poll-interval", "1")
    daemons.worker(*WORKER_ARGS, task_queue=TASK_QUEUE)
    await wait_namespace(daemons.url)
    c = await df.Client.connect(daemons.url)
    try:
        yield c
    finally:
        await c.close()


def every_second(prefix: str, overlap: df.Overlap, pause_on_failure: bool = False) -> df.Schedule:
    return df.Schedule(
        action=df.ScheduleStartWorkflow(gated, 7, id_prefix=prefix, task_queue=TASK_QUEUE),
        spec=df.ScheduleSpec(intervals=[df.Interval(every=timedelta(seconds=1))]),
        policy=df.SchedulePolicy(overlap=overlap, pause_on_failure=pause_on_failure),
    )


def _run_of(d: df.ScheduleDescription) -> df.ScheduleAction | None:
    """The one running action whose run has been seen (None if none, or none seen yet)."""
    seen = [a for a in d.running_actions if a.run_id]
    return seen[0] if seen else None


async def _history(client: df.Client, wid: str) -> list[ev.Event]:
    return await client.get_workflow_handle(wid).fetch_history()


async def _one_at_a_time(client: df.Client, wids: list[str]) -> None:
    """Each run started after the previous one closed (both times recorded by df-server)."""
    spans = []
    for wid in wids:
        history = await _history(client, wid)
        spans.append((history[0].at, history[-1].at))
    for (_, closed), (started, _) in itertools.pairwise(spans):
        assert started >= closed, (wids, spans)


async def test_buffer_all_runs_every_due_action_one_after_the_other(
    client: df.Client, daemons: Daemons
) -> None:
    handle = await client.create_schedule("ba", every_second("ba", df.Overlap.BUFFER_ALL))

    async def buffered(n: int) -> bool:
        return len((await handle.describe()).buffered) >= n

    await wait_for(lambda: buffered(3), timeout=30)
    await handle.pause("enough buffered")  # bounds the test: no new due times from here
    d = await handle.describe()
    assert d.actions_skipped == 0 and len(d.running_actions) == 1
    nominals = [a.scheduled_time for a in d.running_actions] + list(d.buffered)
    wids = [f"ba-{iso(t.timestamp())}" for t in nominals]
    # every due second from the first action to the last buffered one, none left out
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(nominals)] == [1.0] * (
        len(nominals) - 1
    )

    for k, wid in enumerate(wids):  # release them one by one, in their scheduled order

        async def running_is(w: str = wid) -> bool:
            run = _run_of(await handle.describe())
            return run is not None and run.workflow_id == w

        await wait_for(running_is, timeout=30)
        d = await handle.describe()
        assert len(d.running_actions) == 1, d.running_actions  # never two at once
        assert len(d.buffered) == len(wids) - k - 1
        await client.get_workflow_handle(wid).signal("go", "ok")
        assert await client.get_workflow_handle(wid).result(timeout=30) == 7

    async def all_closed() -> bool:
        d = await handle.describe()
        return not d.running_actions and not d.buffered

    await wait_for(all_closed, timeout=30)
    d = await handle.describe()
    assert {a.workflow_id: a.status for a in d.recent_actions} == dict.fromkeys(wids, "completed")
    assert d.actions_taken == len(wids) and d.actions_skipped == 0
    runs = await _action_runs(daemons.url, "ba-")
    assert runs == dict.fromkeys(wids, 1), daemons.logs()  # each started once, nothing else
    await _one_at_a_time(client, wids)


async def test_cancel_other_cancels_the_running_action_then_starts_the_new_one(
    client: df.Client, daemons: Daemons
) -> None:
    # pause_on_failure too: a cancellation the policy itself asked for must not pause it
    sched = every_second("co", df.Overlap.CANCEL_OTHER, pause_on_failure=True)
    handle = await client.create_schedule("co", sched)

    async def cancelled(n: int) -> bool:
        d = await handle.describe()
        assert not d.paused, d.schedule.note  # its own cancellations never pause it
        return sum(a.status == "cancelled" for a in d.recent_actions) >= n

    await wait_for(lambda: cancelled(3), timeout=40)
    await handle.pause("enough cancelled")
    d = await handle.describe()
    assert [j.kind for j in d.journal].count("paused") == 1  # this pause, no other

    async def settled() -> bool:  # the last action runs, nothing waits to start
        d = await handle.describe()
        return not d.buffered and _run_of(d) is not None and len(d.running_actions) == 1

    await wait_for(settled, timeout=30)
    last = _run_of(await handle.describe())
    assert last is not None
    await client.get_workflow_handle(last.workflow_id).signal("go", "ok")
    assert await client.get_workflow_handle(last.workflow_id).result(timeout=30) == 7

    async def idle() -> bool:
        return not (await handle.describe()).running_actions

    await wait_for(idle, timeout=30)
    d = await handle.describe()
    outcomes = {a.workflow_id: a.status for a in d.recent_actions}
    started = sorted(outcomes)  # ids end in the ISO time: sorted = scheduled order
    assert outcomes[last.workflow_id] == "completed"
    assert all(outcomes[w] == "cancelled" for w in started if w != last.workflow_id), outcomes
    assert started[-1] == last.workflow_id
    for wid in started[:-1]:
        with pytest.raises(df.WorkflowCancelledError):
            await client.get_workflow_handle(wid).result(timeout=5)
        history = await _history(client, wid)
        assert isinstance(history[-1], ev.WorkflowCancelled), history[-1]

    # every due second between the first and the last action: started, or skipped (a later
    # action replaced it while the cancellation was under way) and never started
    skipped = {iso(j.nominal) for j in d.journal if j.kind == "skipped" and j.nominal is not None}
    first = next(a for a in d.recent_actions if a.workflow_id == started[0]).scheduled_time
    due = []
    t = first
    while t <= last.scheduled_time:
        due.append(iso(t.timestamp()))
        t += timedelta(seconds=1)
    for when in due:
        assert (f"co-{when}" in outcomes) != (when in skipped), (when, outcomes, skipped)
    assert d.actions_taken == len(started) and not d.running_actions
    runs = await _action_runs(daemons.url, "co-")
    assert runs == dict.fromkeys(started, 1), daemons.logs()
    await _one_at_a_time(client, started)


async def test_pause_on_failure_pauses_after_a_failed_action_and_unpause_resumes(
    client: df.Client, daemons: Daemons
) -> None:
    sched = every_second("pf", df.Overlap.SKIP, pause_on_failure=True)
    handle = await client.create_schedule("pf", sched)

    async def running_other_than(done: set[str]) -> str | None:
        run = _run_of(await handle.describe())
        return run.workflow_id if run is not None and run.workflow_id not in done else None

    first = await wait_for(lambda: running_other_than(set()), timeout=30)
    await client.get_workflow_handle(first).signal("go", "ok")
    assert await client.get_workflow_handle(first).result(timeout=30) == 7
    second = await wait_for(lambda: running_other_than({first}), timeout=30)
    await client.get_workflow_handle(second).signal("go", "fail")
    with pytest.raises(df.WorkflowFailedError):
        await client.get_workflow_handle(second).result(timeout=30)

    async def paused() -> bool:
        return (await handle.describe()).paused

    await wait_for(paused, timeout=30)
    d = await handle.describe()
    assert d.schedule.note == f"paused: action {second} failed"
    assert d.running_actions == () and d.next_action_times == ()
    assert {a.workflow_id: a.status for a in d.recent_actions} == {
        first: "completed",
        second: "failed",
    }
    assert [j.kind for j in d.journal].count("paused") == 1
    # while it runs, the due seconds in between are skipped (SKIP), never started
    assert d.actions_skipped >= 1
    taken = d.actions_taken
    assert taken == 2

    await handle.unpause("fixed")
    third = await wait_for(lambda: running_other_than({first, second}), timeout=30)
    assert third > second  # a time after the pause: nothing due while paused was caught up
    await client.get_workflow_handle(third).signal("go", "ok")
    assert await client.get_workflow_handle(third).result(timeout=30) == 7
    await handle.pause("done")
    d = await handle.describe()
    assert not d.running_actions or d.running_actions[0].workflow_id > third
    runs = await _action_runs(daemons.url, "pf-")
    assert all(n == 1 for n in runs.values()), runs  # nothing started twice
    assert {first, second, third} <= set(runs)
    failed = await _history(client, second)
    assert isinstance(failed[-1], ev.WorkflowFailed)
    assert Counter(type(e).__name__ for e in failed)["WorkflowStarted"] == 1
