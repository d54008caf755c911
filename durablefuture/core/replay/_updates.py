"""Updates in the replay: validate a request (nothing recorded), run the handler of an accepted
one at its point in history and record what it returned or raised (``CompleteUpdate``).

An update accepted before its handler was registered waits (in history order) until
``df.workflow.set_update_handler`` registers it. A generator handler runs like the workflow
code beside it: each ``yield`` of a command waits for its result (delivered in history order
like every result), and what it returns completes the update. On replay the handler runs again
at the same point and must come to the same outcome: ``CompleteUpdate`` (and every command the
handler yielded) is matched like any command.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator
from typing import cast

from durablefuture.core import errors
from durablefuture.core import events as ev
from durablefuture.core.commands import CompleteUpdate, ContinueAsNew
from durablefuture.core.failure import Failure
from durablefuture.core.replay._context import _current
from durablefuture.core.replay._waits import _Node
from durablefuture.core.replay._yields import _Yields
from durablefuture.core.types import JsonValue

NOT_ASYNC = (
    "update handlers are plain functions or generator functions that yield commands "
    "(`result = yield df.activity(...)`), not async functions"
)
CONTINUE_IN_UPDATE = "an update handler cannot continue the run as new: let the workflow code do it"


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
        token = _current.set(self.context)
        try:
            produced = handler(*(self.payloads.from_payload(a) for a in event.args))
            if inspect.iscoroutine(produced):
                produced.close()
                raise errors.WorkflowError(f"update {event.name!r}: {NOT_ASYNC}")
        except errors.NonDeterminismError:
            raise
        except Exception as exc:
            self._complete_update(event, None, self._failure(exc))
            return
        finally:
            _current.reset(token)
        if inspect.isgenerator(produced):
            gen = cast(Generator[object, object, object], produced)
            self._step_update(gen, event, None, None, event)
        else:
            self._complete_update(event, produced, None)

    def _complete_update(
        self, event: ev.UpdateAccepted, value: object, failure: Failure | None
    ) -> None:
        result: JsonValue = None
        if failure is None:
            try:
                result = self.payloads.to_payload(value, f"the result of update {event.name!r}")
            except Exception as exc:
                failure = self._failure(exc)
        cmd = CompleteUpdate(self._next_seq, event.update_id, event.name, result, failure)
        self._issue(cmd)

    def _step_update(
        self,
        gen: Generator[object, object, object],
        event: ev.UpdateAccepted,
        value: object,
        error: BaseException | None,
        trigger: ev.Event,
    ) -> None:
        """Run a generator handler to its next wait (like ``_step`` for the workflow code);
        its return value or exception completes the update."""
        if self.finished:
            return  # the run ended first: the update never completes (its caller is told)
        self._set_time(trigger)
        stop = self._advance(gen, value, error)
        while isinstance(stop, ContinueAsNew):
            stop = self._advance(gen, None, errors.WorkflowError(CONTINUE_IN_UPDATE))
        if isinstance(stop, _Node):
            self._update_waits[stop] = (gen, event)
        else:
            failure = None if stop.error is None else self._failure(stop.error)
            self._complete_update(event, stop.value, failure)
