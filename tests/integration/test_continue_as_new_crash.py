"""df-server SIGKILLed while it creates a run continued as new, after the new run's first
workflow task is written and before its WorkflowStarted append (``server/starts.py``). A
worker runs that task and its report is refused, as one for a run that does not exist yet (a
dead letter); the stored start input is then redelivered to a df-server started again, which
creates the run under the same run id (chosen by the ContinuedAsNew) and writes its first
workflow task again. That task is the only way the run can go on: written under the first
one's message id, the stream would drop it as a duplicate and the run would never move
(``server/effects.py`` names the workflow tasks of a run continued as new by its start time).

The df-server (``tests/integration/held_continue.py``) stops before the append; the test
kills it only once the worker's report of the written task has been refused, so that no
report is left for the df-server started again to apply to the run it re-creates."""

from __future__ import annotations

import nats.js.errors
import pytest
from attrs import frozen

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.server.inputs import FIRST_APPEND_WAIT
from durablefuture.transport.report_requests import ANSWER_WAIT
from tests.conftest import Daemon, Daemons, connected, wait_for

pytestmark = pytest.mark.asyncio

STUCK_AFTER = 45.0
"""Seconds the re-created run gets to complete (it needs a few) before it is called stuck."""


async def _stored_headers(client: df.Client, subject: str) -> list[dict[str, str]]:
    """The headers of every message the namespace's stream holds on ``subject``."""
    js, layout = client.pub.js, client.layout
    info = await js.stream_info(layout.stream, subjects_filter=subject)
    count = (info.state.subjects or {}).get(subject, 0)
    if not count:
        return []
    sub = await js.subscribe(subject, ordered_consumer=True)
    try:
        return [dict((await sub.next_msg(timeout=10)).headers or {}) for _ in range(count)]
    finally:
        await sub.unsubscribe()


async def _dead_letters(client: df.Client) -> list[dict[str, str]]:
    """The headers of every dead letter df-server stored for an input (or a report request)."""
    return await _stored_headers(client, client.layout.dead_letter("server-input"))


async def _inputs_left(client: df.Client) -> tuple[int, int]:
    """Inputs of the server consumer not yet delivered, and delivered but not yet acknowledged."""
    try:
        info = await client.pub.js.consumer_info(
            client.layout.stream, client.layout.server_consumer
        )
    except nats.js.errors.NotFoundError:
        return -1, -1
    return info.num_pending, info.num_ack_pending


async def _workflow_tasks_left(client: df.Client) -> tuple[int, int]:
    info = await client.pub.js.consumer_info(
        client.layout.stream, client.layout.workflow_consumer("tests")
    )
    return info.num_pending, info.num_ack_pending


@frozen
class Orphan:
    first: str
    """The run that continued as new."""
    second: str
    """The run it continued as (created under the run id its ContinuedAsNew chose)."""
    refused: list[dict[str, str]]
    """The dead letters of the worker's report of the orphan task."""


def _held_server(daemons: Daemons, *args: str) -> Daemon:
    """The held df-server (``tests/integration/held_continue.py``, with ``args``) and a
    worker."""
    daemons.env["DF_TEST_HELD"] = str(daemons.tmp_path / "held")
    server = daemons.special("held-server", "tests.integration.held_continue", *args)
    daemons.worker("--workflows", "tests.integration.flows:WORKFLOWS")
    return server


async def _orphan_refused(daemons: Daemons, client: df.Client) -> Orphan:
    """Start ``hop(1)`` under the held df-server and wait until the worker's report of the
    new run's orphan task has been refused."""
    held = daemons.tmp_path / "held"
    options = df.WorkflowOptions(task_queue="tests", execution_timeout=300)
    first = (await client.start_workflow("hop", 1, id="hop", options=options)).run_id
    assert first is not None
    await wait_for(held.exists, 30)
    # the first run has continued as new: its ContinuedAsNew names the next run's id
    (closing,) = [
        e
        for _, batch in await client.history.read_workflow("hop")
        for e in batch.events
        if isinstance(e, ev.WorkflowContinuedAsNew)
    ]
    second = closing.new_run_id
    assert second != first

    async def orphan_refused() -> bool:
        # The held df-server still answers: the worker ran the written task and its report
        # (asked, then stored when the answer took longer than the worker waits) is refused
        # after FIRST_APPEND_WAIT as one for a run that does not exist. Only when no report
        # is left unrefused does the kill leave the re-created run nothing but its task.
        refused = [d for d in await _dead_letters(client) if second in d.get("Df-Reason", "")]
        if not refused or await _workflow_tasks_left(client) != (0, 0):
            return False
        return await _inputs_left(client) == (0, 1)  # only the start being held

    await wait_for(orphan_refused, 60)
    refused = await _dead_letters(client)
    for d in refused:
        assert "unknown run" in d["Df-Reason"] and second in d["Df-Reason"], d
    # the worker asked df-server to record the report, and stored it when no answer came
    # in time (the refusal waits longer than the worker): both were refused
    assert ANSWER_WAIT < FIRST_APPEND_WAIT
    layout = client.layout
    where = sorted(d["Df-Subject"] for d in refused)
    assert where == sorted([layout.report_requests, layout.input("report")]), where
    return Orphan(first, second, refused)


async def _completes_once(client: df.Client, orphan: Orphan) -> None:
    """The re-created run completes, made once, with no dead letter besides the orphan's."""
    first, second = orphan.first, orphan.second
    handle = client.get_workflow_handle("hop")
    try:
        result = await handle.result(timeout=STUCK_AFTER)
    except df.ResultTimeoutError:
        history = [type(e).__name__ for e in await handle.fetch_history()]
        pytest.fail(
            f"run {second} of 'hop' did not complete within {STUCK_AFTER:g} s of the "
            f"restart (history: {history}): the first workflow task written again when "
            "the run was re-created, or the worker's report of it, was dropped by the "
            "stream as a duplicate of the orphan's"
        )
    assert result == "done"
    events: dict[str, list[type]] = {}
    for run, batch in await client.history.read_workflow("hop"):
        events.setdefault(run, []).extend(type(e) for e in batch.events)
    assert set(events) == {first, second}  # two runs, the second made once
    for run in (first, second):
        assert events[run].count(ev.WorkflowStarted) == 1, (run, events[run])
    assert events[first][-1] is ev.WorkflowContinuedAsNew
    assert events[second].count(ev.WorkflowCompleted) == 1
    assert events[second][-1] is ev.WorkflowCompleted
    # the re-written task's report was recorded: no dead letter besides the orphan's
    assert await _dead_letters(client) == orphan.refused


async def test_sigkill_between_the_task_and_the_append_of_a_run_continued_as_new(
    daemons: Daemons,
) -> None:
    args = ["--nats", daemons.url, "--input-ack-wait", "2"]
    server = _held_server(daemons, *args)
    async with connected(daemons) as client:
        orphan = await _orphan_refused(daemons, client)
        server.kill()
        daemons.server()  # a df-server again: the stored start input is redelivered
        await _completes_once(client, orphan)


async def test_the_report_of_the_task_written_again_is_not_the_orphan_reports_duplicate(
    daemons: Daemons,
) -> None:
    """The worker's report of the re-created run's first task answers the same task (same
    trigger, attempt and decisions) as its report of the orphan task. When both are stored
    (here: the df-server started again takes no report requests), the second must not be
    dropped by the stream as a duplicate of the first, nor taken by the worker for its own
    earlier copy: the task would be acknowledged and the run would never move.

    Compaction is off so that the orphan's stored report is still in the stream when the
    second is stored, as behind any consumer that holds the purge floor back; once purged, a
    duplicate acknowledgement naming it is not believed (``transport/dedup.py``)."""
    args = ["--nats", daemons.url, "--input-ack-wait", "2", "--compact-interval", "0"]
    server = _held_server(daemons, *args)
    async with connected(daemons) as client:
        orphan = await _orphan_refused(daemons, client)
        server.kill()
        daemons.special("deaf-server", "tests.integration.deaf_server", *args)
        await _completes_once(client, orphan)
        # both reports went the stored way: the orphan's and the re-written task's
        stored = [
            h.get("Nats-Msg-Id", "")
            for h in await _stored_headers(client, client.layout.input("report"))
        ]
        assert len([i for i in stored if i.startswith(f"{orphan.second}:wtc:")]) == 2, stored
