"""The events of workflow updates (part of :mod:`durablefuture.core.events`; import them there).

An update is a request/response call into a running workflow: ``UpdateAccepted`` records the
request once its validator let it through (the handler runs at that point of history, like a
signal's), ``UpdateCompleted`` records the handler's return value or exception as a command
of the code, which a replay checks like any other.
"""

from __future__ import annotations

from attrs import field, frozen

from durablefuture.core.failure import Failure
from durablefuture.core.types import JsonValue, payloads

__all__ = ["UpdateAccepted", "UpdateCompleted"]


@frozen
class UpdateAccepted:
    """Update ``name`` (id ``update_id``) was accepted; its handler runs at this point."""

    event_id: int
    at: float
    update_id: str
    name: str
    args: tuple[JsonValue, ...] = field(default=(), converter=payloads)


@frozen
class UpdateCompleted:
    """The handler of update ``update_id`` returned ``result`` (or raised: ``failure``)."""

    event_id: int
    at: float
    based_on: int
    seq: int
    update_id: str
    name: str
    result: JsonValue = None
    failure: Failure | None = None
