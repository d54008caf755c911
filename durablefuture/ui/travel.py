"""Time travel: one run as it was at an event of its history (``GET /api/history-state/{id}``).

* **state** (always): events 1..N folded by ``RunState``, as the server knew the run then:
  status, pending activities with their attempt and last failure, timers, signal waits, open
  children, a cancel request, signals no wait has taken yet.
* **code** (when the UI has the run's workflow function, ``df ui --workflows``): events 1..N
  replayed through it, as a worker would right after event N: the ``file:line`` the generator is
  paused at (each frame of a ``yield from`` chain, and the source lines around the innermost),
  what it waits on, and what each query handler registered by then answers. The rest of the
  history is looked ahead at first (``WorkflowExecution.look_ahead``), so the replay calls no
  side-effect function and takes each patch's recorded branch. (At the last event of a running
  run the code may run past what history holds, exactly as when a worker answers a query.)
  Without the function there is a note instead, saying how to give it.

The replay runs the user's code: it happens in a worker thread, bounded by a timeout, and an
error in it (the code changed, a handler raised) is reported in ``code``, never as a failure of
the request: the state from history is still worth showing.
"""

from __future__ import annotations

import asyncio
import inspect
import linecache
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from durablefuture.client import Client, describe_state
from durablefuture.codec.wire import default_codec
from durablefuture.core import events as ev
from durablefuture.core.definitions import PayloadConverter, WorkflowDefinition
from durablefuture.core.errors import InvalidArgumentError, WorkflowNotFoundError
from durablefuture.core.replay import SourceFrame, WorkflowExecution, describe_command
from durablefuture.core.state import RunState
from durablefuture.core.types import JsonValue
from durablefuture.ui.views import describe_json

Archived = Callable[[str, str | None], Awaitable[list[ev.Event] | None]]
"""Reads an archived run's history: (workflow id, run id or None) -> events, None if absent."""

__all__ = [
    "REPLAY_SECONDS",
    "code_at",
    "definitions_of",
    "history_state_payload",
    "parse_event",
    "state_at",
]

log = logging.getLogger(__name__)

REPLAY_SECONDS = 10.0
"""How long replaying a prefix (and calling its query handlers) may take before we give up."""
SOURCE_CONTEXT = 4
"""Source lines shown above and below the line the code is paused at."""
NO_CODE = (
    "Query results and the source line need the workflow code: start the UI with "
    "`df ui --workflows MODULE:ATTR` (e.g. my_app.flows:order_workflow). "
    "This is the state as history records it."
)


def definitions_of(
    workflows: Sequence[Callable[..., object]],
) -> dict[str, WorkflowDefinition]:
    """The workflow functions by registered name; raises ``InvalidArgumentError`` for one that
    is not a workflow (a plain or ``async`` function)."""
    return {d.name: d for d in map(WorkflowDefinition.from_fn, workflows)}


def parse_event(raw: str | None, total: int) -> int:
    """``?event=`` as an event id of a history of ``total`` events (absent: the last one)."""
    if raw is None or raw == "":
        return total
    try:
        event_id = int(raw)
    except ValueError:
        raise InvalidArgumentError(
            f"event must be an event id (an integer from 1 to {total}), got {raw!r}"
        ) from None
    if not 1 <= event_id <= total:
        raise InvalidArgumentError(
            f"event {event_id} is not in this run's history, which has events 1 to {total}"
        )
    return event_id


def state_at(history: Sequence[ev.Event], event_id: int) -> dict[str, JsonValue]:
    """What the server knew after event ``event_id``: ``describe`` as of then, plus children."""
    state = RunState.from_history(list(history[:event_id]))
    out = describe_json(describe_state(state))
    out["children"] = [
        {
            "seq": c.seq,
            "workflow_type": c.workflow_type,
            "workflow_id": c.workflow_id,
            "run_id": c.run_id,
            "task_queue": c.task_queue,
        }
        for c in state.open_children()
    ]
    out["buffered_signals"] = {n: k for n, k in sorted(state.unclaimed_signals.items()) if k}
    return out


def _display(file: str) -> str:
    """``file`` relative to the working directory when it is below it (shorter to read)."""
    try:
        return str(Path(file).resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return file


def _frame(f: SourceFrame) -> dict[str, JsonValue]:
    return {"file": f.file, "display": _display(f.file), "line": f.line, "function": f.function}


def _source(f: SourceFrame) -> JsonValue:
    """The lines around ``f``'s line, or None when its file cannot be read."""
    linecache.checkcache(f.file)
    lines = linecache.getlines(f.file)
    if not lines or not 1 <= f.line <= len(lines):
        return None
    first = max(1, f.line - SOURCE_CONTEXT)
    last = min(len(lines), f.line + SOURCE_CONTEXT)
    return {
        **_frame(f),
        "first": first,
        "lines": [lines[n - 1].rstrip("\r\n") for n in range(first, last + 1)],
    }


def _takes_no_arguments(handler: Callable[..., object]) -> bool:
    try:
        inspect.signature(handler).bind()
    except TypeError:
        return False
    except ValueError:  # no signature to read (a builtin): try it
        return True
    return True


def _queries(execution: WorkflowExecution, payloads: PayloadConverter) -> list[JsonValue]:
    out: list[JsonValue] = []
    for name, handler in sorted(execution.query_handlers.items()):
        if not _takes_no_arguments(handler):
            out.append(
                {
                    "name": name,
                    "ok": False,
                    "needs_args": True,
                    "error": "this handler takes arguments; ask the live run with "
                    f"`df workflow query ID {name} --input '[...]'`",
                }
            )
            continue
        try:
            value = execution.query(name, ())
            result = payloads.to_payload(value, f"the result of query {name!r}")
        except Exception as exc:  # the user's handler: report it, next to the others
            out.append({"name": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
            continue
        out.append({"name": name, "ok": True, "result": result})
    return out


def code_at(
    history: Sequence[ev.Event],
    event_id: int,
    definition: WorkflowDefinition,
    payloads: PayloadConverter,
) -> dict[str, JsonValue]:
    """Replay events 1..``event_id`` through ``definition``: where the code is paused, what it
    waits on, its query handlers' answers (see the module docstring). Runs user code."""
    out: dict[str, JsonValue] = {"available": True, "note": None, "error": None}
    execution = WorkflowExecution(definition, payloads)
    execution.look_ahead(history)
    try:
        execution.feed(history[:event_id])
    except Exception as exc:  # non-determinism, or the code cannot run at all here
        log.info("replaying to event %s failed: %s", event_id, exc, extra={"event_id": event_id})
        return _no_code(None, f"{type(exc).__name__}: {exc}")
    stack = execution.suspended_stack()
    outcome = execution.outcome
    if outcome is not None:
        ended: str | None = describe_command(outcome)
    else:
        ended = "closed by the server" if execution.closed else None
    out.update(
        finished=execution.finished,
        outcome=ended,
        suspended_at=execution.suspended_at,
        stack=[_frame(f) for f in stack],
        source=_source(stack[-1]) if stack else None,
        waiting_for=[{"seq": w.seq, "kind": w.kind, "name": w.name} for w in execution.waiting_for],
        queries=_queries(execution, payloads),
    )
    return out


def _no_code(note: str | None, error: str | None = None) -> dict[str, JsonValue]:
    return {
        "available": note is None,
        "note": note,
        "error": error,
        "finished": None,
        "outcome": None,
        "suspended_at": None,
        "stack": [],
        "source": None,
        "waiting_for": [],
        "queries": [],
    }


async def history_state_payload(
    client: Client,
    workflow_id: str,
    run_id: str | None,
    event: str | None,
    definitions: Mapping[str, WorkflowDefinition],
    archived: Archived | None = None,
) -> dict[str, JsonValue]:
    """The run at one event: the event, the state then, and (with its code) the replay then.

    ``archived(workflow_id, run_id)`` reads the run's history from the archive when the
    stream no longer has it.

    Raises ``WorkflowNotFoundError`` (no such run) or ``InvalidArgumentError`` (bad ``event``).
    """
    try:
        run = run_id or await client.latest_run_id(workflow_id)
        batches = await client.history.read(workflow_id, run)
    except WorkflowNotFoundError:
        if archived is None:
            raise
        run, batches = run_id or "(latest)", []
    history = [e for b in batches for e in b.events]
    if not history and archived is not None:
        history = await archived(workflow_id, run_id) or []
    if not history:
        raise WorkflowNotFoundError(f"no history for workflow {workflow_id!r} run {run}")
    event_id = parse_event(event, len(history))
    codec = default_codec()
    started = history[0]
    workflow_type = started.workflow_type if isinstance(started, ev.WorkflowStarted) else ""
    definition = definitions.get(workflow_type)
    if definition is not None:
        try:
            code = await asyncio.wait_for(
                asyncio.to_thread(code_at, history, event_id, definition, codec.payloads),
                REPLAY_SECONDS,
            )
        except TimeoutError:
            code = _no_code(
                None,
                f"replaying to event {event_id} took longer than {REPLAY_SECONDS:g} s (the "
                "workflow code or a query handler does not return)",
            )
    elif definitions:
        code = _no_code(
            f"Workflow type {workflow_type!r} is not among the UI's workflows "
            f"({', '.join(sorted(definitions))}): add it to `df ui --workflows`. "
            "This is the state as history records it."
        )
    else:
        code = _no_code(NO_CODE)
    return {
        "workflow_id": workflow_id,
        "run_id": run,
        "workflow_type": workflow_type,
        "event_id": event_id,
        "events": len(history),
        "event": codec.encode_event(history[event_id - 1]),
        "state": state_at(history, event_id),
        "code": code,
    }
