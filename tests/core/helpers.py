"""Hand-built histories for the core unit tests.

``History`` appends events with contiguous ids and a clock the test moves by hand, so a test
reads like the history it describes. ``execution(fn)`` builds a fresh replayer for ``fn``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from durablefuture.codec import default_codec
from durablefuture.core import events as ev
from durablefuture.core.commands import Command, PrimitiveCommand
from durablefuture.core.definitions import WorkflowDefinition
from durablefuture.core.failure import Failure
from durablefuture.core.options import ActivityOptions, RetryPolicy
from durablefuture.core.replay import Activation, WorkflowExecution
from durablefuture.core.types import JsonValue

PAYLOADS = default_codec().payloads
T0 = 1_700_000_000.0
OPTS = ActivityOptions(start_to_close_timeout=10).resolved("q")


def execution(fn: Callable[..., object]) -> WorkflowExecution:
    return WorkflowExecution(WorkflowDefinition.from_fn(fn), PAYLOADS)


def replay(fn: Callable[..., object], events: list[ev.Event]) -> Activation:
    return execution(fn).feed(events)


def options(**retry: Any) -> ActivityOptions:
    """Resolved activity options with the given retry policy fields."""
    return ActivityOptions(start_to_close_timeout=10, retry_policy=RetryPolicy(**retry)).resolved(
        "q"
    )


class History:
    """Builds one run's history; every ``add`` returns the event it appended."""

    def __init__(
        self,
        workflow_type: str = "wf",
        *args: JsonValue,
        run_id: str = "run-1",
        workflow_id: str = "wf-1",
        at: float = T0,
        **started: Any,
    ) -> None:
        self.now = at
        self.events: list[ev.Event] = [
            ev.WorkflowStarted(
                event_id=1,
                at=at,
                workflow_type=workflow_type,
                workflow_id=workflow_id,
                run_id=run_id,
                namespace="default",
                task_queue="q",
                args=args,
                **started,
            )
        ]

    @property
    def last(self) -> int:
        return len(self.events)

    def tick(self, seconds: float = 1.0) -> History:
        self.now += seconds
        return self

    def add(self, cls: type[ev.Event], **fields: Any) -> Any:
        event = cls(event_id=self.last + 1, at=fields.pop("at", self.now), **fields)
        self.events.append(event)
        return event

    # decisions (based_on defaults to "everything so far")

    def _based(self, based_on: int | None) -> int:
        return self.last if based_on is None else based_on

    def activity(
        self,
        seq: int,
        name: str,
        *args: JsonValue,
        based_on: int | None = None,
        opts: ActivityOptions = OPTS,
    ) -> ev.ActivityScheduled:
        out: ev.ActivityScheduled = self.add(
            ev.ActivityScheduled,
            based_on=self._based(based_on),
            seq=seq,
            name=name,
            args=args,
            options=opts,
        )
        return out

    def timer(self, seq: int, duration: float, based_on: int | None = None) -> ev.TimerStarted:
        out: ev.TimerStarted = self.add(
            ev.TimerStarted,
            based_on=self._based(based_on),
            seq=seq,
            duration=duration,
            fire_at=self.now + duration,
        )
        return out

    def wait(
        self, seq: int, name: str, timeout: float | None = None, based_on: int | None = None
    ) -> ev.SignalWaitStarted:
        out: ev.SignalWaitStarted = self.add(
            ev.SignalWaitStarted,
            based_on=self._based(based_on),
            seq=seq,
            name=name,
            timeout=timeout,
            deadline=None if timeout is None else self.now + timeout,
        )
        return out

    def side_effect(
        self,
        seq: int,
        value: JsonValue = None,
        failure: Failure | None = None,
        based_on: int | None = None,
    ) -> ev.SideEffectRecorded:
        out: ev.SideEffectRecorded = self.add(
            ev.SideEffectRecorded,
            based_on=self._based(based_on),
            seq=seq,
            value=value,
            failure=failure,
        )
        return out

    def marker(self, seq: int, change_id: str, based_on: int | None = None) -> ev.MarkerRecorded:
        out: ev.MarkerRecorded = self.add(
            ev.MarkerRecorded, based_on=self._based(based_on), seq=seq, change_id=change_id
        )
        return out

    def child(
        self, seq: int, workflow_type: str, workflow_id: str, *args: JsonValue
    ) -> ev.ChildWorkflowScheduled:
        out: ev.ChildWorkflowScheduled = self.add(
            ev.ChildWorkflowScheduled,
            based_on=self.last,
            seq=seq,
            workflow_type=workflow_type,
            workflow_id=workflow_id,
            task_queue="q",
            args=args,
        )
        return out

    # results

    def completed(self, seq: int, result: JsonValue = None, attempt: int = 1) -> Any:
        return self.add(ev.ActivityCompleted, seq=seq, attempt=attempt, result=result)

    def failed(self, seq: int, failure: Failure, attempt: int = 1, retry_state: str = "") -> Any:
        return self.add(
            ev.ActivityFailed, seq=seq, attempt=attempt, failure=failure, retry_state=retry_state
        )

    def fired(self, seq: int) -> Any:
        return self.add(ev.TimerFired, seq=seq)

    def signal(self, name: str, *args: JsonValue) -> Any:
        return self.add(ev.SignalReceived, name=name, args=args)

    def cancel(self, reason: str = "") -> Any:
        return self.add(ev.CancelRequested, reason=reason)

    # endings

    def complete(self, result: JsonValue = None, based_on: int | None = None) -> Any:
        return self.add(ev.WorkflowCompleted, based_on=self._based(based_on), result=result)

    def fail(self, failure: Failure, based_on: int | None = None) -> Any:
        return self.add(ev.WorkflowFailed, based_on=self._based(based_on), failure=failure)

    def record(self, commands: tuple[Command, ...], based_on: int | None = None) -> None:
        """Append the events a server records for ``commands`` (what a worker returned)."""
        from durablefuture.core import inputs as inp
        from durablefuture.core.orchestration import APPLIED, decide
        from durablefuture.core.state import RunState

        state = RunState.from_history(self.events)
        task = inp.CompleteWorkflowTask(
            self.events[0].run_id,  # type: ignore[union-attr]
            self._based(based_on),
            commands,
        )
        decision = decide(state, task, self.now, new_run_id="run-next")
        assert decision.outcome == APPLIED, decision
        self.events.extend(decision.events)


def app_failure(message: str = "boom", type: str = "ValueError", **kw: Any) -> Failure:
    return Failure(message=message, type=type, **kw)


def primitive(cmds: tuple[Command, ...]) -> list[PrimitiveCommand]:
    from durablefuture.core.commands import (
        CancelWorkflow,
        CompleteWorkflow,
        ContinueAsNewWorkflow,
        FailWorkflow,
    )

    return [
        c
        for c in cmds
        if not isinstance(
            c, CompleteWorkflow | FailWorkflow | CancelWorkflow | ContinueAsNewWorkflow
        )
    ]


class Driver:
    """Runs a workflow the way worker + server do, with results injected by the test.

    ``step()`` feeds the events the execution has not seen and records its new commands
    (through the real orchestration ``decide``), returning the activation.
    """

    def __init__(self, fn: Callable[..., object], *args: JsonValue, **started: Any) -> None:
        from durablefuture.core.definitions import name_of

        self.fn = fn
        self.h = History(name_of(fn), *args, **started)
        self.x = execution(fn)

    def step(self) -> Activation:
        act = self.x.feed(self.h.events[self.x.last_event_id :])
        if act.commands:
            self.h.record(act.commands, based_on=act.based_on)
        return act

    def full_replay(self) -> Activation:
        return replay(self.fn, self.h.events)
