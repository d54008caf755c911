"""The `df` command line against a real nats-server and server (subprocesses, real output)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import orjson

import durablefuture as df
from durablefuture.natsserver import free_port
from durablefuture.testing import LocalEnvironment
from tests.conftest import ROOT, wait_for
from workflows_examples import ACTIVITIES, TASK_QUEUE, WORKFLOWS


def approve_later(request_id: str):  # type: ignore[no-untyped-def]
    status = {"state": "waiting"}
    df.workflow.set_query_handler("status", lambda: status)
    decision = yield df.wait_signal("decision")
    status["state"] = decision
    return decision


def changed_approve_later(request_id: str):  # type: ignore[no-untyped-def]
    yield df.sleep(1)  # not what the recorded histories did
    return "changed"


changed_approve_later.__df_name__ = "approve_later"  # type: ignore[attr-defined]


async def df_cli(
    env: LocalEnvironment, *args: str, json: bool = True
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "daemons.df_cli", "--nats", env.nats_url]
    if json:
        cmd.append("--json")
    return await asyncio.to_thread(
        subprocess.run, [*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


async def test_workflow_commands_end_to_end() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(
            task_queue=TASK_QUEUE, workflows=[*WORKFLOWS, approve_later], activities=ACTIVITIES
        ):
            out = await df_cli(
                env,
                "workflow",
                "start",
                "order_workflow",
                "--id",
                "cli-1",
                "--task-queue",
                TASK_QUEUE,
                "--input",
                '["cli-1", 5.0]',
                "--wait",
            )
            assert out.returncode == 0, out.stderr
            started = orjson.loads(out.stdout)
            assert started["result"]["tracking"] == "TRACK-CLI-1"

            out = await df_cli(env, "workflow", "result", "cli-1")
            assert orjson.loads(out.stdout)["charge"]["amount"] == 5.0

            out = await df_cli(env, "workflow", "describe", "cli-1", json=False)
            assert "status     completed" in out.stdout and "order_workflow" in out.stdout

            out = await df_cli(env, "workflow", "history", "cli-1")
            kinds = [e["t"] for e in orjson.loads(out.stdout)]
            assert kinds[0] == "WorkflowStarted" and kinds[-1] == "WorkflowCompleted"
            out = await df_cli(env, "workflow", "history", "cli-1", json=False)
            assert "ActivityScheduled" in out.stdout and "charge_credit_card" in out.stdout

            out = await df_cli(
                env,
                "workflow",
                "start",
                "approve_later",
                "--id",
                "cli-2",
                "--task-queue",
                TASK_QUEUE,
                "--input",
                '["r-1"]',
            )
            assert out.returncode == 0, out.stderr
            out = await df_cli(env, "workflow", "list", "--status", "running")
            assert [w["workflow_id"] for w in orjson.loads(out.stdout)] == ["cli-2"]
            out = await df_cli(env, "workflow", "list", "--type", "order_workflow", json=False)
            assert "cli-1" in out.stdout and "cli-2" not in out.stdout
            # the query language, through the df-server's index
            q = "WorkflowType = 'approve_later' AND ExecutionStatus = 'Running'"

            async def indexed() -> bool:  # the index follows the status entries
                return await env.client.count_workflows() == 2

            await wait_for(indexed, 20)
            out = await df_cli(env, "workflow", "list", "--query", q, "--page-size", "5")
            assert out.returncode == 0, out.stderr
            page = orjson.loads(out.stdout)
            assert [w["workflow_id"] for w in page["workflows"]] == ["cli-2"]
            assert page["next_page_token"] is None
            out = await df_cli(env, "workflow", "count", "--query", q, json=False)
            assert out.stdout.strip() == "1", out.stderr
            out = await df_cli(env, "workflow", "count")
            assert orjson.loads(out.stdout) == {"count": 2}
            out = await df_cli(env, "workflow", "count", "--query", "WorkflowType =")
            assert out.returncode != 0 and "position 14" in out.stderr
            assert len(out.stderr.strip().splitlines()) == 1

            out = await df_cli(env, "workflow", "query", "cli-2", "status")
            assert orjson.loads(out.stdout) == {"state": "waiting"}
            out = await df_cli(env, "why", "cli-2", json=False)
            assert "waiting for signal 'decision'" in out.stdout, out.stdout

            out = await df_cli(env, "workflow", "signal", "cli-2", "decision", "--input", '["yes"]')
            assert out.returncode == 0, out.stderr
            out = await df_cli(env, "workflow", "result", "cli-2", "--timeout", "10")
            assert orjson.loads(out.stdout) == "yes"

            out = await df_cli(
                env,
                "workflow",
                "start",
                "approve_later",
                "--id",
                "cli-3",
                "--task-queue",
                TASK_QUEUE,
                "--input",
                '["r-3"]',
            )
            out = await df_cli(env, "workflow", "cancel", "cli-3", "--reason", "no longer needed")
            assert out.returncode == 0, out.stderr
            out = await df_cli(env, "workflow", "result", "cli-3", "--timeout", "10")
            assert out.returncode == 1 and "cancelled" in out.stdout

            await df_cli(
                env,
                "workflow",
                "start",
                "approve_later",
                "--id",
                "cli-4",
                "--task-queue",
                TASK_QUEUE,
                "--input",
                '["r-4"]',
            )
            out = await df_cli(env, "workflow", "terminate", "cli-4", "--reason", "bye")
            assert out.returncode == 0, out.stderr
            out = await df_cli(env, "workflow", "result", "cli-4", "--timeout", "10")
            assert out.returncode == 1 and "terminated" in out.stdout

            out = await df_cli(env, "workflow", "queues", TASK_QUEUE)
            depths = orjson.loads(out.stdout)
            assert depths["workflow_pending"] == 0 and "activity_pending" in depths


async def test_replay_check_gates_a_deploy() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[approve_later]):
            handle = await env.client.start_workflow(approve_later, "r", id="rc-1")
            await handle.signal("decision", "ok")
            assert await handle.result(timeout=10) == "ok"
        same = await df_cli(
            env,
            "workflow",
            "replay-check",
            "--workflows",
            "tests.integration.test_cli:approve_later",
        )
        assert same.returncode == 0, same.stdout + same.stderr
        assert orjson.loads(same.stdout)["checked"] == 1
        changed = await df_cli(
            env,
            "workflow",
            "replay-check",
            "--workflows",
            "tests.integration.test_cli:changed_approve_later",
        )
        assert changed.returncode == 1
        report = orjson.loads(changed.stdout)
        assert report["failed"] == 1 and "patched" in report["runs"][0]["error"]


async def test_bad_input_gives_one_line_errors() -> None:
    async with LocalEnvironment() as env:
        out = await df_cli(env, "workflow", "start", "x", "--id", "y", "--input", "{not json")
        assert out.returncode != 0 and "--input is not valid JSON" in out.stderr
        out = await df_cli(env, "workflow", "describe", "no-such-workflow")
        assert out.returncode != 0
        assert out.stderr.strip().startswith("error:") and "no-such-workflow" in out.stderr
        out = await df_cli(env, "why", "no-such-workflow")
        assert out.returncode != 0 and "no-such-workflow" in out.stderr
    help_out = subprocess.run(
        [sys.executable, "-m", "daemons.df_cli", "workflow", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert help_out.returncode == 0 and "replay-check" in help_out.stdout


def test_input_that_is_not_a_json_array_is_refused_in_one_line_before_connecting() -> None:
    unreachable = f"nats://127.0.0.1:{free_port()}"  # parsing comes first: nothing is reached
    cases = [
        (["workflow", "start", "T", "--id", "x", "--input", '{"a":1}'], "got an object"),
        (["workflow", "start", "T", "--id", "x", "--input", "42"], "got a number"),
        (["workflow", "signal", "x", "go", "--input", '"yes"'], "got a string"),
        (["workflow", "query", "x", "status", "--input", "{not json"], "is not valid JSON"),
    ]
    for args, reason in cases:
        out = subprocess.run(
            [sys.executable, "-m", "daemons.df_cli", "--nats", unreachable, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 2, out.stderr
        (line,) = out.stderr.strip().splitlines()  # one line, no traceback
        assert line.startswith("error: --input") and reason in line, line
        assert """--input '["o-1", 42.0]'""" in line
    wrap = ["workflow", "start", "T", "--id", "x", "--input", '{"a": 1}']
    out = subprocess.run(
        [sys.executable, "-m", "daemons.df_cli", *wrap],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert """wrap it: --input '[{"a": 1}]'""" in out.stderr
