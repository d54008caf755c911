"""Running the generator, and delivering result events to the ``yield`` waiting for them."""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Generator
from typing import cast

from attrs import evolve

from durablefuture.core import errors
from durablefuture.core import events as ev
from durablefuture.core.commands import (
    CancelWorkflow,
    CompleteWorkflow,
    ContinueAsNew,
    ContinueAsNewWorkflow,
    FailWorkflow,
    PendingSignal,
    RequestCancellation,
)
from durablefuture.core.failure import exception_from_failure
from durablefuture.core.replay._context import _current
from durablefuture.core.replay._updates import _Updates
from durablefuture.core.replay._waits import _activity_failed, _Leaf, _Node, _Outcome
from durablefuture.core.types import JsonValue


class _Running(_Updates):
    def _start(self, started: ev.WorkflowStarted) -> None:
        self._set_time(started)
        token = _current.set(self.context)
        try:
            args = self.definition.structure_args(self.payloads, started.args)
            produced = self.definition.fn(*args)
        except Exception as exc:
            self._finish(FailWorkflow(self._failure(exc)))
            return
        finally:
            _current.reset(token)
        if inspect.isgenerator(produced):
            self._gen = cast(Generator[object, object, object], produced)
            self._step(None, None, started)
        elif inspect.iscoroutine(produced):
            produced.close()
            err = errors.WorkflowError(
                f"workflow {self.definition.name!r} is an async function; workflows are "
                "generator functions: write `result = yield df.activity(...)`"
            )
            self._finish(FailWorkflow(self._failure(err)))
        else:
            self._complete(produced)

    def _step(self, value: object, error: BaseException | None, trigger: ev.Event) -> None:
        gen = self._gen
        if gen is None or self.finished:
            return
        self._set_time(trigger)
        stop = self._advance(gen, value, error)
        if isinstance(stop, _Node):
            self._root = stop
        elif isinstance(stop, ContinueAsNew):
            # the signals the code buffered and never took; those not delivered yet (still
            # queued, or fed later) are added as they are delivered (see _hand_on)
            unconsumed = sorted(
                (eid, name, args) for name, q in self._signals.items() for eid, args in q
            )
            self._finish(
                ContinueAsNewWorkflow(
                    args=stop.args,
                    workflow_type=stop.workflow_type,
                    task_queue=stop.task_queue,
                    signals=tuple(PendingSignal(n, a) for _, n, a in unconsumed),
                )
            )
        elif stop.error is None:
            self._complete(stop.value)
        elif isinstance(stop.error, errors.CancelledError) and self._cancel_delivered:
            self._finish(CancelWorkflow(str(stop.error) or "workflow cancelled"))
        else:
            self._finish(FailWorkflow(self._failure(stop.error)))

    def _complete(self, value: object) -> None:
        try:
            payload = self.payloads.to_payload(
                value, f"the result of workflow {self.definition.name!r}"
            )
        except Exception as exc:
            self._finish(FailWorkflow(self._failure(exc)))
            return
        self._finish(CompleteWorkflow(payload))

    # ------------------------------------------------------------------ delivering results

    def _deliver_upto(self, limit: int | None) -> None:
        queue = self._queue
        while queue and (limit is None or queue[0].event_id <= limit):
            self._deliver(queue.popleft())

    def _deliver(self, event: ev.Event) -> None:
        self._deliver_one(event)
        if self._conditions:
            self._check_conditions(event)

    def _check_conditions(self, trigger: ev.Event) -> None:
        # After every delivered event, in the order the waits were yielded: the first wait
        # whose predicate holds resumes the code, which may change what the others read, so
        # the check starts over until no wait is met. A replay delivers the same events at
        # the same points, so it resumes the same waits.
        while not self.finished:
            self._conditions = [c for c in self._conditions if not c[0].done]
            for leaf, predicate in self._conditions:
                try:
                    met = self._condition_met(predicate)
                except Exception as exc:
                    self._resolve(leaf, _Outcome(error=exc), trigger)
                    break
                if met:
                    if leaf.wait_cancel:  # its timeout timer is not needed any more
                        cancel = RequestCancellation(self._next_seq, leaf.seq)
                        self._issue(cancel, f"cancel #{leaf.seq}")
                    self._resolve(leaf, _Outcome(value=True), trigger)
                    break
            else:
                return

    def _call_signal_handler(self, name: str, args: tuple[JsonValue, ...]) -> None:
        handler = self._signal_handlers[name]
        token = _current.set(self.context)
        try:
            produced = handler(*(self.payloads.from_payload(a) for a in args))
            if inspect.isgenerator(produced) or inspect.iscoroutine(produced):
                produced.close()
                raise errors.WorkflowError(
                    f"the signal handler for {name!r} yielded or is async; a signal handler "
                    "is a plain function that changes workflow state (wait on that state with "
                    "df.wait_condition in the workflow itself)"
                )
        except errors.NonDeterminismError:
            raise
        except Exception as exc:
            self._finish(FailWorkflow(self._failure(exc)))
        finally:
            _current.reset(token)

    def _deliver_one(self, event: ev.Event) -> None:
        if self.finished:
            if isinstance(event, ev.SignalReceived):
                self._hand_on(event)
            return
        if isinstance(event, ev.SignalReceived):
            waiters = self._signal_waiters.get(event.name)
            if waiters:
                leaf = waiters.popleft()
                self._resolve(leaf, _Outcome(value=self._signal_value(event.args, leaf)), event)
            elif event.name in self._signal_handlers:
                self._call_signal_handler(event.name, event.args)
            else:
                self._signals.setdefault(event.name, deque()).append((event.event_id, event.args))
            return
        if isinstance(event, ev.UpdateAccepted):
            self._update_arrived(event)
            return
        if isinstance(event, ev.CancelRequested):
            if self._cancel_delivered or self._root is None:
                return
            self._cancel_delivered = True
            root = self._root
            self._root = None
            self._abandon(root)
            message = "workflow cancellation requested"
            if event.reason:
                message += f": {event.reason}"
            self._step(None, errors.CancelledError(message), event)
            return
        seq = cast(ev.ActivityCompleted, event).seq
        if seq >= self._next_seq:
            raise self._divergence(
                event,
                f"history has {type(event).__name__} for command #{seq} at event "
                f"{event.event_id}, but the current code has issued only {self._next_seq - 1} "
                "command(s)",
                yielded=None,
            )
        pending = self._leaves.get(seq)
        if pending is None:
            return  # the code stopped waiting for it (any_of winner elsewhere, fail-fast)
        self._resolve(pending, self._outcome_of(event, pending), event)

    def _hand_on(self, event: ev.SignalReceived) -> None:
        # A signal delivered after the code continued as new belongs to the next run. The
        # activation is based on the last event fed, and the server adds only the signals
        # recorded after that, so the command must carry this one whether it was queued when
        # the code finished (a full replay) or fed later to a cached execution.
        terminal = self._terminal
        if isinstance(terminal, ContinueAsNewWorkflow) and not self._terminal_recorded:
            signals = (*terminal.signals, PendingSignal(event.name, event.args))
            self._terminal = evolve(terminal, signals=signals)

    def _outcome_of(self, event: ev.Event, leaf: _Leaf) -> _Outcome:
        if isinstance(event, ev.ActivityCompleted | ev.ChildWorkflowCompleted):
            what = "activity" if leaf.kind == "activity" else "child workflow"
            try:
                return _Outcome(
                    value=self.payloads.from_payload(
                        event.result, leaf.result_type, f"the result of {what} {leaf.name!r}"
                    )
                )
            except Exception as exc:
                return _Outcome(error=exc)
        if isinstance(event, ev.TimerFired):
            # a condition wait's timer is its timeout: the condition was not met in time
            return _Outcome(value=False if leaf.kind == "condition" else None)
        if isinstance(event, ev.ActivityFailed | ev.ActivityTimedOut):
            return _activity_failed(leaf, event.failure, event.attempt, event.retry_state)
        if isinstance(event, ev.ChildWorkflowFailed):
            child = errors.ChildWorkflowError(
                f"child workflow {leaf.name!r} (#{leaf.seq}) did not complete: "
                f"{event.failure.describe()}",
                workflow_type=leaf.name,
            )
            child.__cause__ = exception_from_failure(event.failure)
            return _Outcome(error=child)
        if isinstance(event, ev.SignalWaitTimedOut):
            waiters = self._signal_waiters.get(leaf.name)
            if waiters and leaf in waiters:
                waiters.remove(leaf)
            return _Outcome(
                error=errors.TimeoutError(
                    f"signal {leaf.name!r} was not received in time", timeout_type="signal"
                )
            )
        raise errors.WorkflowError(f"cannot deliver {type(event).__name__}")  # pragma: no cover

    def _resolve(self, node: _Node, outcome: _Outcome, trigger: ev.Event) -> None:
        node.done = True
        node.value = outcome.value
        node.error = outcome.error
        if isinstance(node, _Leaf):
            self._leaves.pop(node.seq, None)
        parent = node.parent
        while parent is not None:
            if parent.done:
                return
            if node.error is not None:
                parent.done = True
                parent.error = node.error
            elif parent.is_any:
                parent.done = True
                parent.value = (node.index, node.value)
            else:
                parent.values[node.index] = node.value
                parent.remaining -= 1
                if parent.remaining == 0:
                    parent.done = True
                    parent.value = list(parent.values)
            if not parent.done:
                return
            self._drop_losers(parent)
            node = parent
            parent = node.parent
        if node is self._root:
            self._root = None
            self._step(node.value, node.error, trigger)
        elif node in self._update_waits:  # a generator update handler waits on it
            gen, update = self._update_waits.pop(node)
            self._step_update(gen, update, node.value, node.error, trigger)
