"""History limits, configured small: a warning (log, metric, df why, info()) and the end of a
run that ignores it, with an error naming the limit; continue-as-new keeps a run under it."""

from __future__ import annotations

import logging

import pytest

import durablefuture as df
from durablefuture import metrics
from durablefuture.diagnose import explain
from durablefuture.server import ServerOptions
from durablefuture.testing import LocalEnvironment
from tests.conftest import wait_for

pytestmark = pytest.mark.asyncio

LIMITS = {"history_warn_events": 12, "history_limit_events": 24}


async def step(i: int) -> int:
    return i


def looping(n: int, seen: list[bool]):  # type: ignore[no-untyped-def]
    """n activities, noting each time whether continuing as new is suggested."""
    for i in range(n):
        seen = [*seen, df.workflow.info().continue_as_new_suggested]
        yield df.activity(step, i)
    return seen


def polite(n: int, done: int = 0):  # type: ignore[no-untyped-def]
    """Continues as new whenever it is suggested."""
    while done < n:
        if df.workflow.info().continue_as_new_suggested:
            yield df.continue_as_new(n, done)
        yield df.activity(step, done)
        done += 1
    return done


def warned_then_waits():  # type: ignore[no-untyped-def]
    for i in range(7):
        yield df.activity(step, i)
    return (yield df.wait_signal("go"))


async def test_history_limits_warn_then_end_the_run(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="durablefuture.server")
    metrics.record(True)
    options = ServerOptions(history_limits=LIMITS)
    try:
        async with LocalEnvironment(server_options=options) as env:
            client = env.client
            async with env.worker(
                task_queue="q", workflows=[looping, polite, warned_then_waits], activities=[step]
            ):
                settings = (await client.describe_namespace()).settings
                assert (settings.history_warn_events, settings.history_limit_events) == (12, 24)
                # a run that continues as new when told stays under the limit
                assert await client.execute_workflow(polite, 30, id="polite", task_queue="q") == 30
                # one that does not is ended at the limit, with an error naming it
                with pytest.raises(df.WorkflowTerminatedError) as info:
                    await client.execute_workflow(looping, 40, [], id="rude", task_queue="q")
                text = str(info.value)
                assert "24 events" in text and "continue_as_new" in text
                history = await client.get_workflow_handle("rude").fetch_history()
                assert 24 <= len(history) <= 28
                assert any(
                    "the history has" in r.getMessage() and "warning at 12" in r.getMessage()
                    for r in caplog.records
                )
                assert any("limit is 24" in r.getMessage() for r in caplog.records)
                rendered = metrics.REGISTRY.render()
                assert 'df_history_limits_total{kind="warn",namespace="default"}' in rendered
                assert 'df_history_limits_total{kind="fail",namespace="default"}' in rendered
                # what the code saw: not suggested at first, suggested from the warning on
                handle = await client.start_workflow(looping, 4, [], id="short", task_queue="q")
                assert await handle.result() == [False] * 4
                # df why says so for a run past the warning
                handle = await client.start_workflow(warned_then_waits, id="why", task_queue="q")

                async def waiting() -> bool:
                    return "waiting for signal" in " ".join((await explain(client, "why")).reasons)

                await wait_for(waiting, 15)
                reasons = (await explain(client, "why")).reasons
                assert "warning at 12" in reasons[0], reasons
                await handle.signal("go", 1)
                assert await handle.result() == 1
    finally:
        metrics.record(False)


async def test_continue_as_new_suggested_turns_true_at_the_warning() -> None:
    async with LocalEnvironment(server_options=ServerOptions(history_limits=LIMITS)) as env:
        async with env.worker(task_queue="q", workflows=[looping], activities=[step]):
            seen = await env.client.execute_workflow(looping, 9, [], id="w", task_queue="q")
            history = await env.client.get_workflow_handle("w").fetch_history()
            assert 12 < len(history) < 24
            assert seen[0] is False and seen[-1] is True
            first = seen.index(True)
            assert all(seen[first:])  # from the warning on, every step is told
