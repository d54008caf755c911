"""The wait tree: what one ``yield`` waits on.

A primitive command is a leaf; ``all_of`` / ``any_of`` are composites over their items. A leaf
resolves when its result event is delivered; a composite resolves when all (``all_of``) or the
first (``any_of``) of its children did, or at the first error. Children nobody waits for any
more are abandoned (their results, if they come, are dropped); the losers of an ``any_of``
with ``cancel_losers`` are cancelled first. A leaf started with ``df.start`` has a handle: it
is never abandoned, only detached, so ``yield task`` still gets its result later.

A node resolves to an :class:`_Outcome`: the value sent in at the ``yield``, or the error raised
there (``_activity_failed`` makes the one of a failed activity, remote or local).
"""

from __future__ import annotations

from attrs import frozen

from durablefuture.core import errors
from durablefuture.core.failure import Failure, exception_from_failure


class _Node:
    __slots__ = ("done", "error", "index", "parent", "value")

    def __init__(self) -> None:
        self.parent: _Composite | None = None
        self.index = 0
        self.done = False
        self.value: object = None
        self.error: BaseException | None = None


class _Leaf(_Node):
    __slots__ = ("cancel_requested", "handle", "kind", "name", "result_type", "seq", "wait_cancel")

    def __init__(self, seq: int, kind: str, result_type: object, name: str = "") -> None:
        super().__init__()
        self.seq = seq
        self.kind = kind
        self.result_type = result_type
        self.name = name
        self.handle = False
        self.cancel_requested = False
        self.wait_cancel = False
        """An activity whose cancellation waits for the activity to end; a condition wait
        whose timeout timer is cancelled once the condition is met."""


class _Composite(_Node):
    __slots__ = ("cancel_losers", "children", "is_any", "remaining", "values")

    def __init__(self, children: list[_Node], is_any: bool, cancel_losers: bool = False) -> None:
        super().__init__()
        self.children = children
        self.is_any = is_any
        self.cancel_losers = is_any and cancel_losers
        self.values: list[object] = [None] * len(children)
        self.remaining = len(children)
        for i, child in enumerate(children):
            child.parent = self
            child.index = i


@frozen
class _Outcome:
    value: object = None
    error: BaseException | None = None


def _activity_failed(
    leaf: _Leaf, failure: Failure, attempts: int, retry_state: str = "", what: str = "activity"
) -> _Outcome:
    """What the ``yield`` of a failed activity (or local activity) raises: ``ActivityError``
    caused by the recorded failure."""
    err = errors.ActivityError(
        f"{what} {leaf.name!r} (#{leaf.seq}) failed after {attempts} attempt(s): "
        f"{failure.describe()}",
        activity_name=leaf.name,
        activity_id=leaf.seq,
        attempt=attempts,
        retry_state=retry_state,
    )
    err.__cause__ = exception_from_failure(failure)
    return _Outcome(error=err)
