"""Replay a recorded history against the current workflow code (a determinism check)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from durablefuture.codec.wire import default_codec
from durablefuture.core import events as ev
from durablefuture.core.definitions import WorkflowDefinition
from durablefuture.core.errors import InvalidArgumentError, NotRegisteredError
from durablefuture.core.replay import Activation, WorkflowExecution

__all__ = ["Replayer"]


class Replayer:
    """``Replayer(workflows=[...]).replay(history)`` raises NonDeterminismError on a mismatch.

    ``history`` is what ``handle.fetch_history()`` returns (a list of events), or the raw JSON
    list of events that ``df workflow history --json`` prints.
    """

    def __init__(self, workflows: Sequence[Callable[..., object]]) -> None:
        self._defs = {d.name: d for d in map(WorkflowDefinition.from_fn, workflows)}
        self._codec = default_codec()

    def replay(self, history: Sequence[ev.Event] | Sequence[dict[str, object]]) -> Activation:
        events = [e if not isinstance(e, dict) else self._codec.decode_event(e) for e in history]
        if not events or not isinstance(events[0], ev.WorkflowStarted):
            raise InvalidArgumentError(
                "a history starts with WorkflowStarted; got an empty or partial one"
            )
        started = events[0]
        definition = self._defs.get(started.workflow_type)
        if definition is None:
            raise NotRegisteredError(
                f"workflow {started.workflow_type!r} is not among the replayer's workflows "
                f"{sorted(self._defs)}"
            )
        return WorkflowExecution(definition, self._codec.payloads).feed(events)
