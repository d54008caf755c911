"""A report too large for the NATS server never hangs a run.

Against a nats-server whose max_payload is 64 KiB: a workflow task whose command cannot be
reported records a WorkflowTaskFailed naming the command, its size, the limit and what to do;
many commands that each fit are reported in parts that fit; an activity whose result cannot be
reported fails once, not retried, with the same kind of reason.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

import durablefuture as df
from durablefuture.core import inputs as inp
from durablefuture.core.commands import ScheduleActivity
from durablefuture.core.effects import RunStatus
from durablefuture.core.errors import MessageRejectedError
from durablefuture.core.state import RunState
from durablefuture.diagnose import explain, render
from durablefuture.server.service import _instead_of_too_large
from durablefuture.testing import LocalEnvironment
from tests.conftest import wait_for
from tests.core.helpers import History, options
from tests.integration.test_hardening import greet, greeting

pytestmark = pytest.mark.asyncio

LIMIT = 64 * 1024
calls: dict[str, int] = {}


def take(value: str) -> int:
    calls["take"] = calls.get("take", 0) + 1
    return len(value)


def big_result() -> str:
    calls["big_result"] = calls.get("big_result", 0) + 1
    return "r" * 100_000


def many_then_huge():  # type: ignore[no-untyped-def]
    sizes = yield df.all_of(*(df.activity(take, "y" * 5_000) for _ in range(30)))
    huge = yield df.activity(take, "z" * 100_000)
    return sum(sizes) + huge


def returns_too_much():  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(
        start_to_close_timeout=timedelta(seconds=10),
        retry_policy=df.RetryPolicy(initial_interval=0.1, maximum_attempts=5),
    )
    return (yield df.activity(big_result, options=opts))


async def test_a_command_too_large_to_report_is_a_recorded_workflow_task_failure() -> None:
    calls.clear()
    async with LocalEnvironment(max_payload=LIMIT) as env:
        async with env.worker(workflows=[many_then_huge, greeting], activities=[take, greet]):
            assert env.client.nc.max_payload == LIMIT
            handle = await env.client.start_workflow(many_then_huge, id="huge-command")

            async def failing() -> df.WorkflowDescription | None:
                d = await handle.describe()
                return d if d.last_workflow_task_failure is not None else None

            d = await wait_for(failing, 20)
            failure = d.last_workflow_task_failure
            assert failure is not None and failure.type == "MessageRejectedError"
            # which command, how big, the limit, what to do
            assert "ScheduleActivity #31" in failure.message
            assert re.search(r"\(activity 'take'\) is 100,\d{3} bytes", failure.message)
            assert f"{LIMIT:,}" in failure.message and "max_payload" in failure.message
            assert "by reference" in failure.message
            # the 30 commands before it were reported in parts that fit, and all ran
            assert calls["take"] == 30
            assert d.status == RunStatus.RUNNING and not d.pending_activities
            why = render(await explain(env.client, handle.id))
            assert "workflow task failing: MessageRejectedError" in why
            assert "ScheduleActivity #31" in why

            # everything else still works on the same connections
            assert env.server is not None and env.server.nc.is_connected
            result = await env.client.execute_workflow(greeting, "ok", id="ok", timeout=15)
            assert result == "hello ok"


async def test_an_activity_result_too_large_to_report_fails_the_attempt_once() -> None:
    calls.clear()
    async with LocalEnvironment(max_payload=LIMIT) as env:
        async with env.worker(
            workflows=[returns_too_much, greeting], activities=[big_result, greet]
        ):
            handle = await env.client.start_workflow(returns_too_much, id="big-result")
            with pytest.raises(df.WorkflowFailedError) as info:
                await handle.result(timeout=20)
            cause = info.value.cause
            assert isinstance(cause, df.ActivityError)
            message = str(cause.cause)
            assert "result of activity 'big_result' (attempt 1)" in message
            assert f"{LIMIT:,}" in message and "max_payload" in message
            assert "not retried" in message
            assert calls["big_result"] == 1  # non-retryable: another attempt returns as much
            why = render(await explain(env.client, handle.id))
            assert "max_payload" in why
            result = await env.client.execute_workflow(greeting, "ok", id="ok", timeout=15)
            assert result == "hello ok"


async def test_decisions_whose_events_cannot_be_stored_are_recorded_as_their_failure() -> None:
    # what df-server records when a report fitted but the events it makes would not
    state = RunState.from_history(History().events)
    exc = MessageRejectedError("too large", size=70_000, limit=LIMIT)
    cmd = ScheduleActivity(1, "take", ("z",), options())
    wft = _instead_of_too_large(state, inp.CompleteWorkflowTask("run-1", 1, (cmd,), "w"), exc)
    assert isinstance(wft, inp.FailWorkflowTask) and wft.based_on == 1 and wft.attempt == 1
    assert "70,000 bytes" in wft.failure.message and f"{LIMIT:,}" in wft.failure.message
    fused = inp.CompleteActivityTask("run-1", 1, 1, "r", commands=(cmd,), event_id=3, more=True)
    alone = _instead_of_too_large(state, fused, exc)
    assert alone == inp.CompleteActivityTask("run-1", 1, 1, "r")  # the result alone
    failed = _instead_of_too_large(state, alone, exc)  # type: ignore[arg-type]
    assert isinstance(failed, inp.FailActivityTask) and failed.failure.non_retryable
    assert _instead_of_too_large(state, inp.RequestCancel("run-1", "c"), exc) is None
