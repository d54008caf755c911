"""``df why --schedule``: why a schedule did not fire. The reasoning (``explain_state``) on
hand-built states, then the command against a real engine."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import durablefuture as df
from durablefuture.core.effects import RunStatus
from durablefuture.core.schedule_spec import iso
from durablefuture.core.schedules import Observed, ScheduleState, apply_pause, new_state, step
from durablefuture.diagnose import QueueState
from durablefuture.diagnose_schedules import explain_state
from tests.conftest import ROOT, wait_for
from tests.integration.test_schedules import env, gated

T0 = 1_700_000_000.0  # a multiple of 10 s
LIVE = QueueState("schedules", True, pollers=1)


def _schedule(**spec: object) -> df.Schedule:
    policy = spec.pop("policy", df.SchedulePolicy())
    return df.Schedule(
        action=df.ScheduleStartWorkflow("report", id_prefix="r", task_queue="q"),
        spec=df.ScheduleSpec(intervals=[df.Interval(every=10)], **spec),  # type: ignore[arg-type]
        policy=policy,  # type: ignore[arg-type]
    )


def _state(schedule: df.Schedule, at: float = T0) -> ScheduleState:
    return new_state("s", schedule, at, "create")


def _text(reasons: tuple[str, ...]) -> str:
    return "\n".join(reasons)


def test_an_active_schedule_says_when_it_fires_next() -> None:
    d = explain_state(_state(_schedule()), T0 + 1, LIVE)
    assert d.status == "active"
    assert d.reasons == (f"next action at {iso(T0 + 10)[:-1]}+00:00 (in 9s)",)
    assert d.next_action_time == datetime.fromtimestamp(T0 + 10, tz=UTC)


def test_no_df_server_and_an_overdue_action() -> None:
    state = _state(_schedule())
    gone = QueueState("schedules", True, pollers=0, pending=3)
    d = explain_state(state, T0 + 30, gone)
    assert "no df-server is stepping schedules right now (0 pollers" in d.reasons[0]
    never = explain_state(state, T0 + 30, QueueState("schedules", False))
    assert "no df-server has ever stepped schedules" in never.reasons[0]
    overdue = explain_state(state, T0 + 30, LIVE)  # a consumer, but nobody took it
    assert f"the action scheduled {iso(T0 + 10)} was due" in overdue.reasons[0]
    assert "has not been taken" in overdue.reasons[0]


def test_paused_by_hand_and_by_pause_on_failure() -> None:
    state = apply_pause(_state(_schedule()), True, "freeze", T0 + 5, "p1")
    d = explain_state(state, T0 + 25, LIVE)
    assert d.status == "paused" and d.next_action_time is None
    assert d.reasons[0].startswith(f"paused since {iso(T0 + 5)[:-1]}+00:00 (20s ago) (freeze)")
    assert "not caught up" in d.reasons[0]
    about = explain_state(state, T0 + 25, LIVE, at=T0 + 20)
    assert about.asked_about == datetime.fromtimestamp(T0 + 20, tz=UTC)
    assert about.reasons[0].startswith(
        f"the action scheduled {iso(T0 + 20)} was not taken: the schedule was paused then"
    )

    policy = df.SchedulePolicy(pause_on_failure=True)
    taken = step(_state(_schedule(policy=policy)), T0 + 10, {}).state
    wid = taken.running[0].workflow_id
    failed = step(taken, T0 + 11, {wid: Observed("run-1", RunStatus.FAILED)}).state
    d = explain_state(failed, T0 + 12, LIVE)
    assert d.status == "paused"
    assert d.reasons[0].startswith(f"paused by pause_on_failure since {iso(T0 + 11)[:-1]}")
    assert f"action {wid} failed" in d.reasons[0]
    assert f"the latest, {wid}, failed" in _text(d.reasons)


def test_outside_start_and_end() -> None:
    later = datetime.fromtimestamp(T0 + 3600, tz=UTC)
    d = explain_state(_state(_schedule(start_at=later)), T0, LIVE)
    assert (
        d.reasons[0] == f"its spec starts at {later.isoformat()} (in 3600s): nothing fires before"
    )
    assert d.status == "active"
    earlier = datetime.fromtimestamp(T0 - 3600, tz=UTC)
    ended = explain_state(
        _state(_schedule(end_at=earlier, start_at=earlier - timedelta(hours=1))), T0, LIVE
    )
    assert ended.status == "ended"
    assert ended.reasons == (
        f"its spec ended at {earlier.isoformat()} (3600s ago): no more actions",
    )


def test_skipped_by_overlap_and_missed_by_the_catch_up_window() -> None:
    state = step(_state(_schedule()), T0 + 10, {}).state  # takes T0+10, it keeps running
    wid = state.running[0].workflow_id
    state = step(state, T0 + 20, {wid: Observed("run-1", RunStatus.RUNNING)}).state
    d = explain_state(state, T0 + 21, LIVE)
    text = _text(d.reasons)
    assert (
        f"action {wid} (scheduled {iso(T0 + 10)[:-1]}+00:00) is still running (run run-1)" in text
    )
    assert "overlap SKIP: actions due while it runs are skipped" in text
    assert f"1 action(s) skipped in all; the latest, scheduled {iso(T0 + 20)[:-1]}+00:00" in text
    skipped = explain_state(state, T0 + 21, LIVE, at=T0 + 20)
    assert skipped.reasons[0] == (
        f"the action scheduled {iso(T0 + 20)} was skipped: an earlier action is still running "
        "(overlap SKIP)"
    )
    fired = explain_state(state, T0 + 21, LIVE, at=T0 + 12)  # not a spec time: the one before
    assert fired.reasons[0] == (
        f"its spec has no action at {iso(T0 + 12)[:-1]}+00:00; "
        f"the latest one before is {iso(T0 + 10)}"
    )
    assert fired.reasons[1] == (
        f"the action scheduled {iso(T0 + 10)} fired: workflow {wid} (run run-1) is running"
    )

    window = df.SchedulePolicy(catchup_window=timedelta(seconds=60))
    down = step(_state(_schedule(policy=window)), T0 + 600, {}).state  # 10 min of downtime
    d = explain_state(down, T0 + 601, LIVE)
    text = _text(d.reasons)
    assert "53 action(s) missed after downtime in all (older than the catch-up window" in text
    missed = explain_state(down, T0 + 601, LIVE, at=T0 + 100)
    assert missed.reasons[0].startswith(
        f"the action scheduled {iso(T0 + 100)} was missed: 500s late"
    )
    assert "df schedule backfill s" in missed.reasons[0]


def test_times_before_creation_and_not_yet_due() -> None:
    state = _state(_schedule())
    before = explain_state(state, T0 + 1, LIVE, at=T0 - 100)
    assert "is before the schedule was created" in before.reasons[0]
    ahead = explain_state(state, T0 + 1, LIVE, at=T0 + 50)
    assert ahead.reasons[0] == (
        f"the action scheduled {iso(T0 + 50)} is not due yet: "
        f"it fires at {iso(T0 + 50)[:-1]}+00:00 (in 49s)"
    )


# ------------------------------------------------------------------ the command


async def _df(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "daemons.df_cli", "--nats", url, *args]
    return await asyncio.to_thread(
        subprocess.run, cmd, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


async def test_df_why_schedule_explains_a_skipping_schedule() -> None:
    async with env() as e, e.worker("sq", workflows=[gated]):
        handle = await e.client.create_schedule(
            "sk",
            df.Schedule(
                action=df.ScheduleStartWorkflow(gated, 1, id_prefix="job", task_queue="sq"),
                spec=df.ScheduleSpec(intervals=[df.Interval(every=1)]),
            ),
        )

        async def skipped() -> bool:
            return (await handle.describe()).actions_skipped >= 1

        await wait_for(skipped, timeout=20)
        await handle.pause("look")
        d = await handle.describe()
        [running] = d.running_actions
        out = await _df(e.nats_url, "why", "--schedule", "sk")
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("schedule sk is paused:\n"), out.stdout
        assert "  - paused since" in out.stdout and "(look)" in out.stdout
        assert f"action {running.workflow_id}" in out.stdout
        assert "overlap SKIP" in out.stdout and "skipped in all" in out.stdout

        skip = next(j for j in d.journal if j.kind == "skipped")
        assert skip.nominal is not None
        out = await _df(e.nats_url, "--json", "why", "--schedule", "sk", "--at", iso(skip.nominal))
        assert out.returncode == 0, out.stderr
        body = json.loads(out.stdout)
        assert body["status"] == "paused"
        assert body["reasons"][0] == (
            f"the action scheduled {iso(skip.nominal)} was skipped: an earlier action is "
            "still running (overlap SKIP)"
        )
        at = iso(running.scheduled_time.timestamp())
        out = await _df(e.nats_url, "schedule", "why", "sk", "--at", at)
        assert out.returncode == 0, out.stderr
        assert f"the action scheduled {at} fired: workflow {running.workflow_id}" in out.stdout

        missing = await _df(e.nats_url, "why", "--schedule", "nope")
        assert missing.returncode != 0 and "no schedule 'nope'" in missing.stderr
        bad = await _df(e.nats_url, "why", "--schedule", "sk", "--at", "yesterday")
        assert bad.returncode == 2 and "not an ISO 8601 time" in bad.stderr
