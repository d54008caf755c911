"""Updates in the replay: validate a request (nothing recorded), run the handler of an accepted
one at its point in history and record what it returned or raised (``CompleteUpdate``).

An update accepted before its handler was registered waits (in history order) until
``df.workflow.set_update_handler`` registers it. On replay the handler runs again at the same
point and must come to the same outcome: ``CompleteUpdate`` is matched like any command.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from durablefuture.core import errors
from durablefuture.core import events as ev
from durablefuture.core.commands import CompleteUpdate
from durablefuture.core.failure import Failure
from durablefuture.core.replay._context import _current
from durablefuture.core.replay._yields import _Yields
from durablefuture.core.types import JsonValue

PLAIN_ONLY = (
    "update handlers must be plain functions for now (not generators or async functions): "
    "change workflow state and return the result; start longer work from the workflow "
    "itself, which can wait on that state with df.wait_condition"
)


class _Updates(_Yields):
    def set_update_handler(
        self, name: str, handler: Callable[..., object], validator: Callable[..., object] | None
    ) -> None:
        """``df.workflow.set_update_handler``: run ``handler`` for every accepted update
        ``name``; updates accepted before it was registered are handed to it now."""
        self._update_handlers[name] = (handler, validator)
        waiting = [u for u in self._updates if u.name == name]
        for update in waiting:
            self._updates.remove(update)
            if not self.finished:
                self._run_update(update)

    def validate_update(self, name: str, args: tuple[JsonValue, ...]) -> None:
        """Check, now, that update ``name`` would be accepted: the run is running, has a
        handler for it and its validator (if any) returns without raising. Records nothing.

        Raises:
            UpdateFailedError: saying why the update is rejected.
        """
        if self.finished:
            raise errors.UpdateFailedError(
                f"workflow {self.definition.name!r} has finished; it takes no update {name!r}"
            )
        found = self._update_handlers.get(name)
        if found is None:
            raise errors.UpdateFailedError(
                f"workflow {self.definition.name!r} has no update handler {name!r} (it has "
                f"{sorted(self._update_handlers) or 'none'}); register one with "
                "df.workflow.set_update_handler"
            )
        validator = found[1]
        if validator is None:
            return
        token = _current.set(self.context)
        replaying = self.context.is_replaying
        self.context.is_replaying = False
        try:
            validator(*(self.payloads.from_payload(a) for a in args))
        except Exception as exc:
            raise errors.UpdateFailedError(
                f"update {name!r} was rejected by its validator: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            self.context.is_replaying = replaying
            _current.reset(token)

    def _set_time(self, event: ev.Event) -> None:
        self.context.now = event.at
        self.context.event_id = event.event_id
        self.context.is_replaying = event.event_id <= self._horizon

    def _update_arrived(self, event: ev.UpdateAccepted) -> None:
        if event.name in self._update_handlers:
            self._run_update(event)
        else:
            self._updates.append(event)

    def _run_update(self, event: ev.UpdateAccepted) -> None:
        handler = self._update_handlers[event.name][0]
        self._set_time(event)
        result: JsonValue = None
        failure: Failure | None = None
        token = _current.set(self.context)
        try:
            produced = handler(*(self.payloads.from_payload(a) for a in event.args))
            if inspect.isgenerator(produced) or inspect.iscoroutine(produced):
                produced.close()
                raise errors.WorkflowError(f"update {event.name!r}: {PLAIN_ONLY}")
            result = self.payloads.to_payload(produced, f"the result of update {event.name!r}")
        except errors.NonDeterminismError:
            raise
        except Exception as exc:
            failure = self._failure(exc)
        finally:
            _current.reset(token)
        cmd = CompleteUpdate(self._next_seq, event.update_id, event.name, result, failure)
        self._issue(cmd)
