"""What workflow code can ask about its run, and what a replay hands back.

``current_context()`` is how ``df.workflow.now()`` & co. find the run whose code is running:
a context variable set only while the generator runs.
"""

from __future__ import annotations

import contextvars
from collections.abc import Generator
from typing import TYPE_CHECKING

from attrs import frozen

from durablefuture.core import errors
from durablefuture.core import events as ev
from durablefuture.core.commands import (
    CancelWorkflow,
    Command,
    CompleteWorkflow,
    ContinueAsNewWorkflow,
    FailWorkflow,
    TerminalCommand,
)

if TYPE_CHECKING:
    from durablefuture.core.replay._execution import WorkflowExecution

__all__ = [
    "Activation",
    "SourceFrame",
    "WaitingFor",
    "WorkflowContext",
    "WorkflowInfo",
    "current_context",
]


@frozen
class WorkflowInfo:
    """What ``df.workflow.info()`` returns."""

    workflow_id: str
    run_id: str
    workflow_type: str
    namespace: str
    task_queue: str
    start_time: float
    attempt: int = 1
    continued_from: str | None = None
    first_run_id: str = ""
    parent: ev.ParentRef | None = None
    history_length: int = 0
    history_size: int = 0
    is_replaying: bool = False
    continue_as_new_suggested: bool = False
    """The history has reached the namespace's warning length or size: continue as new
    (``df.continue_as_new``) before it reaches the limit, where the run is ended."""


class WorkflowContext:
    """Per-run state read by the deterministic helpers in ``df.workflow``."""

    __slots__ = ("event_id", "execution", "extras", "is_replaying", "now")

    def __init__(self, execution: WorkflowExecution) -> None:
        self.execution = execution
        self.now = 0.0
        self.event_id = 0
        self.is_replaying = False
        self.extras: dict[str, object] = {}


_current: contextvars.ContextVar[WorkflowContext | None] = contextvars.ContextVar(
    "durablefuture_workflow_context", default=None
)


def current_context() -> WorkflowContext:
    """The context of the workflow whose code is running now."""
    ctx = _current.get()
    if ctx is None:
        raise errors.WorkflowError(
            "this helper only works inside workflow code (a generator run by a DurableFuture "
            "worker or df.testing.Replayer)"
        )
    return ctx


@frozen
class Activation:
    """The outcome of feeding events: new commands to record, and whether the run finished."""

    based_on: int
    commands: tuple[Command, ...] = ()
    finished: bool = False

    @property
    def terminal(self) -> TerminalCommand | None:
        if self.commands and isinstance(
            self.commands[-1],
            CompleteWorkflow | FailWorkflow | CancelWorkflow | ContinueAsNewWorkflow,
        ):
            return self.commands[-1]
        return None


def _location(gen: Generator[object, object, object]) -> str:
    """``file:line`` of the innermost suspended yield (follows ``yield from``)."""
    inner: object = gen
    frame = None
    for _ in range(64):
        frame = getattr(inner, "gi_frame", None) or frame
        nxt = getattr(inner, "gi_yieldfrom", None)
        if nxt is None:
            break
        inner = nxt
    if frame is None:
        return "<finished generator>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


@frozen
class SourceFrame:
    """One frame of suspended workflow code: the function and the line it is paused at."""

    file: str
    line: int
    function: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@frozen
class WaitingFor:
    """A command the suspended code waits on: ``kind`` is activity, timer, signal or child."""

    seq: int
    kind: str
    name: str = ""


def _frames(gen: Generator[object, object, object]) -> tuple[SourceFrame, ...]:
    """The suspended frames, outermost first (follows ``yield from``, as ``_location`` does)."""
    out: list[SourceFrame] = []
    inner: object = gen
    for _ in range(64):
        frame = getattr(inner, "gi_frame", None)
        if frame is not None:
            code = frame.f_code
            out.append(SourceFrame(code.co_filename, frame.f_lineno, code.co_name))
        nxt = getattr(inner, "gi_yieldfrom", None)
        if nxt is None:
            break
        inner = nxt
    return tuple(out)
