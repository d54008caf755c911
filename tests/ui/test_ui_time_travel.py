"""Time travel on a run's page: ``GET /api/history-state/{id}?event=N``, against a real engine.

One run of ``travel_flows.travel_flow`` (an activity that fails once and is retried, a timer,
a signal wait, query handlers) is walked event by event. At each event the state must be what
the history up to it says, and, when the UI has the workflow code, the replay must be paused
at the right source line with the query answers of that moment. Every expectation is worked
out from the history the API itself returns, not from the implementation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import durablefuture as df
from daemons.df_cli import main as df_main
from durablefuture.testing import LocalEnvironment
from tests.conftest import ROOT
from tests.ui import travel_flows
from tests.ui.conftest import served
from tests.ui.travel_flows import TASK_QUEUE, travel_flow

FLOW_FILE = ROOT / "tests" / "ui" / "travel_flows.py"


class Travel:
    def __init__(self, env: LocalEnvironment, with_code: str, without_code: str) -> None:
        self.env = env
        self.with_code = with_code
        self.without_code = without_code


async def wait_for(what: str, check: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def run_travel_flow(env: LocalEnvironment, wid: str, approver: str = "ada") -> Any:
    """Start the run, wait until it waits for the signal, signal it; its result."""
    handle = await env.client.start_workflow(travel_flow, wid, id=wid, task_queue=TASK_QUEUE)

    async def waiting() -> bool:
        return bool((await handle.describe()).signal_waits)

    await wait_for(f"{wid} to wait for its signal", waiting)
    await handle.signal("approve", approver)
    return await handle.result(timeout=20)


@pytest.fixture
async def travel() -> AsyncIterator[Travel]:
    async with LocalEnvironment() as env:
        async with env.worker(
            task_queue=TASK_QUEUE,
            workflows=travel_flows.WORKFLOWS,
            activities=travel_flows.ACTIVITIES,
        ):
            async with (
                served(env, workflows=travel_flows.WORKFLOWS) as with_code,
                served(env) as without_code,
            ):
                yield Travel(env, with_code, without_code)


async def _get(url: str, path: str, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        return await http.get(path, params=params)


def _line(marker: str) -> int:
    """The line of travel_flows.py that ends with comment ``marker`` (e.g. "@sleep")."""
    lines = FLOW_FILE.read_text().splitlines()
    return next(n for n, text in enumerate(lines, 1) if text.rstrip().endswith(f"# {marker}"))


def _expected(history: list[dict[str, Any]], upto: int) -> dict[str, Any]:
    """What events 1..upto say, worked out from the event types alone."""
    seen = [e["t"] for e in history[:upto]]
    done = "WorkflowCompleted" in seen
    if "SignalReceived" in seen:
        where, stage = None, "approved by ada"
    elif "TimerFired" in seen:
        where, stage = "@wait", "waiting for approval"
    elif "ActivityCompleted" in seen:
        where, stage = "@sleep", "cooling down"
    else:
        where, stage = "@reserve", "reserving"
    return {
        "status": "completed" if done else "running",
        "activity_open": "ActivityScheduled" in seen and "ActivityCompleted" not in seen,
        "attempt": 1 + seen.count("ActivityRetryScheduled"),
        "timer_open": "TimerStarted" in seen and "TimerFired" not in seen,
        "wait_open": "SignalWaitStarted" in seen and "SignalReceived" not in seen,
        "where": where,
        "stage": stage,
        "reservation": None if where == "@reserve" else "R-o-1",
        "approver_handler": "TimerFired" in seen,
    }


def _check_state(step: dict[str, Any], want: dict[str, Any], history: list[dict[str, Any]]) -> None:
    n = step["event_id"]
    state = step["state"]
    assert state["status"] == want["status"], n
    assert state["history_length"] == n
    acts = state["pending_activities"]
    if want["activity_open"]:
        [act] = acts
        assert (act["name"], act["activity_id"], act["attempt"]) == ("reserve", 1, want["attempt"])
        if want["attempt"] > 1:
            assert "the warehouse is busy (attempt 1)" in act["last_failure"]["describe"]
            retry = next(e for e in history[:n] if e["t"] == "ActivityRetryScheduled")
            assert act["next_retry_time"] == pytest.approx(retry["retry_at"])
        else:
            assert act["last_failure"] is None
    else:
        assert acts == [], n
    timers = state["pending_timers"]
    if want["timer_open"]:
        started = next(e for e in history[:n] if e["t"] == "TimerStarted")
        [timer] = timers  # times pass through datetime: microseconds
        assert timer == {"seq": started["seq"], "fire_at": pytest.approx(started["fire_at"])}
    else:
        assert timers == [], n
    waits = state["signal_waits"]
    if want["wait_open"]:
        [wait] = waits
        assert wait["name"] == "approve" and wait["deadline"] is None
    else:
        assert waits == [], n
    assert state["children"] == [] and state["cancel_requested"] is False


def _check_code(step: dict[str, Any], want: dict[str, Any]) -> None:
    n = step["event_id"]
    code = step["code"]
    assert code["available"] is True and code["error"] is None and code["note"] is None, code
    queries = {q["name"]: q for q in code["queries"]}
    progress = queries["progress"]
    assert progress["ok"] is True, progress
    assert progress["result"] == {"stage": want["stage"], "reservation": want["reservation"]}, n
    assert queries["echo"]["ok"] is False and queries["echo"]["needs_args"] is True
    assert ("approver" in queries) is want["approver_handler"], (n, sorted(queries))
    if want["where"] is None:
        assert code["finished"] is True and code["outcome"] == "return (workflow completed)"
        assert code["suspended_at"] is None and code["stack"] == [] and code["source"] is None
        assert code["waiting_for"] == []
        return
    line = _line(want["where"])
    assert code["finished"] is False and code["outcome"] is None
    assert code["suspended_at"] == f"{FLOW_FILE}:{line}", (n, code["suspended_at"])
    [frame] = code["stack"]
    assert (frame["function"], frame["line"]) == ("travel_flow", line)
    assert frame["file"] == str(FLOW_FILE)
    assert frame["display"] == "tests/ui/travel_flows.py"
    source = code["source"]
    assert source["line"] == line and source["first"] <= line
    assert source["lines"][line - source["first"]].rstrip().endswith(f"# {want['where']}")
    assert len(source["lines"]) >= 5
    kind = {"@reserve": "activity", "@sleep": "timer", "@wait": "signal"}[want["where"]]
    [waiting] = code["waiting_for"]
    assert waiting["kind"] == kind, (n, waiting)


async def test_each_event_shows_the_state_then_the_query_answers_then_and_the_paused_line(
    travel: Travel,
) -> None:
    result = await run_travel_flow(travel.env, "o-1")
    assert result == {"reservation": "R-o-1", "approved_by": "ada"}
    run = (await _get(travel.with_code, "/api/workflows/o-1")).json()
    history = run["history"]
    types = [e["t"] for e in history]
    for kind in ("ActivityRetryScheduled", "TimerStarted", "SignalWaitStarted", "SignalReceived"):
        assert kind in types, types

    seen_where = []
    for n in range(1, len(history) + 1):
        res = await _get(travel.with_code, "/api/history-state/o-1", event=n)
        assert res.status_code == 200, res.text
        step = res.json()
        assert (step["event_id"], step["events"]) == (n, len(history))
        assert step["event"] == history[n - 1]
        assert (step["workflow_id"], step["run_id"]) == ("o-1", run["workflow"]["run_id"])
        assert step["workflow_type"] == "travel_flow"
        want = _expected(history, n)
        _check_state(step, want, history)
        _check_code(step, want)
        seen_where.append(want["where"])
    # the walk went through every stage, in order
    assert [w for i, w in enumerate(seen_where) if i == 0 or seen_where[i - 1] != w] == [
        "@reserve",
        "@sleep",
        "@wait",
        None,
    ]
    # no ?event= is the last event; the final state is the run's own
    last = (await _get(travel.with_code, "/api/history-state/o-1")).json()
    assert last["event_id"] == len(history)
    assert last["state"]["result"] == run["workflow"]["result"]


async def test_the_state_at_a_retry_names_the_attempt_and_its_failure(travel: Travel) -> None:
    await run_travel_flow(travel.env, "o-1")
    history = (await _get(travel.with_code, "/api/workflows/o-1")).json()["history"]
    retry = next(e for e in history if e["t"] == "ActivityRetryScheduled")
    before = await _get(travel.with_code, "/api/history-state/o-1", event=retry["event_id"] - 1)
    at = (await _get(travel.with_code, "/api/history-state/o-1", event=retry["event_id"])).json()
    [first] = before.json()["state"]["pending_activities"]
    [second] = at["state"]["pending_activities"]
    assert (first["attempt"], second["attempt"]) == (1, 2)
    assert second["next_retry_time"] == pytest.approx(retry["retry_at"])
    assert second["last_failure"]["message"] == "the warehouse is busy (attempt 1)"
    assert at["code"]["suspended_at"].endswith(f":{_line('@reserve')}")  # still waiting there


async def test_a_running_run_is_shown_as_it_waits_at_its_last_event(travel: Travel) -> None:
    handle = await travel.env.client.start_workflow(
        travel_flow, "o-2", id="o-2", task_queue=TASK_QUEUE
    )

    async def waiting() -> Any:
        step = (await _get(travel.with_code, "/api/history-state/o-2")).json()
        return step if step["state"]["signal_waits"] else None

    step = await wait_for("o-2 to wait for its signal", waiting)
    assert step["event"]["t"] == "SignalWaitStarted" and step["event_id"] == step["events"]
    assert step["state"]["status"] == "running"
    code = step["code"]
    assert code["suspended_at"] == f"{FLOW_FILE}:{_line('@wait')}"
    assert code["waiting_for"] == [{"seq": 3, "kind": "signal", "name": "approve"}]
    answers = {q["name"]: q.get("result") for q in code["queries"]}
    assert answers["progress"] == {"stage": "waiting for approval", "reservation": "R-o-2"}
    assert answers["approver"] == "nobody yet"
    live = await handle.query("progress")  # what the worker answers now: the same
    assert live == answers["progress"]
    await handle.signal("approve", "bob")
    assert (await handle.result(timeout=20))["approved_by"] == "bob"


async def test_without_the_workflow_code_the_state_comes_with_a_note(travel: Travel) -> None:
    await run_travel_flow(travel.env, "o-1")
    history = (await _get(travel.without_code, "/api/workflows/o-1")).json()["history"]
    for n in range(1, len(history) + 1):
        step = (await _get(travel.without_code, "/api/history-state/o-1", event=n)).json()
        _check_state(step, _expected(history, n), history)
        code = step["code"]
        assert code["available"] is False and "df ui --workflows" in code["note"]
        assert code["queries"] == [] and code["suspended_at"] is None and code["stack"] == []


@df.defn(name="travel_flow")
def changed_travel_flow(order_id: str):  # type: ignore[no-untyped-def]
    """travel_flow after a change that is not guarded by patched(): it sleeps first."""
    yield df.sleep(1)
    yield df.activity(travel_flows.reserve, order_id)


def elsewhere():  # type: ignore[no-untyped-def]
    yield df.sleep(1)


async def test_replay_problems_are_reported_and_the_state_is_still_shown(travel: Travel) -> None:
    await run_travel_flow(travel.env, "o-1")
    async with served(travel.env, workflows=[changed_travel_flow]) as changed:
        step = (await _get(changed, "/api/history-state/o-1", event=2)).json()
        assert step["state"]["pending_activities"][0]["name"] == "reserve"
        code = step["code"]
        assert code["available"] is True and code["error"].startswith("NonDeterminismError")
        assert "ActivityScheduled" in code["error"] or "activity 'reserve'" in code["error"]
        assert code["queries"] == []
    async with served(travel.env, workflows=[elsewhere]) as other:
        step = (await _get(other, "/api/history-state/o-1", event=2)).json()
        note = step["code"]["note"]
        assert "'travel_flow' is not among the UI's workflows (elsewhere)" in note


async def test_bad_event_numbers_and_unknown_runs_are_refused(travel: Travel) -> None:
    await run_travel_flow(travel.env, "shop/o-1")
    url = travel.with_code
    total = len((await _get(url, "/api/workflows/shop%2Fo-1")).json()["history"])
    for bad in ("0", str(total + 1), "two", "-1"):
        res = await _get(url, "/api/history-state/shop%2Fo-1", event=bad)
        assert res.status_code == 400, (bad, res.text)
        assert f"1 to {total}" in res.json()["error"]
    missing = await _get(url, "/api/history-state/nobody", event=1)
    assert missing.status_code == 404 and "nobody" in missing.json()["error"]
    # the id is the last part of the path: ids that look like routes are just ids
    res = await _get(url, "/api/history-state/shop%2Fo-1", event=1)
    assert res.status_code == 200 and res.json()["workflow_id"] == "shop/o-1"
    named = await _get(url, "/api/history-state/history-state", event=1)
    assert named.status_code == 404 and "history-state" in named.json()["error"]
    async with httpx.AsyncClient(base_url=url) as http:
        post = await http.post("/api/history-state/shop%2Fo-1", json={})
    assert post.status_code == 405


def test_df_ui_refuses_workflows_it_cannot_load() -> None:
    runner = CliRunner()
    missing = runner.invoke(df_main, ["ui", "--workflows", "tests.ui.travel_flows:nothing"])
    assert missing.exit_code == 2
    assert "has no attribute 'nothing'" in missing.output
    plain = runner.invoke(df_main, ["ui", "--workflows", "tests.ui.travel_flows:reserve"])
    assert plain.exit_code == 2
    assert "reserve" in plain.output and "generator" in plain.output
    helped = runner.invoke(df_main, ["ui", "--help"])
    assert "--workflows" in helped.output and "time travel" in helped.output
