"""Deterministic helpers for workflow code: ``df.workflow.now()``, ``random()``, ``uuid4()``, ...

Workflow code must not read the clock, randomness or anything else that changes between a run
and its replay. These helpers give the same answers on every replay: time is the timestamp of
the history event being processed, randomness is seeded from the run id.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import random as _random
import uuid as _uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from durablefuture.core.errors import InvalidArgumentError
from durablefuture.core.replay import WorkflowInfo, current_context
from durablefuture.core.search_attributes import SearchAttributes, search_attributes
from durablefuture.core.types import check_type_name

__all__ = [
    "WorkflowInfo",
    "deprecate_patch",
    "info",
    "is_replaying",
    "logger",
    "now",
    "patched",
    "random",
    "set_query_handler",
    "set_signal_handler",
    "set_update_handler",
    "upsert_search_attributes",
    "uuid4",
]


def now() -> datetime:
    """The current time of the workflow (UTC), the same on every replay."""
    return datetime.fromtimestamp(current_context().now, tz=UTC)


def _rng() -> _random.Random:
    ctx = current_context()
    rng = ctx.extras.get("rng")
    if not isinstance(rng, _random.Random):
        run_id = ctx.execution.info().run_id
        seed = int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:8], "big")
        rng = _random.Random(seed)
        ctx.extras["rng"] = rng
    return rng


def random() -> float:
    """A deterministic random float in [0, 1)."""
    return _rng().random()


def uuid4() -> _uuid.UUID:
    """A deterministic random UUID (version 4)."""
    return _uuid.UUID(int=_rng().getrandbits(128), version=4)


def info() -> WorkflowInfo:
    """Ids, type, queue, attempt and history length/size of the running workflow."""
    return current_context().execution.info()


def is_replaying() -> bool:
    """True while the code is re-running past events (side effects should be skipped)."""
    return current_context().is_replaying


def patched(change_id: str) -> bool:
    """Branch on a code change: True for runs that reach this point with the new code.

    Runs that passed this point before the change replay the old branch (False); everything
    else takes the new branch (True) and records that it did.
    """
    return current_context().execution.patched(change_id)


def upsert_search_attributes(attributes: Mapping[str, object]) -> SearchAttributes:
    """Set search attributes of the run (a None value removes one); returns them all.

    Recorded in history (no ``yield``): a replay checks the same values are set at the same
    point, like any command. Types follow the values (str: keyword, ``df.Text``: text, int,
    float, bool, datetime, list of str: keyword list); the run's status entry is updated, so
    ``list_workflows(query=...)`` finds the run by them while it runs.
    """
    typed = search_attributes(attributes, upsert=True)
    return current_context().execution.upsert_search_attributes(typed)


def deprecate_patch(change_id: str) -> None:
    """Mark a patch as fully rolled out: old markers are accepted, no new one is recorded."""
    current_context().execution.deprecate_patch(change_id)


def set_query_handler(name: str, handler: Callable[..., object]) -> None:
    """Answer ``await handle.query(name, *args)`` with ``handler(*args)``.

    The handler reads workflow state (usually variables it closes over) and must not yield,
    sleep or change anything: a query never changes history. A worker of the run's task queue
    answers it from the state after the latest recorded event.
    """
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"query name must be a non-empty string, got {name!r}")
    if not callable(handler):
        raise InvalidArgumentError(f"query handler for {name!r} must be callable, got {handler!r}")
    queries = current_context().extras.setdefault("queries", {})
    assert isinstance(queries, dict)
    queries[name] = handler


def set_signal_handler(name: str, handler: Callable[..., object]) -> None:
    """Call ``handler(*args)`` for every signal ``name`` the run receives, in history order.

    The handler is a plain function that changes workflow state (it must not yield); the
    workflow waits on that state with ``ok = yield df.wait_condition(lambda: ...)``. Signals
    that arrived before the handler was registered are handed to it at once, in order; a
    ``df.wait_signal(name)`` that is waiting takes its signal first. An exception in the
    handler fails the run.
    """
    check_type_name(name, "signal name")
    if not callable(handler):
        raise InvalidArgumentError(f"signal handler for {name!r} must be callable, got {handler!r}")
    current_context().execution.set_signal_handler(name, handler)


def set_update_handler(
    name: str, handler: Callable[..., object], validator: Callable[..., object] | None = None
) -> None:
    """Answer ``await handle.update(name, *args)`` with ``handler(*args)``.

    ``validator(*args)``, if given, runs first on a worker holding the run, before anything is
    recorded: if it raises, the caller gets ``df.UpdateFailedError`` and history is unchanged.
    An accepted update is recorded (``UpdateAccepted``); the handler runs at that point of
    history, like a signal handler, and may change workflow state. What it returns (or raises)
    is recorded (``UpdateCompleted``) and is what the caller gets: the result, or
    ``df.UpdateFailedError`` (the run goes on). Updates accepted before the handler was
    registered are handed to it at once, in order. A replay runs the handler again at the
    same point; it must come to the same outcome. Handlers must be plain functions for now
    (not generators: to wait on an activity, let the workflow do it on the handler's state).
    """
    check_type_name(name, "update name")
    for fn, what in ((handler, "handler"), (validator, "validator")):
        if fn is None and what == "validator":
            continue
        if not callable(fn):
            raise InvalidArgumentError(f"update {what} for {name!r} must be callable, got {fn!r}")
        if inspect.isgeneratorfunction(fn) or inspect.iscoroutinefunction(fn):
            raise InvalidArgumentError(
                f"update {what} for {name!r} is a generator or async function; "
                "update handlers must be plain functions for now"
            )
    current_context().execution.set_update_handler(name, handler, validator)


class _ReplayAwareAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Drops records while replaying and tags the rest with workflow / run ids."""

    def isEnabledFor(self, level: int) -> bool:
        try:
            if current_context().is_replaying:
                return False
        except Exception:
            pass
        return bool(self.logger.isEnabledFor(level))

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        try:
            i = info()
            extra = {"workflow_id": i.workflow_id, "run_id": i.run_id}
        except Exception:
            extra = {}
        kwargs.setdefault("extra", {}).update(extra)
        return msg, kwargs


logger = _ReplayAwareAdapter(logging.getLogger("durablefuture.workflow"), {})
"""A logger for workflow code that stays silent while replaying."""
