"""What workflow code yields, and what a workflow task sends back to the server.

Two layers:

* **Yieldables** (``ActivityCall``, ``Sleep``, ``AllOf``, ...) are what a workflow generator
  yields. The public helpers ``df.activity(...)``, ``df.sleep(...)``, ``df.all_of(...)`` build them.
* **Commands** (``ScheduleActivity``, ``StartTimer``, ``CompleteWorkflow``, ...) are requests,
  in the imperative, that the replayer derives from yieldables. Each primitive command carries
  ``seq``: its position (1-based) among the commands the run has issued. ``seq`` is also the
  activity id / timer id that links a later result event back to its command.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import field, frozen

from durablefuture.core import _command_types
from durablefuture.core._command_types import *  # noqa: F403 (the commands, re-exported)
from durablefuture.core.errors import InvalidArgumentError
from durablefuture.core.options import ActivityOptions, ParentClosePolicy
from durablefuture.core.types import JsonValue, payloads

__all__ = [
    "YIELDABLE_TYPES",
    "ActivityCall",
    "AllOf",
    "AnyOf",
    "Cancel",
    "CancelExternal",
    "ChildWorkflowCall",
    "ContinueAsNew",
    "Handle",
    "LocalActivityCall",
    "SideEffect",
    "SignalExternal",
    "Site",
    "Sleep",
    "Start",
    "WaitCondition",
    "WaitSignal",
    "Yieldable",
    "describe_yieldable",
]
__all__ += _command_types.__all__


# --------------------------------------------------------------------------- yieldables

Site = tuple[str, int]
"""``(file, line)`` where ``df.activity(...)`` & co. were called: named when a command is
returned or passed as a value instead of being yielded (a forgotten ``yield``)."""


@frozen
class ActivityCall:
    """Run activity ``name`` with ``args``; the yield returns its result or raises ActivityError."""

    name: str
    args: tuple[JsonValue, ...] = field(default=(), converter=payloads)
    options: ActivityOptions | None = None
    result_type: object = field(default=None, eq=False, repr=False)
    site: Site | None = field(default=None, eq=False, repr=False)


@frozen
class Sleep:
    """A durable timer of ``duration`` seconds."""

    duration: float
    site: Site | None = field(default=None, eq=False, repr=False)


@frozen
class WaitSignal:
    """Wait for the next signal called ``name``; with ``timeout`` raise df.TimeoutError after it."""

    name: str
    timeout: float | None = None
    result_type: object = field(default=None, eq=False, repr=False)
    site: Site | None = field(default=None, eq=False, repr=False)


@frozen
class WaitCondition:
    """Wait until ``predicate()`` is true; the yield returns True, or False after ``timeout``.

    The predicate is evaluated when yielded and again after every event delivered to the run
    (a signal handler that changed the state, a result, ...), so it must only read workflow
    state and must not yield or have side effects.
    """

    predicate: Callable[[], object] = field(eq=False)
    timeout: float | None = None
    site: Site | None = field(default=None, eq=False, repr=False)


@frozen
class SideEffect:
    """Run ``fn`` once and record its result; replays return the recorded value."""

    fn: Callable[[], object] = field(eq=False)
    result_type: object = field(default=None, eq=False, repr=False)
    site: Site | None = field(default=None, eq=False, repr=False)


@frozen
class ChildWorkflowCall:
    """Start a child workflow and wait for its result (or ChildWorkflowError)."""

    workflow_type: str
    args: tuple[JsonValue, ...] = field(default=(), converter=payloads)
    workflow_id: str | None = None
    task_queue: str | None = None
    execution_timeout: float | None = None
    parent_close_policy: ParentClosePolicy = ParentClosePolicy.REQUEST_CANCEL
    result_type: object = field(default=None, eq=False, repr=False)
    site: Site | None = field(default=None, eq=False, repr=False)


@frozen
class ContinueAsNew:
    """End this run and start a fresh one (empty history) under the same workflow id."""

    args: tuple[JsonValue, ...] = field(default=(), converter=payloads)
    workflow_type: str | None = None
    task_queue: str | None = None
    site: Site | None = field(default=None, eq=False, repr=False)


@frozen
class AllOf:
    """Wait for all items; the yield returns the list of their results (fails fast)."""

    items: tuple[Yieldable, ...]
    site: Site | None = field(default=None, eq=False, repr=False)


@frozen
class AnyOf:
    """Wait for the first item to finish; the yield returns ``(index, result)``. With
    ``cancel_losers`` the activities, timers and child workflows it started that did not win
    are cancelled (handles passed in are left alone)."""

    items: tuple[Yieldable, ...]
    site: Site | None = field(default=None, eq=False, repr=False)
    cancel_losers: bool = True


class Handle:
    """Work started with ``task = yield df.start(...)``: ``result = yield task`` waits for it,
    ``yield df.cancel(task)`` cancels it, and ``df.all_of`` / ``df.any_of`` accept it."""

    __slots__ = ("_node", "kind", "name", "seq", "workflow_id")

    def __init__(
        self, seq: int, kind: str, name: str, node: object, workflow_id: str | None = None
    ) -> None:
        self.seq = seq
        self.kind = kind
        """``activity``, ``timer`` or ``child``."""
        self.name = name
        self._node = node
        self.workflow_id = workflow_id
        """A child's workflow id (None for activities and timers)."""

    def signal(self, name: str, *args: object) -> SignalExternal:
        """``yield child.signal(name, *args)``: signal the child workflow this handle started."""
        if self.workflow_id is None:
            raise InvalidArgumentError(
                f"only a child workflow's handle can be signalled, not {self!r}"
            )
        return SignalExternal(self.workflow_id, name, args)

    @property
    def done(self) -> bool:
        """True once the work ended (its result or error is known to the workflow)."""
        return bool(getattr(self._node, "done", False))

    def __repr__(self) -> str:
        state = "done" if self.done else "running"
        return f"<df.Handle {self.kind} #{self.seq} {self.name!r} {state}>"


@frozen
class LocalActivityCall:
    """Run ``fn`` in the workflow worker (a local activity); the yield returns its result or
    raises ActivityError. Only its outcome is recorded, as one event."""

    name: str
    args: tuple[JsonValue, ...] = field(default=(), converter=payloads)
    options: ActivityOptions | None = None
    fn: Callable[..., object] | None = field(default=None, eq=False, repr=False)
    result_type: object = field(default=None, eq=False, repr=False)
    site: Site | None = field(default=None, eq=False, repr=False)


@frozen
class SignalExternal:
    """Send signal ``name`` with ``args`` to the running workflow ``workflow_id``."""

    workflow_id: str
    name: str
    args: tuple[object, ...] = field(default=(), eq=False)
    """Encoded by the replay when yielded (an unencodable argument raises at the yield)."""
    site: Site | None = field(default=None, eq=False, repr=False)


@frozen
class CancelExternal:
    """Ask the running workflow ``workflow_id`` to cancel."""

    workflow_id: str
    reason: str = ""
    site: Site | None = field(default=None, eq=False, repr=False)


@frozen
class Start:
    """Issue ``item`` (an activity, child workflow or sleep) and return its Handle at once."""

    item: ActivityCall | ChildWorkflowCall | Sleep
    site: Site | None = field(default=None, eq=False, repr=False)


@frozen
class Cancel:
    """Request the cancellation of started work; the yield returns None at once."""

    handle: Handle = field(eq=False)
    site: Site | None = field(default=None, eq=False, repr=False)


Yieldable = (
    ActivityCall
    | Sleep
    | WaitSignal
    | WaitCondition
    | SideEffect
    | ChildWorkflowCall
    | AllOf
    | AnyOf
    | Handle
    | Start
    | Cancel
    | SignalExternal
    | CancelExternal
    | LocalActivityCall
)

YIELDABLE_TYPES: tuple[type, ...] = (
    ActivityCall,
    Sleep,
    WaitSignal,
    WaitCondition,
    SideEffect,
    ChildWorkflowCall,
    AllOf,
    AnyOf,
    Handle,
    Start,
    Cancel,
    SignalExternal,
    CancelExternal,
    LocalActivityCall,
    ContinueAsNew,
)
"""Everything a workflow may yield (``ContinueAsNew`` included)."""


def describe_yieldable(item: object) -> str:
    """How the code wrote it: ``df.activity('charge', ...)``, ``df.sleep(5)``, ..."""
    if isinstance(item, ActivityCall):
        return f"df.activity({item.name!r}{', ...' if item.args else ''})"
    if isinstance(item, Sleep):
        return f"df.sleep({item.duration:g})"
    if isinstance(item, WaitSignal):
        return f"df.wait_signal({item.name!r})"
    if isinstance(item, WaitCondition):
        return "df.wait_condition(...)"
    if isinstance(item, SideEffect):
        return "df.side_effect(...)"
    if isinstance(item, ChildWorkflowCall):
        return f"df.child_workflow({item.workflow_type!r}{', ...' if item.args else ''})"
    if isinstance(item, AllOf | AnyOf):
        kind = "all_of" if isinstance(item, AllOf) else "any_of"
        return f"df.{kind}({', '.join(describe_yieldable(i) for i in item.items)})"
    if isinstance(item, ContinueAsNew):
        return "df.continue_as_new(...)"
    if isinstance(item, Start):
        return f"df.start({describe_yieldable(item.item)})"
    if isinstance(item, Cancel):
        return f"df.cancel({item.handle!r})"
    if isinstance(item, Handle):
        return repr(item)
    if isinstance(item, SignalExternal):
        return f"df.signal_workflow({item.workflow_id!r}, {item.name!r}, ...)"
    if isinstance(item, CancelExternal):
        return f"df.cancel_workflow({item.workflow_id!r})"
    if isinstance(item, LocalActivityCall):
        return f"df.local_activity({item.name!r}{', ...' if item.args else ''})"
    return repr(item)
