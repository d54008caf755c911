"""Workflow authoring against a real nats-server (issue 5).

Durable timers (also across a SIGKILL of every process), races, signals, child workflows and
their close policies, parallelism without re-scheduling on replay, cancellation with
compensation, termination, continue-as-new, the deterministic helpers, versioning with
``patched()``, actionable non-determinism errors, the Replayer, id reuse policies and
idempotent starts. Queries, ``df workflow replay-check`` and ``df why`` are not covered here.

Several tests run their worker with ``max_cached_workflows=0``: every workflow task then
replays the run from its full history, which is how a crash or a cache eviction looks to the
workflow code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.server import ServerOptions
from durablefuture.testing import LocalEnvironment, Replayer
from tests.conftest import Daemons, wait_for, wait_namespace
from tests.integration.helpers import settled

LATE = 5.0
"""How late a durable timer may fire here: a bound that catches a timer that waited for something
else (a redelivery, a restart), not a measure of precision (the benchmarks measure lateness)."""
EARLY = 0.03

NOTES: dict[str, list[Any]] = defaultdict(list)
"""What activities saw, per workflow id (LocalEnvironment runs them in this process)."""


def _of(history: Sequence[ev.Event], cls: type | tuple[type, ...]) -> list[Any]:
    return [e for e in history if isinstance(e, cls)]


async def _history(client: df.Client, wid: str) -> list[ev.Event]:
    return await client.get_workflow_handle(wid).fetch_history()


def _wid() -> str:
    return df.activity_info().workflow_id


def note(text: str) -> str:
    NOTES[_wid()].append(text)
    return text


def echo(value: Any) -> Any:
    NOTES[_wid()].append(("echo", value))
    return value


async def echo_after(value: str, seconds: float) -> str:
    NOTES[_wid()].append(("echo_after", value))
    await asyncio.sleep(seconds)
    return value


def _command_counts(history: Sequence[ev.Event]) -> Counter[int]:
    return Counter(e.seq for e in history if isinstance(e, ev.COMMAND_EVENTS))


# --------------------------------------------------------------------------- timers


def sleepy_flow(seconds: float):  # type: ignore[no-untyped-def]
    start = df.workflow.now()
    yield df.sleep(timedelta(seconds=seconds))
    return (df.workflow.now() - start).total_seconds()


def race_flow(activity_seconds: float, timer_seconds: float):  # type: ignore[no-untyped-def]
    index, value = yield df.any_of(
        df.activity(echo_after, "work", activity_seconds), df.sleep(timer_seconds)
    )
    return [index, value]


async def test_durable_sleep_and_any_of_as_a_timeout() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[sleepy_flow, race_flow], activities=[echo_after]):
            slept, fast, slow = await asyncio.gather(
                env.client.execute_workflow(sleepy_flow, 0.5, id="sleepy", timeout=10),
                # each race has a clear winner whatever the machine's load
                env.client.execute_workflow(race_flow, 0.05, 30.0, id="race-fast", timeout=10),
                env.client.execute_workflow(race_flow, 30.0, 0.4, id="race-slow", timeout=10),
            )
            history = await _history(env.client, "sleepy")
            slow_history = await _history(env.client, "race-slow")
    assert slept >= 0.5  # workflow time moved with the timer
    (started,) = _of(history, ev.TimerStarted)
    (fired,) = _of(history, ev.TimerFired)
    assert started.duration == 0.5
    assert started.fire_at - EARLY <= fired.at <= started.fire_at + LATE
    assert fast == [0, "work"]  # the activity won the race
    assert slow == [1, None]  # the timer won: the slow activity timed out
    # nobody waited for the slow activity: the run closed with it still running
    assert isinstance(slow_history[-1], ev.WorkflowCompleted)
    assert not _of(slow_history, (ev.ActivityCompleted, ev.ActivityFailed))


def record_exec(tag: str) -> str:
    path = os.environ.get("DF_TEST_EXEC_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{tag} {time.time()}\n")
    return f"{tag} ran"


def durable_sleep_flow(tag: str, seconds: float):  # type: ignore[no-untyped-def]
    yield df.sleep(seconds)
    return (yield df.activity(record_exec, tag))


DAEMON_WORKFLOWS = [durable_sleep_flow]
DAEMON_ACTIVITIES = [record_exec]


async def test_timers_survive_sigkill_of_every_process_and_fire_once(
    daemons: Daemons, tmp_path: Path
) -> None:
    log = tmp_path / "exec.log"
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    args = (
        "--workflows",
        "tests.integration.test_authoring:DAEMON_WORKFLOWS",
        "--activities",
        "tests.integration.test_authoring:DAEMON_ACTIVITIES",
    )
    server = daemons.server()
    worker = daemons.worker(*args)
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    client.request_timeout = 30
    try:
        await wait_for(lambda: "polling task queue" in worker.log(), 30)
        # one timer falls due while everything is down, the other after the restart
        during = await client.start_workflow(
            durable_sleep_flow, "during", 2.0, id="during", task_queue="tests"
        )
        after = await client.start_workflow(
            durable_sleep_flow, "after", 6.0, id="after", task_queue="tests"
        )

        async def both_armed() -> bool:
            for h in (during, after):
                if not _of(await h.fetch_history(), ev.TimerStarted):
                    return False
            return True

        await wait_for(both_armed, 20)
        server.kill()
        worker.kill()
        killed_at = time.time()
        (due,) = _of(await during.fetch_history(), ev.TimerStarted)
        assert killed_at < due.fire_at, "the first timer fell due before the kill: too slow"
        await wait_for(lambda: time.time() > due.fire_at + 0.2, 10)  # it falls due while down
        daemons.server()
        daemons.worker(*args)
        assert await during.result(timeout=30) == "during ran"
        assert await after.result(timeout=30) == "after ran"
        histories = {h.id: await h.fetch_history() for h in (during, after)}
    finally:
        await client.close()
    for wid, history in histories.items():
        (started,) = _of(history, ev.TimerStarted)
        (fired,) = _of(history, ev.TimerFired)  # fired exactly once
        assert fired.at >= started.fire_at - EARLY, wid
        assert isinstance(history[-1], ev.WorkflowCompleted)
    assert histories["during"][0].at < killed_at < _of(histories["during"], ev.TimerFired)[0].at
    (started,) = _of(histories["after"], ev.TimerStarted)
    (fired,) = _of(histories["after"], ev.TimerFired)
    # from the durable schedule soon after the restart (not at a much later redelivery); the
    # bound is loose because a loaded machine restarts processes slowly
    assert fired.at <= started.fire_at + 10.0
    lines = sorted(line.split()[0] for line in log.read_text().splitlines())
    assert lines == ["after", "during"]  # each continuation ran once


# --------------------------------------------------------------------------- signals


def collect_flow(n: int):  # type: ignore[no-untyped-def]
    yield df.sleep(0.3)  # the signals arrive meanwhile
    items = []
    for _ in range(n):
        items.append((yield df.wait_signal("item")))
    pair = yield df.wait_signal("pair")
    return {"items": items, "pair": pair}


def signal_timeout_flow():  # type: ignore[no-untyped-def]
    try:
        value = yield df.wait_signal("never", timeout=0.3)
    except df.TimeoutError as err:
        return {"timeout_type": err.timeout_type, "message": str(err)}
    return value


def approval_flow(who: str):  # type: ignore[no-untyped-def]
    first = yield df.wait_signal("decision")
    second = yield df.wait_signal("decision", timeout=5)
    return [who, first, second]


async def test_signals_buffered_in_order_with_timeout_and_signal_with_start() -> None:
    flows = [collect_flow, signal_timeout_flow, approval_flow]
    async with LocalEnvironment() as env:
        client = env.client
        # started and signalled before any worker runs: every signal is there before the
        # first workflow task, whatever the machine's load
        handle = await client.start_workflow(collect_flow, 3, id="collect")
        for item in ("a", "b", "c"):
            await handle.signal("item", item)
        await handle.signal("pair", 1, 2)
        async with env.worker(workflows=flows):
            timed_out = await client.execute_workflow(
                signal_timeout_flow, id="signal-timeout", timeout=10
            )
            timeout_history = await _history(client, "signal-timeout")
            collected = await handle.result(timeout=10)
            history = await handle.fetch_history()

            # signal-with-start: not running -> started with the signal already buffered
            first = await client.signal_with_start(
                approval_flow, "ann", id="approval", signal="decision", signal_args=["yes"]
            )
            # running -> the same run just gets the signal (the start arguments are unused)
            second = await client.signal_with_start(
                approval_flow, "bob", id="approval", signal="decision", signal_args=["again"]
            )
            approval = await first.result(timeout=10)
            approval_history = await first.fetch_history()
            runs = await client.list_workflows(workflow_type="approval_flow")
    assert collected == {"items": ["a", "b", "c"], "pair": [1, 2]}
    received = [i for i, e in enumerate(history) if isinstance(e, ev.SignalReceived)]
    waits = [i for i, e in enumerate(history) if isinstance(e, ev.SignalWaitStarted)]
    assert len(received) == 4 and max(received) < min(waits)  # all buffered before the waits
    assert timed_out["timeout_type"] == "signal" and "never" in timed_out["message"]
    (wait,) = _of(timeout_history, ev.SignalWaitStarted)
    (gave_up,) = _of(timeout_history, ev.SignalWaitTimedOut)
    assert wait.timeout == 0.3 and wait.deadline is not None
    assert gave_up.at >= wait.deadline - EARLY  # never before its deadline
    assert second.run_id == first.run_id and len(runs) == 1
    assert approval == ["ann", "yes", "again"]
    assert isinstance(approval_history[1], ev.SignalReceived)  # recorded with the start


# --------------------------------------------------------------------------- child workflows


def child_double(x: int):  # type: ignore[no-untyped-def]
    if x < 0:
        raise df.ApplicationError(f"{x} is negative", type="NegativeInput")
    return 2 * (yield df.activity(echo, x))


def parent_flow(x: int):  # type: ignore[no-untyped-def]
    child_id = f"{df.workflow.info().workflow_id}-child"
    try:
        return {"value": (yield df.child_workflow(child_double, x, id=child_id))}
    except df.ChildWorkflowError as err:
        cause = err.cause
        return {
            "error": type(err).__name__,
            "cause": type(cause).__name__,
            "cause_type": getattr(cause, "type", None),
            "message": str(cause),
        }


def cleanup_child():  # type: ignore[no-untyped-def]
    try:
        yield df.wait_signal("finish", timeout=30)
    except df.CancelledError:
        yield df.activity(note, "child cleaned up")
        raise
    return "finished"


def cancellable_parent():  # type: ignore[no-untyped-def]
    child_id = f"{df.workflow.info().workflow_id}-child"
    return (yield df.child_workflow(cleanup_child, id=child_id))


def closing_parent(policy: str):  # type: ignore[no-untyped-def]
    child = df.child_workflow(
        cleanup_child,
        id=f"{df.workflow.info().workflow_id}-child",
        parent_close_policy=df.ParentClosePolicy(policy),
    )
    # the child must outlive the race: its fate is left to the parent's close policy
    index, _ = yield df.any_of(child, df.sleep(0.3), cancel_losers=False)
    return index


async def test_child_workflows_results_failures_cancellation_and_close_policies() -> None:
    flows = [child_double, parent_flow, cleanup_child, cancellable_parent, closing_parent]
    async with LocalEnvironment() as env:
        client = env.client
        async with env.worker(workflows=flows, activities=[echo, note]):
            ok, failed = await asyncio.gather(
                client.execute_workflow(parent_flow, 21, id="parent-ok", timeout=10),
                client.execute_workflow(parent_flow, -1, id="parent-bad", timeout=10),
            )
            assert ok == {"value": 42}
            assert await client.get_workflow_handle("parent-ok-child").result(timeout=5) == 42
            assert failed["error"] == "ChildWorkflowError"
            assert failed["cause"] == "ApplicationError"
            assert failed["cause_type"] == "NegativeInput"
            assert "-1 is negative" in failed["message"]
            parent_history = await _history(client, "parent-ok")
            assert [type(e) for e in parent_history[1:]] == [
                ev.ChildWorkflowScheduled,
                ev.ChildWorkflowStarted,
                ev.ChildWorkflowCompleted,
                ev.WorkflowCompleted,
            ]
            child_started = (await _history(client, "parent-ok-child"))[0]
            assert isinstance(child_started, ev.WorkflowStarted)
            assert child_started.parent is not None
            assert child_started.parent.workflow_id == "parent-ok"

            # cancelling the parent cancels the child, which can still clean up
            parent = await client.start_workflow(cancellable_parent, id="cancel-parent")
            await wait_for(lambda: _child_running(client, "cancel-parent-child"), 10)
            await parent.cancel("user gave up")
            with pytest.raises(df.WorkflowCancelledError):
                await parent.result(timeout=10)
            child = client.get_workflow_handle("cancel-parent-child")
            with pytest.raises(df.WorkflowCancelledError):
                await child.result(timeout=10)
            assert NOTES["cancel-parent-child"] == ["child cleaned up"]

            # the parent closes while its child runs: the close policy decides the child's fate
            for policy in ("terminate", "request_cancel", "abandon"):
                index = await client.execute_workflow(
                    closing_parent, policy, id=f"close-{policy}", timeout=10
                )
                assert index == 1, policy  # the timer won, the child was still running
            terminated = client.get_workflow_handle("close-terminate-child")
            with pytest.raises(df.WorkflowTerminatedError):
                await terminated.result(timeout=10)
            cancelled = client.get_workflow_handle("close-request_cancel-child")
            with pytest.raises(df.WorkflowCancelledError):
                await cancelled.result(timeout=10)
            assert NOTES["close-request_cancel-child"] == ["child cleaned up"]
            abandoned = client.get_workflow_handle("close-abandon-child")
            # the parent's close, and any cancel or terminate input it sent, are handled now
            await settled(client, "default")
            assert (await abandoned.describe()).status == "running"
            assert not _of(await abandoned.fetch_history(), ev.CancelRequested)
            await abandoned.signal("finish", None)
            assert await abandoned.result(timeout=10) == "finished"
    assert "close-terminate-child" not in NOTES  # terminated: no cleanup code ran


async def _child_running(client: df.Client, wid: str) -> bool:
    try:
        history = await _history(client, wid)
    except df.WorkflowNotFoundError:
        return False
    return bool(_of(history, ev.SignalWaitStarted))


# --------------------------------------------------------------------------- parallelism


def mixed_flow():  # type: ignore[no-untyped-def]
    wid = df.workflow.info().workflow_id
    everything = yield df.all_of(
        df.activity(echo_after, "a", 0.2),
        df.sleep(0.3),
        df.child_workflow(child_double, 4, id=f"{wid}-kid"),
        df.wait_signal("go"),
        df.any_of(df.wait_signal("never"), df.sleep(0.2)),
        df.all_of(df.activity(echo_after, "b", 0.1), df.activity(echo_after, "c", 0.4)),
    )
    first = yield df.any_of(
        df.wait_signal("never"),
        df.child_workflow(child_double, 5, id=f"{wid}-racer"),
        df.sleep(5),
    )
    return {"all": everything, "any": list(first)}


async def test_all_of_and_any_of_over_every_kind_never_reschedule_on_replay() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(
            workflows=[mixed_flow, child_double],
            activities=[echo_after, echo],
            max_cached_workflows=0,  # every workflow task replays the whole history
        ) as worker:
            handle = await env.client.start_workflow(mixed_flow, id="mixed")
            await asyncio.sleep(0.25)
            await handle.signal("go", "went")
            result = await handle.result(timeout=15)
            history = await handle.fetch_history()
    assert result == {
        "all": ["a", None, 8, "went", [1, None], ["b", "c"]],
        "any": [1, 10],
    }
    # each command recorded once, although the code re-issued all of them on every replay
    counts = _command_counts(history)
    assert set(counts.values()) == {1}, counts
    assert len(counts) == 12  # 11 commands, and the cancellation of the losing sleep(5)
    (cancel,) = _of(history, ev.CancellationRequested)
    (losing_sleep,) = [e for e in _of(history, ev.TimerStarted) if e.duration == 5]
    assert cancel.target == losing_sleep.seq
    assert worker.stats["replays"] >= 5 and worker.stats["cache_hits"] == 0
    # and each activity ran once
    assert Counter(NOTES["mixed"]) == Counter(
        [("echo_after", "a"), ("echo_after", "b"), ("echo_after", "c")]
    )


# --------------------------------------------------------------------------- cancel, terminate


async def busy_until_told(tag: str) -> str:
    info = df.activity_info()
    NOTES[info.workflow_id].append(("started", tag, info.attempt))
    try:
        while True:
            df.heartbeat()
            await asyncio.sleep(0.05)
    except df.CancelledError:
        NOTES[info.workflow_id].append(("told", tag, info.attempt))
        raise


def undo(tag: str) -> str:
    time.sleep(0.8)  # slow compensation: the run stays open while the first activity stops
    NOTES[_wid()].append(("undone", tag))
    return f"undid {tag}"


def booking_flow():  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(
        start_to_close_timeout=30,
        heartbeat_timeout=0.6,
        retry_policy=df.RetryPolicy(initial_interval=0.05),
    )
    try:
        yield df.activity(busy_until_told, "book", options=opts)
    except df.CancelledError:
        df.workflow.logger.info("booking cancelled")
        raise
    finally:
        yield df.activity(undo, "book")  # compensation still runs as an activity
    return "booked"


def terminated_flow():  # type: ignore[no-untyped-def]
    try:
        yield df.sleep(30)
    finally:
        yield df.activity(note, "cleanup that must not run")


async def test_cancellation_runs_compensation_then_ends_cancelled() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(
            workflows=[booking_flow, terminated_flow], activities=[busy_until_told, undo, note]
        ):
            handle = await env.client.start_workflow(booking_flow, id="booking")
            await wait_for(lambda: NOTES["booking"], 10)
            await asyncio.sleep(0.2)
            await handle.cancel("customer changed their mind")
            with pytest.raises(df.WorkflowCancelledError):
                await handle.result(timeout=10)
            history = await handle.fetch_history()
            description = await handle.describe()

            doomed = await env.client.start_workflow(terminated_flow, id="doomed")
            await wait_for(lambda: _has(env.client, "doomed", ev.TimerStarted), 10)
            await doomed.terminate("enough")
            with pytest.raises(df.WorkflowTerminatedError):
                await doomed.result(timeout=10)
            # whatever the terminate led to (workflow tasks, activities) has been handled
            await settled(env.client, "default")
            doomed_history = await doomed.fetch_history()
    assert description.status == "cancelled"
    kinds = [type(e) for e in history]
    cancel_at = kinds.index(ev.CancelRequested)
    undo_scheduled = next(
        i for i, e in enumerate(history) if isinstance(e, ev.ActivityScheduled) and e.name == "undo"
    )
    assert cancel_at < undo_scheduled  # the compensation was decided after the cancel
    assert kinds[-1] is ev.WorkflowCancelled
    assert _of(history, ev.ActivityCompleted)[-1].result == "undid book"
    # the running activity was told through its heartbeat, and not run again
    assert ("told", "book", 1) in NOTES["booking"]
    assert [n for n in NOTES["booking"] if n[0] == "started"] == [("started", "book", 1)]
    assert not [e for e in _of(history, ev.ActivityRetryScheduled) if e.seq == 1]
    # terminate ends the run at once: no cleanup code runs
    assert isinstance(doomed_history[-1], ev.WorkflowTerminated)
    assert doomed_history[-1].reason == "enough"
    assert not _of(doomed_history, ev.ActivityScheduled)
    assert "doomed" not in NOTES


async def _has(client: df.Client, wid: str, cls: type) -> bool:
    return bool(_of(await _history(client, wid), cls))


# --------------------------------------------------------------------------- continue-as-new


def noop() -> None:
    return None


def batch_flow(total: int, done: int, runs: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    info = df.workflow.info()
    runs = [
        *runs,
        {
            "run_id": info.run_id,
            "continued_from": info.continued_from,
            "first_run_id": info.first_run_id,
            "length_at_start": info.history_length,
        },
    ]
    while done < total:
        yield df.activity(noop)
        done += 1
        if df.workflow.info().history_length >= 8:  # time for a fresh history
            yield df.continue_as_new(total, done, runs)
    return {"done": done, "runs": runs}


async def test_continue_as_new_starts_fresh_histories_under_the_same_id() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[batch_flow], activities=[noop], max_cached_workflows=0):
            handle = await env.client.start_workflow(batch_flow, 9, 0, [], id="batch")
            result = await handle.result(timeout=15)
            with pytest.raises(df.WorkflowContinuedAsNewError) as first_closed:
                await handle.result(timeout=5, follow_runs=False)
            latest = await env.client.get_workflow_handle("batch").describe()
            lengths = []
            for run in result["runs"]:
                pinned = env.client.get_workflow_handle("batch", run_id=run["run_id"])
                lengths.append(len(await pinned.fetch_history()))
    runs = result["runs"]
    assert result["done"] == 9 and len(runs) == 3
    assert runs[0]["run_id"] == handle.run_id
    assert first_closed.value.new_run_id == runs[1]["run_id"]
    assert [r["continued_from"] for r in runs] == [None, runs[0]["run_id"], runs[1]["run_id"]]
    assert {r["first_run_id"] for r in runs} == {handle.run_id}
    assert [r["length_at_start"] for r in runs] == [1, 1, 1]  # each run starts empty
    assert lengths == [10, 10, 4]  # 4 + 4 + 1 activities, never one growing history
    assert latest.run_id == runs[2]["run_id"] and latest.status == "completed"


# --------------------------------------------------------------------------- determinism

SIDE_EFFECT_CALLS: Counter[str] = Counter()
CONTROL = logging.getLogger("tests.integration.control")


def minted_token() -> str:
    SIDE_EFFECT_CALLS["token"] += 1
    return f"token-{time.time_ns()}"


def deterministic_flow():  # type: ignore[no-untyped-def]
    def snapshot() -> dict[str, Any]:
        return {
            "now": df.workflow.now().timestamp(),
            "random": df.workflow.random(),
            "uuid": str(df.workflow.uuid4()),
        }

    first = snapshot()
    df.workflow.logger.info("step one")
    CONTROL.info("control step one")
    echoed = yield df.activity(echo, first)  # the values are recorded in history here
    yield df.sleep(0.2)
    second = snapshot()
    token = yield df.side_effect(minted_token)
    df.workflow.logger.info("step two")
    yield df.activity(echo, token)
    df.workflow.logger.info("step three")
    info = df.workflow.info()
    return {
        "first": first,
        "echoed": echoed,
        "second": second,
        "token": token,
        "info": [info.workflow_id, info.workflow_type, info.namespace, info.task_queue],
    }


async def test_deterministic_helpers_side_effect_and_logger_across_replays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="durablefuture.workflow")
    caplog.set_level(logging.INFO, logger=CONTROL.name)
    async with LocalEnvironment() as env:
        async with env.worker(
            task_queue="det",
            workflows=[deterministic_flow],
            activities=[echo],
            max_cached_workflows=0,
        ) as worker:
            handle = await env.client.start_workflow(deterministic_flow, id="det", task_queue="det")
            result = await handle.result(timeout=10)
            history = await handle.fetch_history()
    # replays recomputed `first` and yielded the same activity arguments (else the run
    # would be stuck on a NonDeterminismError) and returned what the first run computed
    assert worker.stats["replays"] >= 3
    assert result["first"] == result["echoed"]
    started = history[0]
    (fired,) = _of(history, ev.TimerFired)
    assert result["first"]["now"] == pytest.approx(started.at)
    assert result["second"]["now"] == pytest.approx(fired.at)  # time moves with history
    assert result["second"]["random"] != result["first"]["random"]
    assert result["second"]["uuid"] != result["first"]["uuid"]
    # the side effect ran once and its recorded value was used on every replay
    assert SIDE_EFFECT_CALLS["token"] == 1
    assert NOTES["det"][-1] == ("echo", result["token"])
    assert result["info"] == ["det", "deterministic_flow", "default", "det"]
    # the replay-aware logger wrote each line once; a plain logger repeats on replay
    lines = [r.getMessage() for r in caplog.records if r.name == "durablefuture.workflow"]
    assert lines == ["step one", "step two", "step three"]
    assert all(
        getattr(r, "workflow_id", None) == "det"
        for r in caplog.records
        if r.name == "durablefuture.workflow"
    )
    control = [r for r in caplog.records if r.name == CONTROL.name]
    assert len(control) >= 2
    # the recorded history replays cleanly in the Replayer too
    activation = Replayer(workflows=[deterministic_flow]).replay(history)
    assert activation.finished and not activation.commands
    assert SIDE_EFFECT_CALLS["token"] == 1


# --------------------------------------------------------------------------- versioning


def step(name: str) -> str:
    return name


@df.defn(name="versioned")
def versioned_v1():  # type: ignore[no-untyped-def]
    a = yield df.activity(step, "A")
    yield df.wait_signal("go")
    b = yield df.activity(step, "B-old")
    return [a, b]


@df.defn(name="versioned")
def versioned_v2():  # type: ignore[no-untyped-def]
    if df.workflow.patched("new-a"):
        a = yield df.activity(step, "A-new")
    else:
        a = yield df.activity(step, "A")
    yield df.wait_signal("go")
    if df.workflow.patched("new-b"):
        b = yield df.activity(step, "B-new")
    else:
        b = yield df.activity(step, "B-old")
    return [a, b]


@df.defn(name="versioned")
def versioned_v3():  # type: ignore[no-untyped-def]
    df.workflow.deprecate_patch("new-a")  # every old run has passed this point
    a = yield df.activity(step, "A-new")
    yield df.wait_signal("go")
    if df.workflow.patched("new-b"):
        b = yield df.activity(step, "B-new")
    else:
        b = yield df.activity(step, "B-old")
    return [a, b]


async def _waiting_for_signal(client: df.Client, wid: str) -> bool:
    return bool(_of(await _history(client, wid), ev.SignalWaitStarted))


def _markers(history: Sequence[ev.Event]) -> list[str]:
    return [e.change_id for e in _of(history, ev.MarkerRecorded)]


# Runs here move from a worker that has left to the next one: the task sent to the one that left
# goes to the task queue once it has been gone for the sticky timeout (5 s by default).
HANDOVER = ServerOptions(sticky_timeout=1.0)


async def test_patched_lets_runs_started_on_old_code_finish_on_new_code() -> None:
    async with LocalEnvironment(server_options=HANDOVER) as env:
        client = env.client
        async with env.worker(workflows=[versioned_v1], activities=[step]):
            old = await client.start_workflow("versioned", id="v-old")
            await wait_for(lambda: _waiting_for_signal(client, "v-old"), 10)
        async with env.worker(workflows=[versioned_v2], activities=[step]):
            await old.signal("go")
            # passed "new-a" on old code (old branch), reached "new-b" on new code (new branch)
            assert await old.result(timeout=10) == ["A", "B-new"]
            middle = await client.start_workflow("versioned", id="v-middle")
            await wait_for(lambda: _waiting_for_signal(client, "v-middle"), 10)
        async with env.worker(workflows=[versioned_v3], activities=[step]):
            await middle.signal("go")
            # its "new-a" marker is accepted by the deprecated patch
            assert await middle.result(timeout=10) == ["A-new", "B-new"]
            fresh = await client.start_workflow("versioned", id="v-fresh")
            await wait_for(lambda: _waiting_for_signal(client, "v-fresh"), 10)
            await fresh.signal("go")
            assert await fresh.result(timeout=10) == ["A-new", "B-new"]
            old_history = await old.fetch_history()
            middle_history = await middle.fetch_history()
            fresh_history = await fresh.fetch_history()
    assert _markers(old_history) == ["new-b"]
    assert _markers(middle_history) == ["new-a", "new-b"]
    assert _markers(fresh_history) == ["new-b"]  # a deprecated patch records nothing new


@df.defn(name="drifting")
def drifting_v1():  # type: ignore[no-untyped-def]
    a = yield df.activity(step, "A")
    yield df.wait_signal("go")
    b = yield df.activity(step, "B")
    return [a, b]


@df.defn(name="drifting")
def drifting_v2():  # type: ignore[no-untyped-def]
    a = yield df.activity(step, "A-changed")  # incompatible change
    yield df.wait_signal("go")
    b = yield df.activity(step, "B")
    return [a, b]


def _line_of(marker: str) -> int:
    source = Path(__file__).read_text().splitlines()
    return next(i for i, line in enumerate(source, start=1) if marker in line)


async def test_non_determinism_fails_the_task_clearly_and_a_fix_resumes_the_run() -> None:
    async with LocalEnvironment(server_options=HANDOVER) as env:
        client = env.client
        async with env.worker(workflows=[drifting_v1], activities=[step]):
            handle = await client.start_workflow("drifting", id="drift")
            await wait_for(lambda: _waiting_for_signal(client, "drift"), 10)
        async with env.worker(workflows=[drifting_v2], activities=[step]) as bad:
            await handle.signal("go")

            async def task_failed() -> bool:
                return (await handle.describe()).last_workflow_task_failure is not None

            await wait_for(task_failed, 10)
            description = await handle.describe()
            bad_tasks = bad.stats["workflow_tasks"]
        assert bad_tasks <= 2  # retried with backoff, not in a hot loop
        assert description.status == "running"
        failure = description.last_workflow_task_failure
        assert failure is not None and failure.type == "NonDeterminismError"
        message = failure.message
        assert "event 2" in message  # the recorded event it diverges from
        assert "activity 'step' args=['A']" in message  # what history recorded
        assert "activity 'step' args=['A-changed']" in message  # what the code yields now
        assert f"test_authoring.py:{_line_of('# incompatible change')}" in message
        assert "df.workflow.patched(" in message
        # deploying the fixed code lets the run finish (the failed task is retried)
        async with env.worker(workflows=[drifting_v1], activities=[step]):
            assert await handle.result(timeout=15) == ["A", "B"]
        history = await handle.fetch_history()
    assert len(_of(history, ev.WorkflowTaskFailed)) == 1
    # the Replayer gives the same verdict offline
    activation = Replayer(workflows=[drifting_v1]).replay(history)
    assert activation.finished and not activation.commands
    with pytest.raises(df.NonDeterminismError) as info:
        Replayer(workflows=[drifting_v2]).replay(history)
    assert info.value.event_id == 2
    assert info.value.location is not None
    assert info.value.location.endswith(f":{_line_of('# incompatible change')}")


# --------------------------------------------------------------------------- workflow ids


def quick_flow(fail: bool):  # type: ignore[no-untyped-def]
    yield df.activity(noop)
    if fail:
        raise df.ApplicationError("failed on purpose")
    return "done"


def gated_flow():  # type: ignore[no-untyped-def]
    return (yield df.wait_signal("go"))


async def test_id_reuse_policies_and_idempotent_start() -> None:
    policy = df.IdReusePolicy
    async with LocalEnvironment() as env:
        client = env.client

        async def run(wid: str, fail: bool, reuse: df.IdReusePolicy) -> str:
            options = df.WorkflowOptions(id_reuse_policy=reuse)
            handle = await client.start_workflow(quick_flow, fail, id=wid, options=options)
            with contextlib.suppress(df.WorkflowFailedError):
                await handle.result(timeout=10)
            assert handle.run_id is not None
            return handle.run_id

        async with env.worker(workflows=[quick_flow, gated_flow], activities=[noop]):
            # ALLOW_DUPLICATE: a new run once the previous one closed, however it closed
            first = await run("allow", False, policy.ALLOW_DUPLICATE)
            assert await run("allow", False, policy.ALLOW_DUPLICATE) != first
            # ALLOW_DUPLICATE_FAILED_ONLY: only after a failure
            await run("failed-only", False, policy.ALLOW_DUPLICATE)
            with pytest.raises(df.WorkflowAlreadyStartedError, match="FAILED_ONLY"):
                await run("failed-only", False, policy.ALLOW_DUPLICATE_FAILED_ONLY)
            await run("failed-only-2", True, policy.ALLOW_DUPLICATE)
            await run("failed-only-2", False, policy.ALLOW_DUPLICATE_FAILED_ONLY)
            # REJECT_DUPLICATE: never, even after a failure
            await run("reject", True, policy.ALLOW_DUPLICATE)
            with pytest.raises(df.WorkflowAlreadyStartedError, match="REJECT_DUPLICATE"):
                await run("reject", False, policy.REJECT_DUPLICATE)

            # a running id is never started twice ...
            same = df.WorkflowOptions(request_id="request-1")
            handle = await client.start_workflow(gated_flow, id="idem", options=same)
            with pytest.raises(df.WorkflowAlreadyStartedError) as info:
                await client.start_workflow(gated_flow, id="idem")
            assert info.value.run_id == handle.run_id
            # ... but retrying the same request returns the same run, running or closed
            again = await client.start_workflow(gated_flow, id="idem", options=same)
            assert again.run_id == handle.run_id
            await handle.signal("go", "once")
            assert await handle.result(timeout=10) == "once"
            after = await client.start_workflow(gated_flow, id="idem", options=same)
            assert after.run_id == handle.run_id
            assert await after.result(timeout=5) == "once"
            runs = await client.list_workflows(workflow_type="gated_flow")
    assert len(runs) == 1


def collector(seen: list[str], per_run: int):  # type: ignore[no-untyped-def]
    got = list(seen)
    for _ in range(per_run):
        item = yield df.wait_signal("item")
        got.append(item)
        if item == "stop":
            return got
    yield df.continue_as_new(got, per_run)


async def test_signals_are_never_lost_across_continue_as_new() -> None:
    # Signals keep arriving while the workflow continues as new every 3 items: those the old
    # run had not consumed, and those sent during the switch, reach the next run in order.
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[collector]):
            handle = await env.client.start_workflow(collector, [], 3, id="collector")
            items = [f"i{k}" for k in range(30)] + ["stop"]
            for item in items:
                await handle.signal("item", item)
            assert await handle.result(timeout=30) == items
