"""Worker registrations and liveness: published records, `df workflow start` warnings, `df why`
naming who serves a queue and noticing a worker that died mid-activity, signal waits in
describe. Real nats-server, real df-server (in process or as a subprocess) and real workers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import timedelta

import orjson
import pytest

import durablefuture as df
from durablefuture.testing import LocalEnvironment
from tests.conftest import ROOT, Daemons, wait_for, wait_namespace
from tests.integration.flows import add_workflow

pytestmark = pytest.mark.asyncio

FAST = df.WorkerOptions(liveness_interval=0.5)


def greet(name: str) -> str:
    return f"hello {name}"


def hold(seconds: float) -> str:
    time.sleep(seconds)
    return "held"


def greeter(name: str):  # type: ignore[no-untyped-def]
    return (yield df.activity(greet, name, options=df.ActivityOptions(start_to_close_timeout=10)))


def needs_missing_activity():  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(start_to_close_timeout=10)
    return (yield df.activity("not_deployed_yet", options=opts))


def holder(seconds: float):  # type: ignore[no-untyped-def]
    return (yield df.activity(hold, seconds, options=df.ActivityOptions(start_to_close_timeout=30)))


def waits_for_signals():  # type: ignore[no-untyped-def]
    approval = yield df.wait_signal("approve", timeout=timedelta(minutes=10))
    note = yield df.wait_signal("note")
    return [approval, note]


async def df_cli(url: str, *args: str, json: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "daemons.df_cli", "--nats", url]
    if json:
        cmd.append("--json")
    return await asyncio.to_thread(
        subprocess.run, [*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


async def test_workers_publish_registrations_and_remove_them_on_shutdown() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(
            task_queue="lv", workflows=[greeter, holder], activities=[greet, hold], options=FAST
        ) as worker:
            records = await env.client.workers("lv")
            assert records is not None and len(records) == 1
            r = records[0]
            assert r.identity == worker.identity and r.namespace == "default"
            assert r.task_queue == "lv" and r.pid == os.getpid() and r.host
            assert r.workflows == ("greeter", "holder") and r.activities == ("greet", "hold")
            assert r.last_seen >= r.started_at > 0 and r.ttl >= 2

            handle = await env.client.start_workflow(holder, 3.0, id="lv-hold", task_queue="lv")

            async def listed() -> bool:
                rs = await env.client.workers("lv")
                return bool(rs and rs[0].running and rs[0].running[0].run_id == handle.run_id)

            await wait_for(listed, 10)
            rs = await env.client.workers("lv")
            assert rs is not None
            assert (rs[0].running[0].name, rs[0].running[0].attempt) == ("hold", 1)
            out = await df_cli(env.nats_url, "workers", json=False)
            assert worker.identity in out.stdout and "running 1 activity attempt" in out.stdout
            assert await env.client.workers("other-queue") == []
            assert await handle.result(timeout=20) == "held"

            async def idle() -> bool:
                rs = await env.client.workers("lv")
                return bool(rs and not rs[0].running)

            await wait_for(idle, 10)
        # a graceful stop removes the record at once
        assert await env.client.workers("lv") == []


async def test_registration_lists_are_capped() -> None:
    def make(i: int):  # type: ignore[no-untyped-def]
        def act() -> int:
            return i

        act.__df_name__ = f"act_{i:03d}"  # type: ignore[attr-defined]
        return act

    many = [make(i) for i in range(130)]
    async with LocalEnvironment() as env:
        async with env.worker(task_queue="many", activities=many, options=FAST):
            records = await env.client.workers("many")
            assert records is not None
            r = records[0]
            assert len(r.activities) == 100 and r.activities_more == 30
            out = await df_cli(env.nats_url, "workers", "--task-queue", "many", json=False)
            assert "act_099 and 30 more" in out.stdout, out.stdout


async def test_start_warns_when_no_live_worker_registers_the_type() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(
            task_queue="lv", workflows=[greeter], activities=[greet], options=FAST
        ):
            out = await df_cli(
                env.nats_url, "workflow", "start", "greeter", "--id", "ok-1",
                "--task-queue", "lv", "--input", '["ann"]', "--wait", "--timeout", "20",
            )  # fmt: skip
            assert out.returncode == 0, out.stderr
            assert orjson.loads(out.stdout)["result"] == "hello ann"
            assert "warning" not in out.stderr

            out = await df_cli(
                env.nats_url, "workflow", "start", "gretter", "--id", "typo-1",
                "--task-queue", "lv",
            )  # fmt: skip
            assert out.returncode == 0, out.stderr  # the run is accepted all the same
            assert orjson.loads(out.stdout)["workflow_id"] == "typo-1"
            assert "warning: no live worker on task queue 'lv' registers workflow type " in (
                out.stderr
            )
            assert "'gretter'" in out.stderr and "register: greeter" in out.stderr

            out = await df_cli(
                env.nats_url, "workflow", "start", "greeter", "--id", "elsewhere-1",
                "--task-queue", "nobody-here",
            )  # fmt: skip
            assert out.returncode == 0, out.stderr
            assert (
                "warning: no live worker polls task queue 'nobody-here' for workflow tasks"
                in out.stderr
            )
            summary = await env.client.get_workflow_handle("elsewhere-1").describe()
            assert summary.status == "running"


async def test_why_names_the_workers_and_flags_unregistered_names() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(
            task_queue="lv",
            workflows=[greeter, needs_missing_activity],
            activities=[greet],
            options=FAST,
        ) as worker:
            await env.client.start_workflow(needs_missing_activity, id="miss-1", task_queue="lv")

            async def scheduled() -> bool:
                d = await env.client.get_workflow_handle("miss-1").describe()
                return bool(d.pending_activities)

            await wait_for(scheduled, 10)
            out = await df_cli(env.nats_url, "why", "miss-1", json=False)
            assert out.returncode == 0, out.stderr
            assert (
                "no live worker on task queue 'lv' registers activity 'not_deployed_yet'; "
                "they register: greet" in out.stdout
            ), out.stdout
            assert "workers on task queue 'lv':" in out.stdout
            assert worker.identity in out.stdout
            assert "workflows: greeter, needs_missing_activity" in out.stdout
            out = await df_cli(env.nats_url, "why", "miss-1")
            d = orjson.loads(out.stdout)
            (act,) = d["activities"]
            assert act["name"] == "not_deployed_yet"
            assert act["state"] in ("waiting", "retry_scheduled")  # workers fail it: retried
            assert act["registered"] is False
            assert [w["identity"] for w in d["workers"][0]["workers"]] == [worker.identity]

            # a run of a type the queue's workers do not register
            await env.client.start_workflow("not_a_registered_type", id="odd-1", task_queue="lv")
            out = await df_cli(env.nats_url, "why", "odd-1", json=False)
            assert (
                "no live worker on task queue 'lv' registers workflow type "
                "'not_a_registered_type'" in out.stdout
            ), out.stdout
        # the worker is gone: nobody serves the queue
        out = await df_cli(env.nats_url, "why", "miss-1", json=False)
        assert "workers on task queue 'lv': none alive" in out.stdout, out.stdout
        assert "no live worker polls task queue 'lv' for workflow tasks" in out.stdout


async def test_why_says_a_killed_workers_attempt_is_orphaned(daemons: Daemons) -> None:
    daemons.env["DF_TEST_ACTIVITY_SECONDS"] = "120"
    daemons.server()
    worker = daemons.worker(
        "--workflows", "tests.integration.flows:WORKFLOWS",
        "--activities", "tests.integration.flows:ACTIVITIES",
        "--liveness-interval", "0.5",
        "--activity-lease", "30",
    )  # fmt: skip
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    try:
        await client.start_workflow(add_workflow, 1, id="gone-1", task_queue="tests")
        handle = client.get_workflow_handle("gone-1")

        async def started_on_worker() -> str:
            d = await handle.describe()
            acts = [a for a in d.pending_activities if a.started and a.worker]
            return acts[0].worker if acts else ""

        identity = await wait_for(started_on_worker, 20)
        records = await client.workers("tests")
        assert records is not None and [r.identity for r in records] == [identity]
        assert records[0].pid == worker.proc.pid  # type: ignore[union-attr]
        out = await df_cli(daemons.url, "why", "gone-1")
        (act,) = orjson.loads(out.stdout)["activities"]
        assert (act["state"], act["worker"]) == ("running", identity), out.stdout

        worker.kill()

        async def reported_gone() -> dict[str, object] | None:
            out = await df_cli(daemons.url, "why", "gone-1")
            (act,) = orjson.loads(out.stdout)["activities"]
            return act if act["state"] == "worker_gone" else None

        # far sooner than the 30 s lease after which the attempt would be handed over
        act = await wait_for(reported_gone, 15, interval=0.2)
        assert act["worker"] == identity and act["name"] == "slow_add"
        out = await df_cli(daemons.url, "why", "gone-1", json=False)
        assert f"on worker {identity}, which is gone: its liveness record expired" in out.stdout
        assert "lease of 30s" in out.stdout
        assert "workers on task queue 'tests': none alive" in out.stdout
        assert await client.workers("tests") == []
    finally:
        await client.close()


async def test_describe_shows_signal_waits() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(task_queue="lv", workflows=[waits_for_signals], options=FAST):
            handle = await env.client.start_workflow(waits_for_signals, id="sig-1", task_queue="lv")

            async def waiting() -> bool:
                return bool((await handle.describe()).signal_waits)

            await wait_for(waiting, 10)
            (w,) = (await handle.describe()).signal_waits
            assert w.name == "approve" and w.deadline is not None
            assert timedelta(minutes=9) < w.deadline - w.since <= timedelta(minutes=10)
            out = await df_cli(env.nats_url, "workflow", "describe", "sig-1", json=False)
            assert "signal     #1 approve waiting since" in out.stdout, out.stdout
            assert f"times out {w.deadline.isoformat()}" in out.stdout

            await handle.signal("approve", True)

            async def next_wait() -> bool:
                waits = (await handle.describe()).signal_waits
                return [x.name for x in waits] == ["note"]

            await wait_for(next_wait, 10)
            out = await df_cli(env.nats_url, "workflow", "describe", "sig-1")
            (w2,) = orjson.loads(out.stdout)["signal_waits"]
            assert w2["name"] == "note" and "deadline" not in w2
            out = await df_cli(env.nats_url, "workflow", "describe", "sig-1", json=False)
            assert "note waiting since" in out.stdout and "no deadline" in out.stdout

            await handle.signal("note", "ok")
            assert await handle.result(timeout=10) == [True, "ok"]
            assert (await handle.describe()).signal_waits == ()


async def test_without_the_workers_bucket_liveness_is_unknown_not_absent() -> None:
    """A namespace made by an older df-server has no workers bucket: workers run without
    publishing, `df why` says liveness is unknown, `df workflow start` does not warn."""
    async with LocalEnvironment() as env:
        await env.client.pub.js.delete_key_value(env.client.layout.workers_bucket)
        async with env.worker(task_queue="lv", workflows=[greeter], activities=[greet]):
            handle = await env.client.start_workflow(greeter, "bo", id="old-1", task_queue="lv")
            assert await handle.result(timeout=20) == "hello bo"
            assert await env.client.workers("lv") is None
            out = await df_cli(
                env.nats_url, "workflow", "start", "unknown_type", "--id", "old-2",
                "--task-queue", "lv",
            )  # fmt: skip
            assert out.returncode == 0 and "warning" not in out.stderr, out.stderr
            out = await df_cli(env.nats_url, "why", "old-2", json=False)
            assert "workers: unknown" in out.stdout, out.stdout
            out = await df_cli(env.nats_url, "why", "old-2")
            assert orjson.loads(out.stdout)["liveness_known"] is False
