"""The commands a workflow yields: ``df.activity``, ``df.sleep``, ``df.all_of``, ...

Each helper validates and encodes its arguments *here*, at the call site, so a mistake (an
unencodable argument, a wrong argument count, a negative duration) raises where it was made.
Each also notes that call site (file and line; one frame lookup), so a command returned or
passed on instead of being yielded is reported with the line that built it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

from durablefuture.codec.wire import default_codec
from durablefuture.core.commands import (
    ActivityCall,
    AllOf,
    AnyOf,
    Cancel,
    CancelExternal,
    ChildWorkflowCall,
    ContinueAsNew,
    Handle,
    LocalActivityCall,
    SideEffect,
    SignalExternal,
    Site,
    Sleep,
    Start,
    WaitCondition,
    WaitSignal,
    Yieldable,
)
from durablefuture.core.definitions import bind_args, name_of, result_type_of
from durablefuture.core.errors import InvalidArgumentError
from durablefuture.core.options import ActivityOptions, ParentClosePolicy
from durablefuture.core.types import (
    Duration,
    JsonValue,
    check_name,
    check_type_name,
    check_workflow_id,
    optional_seconds,
    seconds,
)

__all__ = [
    "activity",
    "all_of",
    "any_of",
    "cancel",
    "cancel_workflow",
    "child_workflow",
    "continue_as_new",
    "local_activity",
    "side_effect",
    "signal_workflow",
    "sleep",
    "start",
    "wait_condition",
    "wait_signal",
]

_YIELDABLE = (
    ActivityCall,
    LocalActivityCall,
    SignalExternal,
    CancelExternal,
    Sleep,
    WaitSignal,
    WaitCondition,
    SideEffect,
    ChildWorkflowCall,
    AllOf,
    AnyOf,
    Handle,
)


def _site() -> Site:
    """Where the caller of a ``df.*`` helper is."""
    frame = sys._getframe(2)
    return (frame.f_code.co_filename, frame.f_lineno)


def _encode_args(args: tuple[object, ...], what: str) -> tuple[JsonValue, ...]:
    return default_codec().payloads.to_payloads(args, what)


def activity(
    fn: Callable[..., object] | str,
    *args: object,
    options: ActivityOptions | None = None,
    result_type: object = None,
) -> ActivityCall:
    """Run an activity. ``result = yield df.activity(charge, order_id, amount)``.

    Args:
        fn: the activity function, or its registered name.
        args: positional arguments, encoded as JSON now (an unencodable one raises here).
        options: timeouts, retry policy and task queue (``df.ActivityOptions``).
        result_type: type to structure the result into (defaults to ``fn``'s return hint).

    The yield returns the activity's result, or raises ``df.ActivityError`` once retries are
    exhausted (``.cause`` holds the last attempt's error).
    """
    name = name_of(fn, "activity")
    if options is not None and not isinstance(options, ActivityOptions):
        raise InvalidArgumentError(f"options must be a df.ActivityOptions, got {options!r}")
    if not isinstance(fn, str):
        bind_args(fn, args, "activity")
    return ActivityCall(
        name=name,
        args=_encode_args(args, f"activity {name!r}"),
        options=options,
        result_type=result_type if result_type is not None else result_type_of(fn),
        site=_site(),
    )


def sleep(duration: Duration) -> Sleep:
    """A durable timer: ``yield df.sleep(timedelta(hours=1))`` survives any crash."""
    return Sleep(seconds(duration, "sleep duration"), _site())


def wait_signal(
    name: str, timeout: Duration | None = None, *, result_type: object = None
) -> WaitSignal:
    """Wait for the next signal ``name``; returns its argument (a tuple if it had several).

    With ``timeout``, raises ``df.TimeoutError`` if no signal arrives in time. Signals that
    arrive before the workflow waits are buffered, in order.
    """
    check_type_name(name, "signal name")
    t = optional_seconds(timeout, "wait_signal timeout")
    return WaitSignal(name, t, result_type, _site())


def wait_condition(
    predicate: Callable[[], object], timeout: Duration | None = None
) -> WaitCondition:
    """Wait until ``predicate()`` is true: ``ok = yield df.wait_condition(lambda: ..., timeout=5)``.

    The predicate is checked at once and again after every event the run receives (a signal
    handled by ``df.workflow.set_signal_handler``, an activity result, ...). The yield returns
    True when it holds, or False when ``timeout`` passes first (a durable timer). It must only
    read workflow state: no yield, no side effects.
    """
    if not callable(predicate):
        raise InvalidArgumentError(f"df.wait_condition takes a function, got {predicate!r}")
    t = optional_seconds(timeout, "wait_condition timeout")
    return WaitCondition(predicate, t, _site())


def side_effect(fn: Callable[[], object], *, result_type: object = None) -> SideEffect:
    """Run ``fn`` once and record its result; on replay the recorded value is returned."""
    if not callable(fn):
        raise InvalidArgumentError(f"df.side_effect takes a function, got {fn!r}")
    return SideEffect(fn, result_type if result_type is not None else result_type_of(fn), _site())


def child_workflow(
    fn: Callable[..., object] | str,
    *args: object,
    id: str | None = None,
    task_queue: str | None = None,
    execution_timeout: Duration | None = None,
    parent_close_policy: ParentClosePolicy = ParentClosePolicy.REQUEST_CANCEL,
    result_type: object = None,
) -> ChildWorkflowCall:
    """Start a child workflow and wait for its result (or ``df.ChildWorkflowError``)."""
    name = name_of(fn, "workflow")
    if not isinstance(fn, str):
        bind_args(fn, args, "workflow")
    if task_queue is not None:
        check_name(task_queue)
    if id is not None:
        check_workflow_id(id, "child workflow id")
    if not isinstance(parent_close_policy, ParentClosePolicy):
        raise InvalidArgumentError(
            f"parent_close_policy must be a df.ParentClosePolicy, got {parent_close_policy!r}"
        )
    return ChildWorkflowCall(
        workflow_type=name,
        args=_encode_args(args, f"child workflow {name!r}"),
        workflow_id=id,
        task_queue=task_queue,
        execution_timeout=optional_seconds(execution_timeout, "execution_timeout"),
        parent_close_policy=parent_close_policy,
        result_type=result_type if result_type is not None else result_type_of(fn),
        site=_site(),
    )


def continue_as_new(
    *args: object,
    workflow: Callable[..., object] | str | None = None,
    task_queue: str | None = None,
) -> ContinueAsNew:
    """End this run and start a new one with ``args`` and an empty history (same workflow id)."""
    if task_queue is not None:
        check_name(task_queue)
    return ContinueAsNew(
        args=_encode_args(args, "continue_as_new"),
        workflow_type=None if workflow is None else name_of(workflow, "workflow"),
        task_queue=task_queue,
        site=_site(),
    )


def _items(cmds: tuple[object, ...], what: str) -> tuple[Yieldable, ...]:
    only = cmds[0] if len(cmds) == 1 else None
    if isinstance(only, Iterable) and not isinstance(only, (str, *_YIELDABLE)):
        cmds = tuple(only)
    for i, c in enumerate(cmds):
        if not isinstance(c, _YIELDABLE):
            raise InvalidArgumentError(
                f"{what} item {i} is {c!r}; pass commands such as df.activity(...) or df.sleep(...)"
            )
    return tuple(cmds)  # type: ignore[arg-type]


def all_of(*commands: Yieldable | Iterable[Yieldable]) -> AllOf:
    """Run commands in parallel; the yield returns the list of their results.

    Fails fast: the first failure is raised at the yield.
    """
    return AllOf(_items(commands, "df.all_of"), _site())


def any_of(*commands: Yieldable | Iterable[Yieldable], cancel_losers: bool = True) -> AnyOf:
    """Run commands in parallel; the yield returns ``(index, result)`` of the first to finish.

    With ``cancel_losers`` (the default) the activities, timers and child workflows this
    ``any_of`` started that did not finish first are cancelled (``df.cancel``); handles of
    work started earlier with ``df.start`` are left running. ``cancel_losers=False`` lets the
    losers run to the end, their results ignored.
    """
    items = _items(commands, "df.any_of")
    if not items:
        raise InvalidArgumentError("df.any_of needs at least one command")
    return AnyOf(items, _site(), bool(cancel_losers))


MAX_LOCAL_ACTIVITY_SECONDS = 60.0


def local_activity(
    fn: Callable[..., object] | str,
    *args: object,
    options: ActivityOptions | None = None,
    result_type: object = None,
) -> LocalActivityCall:
    """Run a short function in the workflow worker: ``v = yield df.local_activity(fn, x, ...)``.

    No task queue round trip: the workflow task runs it (retried per the options' retry
    policy) and records only its outcome, as one event. For short calls: ``options`` must set
    ``start_to_close_timeout`` (at most 60 s), and all attempts together stop after
    ``schedule_to_close_timeout`` or 60 s. At least once: a worker that dies before the
    workflow task is recorded runs it again. ``df.heartbeat`` and ``df.activity_info`` are not
    available in it. The yield returns its result or raises ``df.ActivityError``.
    """
    name = name_of(fn, "activity")
    if not isinstance(options, ActivityOptions) or options.start_to_close_timeout is None:
        raise InvalidArgumentError(
            f"df.local_activity({name!r}) needs options=df.ActivityOptions("
            "start_to_close_timeout=...) of at most 60 s"
        )
    for what, limit in (
        ("start_to_close_timeout", options.start_to_close_timeout),
        ("schedule_to_close_timeout", options.schedule_to_close_timeout),
    ):
        if limit is not None and limit > MAX_LOCAL_ACTIVITY_SECONDS:
            raise InvalidArgumentError(
                f"df.local_activity({name!r}): {what} is {limit:g}s; a local activity may run "
                "at most 60 s (use df.activity for longer work)"
            )
    if not isinstance(fn, str):
        bind_args(fn, args, "activity")
    return LocalActivityCall(
        name=name,
        args=_encode_args(args, f"local activity {name!r}"),
        options=options,
        fn=None if isinstance(fn, str) else fn,
        result_type=result_type if result_type is not None else result_type_of(fn),
        site=_site(),
    )


def signal_workflow(workflow_id: str, name: str, *args: object) -> SignalExternal:
    """Signal another workflow: ``yield df.signal_workflow("order-7", "approve", "ann")``.

    Recorded in this run's history, then delivered by the df-server to the running run of
    ``workflow_id`` (exactly once, whatever crashes); the yield returns None once it is
    recorded. A signal to a workflow with no running run is dropped. A child started with
    ``df.start`` is signalled with ``yield child.signal(name, *args)``.
    """
    check_workflow_id(workflow_id, "workflow id")
    check_type_name(name, "signal name")
    _encode_args(args, f"signal {name!r}")  # an unencodable argument raises here
    return SignalExternal(workflow_id, name, args, _site())


def cancel_workflow(workflow_id: str, reason: str = "") -> CancelExternal:
    """Ask another workflow to cancel: ``yield df.cancel_workflow("order-7")``.

    Recorded, then delivered like ``handle.cancel()`` from a client: ``df.CancelledError`` is
    raised at that workflow's current yield. The yield returns None once it is recorded.
    """
    check_workflow_id(workflow_id, "workflow id")
    if not isinstance(reason, str):
        raise InvalidArgumentError(f"reason must be a string, got {reason!r}")
    return CancelExternal(workflow_id, reason, _site())


def start(command: ActivityCall | ChildWorkflowCall | Sleep) -> Start:
    """Start work without waiting for it: ``task = yield df.start(df.activity(...))``.

    The yield returns a ``df.Handle`` at once; ``result = yield task`` waits for the result,
    ``yield df.cancel(task)`` cancels it, and ``df.all_of`` / ``df.any_of`` accept it.
    """
    if not isinstance(command, ActivityCall | ChildWorkflowCall | Sleep):
        raise InvalidArgumentError(
            f"df.start takes df.activity(...), df.child_workflow(...) or df.sleep(...), got "
            f"{command!r}"
        )
    return Start(command, _site())


def cancel(handle: Handle) -> Cancel:
    """Cancel started work: ``yield df.cancel(task)`` (returns None at once).

    A timer never fires and ``yield task`` raises ``df.CancelledError``. An activity's running
    attempt is told to stop (``asyncio.CancelledError`` in async code; ``df.heartbeat()``
    raises and ``df.activity_info().is_cancelled`` is True in sync code); ``yield task``
    raises ``df.ActivityError`` (cause ``df.CancelledError``) at once, or with
    ``ActivityCancellationType.WAIT_CANCELLATION_COMPLETED`` once the activity ended. A child
    workflow is asked to cancel; ``yield task`` raises ``df.ChildWorkflowError`` when it ended.
    Cancelling work that already ended does nothing.
    """
    if not isinstance(handle, Handle):
        raise InvalidArgumentError(
            f"df.cancel takes a handle from `task = yield df.start(...)`, got {handle!r}"
        )
    return Cancel(handle, _site())
