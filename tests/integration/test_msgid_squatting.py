"""Message ids someone else used first (squatting) cost no append and no report.

JetStream drops a message whose ``Nats-Msg-Id`` it already holds, on any subject of the stream,
and acknowledges it as a "duplicate". Here an attacker with a plain NATS client publishes,
before the run gets there, messages under the ids that the run's next history appends and the
worker's activity reports will use. The run still completes exactly once with its result: each
activity ran once, each event is recorded once, and the taking of an id was logged.
"""

from __future__ import annotations

import logging
from collections import Counter

import nats
import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.testing import LocalEnvironment
from durablefuture.worker import WorkerOptions

pytestmark = pytest.mark.asyncio

CALLS: Counter[str] = Counter()


async def greet_counted(name: str) -> str:
    CALLS[name] += 1
    return f"hello {name}"


def wait_then_greet(name: str):  # type: ignore[no-untyped-def]
    go = yield df.wait_signal("go")
    first = yield df.activity(greet_counted, name)
    second = yield df.activity(greet_counted, f"{name}-2")
    return f"{first} {second} {go}"


async def _squat(env: LocalEnvironment, subject: str, msg_ids: list[str]) -> int:
    """Publish one message under each id; returns how many were stored (an id the run has
    used already is a duplicate)."""
    taken = 0
    attacker = await nats.connect(env.nats_url)
    try:
        js = attacker.jetstream()
        for msg_id in msg_ids:
            ack = await js.publish(subject, b"squatted", headers={"Nats-Msg-Id": msg_id})
            taken += not ack.duplicate
    finally:
        await attacker.close()
    return taken


def _exactly_once(history: list[ev.Event]) -> None:
    assert [e.event_id for e in history] == list(range(1, len(history) + 1))
    assert sum(isinstance(e, ev.WorkflowCompleted) for e in history) == 1
    assert isinstance(history[-1], ev.WorkflowCompleted)
    completed = Counter(e.seq for e in history if isinstance(e, ev.ActivityCompleted))
    assert sorted(completed.values()) == [1, 1], completed
    scheduled = Counter(e.seq for e in history if isinstance(e, ev.ActivityScheduled))
    assert sorted(scheduled.values()) == [1, 1], scheduled


def _taken_lines(caplog: pytest.LogCaptureFixture, what: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "durablefuture.transport.dedup" and r.getMessage().startswith(what)
    ]


async def test_squatted_history_message_ids_cost_no_append(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="durablefuture.transport.dedup")
    CALLS.clear()
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[wait_then_greet], activities=[greet_counted]):
            handle = await env.client.start_workflow(wait_then_greet, "h", id="squat-history")
            assert handle.run_id
            recorded = len(await handle.fetch_history())
            # every id the run's next appends will use (run id : first event id of the batch),
            # taken on another subject of the namespace's stream; the appends after the signal
            # are certainly still to come
            ids = [f"{handle.run_id}:{n}" for n in range(recorded + 1, recorded + 40)]
            taken = await _squat(env, "df.default.squat.history", ids)

            await handle.signal("go", "go")
            assert await handle.result(timeout=30) == "hello h hello h-2 go"
            history = await handle.fetch_history()
            _exactly_once(history)
            assert CALLS == {"h": 1, "h-2": 1}
            lines = _taken_lines(caplog, "a history append")
            assert lines and "id squatting" in lines[0], lines
            # the squatted messages are untouched, the history holds none of them
            info = await env.client.pub.js.stream_info(
                env.client.layout.stream, subjects_filter="df.default.squat.>"
            )
            assert info.state.subjects == {"df.default.squat.history": taken}


async def test_squatted_report_message_ids_lose_no_report(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="durablefuture.transport.dedup")
    CALLS.clear()
    # reports stored on the input subject (as when no df-server answers a report request)
    stored = WorkerOptions(ask_reports=False)
    async with LocalEnvironment() as env:
        async with env.worker(
            workflows=[wait_then_greet], activities=[greet_counted], options=stored
        ):
            handle = await env.client.start_workflow(wait_then_greet, "r", id="squat-report")
            assert handle.run_id
            # the ids of the worker's activity reports (started and completed, first attempt),
            # taken on the server's own input subject (junk it dead-letters) and elsewhere
            ids = [
                f"{handle.run_id}:{kind}:{seq}:1" for kind in ("ast", "act") for seq in (1, 2, 3)
            ]
            assert await _squat(env, env.client.layout.input("run"), ids[::2]) == 3
            assert await _squat(env, "df.default.squat.report", ids[1::2]) == 3

            await handle.signal("go", "go")
            assert await handle.result(timeout=30) == "hello r hello r-2 go"
            _exactly_once(await handle.fetch_history())
            assert CALLS == {"r": 1, "r-2": 1}
            lines = _taken_lines(caplog, "a report")
            assert lines and "id squatting" in lines[0], lines
