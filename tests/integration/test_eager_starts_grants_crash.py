"""Eager starts whose first activity attempt is granted to the answering worker, with a
process SIGKILLed midway: every workflow completes once, each activity runs once, and an
activity never runs for a run that was not created.

- df-server (``tests/integration/held_start.py`` with ``--eager-start-wait``) stops after
  its check list is stored and before the first batch is appended: the test kills it and
  the client waiting for the answer. No task was stored; the list fires, finds no run and
  does nothing; the client's retry by the same request id makes the one run.
- The worker that answered the offer dies (SIGKILL, ``DF_TEST_AFTER_GRANT=die``) as soon as
  its receipt grants it the attempt (marked ``eager`` in the first batch): the list fires,
  finds nobody ran it or claimed its lease, and records it timed out (its task is never
  published: the worker may be running it with no lease); another worker runs the retry.

``slow_add`` writes every execution to ``DF_TEST_EXEC_LOG``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from durablefuture.core import events as ev
from durablefuture.natsserver import NatsServer, free_port
from durablefuture.transport.publisher import MSG_ID
from durablefuture.worker.eager import AFTER_GRANT_HOOK
from tests.conftest import Daemons, connected, wait_for
from tests.integration.helpers import unanswered_start, watch
from tests.integration.test_eager_starts_crash import (
    ACTIVITIES,
    EXECUTED,
    OPTIONS,
    WORKER,
    _completed_once,
    _executions,
)
from tests.integration.test_metrics import scrape, total

pytestmark = pytest.mark.asyncio


async def test_sigkill_of_df_server_between_its_check_list_and_the_append(
    daemons: Daemons, nats_server: NatsServer, tmp_path: Path
) -> None:
    url = nats_server.url
    held, log = tmp_path / "held", tmp_path / "executions"
    daemons.env["DF_TEST_HOLD"] = "before"
    daemons.env["DF_TEST_HELD"] = str(held)
    daemons.env["DF_TEST_ACTIVITY_SECONDS"] = "0"
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    eager = ("--eager-start-wait", "0.5", "--eager-check", "1")
    args = ["server", "--nats", url, "--input-ack-wait", "2", *eager]
    server = daemons.special("held-server", "tests.integration.held_start", *args)
    worker = daemons.worker(*WORKER, *ACTIVITIES)
    async with connected(daemons) as client:
        try:
            tasks = await watch(client, f"{client.layout.prefix}.at.>")
            await wait_for(lambda: "polling task queue" in worker.log(), 30)  # it takes offers
            await unanswered_start(daemons, server, held, url, "held", "req-1")
            assert await client.history.read_workflow("held") == []  # no run
            sport = free_port()
            daemons.server(*eager, "--metrics-port", str(sport))  # a df-server again

            def counted(outcome: str) -> float:
                try:
                    return total(scrape(sport), "df_eager_attempts_total", outcome=outcome)
                except OSError:  # its metrics not served yet
                    return -1.0

            # the held list fires, finds no run of its run id, and does nothing
            await wait_for(lambda: counted("done") >= 1, 30)
            assert counted("published") == 0
            await client.pub.nc.flush()
            assert tasks == []  # no activity task was ever stored
            assert _executions(log) == []  # and nothing ran
            # the client's retry with the same request id makes the run, once
            await client.start_workflow("add_workflow", 1, id="held", options=OPTIONS)
            run, _ = await _completed_once(client, "held")
            assert _executions(log) == EXECUTED
            await client.pub.nc.flush()
            assert all(run in (m.headers or {}).get(MSG_ID, "") for m in tasks), tasks
        except BaseException:
            print(daemons.logs())
            raise


async def test_sigkill_of_the_answering_worker_after_its_receipt(
    daemons: Daemons, nats_server: NatsServer, tmp_path: Path
) -> None:
    log = tmp_path / "executions"
    daemons.env["DF_TEST_ACTIVITY_SECONDS"] = "0"
    daemons.env["DF_TEST_EXEC_LOG"] = str(log)
    sport = free_port()
    # --sticky-timeout 1: the run's workflow task, sticky to the killed worker, goes to the
    # task queue after 1 s, not the default 5 s
    eager = ("--eager-start-wait", "0.5", "--eager-check", "1", "--sticky-timeout", "1")
    daemons.server(*eager, "--metrics-port", str(sport))
    doomed_env = dict(daemons.env, **{AFTER_GRANT_HOOK: "die"})
    args = ["--nats", nats_server.url, "--task-queue", "tests", *WORKER, *ACTIVITIES]
    doomed = daemons.special("doomed", "daemons.df_worker", *args, env=doomed_env)
    async with connected(daemons) as client:
        try:
            tasks = await watch(client, f"{client.layout.prefix}.at.>")
            await wait_for(lambda: "polling task queue" in doomed.log(), 30)
            h = await client.start_workflow("add_workflow", 1, id="granted", options=OPTIONS)
            await wait_for(lambda: doomed.proc is not None and doomed.proc.poll() is not None, 30)
            assert doomed.proc is not None and doomed.proc.returncode == -9  # after its receipt
            assert _executions(log) == []  # it ran nothing
            # the run exists: its first batch (with the granted activity) is stored
            batches = await client.history.read("granted", h.run_id or "")
            assert [type(e) for e in batches[0].events] == [
                ev.WorkflowStarted,
                ev.ActivityScheduled,
            ]
            daemons.worker(*WORKER, *ACTIVITIES)
            await _completed_once(client, "granted")
            # each activity once: the first by its retry (attempt 1 never ran anywhere)
            assert _executions(log) == ["slow_add 1 1 attempt 2", *EXECUTED[1:]]

            def counted(outcome: str) -> float:
                return total(scrape(sport), "df_eager_attempts_total", outcome=outcome)

            assert counted("timed_out") >= 1  # the first step's attempt, by its check
            assert counted("published") == 0  # marked: its task is never published
            await client.pub.nc.flush()
            stored = [client.codec.decode_activity_task(m.data) for m in tasks]
            assert [(t.seq, t.attempt) for t in stored][:1] == [(1, 2)]  # the retry
            history = await client.history.read("granted", h.run_id or "")
            first = [e for e in history[0].events if isinstance(e, ev.ActivityScheduled)]
            assert [bool(e.eager) for e in first] == [True]
            retried = [
                e for b in history for e in b.events if isinstance(e, ev.ActivityRetryScheduled)
            ]
            assert [(e.seq, e.attempt, e.failure.timeout_type) for e in retried] == [
                (1, 1, "start_to_close")
            ]
        except BaseException:
            print(daemons.logs())
            raise
