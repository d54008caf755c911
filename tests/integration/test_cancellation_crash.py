"""A cancellation survives a SIGKILL of the df-server and of the worker running the cancelled
activity."""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.diagnose import explain
from durablefuture.testing import Replayer
from tests.conftest import Daemons, wait_for, wait_namespace

STUBBORN = df.ActivityOptions(
    start_to_close_timeout=4,
    retry_policy=df.RetryPolicy(initial_interval=0.2),
    cancellation_type=df.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
)


def stubborn(tag: str) -> str:
    """Ignores cancellation: it is still running when its worker dies."""
    with open(os.environ["DF_TEST_EXEC_LOG"], "a") as f:
        f.write(f"{tag} started\n")
    time.sleep(60)
    return "finished"


def cancel_stubborn() -> Generator[Any, Any, Any]:
    task = yield df.start(df.activity(stubborn, "stubborn", options=STUBBORN))
    yield df.wait_signal("cancel")
    yield df.cancel(task)
    try:
        return ["value", (yield task)]
    except df.ActivityError as err:
        return ["error", type(err.__cause__).__name__]


WORKFLOWS = [cancel_stubborn]
ACTIVITIES = [stubborn]


async def test_sigkill_of_server_and_worker_in_the_middle_of_a_cancellation(
    daemons: Daemons, tmp_path: Path
) -> None:
    log = tmp_path / "exec.log"
    log.touch()
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    args = (
        "--workflows",
        "tests.integration.test_cancellation_crash:WORKFLOWS",
        "--activities",
        "tests.integration.test_cancellation_crash:ACTIVITIES",
    )
    # the attempt is granted to the worker (eager): it claims its lease after 0.5 s, and an
    # attempt lost with its worker is found by its check 3 s after the grant (not 30 s)
    eager = ("--eager-check", "3")
    lazy = ("--eager-claim-after", "0.5")
    server = daemons.server(*eager)
    worker = daemons.worker(*args, *lazy)
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    client.request_timeout = 30
    try:
        handle = await client.start_workflow(cancel_stubborn, id="stubborn", task_queue="tests")
        await wait_for(lambda: "stubborn started" in log.read_text(), 30)
        await handle.signal("cancel")

        async def cancel_recorded() -> bool:
            history = await handle.fetch_history()
            return any(isinstance(e, ev.CancellationRequested) for e in history)

        await wait_for(cancel_recorded, 20)
        why = " ".join((await explain(client, "stubborn")).reasons)
        assert "cancelled by the workflow; its attempt is asked to stop" in why, why
        worker.kill()  # the attempt dies with the cancellation under way
        server.kill()
        daemons.server(*eager)
        daemons.worker(*args, *lazy)
        result = await handle.result(timeout=60)
        history = await handle.fetch_history()
    finally:
        await client.close()
    # the lost attempt timed out; a cancelled activity is never tried again
    assert result == ["error", "TimeoutError"]
    assert log.read_text().splitlines() == ["stubborn started"]
    assert not [e for e in history if isinstance(e, ev.ActivityRetryScheduled)]
    (ended,) = [e for e in history if isinstance(e, ev.ActivityTimedOut)]
    assert ended.retry_state == "cancel_requested"
    Replayer(WORKFLOWS).replay(history)
