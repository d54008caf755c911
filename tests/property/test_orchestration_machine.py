"""A RuleBasedStateMachine over core.orchestration: RunState + decide + effects_for.

Rules deliver every kind of input, duplicated, reordered, stale and late: workflow-task
completions built by really replaying the history (or a stale prefix of it) with
WorkflowExecution, activity starts / completions / failures for current, old and future
attempts, timer firings for every key kind (and garbage keys), signals, cancel requests,
child-workflow reports, terminations, redeliveries of anything sent before, and workflow tasks
carrying arbitrary (well-typed) commands. Invariants hold after every step.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import durablefuture as df
from durablefuture.codec import default_codec
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.commands import Command
from durablefuture.core.definitions import WorkflowDefinition
from durablefuture.core.effects import ArmTimer, DispatchActivityTask
from durablefuture.core.failure import Failure
from durablefuture.core.orchestration import (
    APPLIED,
    DUPLICATE,
    IGNORED,
    REJECTED,
    decide,
    effects_for,
    start_events,
)
from durablefuture.core.replay import WorkflowExecution
from durablefuture.core.state import RunState
from tests.property.strategies import for_class

RUN = "run-m"
OPTS = df.ActivityOptions(
    start_to_close_timeout=10,
    schedule_to_start_timeout=20,
    heartbeat_timeout=5,
    retry_policy=df.RetryPolicy(initial_interval=1, maximum_attempts=3),
)


@df.defn(name="machine")
def machine_workflow() -> Generator[Any, Any, Any]:
    try:
        try:
            a = yield df.all_of(
                df.activity("a", options=OPTS), df.activity("b", options=OPTS), df.sleep(5)
            )
        except df.ActivityError as err:
            a = ["failed", err.activity_name]
        try:
            sig = yield df.wait_signal("go", timeout=30)
        except df.TimeoutError:
            sig = None
        idx, _ = yield df.any_of(df.child_workflow("child", id="c-1"), df.sleep(10))
        more = yield df.side_effect(lambda: 7)
        return [a, sig, idx, more]
    finally:
        yield df.activity("cleanup", options=OPTS)


DEFINITION = WorkflowDefinition.from_fn(machine_workflow)
PAYLOADS = default_codec().payloads
COMMANDS = st.one_of([for_class(c) for c in Command.__args__])  # type: ignore[attr-defined]

FAILURES = st.builds(
    Failure,
    message=st.just("boom"),
    type=st.sampled_from(["Transient", "Fatal"]),
    non_retryable=st.booleans(),
    next_retry_delay=st.none() | st.just(0.5),
)
OUTCOMES = Counter[str]()


class OrchestrationMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        request = inp.StartWorkflowRequest(
            workflow_id="wf-m",
            workflow_type="machine",
            task_queue="q",
            request_id="req",
            execution_timeout=600.0,
        )
        events = start_events(request, namespace="ns", run_id=RUN, now=self.now)
        first = events[0]
        assert isinstance(first, ev.WorkflowStarted)
        self.state = RunState(started=first)
        self.state.apply(events, "start")
        self.batches: list[tuple[str, list[ev.Event]]] = [("start", events)]
        self.history: list[ev.Event] = list(events)
        self.sent: list[inp.RunInput] = []
        self.armed: dict[str, float] = {}  # key -> latest fire_at
        self.bogus = False  # arbitrary commands were recorded: the code no longer matches
        self.arbitrary: list[inp.CompleteWorkflowTask] = []
        self.closed_at: int | None = None
        self._effects(effects_for(self.state, events))

    # ------------------------------------------------------------------ plumbing

    def _effects(self, effects: list[Any]) -> None:
        for e in effects:
            if isinstance(e, ArmTimer):
                self.armed[e.key] = e.fire_at

    def deliver(self, message: inp.RunInput) -> str:
        was_open = self.state.is_open
        before = self.state.last_event_id
        decision = decide(self.state, message, self.now, new_run_id="run-next")
        self.sent.append(message)
        OUTCOMES[decision.outcome] += 1
        assert decision.outcome in (APPLIED, DUPLICATE, IGNORED, REJECTED)
        if decision.outcome == APPLIED:
            assert was_open, f"{message} was accepted after the run closed"
            if any(message is m for m in self.arbitrary):
                self.bogus = True  # possibly redelivered: the code no longer matches history
            assert decision.events, "an applied input must add events"
            ids = [e.event_id for e in decision.events]
            assert ids == list(range(before + 1, before + 1 + len(ids)))
            self.state.apply(decision.events, message.input_id)
            self.batches.append((message.input_id, list(decision.events)))
            self.history.extend(decision.events)
            self._effects(effects_for(self.state, decision.events))
            if not self.state.is_open and self.closed_at is None:
                self.closed_at = self.state.last_event_id
        else:
            assert not decision.events
            if decision.outcome == DUPLICATE and decision.recorded is not None:
                lo, hi = decision.recorded
                assert 1 <= lo <= hi <= self.state.last_event_id
                self._effects(effects_for(self.state, self.history[lo - 1 : hi]))
        self._effects(list(decision.effects))
        return decision.outcome

    def _seq(self, data: st.DataObject, known: list[int]) -> int:
        return data.draw(
            st.sampled_from(known) if known and data.draw(st.booleans()) else st.integers(0, 12)
        )

    # ------------------------------------------------------------------ rules

    @rule(data=st.data())
    def advance_time(self, data: st.DataObject) -> None:
        self.now += data.draw(st.sampled_from([0.0, 0.5, 1.0, 5.0, 30.0]))

    @precondition(lambda self: not self.bogus)
    @rule(data=st.data())
    def workflow_task(self, data: st.DataObject) -> None:
        last = self.state.last_event_id
        stale = data.draw(st.booleans())
        k = data.draw(st.integers(1, last)) if stale else last
        act = WorkflowExecution(DEFINITION, PAYLOADS).feed(self.history[:k])
        if act.commands:
            self.deliver(inp.CompleteWorkflowTask(RUN, act.based_on, act.commands))

    @precondition(lambda self: not self.bogus)
    @rule(data=st.data())
    def progress(self, data: st.DataObject) -> None:
        """What a healthy system does next: decide, finish an attempt, or fire a due timer."""
        choice = data.draw(st.sampled_from(["decide", "activity", "timer"]))
        open_acts = [a for a in self.state.activities.values() if not a.closed]
        if choice == "activity" and open_acts:
            act = data.draw(st.sampled_from(open_acts))
            if data.draw(st.booleans()):
                self.deliver(inp.CompleteActivityTask(RUN, act.seq, act.attempt, act.seq))
            else:
                failure = Failure("flaky", type="Transient")
                self.deliver(inp.FailActivityTask(RUN, act.seq, act.attempt, failure))
        elif choice == "timer" and self.state.timers:
            seq = data.draw(st.sampled_from(sorted(self.state.timers)))
            self.now = max(self.now, self.state.timers[seq])
            self.deliver(inp.FireTimer(RUN, f"t{seq}"))
        else:
            act = WorkflowExecution(DEFINITION, PAYLOADS).feed(self.history)
            if act.commands:
                self.deliver(inp.CompleteWorkflowTask(RUN, act.based_on, act.commands))

    @rule(data=st.data(), failure=FAILURES, attempt=st.integers(1, 4))
    def workflow_task_fails(self, data: st.DataObject, failure: Failure, attempt: int) -> None:
        based_on = data.draw(st.integers(0, self.state.last_event_id + 1))
        self.deliver(inp.FailWorkflowTask(RUN, based_on, failure, attempt))

    @rule(data=st.data(), commands=st.lists(COMMANDS, min_size=1, max_size=3))
    def arbitrary_workflow_task(self, data: st.DataObject, commands: list[Command]) -> None:
        base = self.state.next_seq + data.draw(st.integers(-1, 1))
        fixed = []
        for i, c in enumerate(commands):
            fixed.append(c if not hasattr(c, "seq") else type(c)(**{**_fields(c), "seq": base + i}))
        based_on = data.draw(st.integers(0, self.state.last_event_id + 1))
        task = inp.CompleteWorkflowTask(RUN, based_on, tuple(fixed))
        self.arbitrary.append(task)
        self.deliver(task)

    def _attempt(self, data: st.DataObject) -> tuple[int, int]:
        seq = self._seq(data, list(self.state.activities))
        act = self.state.activities.get(seq)
        current = act.attempt if act else 1
        attempt = data.draw(st.sampled_from([current, current, current - 1, current + 1, 1]))
        return seq, max(attempt, 0)

    @rule(data=st.data(), result=st.integers(0, 3))
    def activity_completes(self, data: st.DataObject, result: int) -> None:
        seq, attempt = self._attempt(data)
        self.deliver(inp.CompleteActivityTask(RUN, seq, attempt, result))

    @rule(data=st.data(), failure=FAILURES)
    def activity_fails(self, data: st.DataObject, failure: Failure) -> None:
        seq, attempt = self._attempt(data)
        self.deliver(inp.FailActivityTask(RUN, seq, attempt, failure, ("hb",)))

    @rule(data=st.data())
    def activity_starts(self, data: st.DataObject) -> None:
        seq, attempt = self._attempt(data)
        self.deliver(inp.ReportActivityStarted(RUN, seq, attempt, "w"))

    @rule(data=st.data())
    def timer_fires(self, data: st.DataObject) -> None:
        made_up = st.sampled_from(["t", "s", "a", "wft.", "a1.", "a1.1."]).flatmap(
            lambda p: st.text(st.sampled_from("0123456789.²xs2ctb"), max_size=6).map(
                lambda t: p + t
            )
        )
        # the execution timeout ends everything: fire it rarely
        keys = sorted(k for k in self.armed if k != "wf.exec" or data.draw(st.integers(0, 9)) == 7)
        if keys and data.draw(st.booleans()):
            key = data.draw(st.sampled_from(keys))
            if data.draw(st.booleans()):  # on time (otherwise early, or late and stale)
                self.now = max(self.now, self.armed[key])
        else:
            key = data.draw(made_up | st.text(max_size=8))
        heartbeat_at = data.draw(st.none() | st.just(self.now))
        self.deliver(inp.FireTimer(RUN, key, heartbeat_at, ("d",)))

    @rule(name=st.sampled_from(["go", "other"]), rid=st.sampled_from(["s1", "s2", "s3", "s4"]))
    def signal(self, name: str, rid: str) -> None:
        self.deliver(inp.SignalWorkflow(RUN, name, rid, (rid,)))

    @rule(rid=st.sampled_from(["c1", "c2"]))
    def cancel(self, rid: str) -> None:
        self.deliver(inp.RequestCancel(RUN, rid, "test"))

    @rule(data=st.data())
    def terminate(self, data: st.DataObject) -> None:
        if data.draw(st.integers(0, 9)) == 7:  # rare: it ends everything
            self.deliver(inp.TerminateWorkflow(RUN, data.draw(st.sampled_from(["t1", "t2"]))))

    @rule(data=st.data(), kind=st.sampled_from(["started", "closed", "failed", "start_failed"]))
    def child_report(self, data: st.DataObject, kind: str) -> None:
        seq = self._seq(data, list(self.state.children))
        boom = Failure("child failed", type="Boom")
        if kind == "started":
            self.deliver(inp.RecordChildStarted(RUN, seq, "child-run"))
        elif kind == "closed":
            self.deliver(inp.RecordChildClosed(RUN, seq, "child-run", result=1))
        elif kind == "failed":
            self.deliver(inp.RecordChildClosed(RUN, seq, "child-run", failure=boom))
        else:
            self.deliver(inp.RecordChildStartFailed(RUN, seq, boom))

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        self.deliver(data.draw(st.sampled_from(self.sent)))

    # ------------------------------------------------------------------ invariants

    @invariant()
    def event_ids_are_contiguous_from_one(self) -> None:
        assert [e.event_id for e in self.history] == list(range(1, len(self.history) + 1))
        assert self.state.last_event_id == len(self.history)

    @invariant()
    def each_attempt_outcome_is_recorded_at_most_once(self) -> None:
        outcomes = Counter(
            (e.seq, e.attempt)
            for e in self.history
            if isinstance(
                e,
                ev.ActivityCompleted
                | ev.ActivityFailed
                | ev.ActivityTimedOut
                | ev.ActivityRetryScheduled,
            )
        )
        assert all(n == 1 for n in outcomes.values()), outcomes
        closings = Counter(
            e.seq
            for e in self.history
            if isinstance(e, ev.ActivityCompleted | ev.ActivityFailed | ev.ActivityTimedOut)
        )
        assert all(n == 1 for n in closings.values()), closings
        starts = Counter(
            (e.seq, e.attempt) for e in self.history if isinstance(e, ev.ActivityStarted)
        )
        assert all(n == 1 for n in starts.values()), starts

    @invariant()
    def at_most_one_terminal_event_and_it_is_last(self) -> None:
        terminals = [i for i, e in enumerate(self.history) if isinstance(e, ev.TERMINAL_EVENTS)]
        assert len(terminals) <= 1
        if terminals:
            assert terminals[0] == len(self.history) - 1
            assert not self.state.is_open
            assert self.closed_at == len(self.history)

    @invariant()
    def other_facts_are_recorded_once(self) -> None:
        fired = Counter(e.seq for e in self.history if isinstance(e, ev.TimerFired))
        assert all(n == 1 for n in fired.values())
        signals = Counter(e.request_id for e in self.history if isinstance(e, ev.SignalReceived))
        assert all(n == 1 for n in signals.values())
        cancels = [e for e in self.history if isinstance(e, ev.CancelRequested)]
        assert len(cancels) <= 1
        seqs = [e.seq for e in self.history if isinstance(e, ev.COMMAND_EVENTS)]
        assert seqs == list(range(1, len(seqs) + 1))

    @invariant()
    def the_state_is_the_fold_of_the_history(self) -> None:
        assert RunState.from_history(self.batches) == self.state

    @invariant()
    def the_history_replays_with_the_code_that_wrote_it(self) -> None:
        if self.bogus:
            return
        act = WorkflowExecution(DEFINITION, PAYLOADS).feed(self.history)  # no NonDeterminism
        if not self.state.is_open and isinstance(self.history[-1], ev.WorkflowCompleted):
            assert act.finished

    @invariant()
    def effects_of_any_batch_can_be_re_derived(self) -> None:
        for _, batch in self.batches:
            for effect in effects_for(self.state, batch):
                if isinstance(effect, DispatchActivityTask):
                    act = self.state.activities[effect.task.seq]
                    assert not act.closed and act.attempt == effect.task.attempt


def _fields(obj: Any) -> dict[str, Any]:
    import attrs

    return attrs.asdict(obj, recurse=False)


OrchestrationMachine.TestCase.settings = settings(
    deadline=None,
    max_examples=150,
    stateful_step_count=50,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestOrchestrationMachine = OrchestrationMachine.TestCase
