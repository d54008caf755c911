"""Handles and cancellation against a real nats-server: ``df.start``, ``df.cancel``,
``df.any_of(cancel_losers=True)`` and the three activity cancellation types, delivered to
running activities for real (async ones get asyncio.CancelledError, sync ones see
``is_cancelled`` and a raising ``df.heartbeat()``), timers that never fire and children that
get their cancellation."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Generator
from typing import Any

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.testing import LocalEnvironment, Replayer
from tests.conftest import wait_for

NOTES: dict[str, list[str]] = defaultdict(list)

WAIT = df.ActivityOptions(
    start_to_close_timeout=60,
    cancellation_type=df.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
)
ABANDON = df.ActivityOptions(
    start_to_close_timeout=60, cancellation_type=df.ActivityCancellationType.ABANDON
)


def _note(text: str) -> None:
    NOTES[df.activity_info().workflow_id].append(text)


async def async_wait(tag: str) -> str:
    _note(f"{tag} started")
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        _note(f"{tag} got CancelledError")
        raise
    return "finished"


async def async_brief(tag: str) -> str:
    _note(f"{tag} started")
    try:
        await asyncio.sleep(1.5)  # longer than the worker takes to see a cancel request
    except asyncio.CancelledError:
        _note(f"{tag} got CancelledError")
        raise
    _note(f"{tag} finished")
    return "finished"


def quick(tag: str) -> str:
    _note(f"{tag} ran")
    return tag


def sync_poll(tag: str) -> str:
    _note(f"{tag} started")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if df.activity_info().is_cancelled:
            _note(f"{tag} saw is_cancelled")
            return "stopped early"
        time.sleep(0.02)
    return "finished"


def sync_heartbeat(tag: str) -> str:
    _note(f"{tag} started")
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            df.heartbeat()
            time.sleep(0.02)
    except df.CancelledError:
        _note(f"{tag} heartbeat raised")
        raise
    return "finished"


def cancel_when_told(
    name: str, options: df.ActivityOptions | None = None
) -> Generator[Any, Any, Any]:
    task = yield df.start(df.activity(name, name, options=options))
    yield df.wait_signal("cancel")
    yield df.cancel(task)
    try:
        value = yield task
    except df.ActivityError as err:
        outcome = ["error", type(err.__cause__).__name__, task.done]
    else:
        outcome = ["value", value, task.done]
    if name == "async_brief":
        yield df.wait_signal("done")  # keep the run open while the abandoned activity runs
    return outcome


def race(tag: str) -> Generator[Any, Any, Any]:
    index, _ = yield df.any_of(df.activity(async_wait, tag), df.sleep(0.5))
    return index


def timers() -> Generator[Any, Any, Any]:
    long = yield df.start(df.sleep(1.0))
    short = yield df.start(df.sleep(0.2))
    yield df.cancel(long)
    yield short
    yield df.sleep(1.5)  # past the cancelled timer's time: it must not fire
    try:
        yield long
    except df.CancelledError as err:
        return str(err)
    return "fired"


def stubborn_child() -> Generator[Any, Any, Any]:
    try:
        yield df.wait_signal("never")
    finally:
        yield df.activity(quick, "cleanup")


def parent() -> Generator[Any, Any, Any]:
    child = yield df.start(df.child_workflow(stubborn_child, id="the-child"))
    yield df.wait_signal("cancel")
    yield df.cancel(child)
    try:
        yield child
    except df.ChildWorkflowError as err:
        return type(err.__cause__).__name__
    return "completed"


WORKFLOWS = [cancel_when_told, race, timers, stubborn_child, parent]
ACTIVITIES = [async_wait, async_brief, quick, sync_poll, sync_heartbeat]


async def _started(wid: str, tag: str) -> None:
    await wait_for(lambda: f"{tag} started" in NOTES[wid], 20)


async def test_cancelling_activities_of_each_kind_and_type() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=WORKFLOWS, activities=ACTIVITIES):
            client = env.client
            cases = {
                "try-async": ("async_wait", None),
                "wait-async": ("async_wait", WAIT),
                "wait-poll": ("sync_poll", WAIT),
                "wait-heartbeat": ("sync_heartbeat", WAIT),
                "abandon": ("async_brief", ABANDON),
            }
            handles = {}
            for wid, (name, opts) in cases.items():
                handles[wid] = await client.start_workflow(cancel_when_told, name, opts, id=wid)
            for wid, (name, _) in cases.items():
                await _started(wid, name)
                await handles[wid].signal("cancel")
            await wait_for(lambda: "async_brief finished" in NOTES["abandon"], 20)
            await handles["abandon"].signal("done")
            results = {wid: await h.result(timeout=30) for wid, h in handles.items()}
            histories = {wid: await h.fetch_history() for wid, h in handles.items()}
            # TRY_CANCEL went on at once; the attempt still gets its CancelledError
            await wait_for(lambda: "async_wait got CancelledError" in NOTES["try-async"], 20)
            try_history = await handles["try-async"].fetch_history()
    assert results["try-async"] == ["error", "CancelledError", True]
    assert results["abandon"] == ["error", "CancelledError", True]
    assert results["wait-async"] == ["error", "CancelledError", True]
    assert results["wait-poll"] == ["value", "stopped early", True]
    assert results["wait-heartbeat"] == ["error", "CancelledError", True]
    assert "async_wait got CancelledError" in NOTES["wait-async"]
    assert "sync_poll saw is_cancelled" in NOTES["wait-poll"]
    assert "sync_heartbeat heartbeat raised" in NOTES["wait-heartbeat"]
    assert "async_brief got CancelledError" not in NOTES["abandon"]  # never told
    for wid, history in histories.items():
        (cancel,) = [e for e in history if isinstance(e, ev.CancellationRequested)]
        assert cancel.target == 1, wid
        Replayer(WORKFLOWS).replay(history)
    # the cancelled attempt's end is not retried
    wait_async = histories["wait-async"]
    assert not [e for e in wait_async if isinstance(e, ev.ActivityRetryScheduled)]
    (failed,) = [e for e in wait_async if isinstance(e, ev.ActivityFailed)]
    assert failed.failure.type == "CancelledError" and failed.retry_state == "cancel_requested"
    assert isinstance(try_history[-1], ev.WorkflowCompleted)


async def test_any_of_cancels_its_losers_timers_never_fire_children_get_cancelled() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=WORKFLOWS, activities=ACTIVITIES):
            client = env.client
            assert await client.execute_workflow(race, "race", id="race", timeout=20) == 1
            await wait_for(lambda: "race got CancelledError" in NOTES["race"], 20)
            race_history = await client.get_workflow_handle("race").fetch_history()

            timer_result = await client.execute_workflow(timers, id="timers", timeout=20)
            timer_history = await client.get_workflow_handle("timers").fetch_history()

            p = await client.start_workflow(parent, id="parent")
            await wait_for(lambda: _has(client, "parent", ev.ChildWorkflowStarted), 20)
            await p.signal("cancel")
            parent_result = await p.result(timeout=30)
            child = client.get_workflow_handle("the-child")
            try:
                await child.result(timeout=30)
            except df.WorkflowCancelledError:
                child_status = "cancelled"
            child_history = await child.fetch_history()
    cancels = [e for e in race_history if isinstance(e, ev.CancellationRequested)]
    assert [c.target for c in cancels] == [1]
    assert timer_result == "timer #1 was cancelled"
    fired = [e.seq for e in timer_history if isinstance(e, ev.TimerFired)]
    assert 1 not in fired and 2 in fired
    assert parent_result == "CancelledError"
    assert child_status == "cancelled"
    assert [e.name for e in child_history if isinstance(e, ev.ActivityScheduled)] == ["quick"]
    for history in (race_history, timer_history):
        Replayer(WORKFLOWS).replay(history)


async def _has(client: df.Client, wid: str, cls: type) -> bool:
    return any(isinstance(e, cls) for e in await client.get_workflow_handle(wid).fetch_history())
