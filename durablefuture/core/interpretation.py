"""One interpreter of effects, shared by the df-server and the in-memory Simulation.

``interpret(effect, handler)`` maps each effect type to one method of an
:class:`EffectHandler` (a table, not a ladder), and turns the effects that are messages to a
run (notify a parent, cancel or terminate a child) into that run's input with a message id
built from stable facts. The server's handler publishes to NATS and returns an awaitable; the
Simulation's handler acts in memory and returns None. What each effect means is decided here,
once; how it travels is the handler's business. An effect type without an entry goes to
``handler.unsupported``, which must raise an error naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from durablefuture.core import inputs as inp
from durablefuture.core.effects import (
    ArmTimer,
    CancelActivities,
    CancelChildRun,
    DeliverInput,
    DispatchActivityTask,
    DispatchWorkflowTask,
    Effect,
    IndexRun,
    NotifyParent,
    StartRun,
    TerminateChildRun,
    UpdateStatus,
)

__all__ = ["EffectHandler", "RunMessage", "interpret", "message_of"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

RunMessage = tuple[str, inp.RunInput, str]
"""``(workflow_id, input, message id)``: an input for the latest run of ``workflow_id`` (its
``run_id`` may be empty: the receiver resolves it), deduplicated by the message id."""


class EffectHandler(Protocol[T_co]):
    """What a runtime does for each kind of effect."""

    def dispatch_workflow_task(self, effect: DispatchWorkflowTask) -> T_co: ...

    def dispatch_activity_task(self, effect: DispatchActivityTask) -> T_co: ...

    def arm_timer(self, effect: ArmTimer) -> T_co: ...

    def start_run(self, effect: StartRun) -> T_co: ...

    def send_to_run(self, message: RunMessage) -> T_co: ...

    def cancel_activities(self, effect: CancelActivities) -> T_co: ...

    def update_status(self, effect: UpdateStatus) -> T_co: ...

    def index_run(self, effect: IndexRun) -> T_co: ...

    def unsupported(self, effect: object) -> T_co:
        """Raise an error naming ``effect``: this runtime cannot carry it out."""
        ...


def message_of(
    effect: NotifyParent | CancelChildRun | TerminateChildRun | DeliverInput,
) -> RunMessage:
    """The input an effect sends to another run, and its message id."""
    if isinstance(effect, DeliverInput):
        msg_in = effect.input  # run_id "": the receiver finds the workflow's running run
        return effect.workflow_id, msg_in, f"{msg_in.run_id}:{msg_in.input_id}"
    if isinstance(effect, NotifyParent):
        p = effect.parent
        msg: inp.RunInput
        if effect.started:
            msg = inp.RecordChildStarted(p.run_id, p.seq, effect.child_run_id)
        else:
            msg = inp.RecordChildClosed(
                p.run_id, p.seq, effect.child_run_id, effect.result, effect.failure
            )
        return p.workflow_id, msg, f"{msg.run_id}:{msg.input_id}"
    # A child is its chain of runs: the run that started may have continued as new since, so
    # the parent's cancel or terminate goes to the latest run of the child's id (no run id).
    if isinstance(effect, CancelChildRun):
        cancel = inp.RequestCancel("", effect.request_id, effect.reason)
        return effect.workflow_id, cancel, f"cxl:{effect.request_id}"
    term = inp.TerminateWorkflow("", effect.request_id, effect.reason)
    return effect.workflow_id, term, f"trm:{effect.request_id}"


def _to_run(handler: EffectHandler[T], effect: Any) -> T:
    return handler.send_to_run(message_of(effect))


_TABLE: dict[type, Callable[[EffectHandler[Any], Any], Any]] = {
    DispatchWorkflowTask: lambda h, e: h.dispatch_workflow_task(e),
    DispatchActivityTask: lambda h, e: h.dispatch_activity_task(e),
    ArmTimer: lambda h, e: h.arm_timer(e),
    StartRun: lambda h, e: h.start_run(e),
    NotifyParent: _to_run,
    CancelChildRun: _to_run,
    TerminateChildRun: _to_run,
    DeliverInput: _to_run,
    CancelActivities: lambda h, e: h.cancel_activities(e),
    UpdateStatus: lambda h, e: h.update_status(e),
    IndexRun: lambda h, e: h.index_run(e),
}


def interpret(effect: Effect, handler: EffectHandler[T]) -> T:
    """Carry out ``effect`` with ``handler`` (see module docstring)."""
    route = _TABLE.get(type(effect))
    if route is None:
        return handler.unsupported(effect)
    result: T = route(handler, effect)
    return result
