"""The server's state machine: decide / effects_for / decide_start, input by input."""

from __future__ import annotations

from typing import Any

import pytest

from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.commands import (
    CancelWorkflow,
    CompleteWorkflow,
    ContinueAsNewWorkflow,
    FailWorkflow,
    RecordMarker,
    RecordSideEffect,
    ScheduleActivity,
    StartChildWorkflow,
    StartSignalWait,
    StartTimer,
)
from durablefuture.core.effects import (
    ArmTimer,
    CancelActivities,
    CancelChildRun,
    DispatchActivityTask,
    DispatchWorkflowTask,
    NotifyParent,
    RunStatus,
    StartRun,
    TerminateChildRun,
    UpdateStatus,
)
from durablefuture.core.failure import Failure, FailureKind
from durablefuture.core.options import (
    ActivityOptions,
    IdReusePolicy,
    ParentClosePolicy,
    RetryPolicy,
)
from durablefuture.core.orchestration import (
    APPLIED,
    DUPLICATE,
    IGNORED,
    REJECTED,
    Decision,
    LatestRun,
    decide,
    decide_start,
    effects_again,
    effects_for,
    start_events,
    wft_retry_delay,
)
from durablefuture.core.state import RunState

T0 = 1_000.0
RUN = "run-1"


def opts(**kw: Any) -> ActivityOptions:
    retry = kw.pop("retry", RetryPolicy(maximum_attempts=3))
    return ActivityOptions(retry_policy=retry, **kw).resolved("q")


class Run:
    """A run's state plus its history, driven input by input like the server does."""

    def __init__(self, **request: Any) -> None:
        req = inp.StartWorkflowRequest(
            workflow_id="wf-1",
            workflow_type="order",
            task_queue="q",
            request_id="req-1",
            **request,
        )
        self.now = T0
        events = start_events(req, namespace="ns", run_id=RUN, now=self.now)
        first = events[0]
        assert isinstance(first, ev.WorkflowStarted)
        self.state = RunState(started=first)
        self.state.apply(events, "start")
        self.batches: list[tuple[str, list[ev.Event]]] = [("start", events)]
        self.start_effects = effects_for(self.state, events)

    @property
    def events(self) -> list[ev.Event]:
        return [e for _, b in self.batches for e in b]

    def decide(self, message: inp.RunInput, at: float | None = None) -> Decision:
        if at is not None:
            self.now = at
        return decide(self.state, message, self.now, new_run_id="run-2")

    def send(self, message: inp.RunInput, at: float | None = None) -> tuple[Decision, list[Any]]:
        d = self.decide(message, at)
        effects: list[Any] = []
        if d.outcome == APPLIED:
            assert d.events
            self.state.apply(d.events, message.input_id)
            self.batches.append((message.input_id, list(d.events)))
            effects = effects_for(self.state, d.events)
        return d, [*effects, *d.effects]

    def wft(self, *commands: Any, based_on: int | None = None) -> tuple[Decision, list[Any]]:
        b = self.state.last_event_id if based_on is None else based_on
        return self.send(inp.CompleteWorkflowTask(RUN, b, commands))

    def schedule(self, seq: int = 1, **kw: Any) -> tuple[Decision, list[Any]]:
        return self.wft(ScheduleActivity(seq, f"act{seq}", (seq,), opts(**kw)))


def kinds(effects: list[Any]) -> list[str]:
    return [type(e).__name__ for e in effects]


def timers(effects: list[Any]) -> dict[str, float]:
    return {e.key: e.fire_at for e in effects if isinstance(e, ArmTimer)}


BOOM = Failure("boom", type="ValueError")


# ------------------------------------------------------------------ starting


def test_start_effects_dispatch_the_first_workflow_task_and_arm_the_execution_timer() -> None:
    r = Run(execution_timeout=60.0)
    started = r.events[0]
    assert isinstance(started, ev.WorkflowStarted)
    assert started.execution_deadline == T0 + 60
    assert started.first_run_id == RUN
    assert kinds(r.start_effects) == ["UpdateStatus", "ArmTimer", "DispatchWorkflowTask"]
    assert timers(r.start_effects) == {"wf.exec": T0 + 60}
    wft = r.start_effects[-1]
    assert isinstance(wft, DispatchWorkflowTask)
    assert (wft.task.run_id, wft.task.trigger, wft.task.task_queue) == (RUN, 1, "q")


def test_signal_with_start_records_the_signal_right_after_the_start() -> None:
    r = Run(signal_name="go", signal_args=(1,))
    assert [type(e).__name__ for e in r.events] == ["WorkflowStarted", "SignalReceived"]
    sig = r.events[1]
    assert isinstance(sig, ev.SignalReceived)
    assert (sig.name, sig.args, sig.request_id) == ("go", (1,), "req-1:signal")
    # a later delivery of the same signal request is recognised
    d, _ = r.send(inp.SignalWorkflow(RUN, "go", "req-1:signal", (1,)))
    assert d.outcome == DUPLICATE


def test_a_child_run_tells_its_parent_it_started() -> None:
    parent = ev.ParentRef("ns", "p", "p-run", 3)
    r = Run(parent=parent)
    assert NotifyParent(parent, RUN, started=True) in r.start_effects


# ------------------------------------------------------------------ workflow tasks


def test_workflow_task_completion_records_every_command_kind() -> None:
    r = Run()
    d, effects = r.wft(
        ScheduleActivity(
            1, "a", (1,), opts(schedule_to_start_timeout=5, schedule_to_close_timeout=50)
        ),
        StartTimer(2, 10.0),
        StartSignalWait(3, "go", 20.0),
        RecordSideEffect(4, 7),
        RecordMarker(5, "p"),
        StartChildWorkflow(6, "child", "c-1", (), "q", None, ParentClosePolicy.TERMINATE),
    )
    assert d.outcome == APPLIED
    assert [type(e).__name__ for e in d.events] == [
        "ActivityScheduled",
        "TimerStarted",
        "SignalWaitStarted",
        "SideEffectRecorded",
        "MarkerRecorded",
        "ChildWorkflowScheduled",
    ]
    assert [e.event_id for e in d.events] == [2, 3, 4, 5, 6, 7]
    assert all(e.based_on == 1 for e in d.events)  # type: ignore[union-attr]
    timer = d.events[1]
    wait = d.events[2]
    assert isinstance(timer, ev.TimerStarted) and timer.fire_at == T0 + 10
    assert isinstance(wait, ev.SignalWaitStarted) and wait.deadline == T0 + 20
    assert timers(effects) == {"a1.1.s2s": T0 + 5, "a1.s2c": T0 + 50, "t2": T0 + 10, "s3": T0 + 20}
    (dispatch,) = [e for e in effects if isinstance(e, DispatchActivityTask)]
    assert (dispatch.task.seq, dispatch.task.attempt, dispatch.task.args) == (1, 1, (1,))
    assert dispatch.deliver_at is None
    (start,) = [e for e in effects if isinstance(e, StartRun)]
    assert start.request.parent == ev.ParentRef("ns", "wf-1", RUN, 6)
    assert start.request.request_id == f"child:{RUN}:6"
    assert not any(isinstance(e, DispatchWorkflowTask) for e in effects)  # nothing new to see


def test_a_workflow_task_completion_is_a_duplicate_the_second_time() -> None:
    r = Run()
    first, _ = r.schedule()
    again = r.decide(inp.CompleteWorkflowTask(RUN, 1, (ScheduleActivity(1, "act1", (1,), opts()),)))
    assert again.outcome == DUPLICATE
    assert again.recorded == (2, 2)
    assert first.events[0].event_id == 2


def test_a_stale_workflow_task_is_ignored() -> None:
    r = Run()
    r.send(inp.SignalWorkflow(RUN, "s", "sig-1"))  # event 2
    r.wft(StartTimer(1, 5.0), based_on=2)  # event 3
    # a slower worker decided after event 1 only
    d = r.decide(inp.CompleteWorkflowTask(RUN, 1, (StartTimer(1, 5.0),)))
    assert d.outcome == IGNORED
    assert "stale" in d.reason


def test_a_worker_that_already_saw_recorded_commands_is_ignored() -> None:
    r = Run()
    r.wft(StartTimer(1, 5.0))
    # a second worker raced from the same history but a later (result-free) id
    d = r.decide(inp.CompleteWorkflowTask(RUN, 2, (StartTimer(1, 5.0),)))
    assert d.outcome == IGNORED
    assert "already recorded" in d.reason


def test_an_empty_workflow_task_is_ignored() -> None:
    assert Run().decide(inp.CompleteWorkflowTask(RUN, 1, ())).outcome == IGNORED


@pytest.mark.parametrize(
    ("commands", "reason"),
    [
        ((StartTimer(2, 1.0),), "expected command #1, got #2"),
        ((StartTimer(1, 1.0), StartTimer(3, 1.0)), "expected command #2, got #3"),
        ((CompleteWorkflow(1), StartTimer(1, 1.0)), "follows the workflow's terminal"),
        ((CancelWorkflow(),), "no cancellation was requested"),
    ],
)
def test_impossible_workflow_tasks_are_rejected(commands: tuple[Any, ...], reason: str) -> None:
    d = Run().decide(inp.CompleteWorkflowTask(RUN, 1, commands))
    assert d.outcome == REJECTED
    assert reason in d.reason
    assert d.events == ()


def test_a_workflow_task_based_on_the_future_is_rejected() -> None:
    r = Run()
    for message in (
        inp.CompleteWorkflowTask(RUN, 5, (StartTimer(1, 1.0),)),
        inp.FailWorkflowTask(RUN, 5, BOOM),
    ):
        d = r.decide(message)
        assert d.outcome == REJECTED
        assert "only 1 events" in d.reason


def test_continue_as_new_needs_a_new_run_id() -> None:
    r = Run()
    d = decide(r.state, inp.CompleteWorkflowTask(RUN, 1, (ContinueAsNewWorkflow((1,)),)), T0)
    assert d.outcome == REJECTED


def test_results_that_arrived_while_deciding_trigger_another_workflow_task() -> None:
    r = Run()
    r.schedule(1)  # event 2
    r.send(inp.CompleteActivityTask(RUN, 1, 1, "x"))  # event 3
    r.send(inp.SignalWorkflow(RUN, "s", "sig-1"))  # event 4, while the worker decides on 3
    d, effects = r.wft(StartTimer(2, 1.0), based_on=3)
    assert d.outcome == APPLIED
    (wft,) = [e for e in effects if isinstance(e, DispatchWorkflowTask)]
    assert wft.task.trigger == 5
    # with nothing new, no extra task
    _, effects = r.wft(StartTimer(3, 1.0))
    assert not any(isinstance(e, DispatchWorkflowTask) for e in effects)


def test_terminal_commands_close_the_run_with_their_effects() -> None:
    cases: list[tuple[Any, str]] = [
        (CompleteWorkflow({"ok": 1}), RunStatus.COMPLETED),
        (FailWorkflow(BOOM), RunStatus.FAILED),
        (ContinueAsNewWorkflow((2,)), RunStatus.CONTINUED_AS_NEW),
    ]
    for command, status in cases:
        r = Run(execution_timeout=100.0)
        r.schedule(1)
        d, effects = r.wft(command)
        assert d.outcome == APPLIED
        assert r.state.status == status
        assert isinstance(effects[0], UpdateStatus) and effects[0].summary.status == status
        assert CancelActivities((1,), f"workflow run {status}") in effects
        assert not any(isinstance(e, DispatchWorkflowTask) for e in effects)
        if status == RunStatus.CONTINUED_AS_NEW:
            (start,) = [e for e in effects if isinstance(e, StartRun)]
            req = start.request
            assert (req.run_id, req.continued_from, req.first_run_id) == ("run-2", RUN, RUN)
            assert req.args == (2,)
            assert req.request_id == f"can:{RUN}"
            assert req.execution_deadline == T0 + 100  # the deadline carries over
            assert r.state.summary().new_run_id == "run-2"


def test_a_closed_child_run_notifies_its_parent() -> None:
    parent = ev.ParentRef("ns", "p", "p-run", 3)
    r = Run(parent=parent)
    _, effects = r.wft(FailWorkflow(BOOM))
    assert NotifyParent(parent, RUN, result=None, failure=BOOM) in effects
    r2 = Run(parent=parent)
    _, effects = r2.wft(CompleteWorkflow(5))
    assert NotifyParent(parent, RUN, result=5, failure=None) in effects


def test_closing_handles_open_children_by_their_parent_close_policy() -> None:
    r = Run()
    r.wft(
        StartChildWorkflow(1, "c", "c-1", (), "q", None, ParentClosePolicy.TERMINATE),
        StartChildWorkflow(2, "c", "c-2", (), "q", None, ParentClosePolicy.REQUEST_CANCEL),
        StartChildWorkflow(3, "c", "c-3", (), "q", None, ParentClosePolicy.ABANDON),
    )
    r.send(inp.RecordChildStarted(RUN, 1, "c1-run"))
    _, effects = r.wft(CompleteWorkflow())
    rid1, rid2 = f"{RUN}:1:parent-closed", f"{RUN}:2:parent-closed"
    terms = [e for e in effects if isinstance(e, TerminateChildRun)]
    cancels = [e for e in effects if isinstance(e, CancelChildRun)]
    assert [(t.workflow_id, t.run_id, t.request_id) for t in terms] == [("c-1", "c1-run", rid1)]
    assert [(c.workflow_id, c.run_id, c.request_id) for c in cancels] == [("c-2", None, rid2)]


def test_workflow_task_failure_is_recorded_once_and_retried_with_backoff() -> None:
    r = Run()
    d, effects = r.send(inp.FailWorkflowTask(RUN, 1, BOOM, attempt=1))
    assert d.outcome == APPLIED
    assert isinstance(d.events[0], ev.WorkflowTaskFailed)
    assert timers(effects) == {"wft.1": T0 + wft_retry_delay(1)}
    # the retry fails the same way: no new event, just a later timer
    d, effects = r.send(inp.FailWorkflowTask(RUN, 1, BOOM, attempt=2))
    assert d.outcome == IGNORED
    assert timers(effects) == {"wft.2": T0 + wft_retry_delay(2)}
    # the retry timer dispatches a new attempt of the workflow task
    d, effects = r.send(inp.FireTimer(RUN, "wft.2"))
    assert d.outcome == IGNORED
    (wft,) = effects
    assert isinstance(wft, DispatchWorkflowTask) and wft.task.attempt == 3
    # a success clears the failure: the timer has nothing left to retry
    r.wft(StartTimer(1, 1.0), based_on=2)
    d, effects = r.send(inp.FireTimer(RUN, "wft.3"))
    assert d.outcome == IGNORED and effects == []


def test_wft_retry_delay_doubles_and_caps() -> None:
    assert [wft_retry_delay(n) for n in (1, 2, 3, 7, 8, 100)] == [1, 2, 4, 60, 60, 60]


def test_a_stale_workflow_task_failure_is_ignored() -> None:
    r = Run()
    r.wft(StartTimer(1, 1.0))
    d = r.decide(inp.FailWorkflowTask(RUN, 1, BOOM))
    assert d.outcome == IGNORED


# ------------------------------------------------------------------ activities


def test_activity_completion_applied_then_duplicate_then_late() -> None:
    r = Run()
    r.schedule(1)
    done = inp.CompleteActivityTask(RUN, 1, 1, {"v": 1})
    d, effects = r.send(done, at=T0 + 3)
    assert d.outcome == APPLIED
    (event,) = d.events
    assert event == ev.ActivityCompleted(event_id=3, at=T0 + 3, seq=1, attempt=1, result={"v": 1})
    assert kinds(effects) == ["DispatchWorkflowTask"]
    again = r.decide(done)
    assert again.outcome == DUPLICATE and again.recorded == (3, 3)
    # the redelivered input re-derives its effects from the recorded events
    assert kinds(effects_for(r.state, r.events[2:3])) == ["DispatchWorkflowTask"]
    # a failure report of the same attempt (another worker) shares the input id
    assert r.decide(inp.FailActivityTask(RUN, 1, 1, BOOM)).outcome == DUPLICATE


def test_activity_reports_for_unknown_or_future_attempts_are_rejected() -> None:
    r = Run()
    r.schedule(1)
    assert r.decide(inp.CompleteActivityTask(RUN, 9, 1)).outcome == REJECTED
    d = r.decide(inp.CompleteActivityTask(RUN, 1, 2))
    assert d.outcome == REJECTED and "never scheduled" in d.reason
    assert r.decide(inp.ReportActivityStarted(RUN, 1, 5)).outcome == REJECTED


def test_retry_is_scheduled_with_backoff_and_the_next_attempt_dispatched_later() -> None:
    r = Run()
    r.schedule(1, retry=RetryPolicy(initial_interval=2, maximum_attempts=3))
    d, effects = r.send(inp.FailActivityTask(RUN, 1, 1, BOOM, heartbeat_details=("hb",)), at=T0 + 1)
    assert d.outcome == APPLIED
    (retry,) = d.events
    assert isinstance(retry, ev.ActivityRetryScheduled)
    assert (retry.attempt, retry.delay, retry.retry_at) == (1, 2.0, T0 + 3)
    assert retry.heartbeat_details == ("hb",)
    (dispatch,) = effects
    assert isinstance(dispatch, DispatchActivityTask)
    assert dispatch.deliver_at == T0 + 3
    assert (dispatch.task.attempt, dispatch.task.heartbeat_details) == (2, ("hb",))
    assert dispatch.task.attempt_scheduled_at == T0 + 3
    # the workflow code is not woken for a retry
    assert not any(isinstance(e, DispatchWorkflowTask) for e in effects)
    # a late report for attempt 1 is ignored; attempt 2's report is applied
    late = r.decide(inp.CompleteActivityTask(RUN, 1, 1, "late"))
    assert late.outcome == DUPLICATE  # same input id as the failure: act:1:1
    late_start = r.decide(inp.ReportActivityStarted(RUN, 1, 1))
    assert late_start.outcome == IGNORED and "late report" in late_start.reason
    d, _ = r.send(inp.FailActivityTask(RUN, 1, 2, BOOM), at=T0 + 4)
    retry2 = d.events[0]
    assert isinstance(retry2, ev.ActivityRetryScheduled) and retry2.delay == 4.0
    # the second attempt reuses the first attempt's heartbeat details
    assert retry2.heartbeat_details == ("hb",)
    d, effects = r.send(inp.FailActivityTask(RUN, 1, 3, BOOM), at=T0 + 9)
    (final,) = d.events
    assert isinstance(final, ev.ActivityFailed)
    assert (final.attempt, final.retry_state, final.failure) == (
        3,
        "maximum_attempts_reached",
        BOOM,
    )
    assert kinds(effects) == ["DispatchWorkflowTask"]
    assert r.decide(inp.CompleteActivityTask(RUN, 1, 3)).outcome == DUPLICATE
    closed = r.decide(inp.ReportActivityStarted(RUN, 1, 3))
    assert closed.outcome == IGNORED and "already closed" in closed.reason


def test_unresolved_activity_options_are_resolved_when_recorded() -> None:
    r = Run()
    d, _ = r.wft(ScheduleActivity(1, "a", (), ActivityOptions()))
    scheduled = d.events[0]
    assert isinstance(scheduled, ev.ActivityScheduled)
    assert scheduled.options == ActivityOptions().resolved("q")
    # so a failure is retried by the default policy instead of crashing decide()
    d, _ = r.send(inp.FailActivityTask(RUN, 1, 1, BOOM))
    assert isinstance(d.events[0], ev.ActivityRetryScheduled)


def test_non_retryable_failures_end_the_activity_at_once() -> None:
    r = Run()
    r.schedule(1, retry=RetryPolicy(non_retryable_error_types=["ValueError"]))
    d, _ = r.send(inp.FailActivityTask(RUN, 1, 1, BOOM))
    assert isinstance(d.events[0], ev.ActivityFailed)
    assert d.events[0].retry_state == "non_retryable_error_type"


def test_activity_started_is_recorded_once_and_arms_attempt_timers() -> None:
    r = Run()
    r.schedule(1, start_to_close_timeout=30, heartbeat_timeout=5)
    d, effects = r.send(inp.ReportActivityStarted(RUN, 1, 1, "w1"), at=T0 + 1)
    assert d.outcome == APPLIED
    assert timers(effects) == {"a1.1.stc": T0 + 31, "a1.1.hb": T0 + 6}
    assert r.decide(inp.ReportActivityStarted(RUN, 1, 1, "w2")).outcome == DUPLICATE


# ------------------------------------------------------------------ timers, every key kind


def test_user_timer_fires_once() -> None:
    r = Run()
    r.wft(StartTimer(1, 10.0))
    d, effects = r.send(inp.FireTimer(RUN, "t1"), at=T0 + 10)
    assert d.events == (ev.TimerFired(event_id=3, at=T0 + 10, seq=1),)
    assert kinds(effects) == ["DispatchWorkflowTask"]
    assert r.decide(inp.FireTimer(RUN, "t1")).outcome == DUPLICATE
    assert r.decide(inp.FireTimer(RUN, "t9")).outcome == IGNORED
    assert r.decide(inp.FireTimer(RUN, "tx")).outcome == IGNORED


def test_signal_wait_timer() -> None:
    r = Run()
    r.wft(StartSignalWait(1, "go", 5.0))
    d, _ = r.send(inp.FireTimer(RUN, "s1"), at=T0 + 5)
    assert d.events == (ev.SignalWaitTimedOut(event_id=3, at=T0 + 5, seq=1),)
    r2 = Run()
    r2.wft(StartSignalWait(1, "go", None))  # no timeout: nothing to time out
    assert r2.decide(inp.FireTimer(RUN, "s1")).outcome == IGNORED


def test_execution_timeout_timer() -> None:
    r = Run(execution_timeout=60.0)
    r.schedule(1)
    d, effects = r.send(inp.FireTimer(RUN, "wf.exec"), at=T0 + 60)
    assert d.events == (ev.WorkflowTimedOut(event_id=3, at=T0 + 60, timeout=60.0),)
    assert r.state.status == RunStatus.TIMED_OUT
    assert CancelActivities((1,), "workflow run timed_out") in effects
    assert r.decide(inp.FireTimer(RUN, "t1")).outcome == IGNORED  # closed


def test_an_execution_timer_for_a_run_without_a_timeout_is_rejected() -> None:
    r = Run()
    d = r.decide(inp.FireTimer(RUN, "wf.exec"))
    assert d.outcome == REJECTED
    assert r.state.is_open


def test_schedule_to_close_timer_ends_the_activity_whatever_the_attempt() -> None:
    r = Run()
    r.schedule(1, schedule_to_close_timeout=30)
    r.send(inp.FailActivityTask(RUN, 1, 1, BOOM), at=T0 + 1)
    d, effects = r.send(inp.FireTimer(RUN, "a1.s2c"), at=T0 + 30)
    (out,) = d.events
    assert isinstance(out, ev.ActivityTimedOut)
    assert (out.attempt, out.timeout_type, out.retry_state) == (2, "schedule_to_close", "timeout")
    assert out.failure.kind == FailureKind.TIMEOUT
    assert "schedule_to_close_timeout of 30s" in out.failure.message
    assert kinds(effects) == ["DispatchWorkflowTask"]
    assert r.decide(inp.FireTimer(RUN, "a1.2.stc")).outcome == IGNORED


def test_schedule_to_start_timer() -> None:
    r = Run()
    r.schedule(1, schedule_to_start_timeout=5)
    d, _ = r.send(inp.FireTimer(RUN, "a1.1.s2s"), at=T0 + 5)
    (out,) = d.events
    assert isinstance(out, ev.ActivityTimedOut)  # not retried: no worker is listening
    assert out.timeout_type == "schedule_to_start"
    assert "is a worker running" in out.failure.message
    # once started, a schedule-to-start timer is moot
    r2 = Run()
    r2.schedule(1, schedule_to_start_timeout=5)
    r2.send(inp.ReportActivityStarted(RUN, 1, 1))
    assert r2.decide(inp.FireTimer(RUN, "a1.1.s2s")).outcome == IGNORED


def test_start_to_close_timer_retries_the_attempt() -> None:
    r = Run()
    r.schedule(1, start_to_close_timeout=10)
    assert r.decide(inp.FireTimer(RUN, "a1.1.stc")).outcome == IGNORED  # not started
    r.send(inp.ReportActivityStarted(RUN, 1, 1))
    d, effects = r.send(inp.FireTimer(RUN, "a1.1.stc"), at=T0 + 10)
    (out,) = d.events
    assert isinstance(out, ev.ActivityRetryScheduled)
    assert out.failure.timeout_type == "start_to_close"
    assert kinds(effects) == ["DispatchActivityTask"]
    # the old attempt's timers no longer apply
    assert r.decide(inp.FireTimer(RUN, "a1.1.hb")).outcome == IGNORED


def test_heartbeat_timer_rearms_while_heartbeats_arrive() -> None:
    r = Run()
    r.schedule(1, heartbeat_timeout=5)
    r.send(inp.ReportActivityStarted(RUN, 1, 1), at=T0)
    d, effects = r.send(inp.FireTimer(RUN, "a1.1.hb", heartbeat_at=T0 + 3), at=T0 + 5)
    assert d.outcome == IGNORED
    assert effects == [ArmTimer("a1.1.hb", T0 + 8)]
    d, _ = r.send(
        inp.FireTimer(RUN, "a1.1.hb", heartbeat_at=T0 + 3, heartbeat_details=(42,)), at=T0 + 8
    )
    (out,) = d.events
    assert isinstance(out, ev.ActivityRetryScheduled)
    assert out.failure.timeout_type == "heartbeat"
    assert out.heartbeat_details == (42,)


def test_heartbeat_timer_of_an_activity_without_heartbeat_timeout_is_ignored() -> None:
    r = Run()
    r.schedule(1)
    r.send(inp.ReportActivityStarted(RUN, 1, 1))
    assert r.decide(inp.FireTimer(RUN, "a1.1.hb")).outcome == IGNORED


@pytest.mark.parametrize("key", ["zzz", "a", "a1", "a9.1.stc", "a1.1.bogus", "a1.1.stc.x", ""])
def test_unknown_timer_keys_are_rejected(key: str) -> None:
    r = Run()
    r.schedule(1)
    r.send(inp.ReportActivityStarted(RUN, 1, 1))
    assert r.decide(inp.FireTimer(RUN, key)).outcome == REJECTED


@pytest.mark.parametrize("key", ["t²", "s²", "wft.²", "a²", "a1.².stc", "t١"])
def test_timer_keys_with_unicode_digits_never_raise(key: str) -> None:
    r = Run()
    r.schedule(1)
    r.wft(StartTimer(2, 1.0), StartSignalWait(3, "x", 1.0))
    assert r.decide(inp.FireTimer(RUN, key)).outcome in (IGNORED, REJECTED)


# ------------------------------------------------------------------ signals, cancel, terminate


def test_signals_are_recorded_once_per_request_id() -> None:
    r = Run()
    d, effects = r.send(inp.SignalWorkflow(RUN, "go", "sig-1", (1,)))
    assert d.events == (
        ev.SignalReceived(event_id=2, at=T0, name="go", args=(1,), request_id="sig-1"),
    )
    assert kinds(effects) == ["DispatchWorkflowTask"]
    assert r.decide(inp.SignalWorkflow(RUN, "go", "sig-1", (1,))).outcome == DUPLICATE
    d, _ = r.send(inp.SignalWorkflow(RUN, "go", "sig-2", (1,)))
    assert d.outcome == APPLIED


def test_cancel_request_is_recorded_once_and_cancels_activities_and_children() -> None:
    r = Run()
    r.wft(
        ScheduleActivity(1, "a", (), opts()),
        StartChildWorkflow(2, "c", "c-1", (), "q", None, ParentClosePolicy.REQUEST_CANCEL),
        StartChildWorkflow(3, "c", "c-2", (), "q", None, ParentClosePolicy.ABANDON),
    )
    d, effects = r.send(inp.RequestCancel(RUN, "cxl-1", "stop"))
    assert d.events == (ev.CancelRequested(event_id=5, at=T0, reason="stop", request_id="cxl-1"),)
    assert CancelActivities((1,), "workflow cancellation requested") in effects
    (child,) = [e for e in effects if isinstance(e, CancelChildRun)]
    assert child.workflow_id == "c-1"
    assert isinstance(effects[-1], DispatchWorkflowTask)
    assert r.decide(inp.RequestCancel(RUN, "cxl-1")).outcome == DUPLICATE
    assert r.decide(inp.RequestCancel(RUN, "cxl-2")).outcome == IGNORED
    # now the code may end cancelled
    d, _ = r.wft(CancelWorkflow("bye"))
    assert d.outcome == APPLIED and r.state.status == RunStatus.CANCELLED


def test_terminate_closes_the_run_and_nothing_is_accepted_after() -> None:
    r = Run()
    r.schedule(1)
    d, effects = r.send(inp.TerminateWorkflow(RUN, "trm-1", "ops"))
    assert d.events == (ev.WorkflowTerminated(event_id=3, at=T0, reason="ops"),)
    summary = effects[0].summary
    assert summary.status == RunStatus.TERMINATED
    assert r.decide(inp.TerminateWorkflow(RUN, "trm-1")).outcome == DUPLICATE
    for late in (
        inp.TerminateWorkflow(RUN, "trm-2"),
        inp.CompleteActivityTask(RUN, 1, 1),
        inp.SignalWorkflow(RUN, "s", "sig-9"),
        inp.RequestCancel(RUN, "c"),
        inp.CompleteWorkflowTask(RUN, 3, (CompleteWorkflow(),)),
        inp.FireTimer(RUN, "t1"),
    ):
        d = r.decide(late)
        assert d.outcome == IGNORED, late
        assert "terminated" in d.reason


# ------------------------------------------------------------------ child workflows


def test_child_lifecycle_inputs() -> None:
    r = Run()
    r.wft(StartChildWorkflow(1, "c", "c-1", (5,), "q", 30.0, ParentClosePolicy.ABANDON))
    assert r.decide(inp.RecordChildStarted(RUN, 9, "x")).outcome == REJECTED
    d, effects = r.send(inp.RecordChildStarted(RUN, 1, "c-run"))
    assert d.events == (ev.ChildWorkflowStarted(event_id=3, at=T0, seq=1, run_id="c-run"),)
    assert effects == []  # the code does not see the start
    assert r.decide(inp.RecordChildStarted(RUN, 1, "c-run")).outcome == DUPLICATE
    assert r.decide(inp.RecordChildClosed(RUN, 9, "x")).outcome == REJECTED
    d, effects = r.send(inp.RecordChildClosed(RUN, 1, "c-run", result=7))
    assert d.events == (ev.ChildWorkflowCompleted(event_id=4, at=T0, seq=1, result=7),)
    assert kinds(effects) == ["DispatchWorkflowTask"]
    assert r.decide(inp.RecordChildClosed(RUN, 1, "c-run", result=7)).outcome == DUPLICATE


def test_child_start_failure_is_recorded_as_child_failed() -> None:
    r = Run()
    r.wft(StartChildWorkflow(1, "c", "c-1", (), "q", None, ParentClosePolicy.ABANDON))
    failure = Failure("already started", type="WorkflowAlreadyStartedError")
    d, _ = r.send(inp.RecordChildStartFailed(RUN, 1, failure))
    assert d.events == (ev.ChildWorkflowFailed(event_id=3, at=T0, seq=1, failure=failure),)
    assert r.decide(inp.RecordChildStarted(RUN, 1, "late")).outcome == IGNORED


# ------------------------------------------------------------------ effects re-derivation


def test_effects_of_an_old_batch_are_filtered_by_the_current_state() -> None:
    r = Run()
    d, first = r.wft(
        ScheduleActivity(1, "a", (), opts(schedule_to_start_timeout=5)),
        StartTimer(2, 10.0),
        StartSignalWait(3, "s", 10.0),
        StartChildWorkflow(4, "c", "c-1", (), "q", None, ParentClosePolicy.ABANDON),
    )
    batch = list(d.events)
    assert kinds(effects_for(r.state, batch)) == kinds(first)  # nothing happened yet: same
    r.send(inp.ReportActivityStarted(RUN, 1, 1))
    r.send(inp.FireTimer(RUN, "t2"))
    r.send(inp.FireTimer(RUN, "s3"))
    r.send(inp.RecordChildStarted(RUN, 4, "c-run"))
    again = effects_for(r.state, batch)
    # the started attempt, fired timer, timed-out wait and started child are not re-done
    assert not any(isinstance(e, DispatchActivityTask | StartRun) for e in again)
    assert timers(again) == {}


def test_re_derived_retry_dispatch_is_dropped_once_the_next_attempt_started() -> None:
    r = Run()
    r.schedule(1)
    d, _ = r.send(inp.FailActivityTask(RUN, 1, 1, BOOM))
    retry_batch = list(d.events)
    assert kinds(effects_for(r.state, retry_batch)) == ["DispatchActivityTask"]
    r.send(inp.ReportActivityStarted(RUN, 1, 2))
    assert effects_for(r.state, retry_batch) == []
    # the original schedule batch does not dispatch attempt 1 again either
    assert effects_for(r.state, r.batches[1][1]) == []


def test_a_closed_run_re_derives_no_dispatches() -> None:
    r = Run(execution_timeout=10.0)
    r.schedule(1)
    r.send(inp.SignalWorkflow(RUN, "s", "sig"))
    r.wft(CompleteWorkflow())
    assert not any(
        isinstance(e, DispatchWorkflowTask | ArmTimer) for e in effects_for(r.state, r.events)
    )


def test_state_from_history_batches_equals_the_incremental_state() -> None:
    r = Run()
    r.schedule(1)
    r.send(inp.FailActivityTask(RUN, 1, 1, BOOM))
    r.send(inp.SignalWorkflow(RUN, "s", "sig-1"))
    r.send(inp.RequestCancel(RUN, "c"))
    assert RunState.from_history(r.batches) == r.state
    with pytest.raises(Exception, match="empty history"):
        RunState.from_history([])
    with pytest.raises(Exception, match="not WorkflowStarted"):
        RunState.from_history(r.events[1:])


# ------------------------------------------------------------------ decide_start


def request(**kw: Any) -> inp.StartWorkflowRequest:
    base: dict[str, Any] = {
        "workflow_id": "wf-1",
        "workflow_type": "order",
        "task_queue": "q",
        "request_id": "req-new",
    }
    base.update(kw)
    return inp.StartWorkflowRequest(**base)


def test_decide_start_without_a_previous_run_starts() -> None:
    assert decide_start(request(), None).action == "start"


def test_decide_start_same_request_id_returns_the_existing_run_whatever_its_status() -> None:
    for status in (RunStatus.RUNNING, RunStatus.COMPLETED, RunStatus.FAILED):
        d = decide_start(request(request_id="r"), LatestRun("old", status, "r"))
        assert (d.action, d.run_id) == ("existing", "old")


def test_decide_start_knows_the_request_that_started_a_chain_continued_as_new() -> None:
    # the chain's latest run was made by continue-as-new ("can:<previous run>")
    for status in (RunStatus.RUNNING, RunStatus.COMPLETED, RunStatus.CONTINUED_AS_NEW):
        latest = LatestRun("run-3", status, "can:run-2", chain_request_id="r")
        d = decide_start(request(request_id="r"), latest)
        assert (d.action, d.run_id) == ("existing", "run-3")
    # another request id is still arbitrated as a new start
    latest = LatestRun("run-3", RunStatus.COMPLETED, "can:run-2", chain_request_id="r")
    assert decide_start(request(request_id="other"), latest).action == "start"


def test_continue_as_new_carries_the_chain_request_id_to_every_next_run() -> None:
    first = start_events(request(request_id="r"), namespace="n", run_id="run-1", now=1.0)[0]
    assert isinstance(first, ev.WorkflowStarted) and first.chain_request_id == ""
    nxt = inp.StartWorkflowRequest(
        workflow_id="wf-1",
        workflow_type="order",
        task_queue="q",
        request_id="can:run-1",
        chain_request_id=first.chain_request_id or first.request_id,
        continued_from="run-1",
    )
    second = start_events(nxt, namespace="n", run_id="run-2", now=2.0)[0]
    assert isinstance(second, ev.WorkflowStarted) and second.chain_request_id == "r"
    assert LatestRun.of(second, RunStatus.RUNNING).chain_request_id == "r"


def test_decide_start_while_running_rejects_or_signals() -> None:
    d = decide_start(request(), LatestRun("old", RunStatus.RUNNING, "req-old"))
    assert (d.action, d.run_id) == ("reject", "old")
    assert "already running" in d.message and "get_workflow_handle" in d.message
    d = decide_start(request(signal_name="go"), LatestRun("old", RunStatus.RUNNING, "req-old"))
    assert (d.action, d.run_id) == ("signal", "old")


@pytest.mark.parametrize(
    ("policy", "status", "action"),
    [
        (IdReusePolicy.ALLOW_DUPLICATE, RunStatus.COMPLETED, "start"),
        (IdReusePolicy.ALLOW_DUPLICATE, RunStatus.FAILED, "start"),
        (IdReusePolicy.ALLOW_DUPLICATE, RunStatus.CONTINUED_AS_NEW, "start"),
        (IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY, RunStatus.COMPLETED, "reject"),
        (IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY, RunStatus.CONTINUED_AS_NEW, "reject"),
        (IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY, RunStatus.FAILED, "start"),
        (IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY, RunStatus.TIMED_OUT, "start"),
        (IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY, RunStatus.CANCELLED, "start"),
        (IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY, RunStatus.TERMINATED, "start"),
        (IdReusePolicy.REJECT_DUPLICATE, RunStatus.COMPLETED, "reject"),
        (IdReusePolicy.REJECT_DUPLICATE, RunStatus.FAILED, "reject"),
    ],
)
def test_decide_start_id_reuse_policies(policy: IdReusePolicy, status: str, action: str) -> None:
    d = decide_start(request(id_reuse_policy=policy), LatestRun("old", status, "req-old"))
    assert d.action == action
    if action == "reject":
        assert policy.name in d.message and d.run_id == "old"


def test_signal_with_start_of_a_closed_run_starts_a_new_one_with_the_signal() -> None:
    req = request(signal_name="go", signal_args=(1,))
    assert decide_start(req, LatestRun("old", RunStatus.COMPLETED, "x")).action == "start"
    events = start_events(req, namespace="ns", run_id="new", now=5.0)
    assert isinstance(events[1], ev.SignalReceived) and events[1].event_id == 2


def test_continue_as_new_starts_only_from_the_latest_run_it_continues() -> None:
    req = request(continued_from="old", request_id="can:old")
    assert decide_start(req, LatestRun("old", RunStatus.CONTINUED_AS_NEW, "r")).action == "start"
    # the same continuation delivered twice
    again = decide_start(req, LatestRun("new", RunStatus.RUNNING, "can:old"))
    assert (again.action, again.run_id) == ("existing", "new")
    # something else happened under the id meanwhile
    other = decide_start(req, LatestRun("other", RunStatus.RUNNING, "r2"))
    assert other.action == "reject" and "not continuing" in other.message
    # continue-as-new ignores the reuse policy: it is the same workflow going on
    strict = request(
        continued_from="old", request_id="can:old", id_reuse_policy=IdReusePolicy.REJECT_DUPLICATE
    )
    assert decide_start(strict, LatestRun("old", RunStatus.CONTINUED_AS_NEW, "r")).action == "start"


def test_start_events_with_an_explicit_deadline_keep_it() -> None:
    req = request(execution_timeout=60.0, execution_deadline=500.0, first_run_id="first")
    (started,) = start_events(req, namespace="ns", run_id="r", now=100.0)
    assert isinstance(started, ev.WorkflowStarted)
    assert started.execution_deadline == 500.0
    assert started.first_run_id == "first"


def test_a_batch_derived_again_under_later_batches_keeps_its_tasks_not_its_old_wft() -> None:
    """A fan-out decision whose effects were lost, with a result recorded on top of it: derived
    again, it dispatches the branch still waiting (not the one that completed), and the
    workflow task the run needs now (triggered by the newest event), not one triggered by an
    event the code decided on long ago."""
    r = Run()
    r.wft(
        ScheduleActivity(1, "act1", (1,), opts()),
        ScheduleActivity(2, "act2", (2,), opts()),
    )
    first, last = r.state.applied_inputs["wtc:1"]
    r.send(inp.CompleteActivityTask(RUN, 1, 1, "one"))
    again = effects_again(r.state, r.events, first, last)
    tasks = [e for e in again if isinstance(e, DispatchActivityTask)]
    assert [(t.task.seq, t.task.attempt) for t in tasks] == [(2, 1)]
    wfts = [e for e in again if isinstance(e, DispatchWorkflowTask)]
    assert [w.task.trigger for w in wfts] == [r.state.last_event_id]  # act1's result

    # once the code has decided on everything recorded, no workflow task at all
    d, _ = r.wft(ScheduleActivity(3, "act3", (3,), opts()))
    assert d.outcome == APPLIED
    again = effects_again(r.state, r.events, first, last)
    assert [e.task.seq for e in again if isinstance(e, DispatchActivityTask)] == [2]
    assert [e for e in again if isinstance(e, DispatchWorkflowTask)] == []


def test_the_newest_batch_derived_again_is_derived_as_before() -> None:
    r = Run()
    r.wft(ScheduleActivity(1, "act1", (1,), opts()))
    r.send(inp.CompleteActivityTask(RUN, 1, 1, "one"))
    first, last = r.state.applied_inputs["act:1:1"]
    assert effects_again(r.state, r.events, first, last) == effects_for(
        r.state, r.events[first - 1 : last]
    )


def test_a_batch_derived_again_under_a_failed_workflow_task_leaves_its_retry_to_the_timer() -> None:
    """An activity's result, then the workflow task it woke failed: its retry is due by the
    timer that failure armed (with backoff, attempt 2). The result's batch derived again (its
    activity report came back) sends no workflow task of its own: one now would be an
    attempt 1 of a failing task, outside the backoff and under a message id no earlier task
    had, so never a duplicate."""
    r = Run()
    r.schedule()
    r.send(inp.CompleteActivityTask(RUN, 1, 1, "one"))
    first, last = r.state.applied_inputs["act:1:1"]
    d, effects = r.send(inp.FailWorkflowTask(RUN, r.state.last_event_id, BOOM, attempt=1))
    assert d.outcome == APPLIED and kinds(effects) == ["ArmTimer"]
    again = effects_again(r.state, r.events, first, last)
    assert [e for e in again if isinstance(e, DispatchWorkflowTask)] == []

    # a result recorded after the failure wakes the code again, at once: that workflow task
    # the run does need now, and the batch derived again sends it
    r.schedule(2)  # (a decision clears the failure; fail again after it)
    r.send(inp.FailWorkflowTask(RUN, r.state.last_event_id, BOOM, attempt=1))
    r.send(inp.CompleteActivityTask(RUN, 2, 1, "two"))
    again = effects_again(r.state, r.events, first, last)
    wfts = [e for e in again if isinstance(e, DispatchWorkflowTask)]
    assert [(w.task.trigger, w.task.attempt) for w in wfts] == [(r.state.last_event_id, 1)]


def test_an_old_batch_of_a_closed_run_derived_again_dispatches_no_work() -> None:
    """A fan-out, one branch's result, then the code completes the run without waiting for
    the other (cancelled by the close). The fan-out's batch derived again (its workflow task
    came back, and its worker reports the decision it finds in history again) must not send
    the open branch's activity task, nor arm its timers or the run's timer: the run is over,
    its timers were purged with the close."""
    r = Run()
    r.wft(
        ScheduleActivity(1, "act1", (1,), opts(schedule_to_close_timeout=60.0)),
        ScheduleActivity(2, "act2", (2,), opts(schedule_to_close_timeout=60.0)),
        StartTimer(3, 30.0),
    )
    first, last = r.state.applied_inputs["wtc:1"]
    r.send(inp.CompleteActivityTask(RUN, 1, 1, "one"))
    d, _ = r.wft(CompleteWorkflow("done"))
    assert d.outcome == APPLIED and not r.state.is_open
    again = effects_again(r.state, r.events, first, last)
    assert [e for e in again if isinstance(e, DispatchActivityTask | ArmTimer)] == []
    assert [e for e in again if isinstance(e, DispatchWorkflowTask)] == []
