"""Duplicates are ignored, bad input is dead-lettered, bad start-up fails clearly."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import orjson
import pytest

import durablefuture as df
from durablefuture.codec.wire import InputEnvelope, WorkflowTaskMessage, default_codec
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.effects import ArmTimer
from durablefuture.core.orchestration import wft_retry_delay
from durablefuture.natsserver import NatsServer, free_port
from durablefuture.server.options import ServerOptions
from durablefuture.testing import LocalEnvironment
from tests.conftest import ROOT, Daemons, wait_for
from tests.integration.helpers import ConnectRetries, settled

pytestmark = pytest.mark.asyncio


def greet(name: str) -> str:
    return f"hello {name}"


def greet_then_wait(name: str):  # type: ignore[no-untyped-def]
    first = yield df.activity(greet, name)
    extra = yield df.wait_signal("go")
    return f"{first} {extra}"


async def _history(env: LocalEnvironment, wid: str) -> list[ev.Event]:
    return await env.client.get_workflow_handle(wid).fetch_history()


async def test_duplicate_completion_and_redelivered_workflow_task_change_nothing() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[greet_then_wait], activities=[greet]):
            handle = await env.client.start_workflow(greet_then_wait, "ann", id="dup")

            async def waiting() -> bool:
                h = await _history(env, "dup")
                return any(isinstance(e, ev.SignalWaitStarted) for e in h)

            await wait_for(waiting, 10)
            before = await _history(env, "dup")
            run_id = before[0].run_id  # type: ignore[union-attr]
            codec = default_codec()
            layout = env.client.layout
            js = env.client.pub.js  # stored (PubAck) before the wait below looks for them
            completed = next(e for e in before if isinstance(e, ev.ActivityCompleted))
            # the same activity completion, delivered again (no Msg-Id: JetStream stores it)
            dup = inp.CompleteActivityTask(run_id, completed.seq, completed.attempt, "other")
            await js.publish(layout.input("report"), codec.encode_input(InputEnvelope("dup", dup)))
            # the first workflow task's outcome, reported again
            scheduled = next(e for e in before if isinstance(e, ev.ActivityScheduled))
            from durablefuture.core.commands import ScheduleActivity

            stale = inp.CompleteWorkflowTask(
                run_id,
                scheduled.based_on,
                (
                    ScheduleActivity(
                        scheduled.seq, scheduled.name, scheduled.args, scheduled.options
                    ),
                ),
            )
            await js.publish(
                layout.input("report"), codec.encode_input(InputEnvelope("dup", stale))
            )
            # a workflow task redelivered after its outcome was recorded
            from durablefuture.codec.wire import WorkflowTaskMessage
            from durablefuture.core.effects import WorkflowTask

            wft = WorkflowTask("default", "dup", run_id, "greet_then_wait", "default", 1)
            await js.publish(
                layout.workflow_tasks("default"),
                codec.encode_workflow_task(WorkflowTaskMessage(wft, tuple(before[:1]), 0)),
            )
            server = env.server
            assert server is not None
            await wait_for(lambda: server.stats["duplicates"] + server.stats["ignored"] >= 2, 10)
            # the worker has handled the task, and the server whatever the worker reported
            await settled(env.client, "default")
            assert await _history(env, "dup") == before
            await handle.signal("go", "again")
            assert await handle.result(timeout=10) == "hello ann again"


async def test_undecodable_messages_go_to_dead_letters_and_daemons_keep_running() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[greet_then_wait], activities=[greet]):
            layout = env.client.layout
            js = env.client.pub.js
            nc = env.client.nc
            for subject in (
                layout.input("run"),
                layout.input("timer"),
                layout.workflow_tasks("default"),
                layout.activity_tasks("default"),
            ):
                await js.publish(subject, b"\x00 not json")
            await js.publish(layout.input("run"), orjson.dumps({"v": 99, "wid": "x"}))

            async def dead_letters() -> list[tuple[str, str]]:
                info = await js.stream_info(layout.stream, subjects_filter=layout.dead_letters())
                subjects = info.state.subjects or {}
                return [(s, str(n)) for s, n in subjects.items()]

            async def five() -> bool:
                return sum(int(n) for _, n in await dead_letters()) >= 5

            await wait_for(five, 15)
            subjects = dict(await dead_letters())
            assert int(subjects[layout.dead_letter("server-input")]) >= 3
            assert int(subjects[layout.dead_letter("worker")]) >= 2
            msg = await js.get_last_msg(layout.stream, layout.dead_letter("server-input"))
            assert "schema version 99" in (msg.headers or {}).get("Df-Reason", "")
            # both daemons still work
            handle = await env.client.start_workflow(greet_then_wait, "bo", id="after-bad")
            await handle.signal("go", "fine")
            assert await handle.result(timeout=10) == "hello bo fine"
            del nc


def _run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("daemon", ["daemons.df_server", "daemons.df_worker"])
async def test_nats_unreachable_at_start_retries_then_exits_naming_the_url(daemon: str) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    extra = ["--activities", "tests.integration.flows:ACTIVITIES"] if "worker" in daemon else []
    out = _run_cli(daemon, "--nats", url, "--connect-timeout", "1.5", *extra)  # it exits by itself
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and url in last, out.stderr
    assert "retrying" in out.stderr  # a log line per attempt while it waits


async def test_worker_with_bad_workflows_spec_exits_naming_it(daemons: Daemons) -> None:
    out = _run_cli("daemons.df_worker", "--nats", daemons.url, "--workflows", "no_such_mod:flows")
    assert out.returncode != 0
    assert "no_such_mod:flows" in out.stderr and "cannot import" in out.stderr
    out = _run_cli(
        "daemons.df_worker", "--nats", daemons.url, "--workflows", "tests.integration.flows:nope"
    )
    assert out.returncode != 0 and "has no attribute 'nope'" in out.stderr
    out = _run_cli("daemons.df_worker", "--nats", daemons.url, "--workflows", "just-a-name")
    assert out.returncode != 0 and "MODULE:ATTRIBUTE" in out.stderr


async def test_worker_refuses_a_plain_function_as_a_workflow_before_reaching_nats() -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens: the check comes first
    out = _run_cli(
        "daemons.df_worker",
        "--nats",
        url,
        "--connect-timeout",
        "10",
        "--workflows",
        "tests.integration.test_robustness:greet",
    )
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: workflow 'greet'") and "not a generator function" in line
    assert "yield df.activity(" in line


@pytest.fixture
def nats_without_jetstream(tmp_path: Path) -> Iterator[NatsServer]:
    """A plain ``nats-server`` (no ``-js``) on a free loopback port."""
    server = NatsServer(str(tmp_path / "plain-nats"), jetstream=False)
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)


async def test_nats_without_jetstream_is_one_clear_error(
    nats_without_jetstream: NatsServer,
) -> None:
    url = nats_without_jetstream.url
    with (
        ConnectRetries() as retries,
        pytest.raises(df.JetStreamUnavailableError, match="has no JetStream") as err,
    ):
        await df.Client.connect(url, connect_timeout=10)
    assert retries.count == 0  # at once: no retrying for the connect timeout
    assert isinstance(err.value, df.TransportError) and err.value.__cause__ is None
    assert url in str(err.value) and "-js" in str(err.value)

    cli = ("daemons.df_cli", "--nats", url, "--connect-timeout", "10")
    commands = [
        (*cli, "workflow", "list"),
        (*cli, "workflow", "start", "order_workflow", "--id", "o-1", "--input", '["o-1", 1.0]'),
        (*cli, "why", "o-1"),
        ("daemons.df_server", "--nats", url, "--connect-timeout", "10"),
        (
            "daemons.df_worker",
            "--nats",
            url,
            "--connect-timeout",
            "10",
            "--activities",
            "tests.integration.flows:ACTIVITIES",
        ),
    ]
    outs = await asyncio.gather(*(asyncio.to_thread(_run_cli, *c, timeout=60) for c in commands))
    for command, out in zip(commands, outs, strict=True):
        assert out.returncode != 0, (command, out.stderr)
        (line,) = out.stderr.strip().splitlines()  # one line: no traceback, no log noise
        assert line == (
            f"error: NATS at {url} has no JetStream; start nats-server with -js "
            "(or a `jetstream {}` block in its config), or use `df dev`"
        ), command


def calls_missing_activity():  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(
        start_to_close_timeout=5,
        retry_policy=df.RetryPolicy(initial_interval=0.05, maximum_attempts=2),
    )
    try:
        yield df.activity("missing_activity", 1, options=opts)
    except df.ActivityError as err:
        return {"type": err.cause.failure.type, "message": err.cause.failure.message}  # type: ignore[union-attr]
    return "unreachable"


async def test_unregistered_workflow_and_activity_record_failures_not_loops() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[calls_missing_activity], activities=[greet]) as worker:
            out = await env.client.execute_workflow(
                calls_missing_activity, id="miss-act", timeout=15
            )
            assert out["type"] == "ActivityNotRegisteredError"
            assert "missing_activity" in out["message"] and "greet" in out["message"]
            history = await _history(env, "miss-act")
            assert sum(isinstance(e, ev.ActivityRetryScheduled) for e in history) == 1

            before = worker.stats["workflow_tasks"]
            handle = await env.client.start_workflow("not_registered_wf", id="miss-wf")

            async def failed_task() -> bool:
                d = await handle.describe()
                return d.last_workflow_task_failure is not None

            await wait_for(failed_task, 10)
            d = await handle.describe()
            assert d.status == "running"
            failure = d.last_workflow_task_failure
            assert failure is not None and failure.type == "NotRegisteredError"
            assert "not_registered_wf" in failure.message
            assert "calls_missing_activity" in failure.message  # names what is registered
            # the retry (after 1 s) failed as well, and the one after it is armed
            js = env.client.pub.js
            layout = env.client.layout
            second_retry = layout.timer(d.run_id, "wft.2")

            async def armed() -> bool:
                info = await js.stream_info(layout.stream, subjects_filter=second_retry)
                return bool(info.state.subjects)

            await wait_for(armed, 10)
            schedule = (await js.get_last_msg(layout.stream, second_retry)).headers or {}
            # retried with backoff (1 s, 2 s, ...), not an immediate redelivery loop
            assert worker.stats["workflow_tasks"] - before <= 4
            history = await _history(env, "miss-wf")
            assert sum(isinstance(e, ev.WorkflowTaskFailed) for e in history) == 1
            (failed,) = (e for e in history if isinstance(e, ev.WorkflowTaskFailed))
            due = datetime.fromisoformat(schedule["Nats-Schedule"].removeprefix("@at "))
            assert due.timestamp() >= failed.at + wft_retry_delay(2)


async def test_signal_racing_an_activity_result_is_seen_by_the_workflow() -> None:
    # The signal lands in history between the activity's scheduling and its result, while the
    # worker that runs the activity also holds the workflow's generator: the worker's early
    # view of the result must be checked against history, not trusted.
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[greet_then_wait], activities=[greet]):
            for i in range(10):
                handle = await env.client.start_workflow(greet_then_wait, "bo", id=f"race-{i}")
                await handle.signal("go", f"n{i}")
                assert await handle.result(timeout=10) == f"hello bo n{i}"


STORED_FIRST_TASKS = ServerOptions(namespace="default", status_delay=0, eager_start_wait=0)
"""Eager start off: these tests break a run's first workflow task as stored and delivered
(an eager start's offer runs it without a delivery, and a declined one is stored as here)."""


async def test_a_task_that_keeps_failing_is_recorded_and_dead_lettered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from durablefuture.worker import deliveries
    from durablefuture.worker.workflow_tasks import WorkflowTasks

    monkeypatch.setattr(deliveries, "MAX_TASK_DELIVERIES", 2)
    original = WorkflowTasks._run_workflow_task

    async def flaky(self: WorkflowTasks, m: WorkflowTaskMessage) -> object:
        if m.task.trigger == 1 and m.task.attempt == 1:  # the first task breaks, every time
            raise RuntimeError("worker-side breakage")
        return await original(self, m)

    monkeypatch.setattr(WorkflowTasks, "_run_workflow_task", flaky)
    async with LocalEnvironment(server_options=STORED_FIRST_TASKS) as env:
        async with env.worker(workflows=[greet_then_wait], activities=[greet]):
            handle = await env.client.start_workflow(greet_then_wait, "eve", id="giving-up")

            async def recorded() -> bool:
                h = await _history(env, "giving-up")
                return any(isinstance(e, ev.WorkflowTaskFailed) for e in h)

            await wait_for(recorded, 15)
            await handle.signal("go", "later")
            assert await handle.result(timeout=20) == "hello eve later"
            history = await _history(env, "giving-up")
            failed = [e for e in history if isinstance(e, ev.WorkflowTaskFailed)]
            assert len(failed) == 1 and "failed 2 times" in failed[0].failure.message
            js = env.client.pub.js
            dead = await js.get_last_msg(
                env.client.layout.stream, env.client.layout.dead_letter("worker")
            )
            assert "worker-side breakage" in (dead.headers or {}).get("Df-Reason", "")


async def test_a_task_given_up_on_is_dead_lettered_only_once_its_failure_is_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Persist, then ack: when the report of a task's final failure cannot be stored (NATS
    away), the task is neither dead-lettered nor dropped with its failure unrecorded. The
    worker retries the report; when that fails too the message is kept, and a later delivery
    records the failure and only then dead-letters it."""
    from durablefuture.core.errors import TransportError
    from durablefuture.worker import deliveries, reports
    from durablefuture.worker.reports import Reports
    from durablefuture.worker.workflow_tasks import WorkflowTasks

    monkeypatch.setattr(deliveries, "MAX_TASK_DELIVERIES", 2)
    monkeypatch.setattr(reports, "REPORT_TRIES", 2)
    original_run = WorkflowTasks._run_workflow_task

    async def flaky(self: WorkflowTasks, m: WorkflowTaskMessage) -> object:
        if m.task.trigger == 1 and m.task.attempt == 1:  # the first task breaks, every time
            raise RuntimeError("worker-side breakage")
        return await original_run(self, m)

    original_send = Reports.send
    refused: list[str] = []

    async def send(
        self: Reports, workflow_id: str, message: inp.RunInput, *args: object, **kw: object
    ) -> None:
        if isinstance(message, inp.FailWorkflowTask) and len(refused) < 3:
            refused.append(message.failure.message)  # delivery 2: both tries; delivery 3: one
            raise TransportError("the report could not be stored (injected)")
        await original_send(self, workflow_id, message, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(WorkflowTasks, "_run_workflow_task", flaky)
    monkeypatch.setattr(Reports, "send", send)
    async with LocalEnvironment(server_options=STORED_FIRST_TASKS) as env:
        layout = env.client.layout
        js = env.client.pub.js
        async with env.worker(workflows=[greet_then_wait], activities=[greet]):
            handle = await env.client.start_workflow(greet_then_wait, "eve", id="give-up-later")

            async def recorded() -> bool:
                h = await _history(env, "give-up-later")
                return any(isinstance(e, ev.WorkflowTaskFailed) for e in h)

            await wait_for(recorded, 30)
            await handle.signal("go", "later")
            assert await handle.result(timeout=20) == "hello eve later"
            assert len(refused) == 3
            history = await _history(env, "give-up-later")
            failed = [e for e in history if isinstance(e, ev.WorkflowTaskFailed)]
            # the message was kept and delivered a third time, not dead-lettered unrecorded
            assert len(failed) == 1 and "failed 3 times" in failed[0].failure.message
            info = await js.stream_info(layout.stream, subjects_filter=layout.dead_letters())
            assert (info.state.subjects or {}) == {layout.dead_letter("worker"): 1}
            dead = await js.get_last_msg(layout.stream, layout.dead_letter("worker"))
            assert "failed 3 times" in (dead.headers or {}).get("Df-Reason", "")


def signal_then_continue(hops: int, got: list[str]):  # type: ignore[no-untyped-def]
    value = yield df.wait_signal("go")
    got = [*got, value]
    if hops > 0:
        yield df.continue_as_new(hops - 1, got)
    return got


async def test_a_redelivered_signal_is_not_applied_again_after_continue_as_new() -> None:
    """The first delivery was recorded on run 1, which has continued as new since: the
    redelivery (a df-server or nats-server that died before the acknowledgement) must not
    reach run 2."""
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[signal_then_continue]):
            client = env.client
            handle = await client.start_workflow(signal_then_continue, 1, [], id="redeliver")
            info = await client.nc.jetstream().stream_info(client.layout.stream)
            await handle.signal("go", "g0")
            first_run = handle.run_id

            async def second_run() -> str | None:
                latest = await client.latest_run_id("redeliver")
                return latest if latest != first_run else None

            run2 = await wait_for(second_run, 10)
            history = await client.get_workflow_handle(
                "redeliver", run_id=first_run
            ).fetch_history()
            sent = next(e for e in history if isinstance(e, ev.SignalReceived))
            again = inp.SignalWorkflow("", "go", sent.request_id, ("g0",))
            server = env.server
            assert server is not None
            await server._handle_run_input("redeliver", again, input_seq=info.state.last_seq + 1)
            await handle.signal("go", "g1")
            assert await handle.result(timeout=10) == ["g0", "g1"]
            run2_history = await client.get_workflow_handle(
                "redeliver", run_id=run2
            ).fetch_history()
            received = [e for e in run2_history if isinstance(e, ev.SignalReceived)]
            assert [e.args for e in received] == [("g1",)]


def nap():  # type: ignore[no-untyped-def]
    yield df.sleep(3600)
    return "rested"


async def test_a_timer_already_due_when_armed_is_stored_not_only_held_in_memory() -> None:
    """A timer recorded late (workflow time) is due at once: it must go to the stream, not
    only to an in-process timer that a df-server crash would lose with nothing to fire it."""
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[nap]):
            handle = await env.client.start_workflow(nap, id="due")

            async def timer_started() -> bool:
                history = await _history(env, "due")
                return any(isinstance(e, ev.TimerStarted) for e in history)

            await wait_for(timer_started, 10)
            server = env.server
            assert server is not None and handle.run_id is not None
            cache = await server._load("due", handle.run_id)
            pending: list[asyncio.Future[object]] = []
            async with cache.lock:
                await server._arm(cache, ArmTimer("t1", time.time() - 1.0), pending)  # type: ignore[arg-type]
            await asyncio.gather(*pending)
            layout = env.client.layout
            stored = await env.client.nc.jetstream().get_last_msg(
                layout.stream, layout.input("timer")
            )
            fire = default_codec().decode_input(stored.data or b"").input
            assert fire == inp.FireTimer(handle.run_id, "t1")
            assert await handle.result(timeout=10) == "rested"


async def test_a_running_status_derived_again_never_overwrites_the_close() -> None:
    """A start delivered again re-derives the run's first effects, its "running" status among
    them; from a server whose view of the run is old that status used to overwrite the close,
    and `result()` waited for ever on a run whose history had long completed (seen in the
    cluster chaos test). The running status is now written only if the run has none yet."""
    from durablefuture.core.effects import RunStatus, UpdateStatus

    async with LocalEnvironment() as env:
        async with env.worker(workflows=[greet_then_wait], activities=[greet]):
            handle = await env.client.start_workflow(greet_then_wait, "ann", id="st")
            run_id = handle.run_id or ""

            async def indexed() -> object:
                return await env.client.summary("st", run_id)

            running = await wait_for(indexed, 10)
            assert running.status == RunStatus.RUNNING
            await handle.signal("go", "then")
            assert await handle.result(timeout=10) == "hello ann then"
            server = env.server
            assert server is not None
            cache = await server._load("st", run_id)
            async with cache.lock:  # what an old view derives for a start delivered again
                await server._execute(cache, [UpdateStatus(running)])
            summary = await env.client.summary("st", run_id)
            assert summary is not None and summary.status == RunStatus.COMPLETED, summary
            again = env.client.get_workflow_handle("st")
            assert await again.result(timeout=5) == "hello ann then"
