"""Turning what the code yields into commands, checked against what history recorded."""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Generator
from typing import cast

from durablefuture.core import errors
from durablefuture.core import events as ev
from durablefuture.core.commands import (
    YIELDABLE_TYPES,
    ActivityCall,
    AllOf,
    AnyOf,
    Cancel,
    CancelExternal,
    ChildWorkflowCall,
    ContinueAsNew,
    Handle,
    LocalActivityCall,
    PrimitiveCommand,
    RecordLocalActivity,
    RecordSideEffect,
    RequestCancelExternalWorkflow,
    RequestCancellation,
    ScheduleActivity,
    SideEffect,
    SignalExternal,
    SignalExternalWorkflow,
    Sleep,
    Start,
    StartChildWorkflow,
    StartConditionWait,
    StartSignalWait,
    StartTimer,
    WaitCondition,
    WaitSignal,
)
from durablefuture.core.failure import exception_from_failure
from durablefuture.core.options import ActivityCancellationType, ActivityOptions
from durablefuture.core.replay._base import _ExecutionBase
from durablefuture.core.replay._context import _current, _location
from durablefuture.core.replay._waits import _activity_failed, _Composite, _Leaf, _Node, _Outcome
from durablefuture.core.vocabulary import describe_command, describe_event, matches


def _short(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_VALID_YIELDS = (
    "df.activity(...), df.sleep(...), df.wait_signal(...), df.wait_condition(...), "
    "df.side_effect(...), df.start(...), df.cancel(...), df.signal_workflow(...), "
    "df.cancel_workflow(...), "
    "df.child_workflow(...), df.all_of(...), df.any_of(...) or df.continue_as_new(...)"
)


class _Yields(_ExecutionBase):
    def _advance(
        self, gen: Generator[object, object, object], value: object, error: BaseException | None
    ) -> _Node | _Outcome | ContinueAsNew:
        """Resume ``gen`` (``value`` sent in, or ``error`` raised at its ``yield``) and run it to
        its next wait: the workflow code and generator update handlers step through here.

        A yielded command already resolved (or refused with one of our errors) is answered at
        once and the code runs on. Returns the node it now waits on (not done), the
        ``ContinueAsNew`` it yielded, or its outcome: what it returned or the exception it
        raised. A ``NonDeterminismError`` is never the code's outcome: it propagates.
        """
        while True:
            token = _current.set(self.context)
            try:
                yielded = gen.throw(error) if error is not None else gen.send(value)
            except StopIteration as stop:
                return _Outcome(value=stop.value)
            except errors.NonDeterminismError:
                raise
            except Exception as exc:
                return _Outcome(error=exc)
            finally:
                _current.reset(token)
            self._step_location = _location(gen)
            if isinstance(yielded, ContinueAsNew):
                return yielded
            try:
                node = self._build(yielded)
            except errors.NonDeterminismError:
                raise
            except errors.DurableFutureError as exc:
                value, error = None, exc
                continue
            if node.done:
                value, error = node.value, node.error
                continue
            return node

    def _build(self, item: object) -> _Node:
        if isinstance(item, ActivityCall):
            options = self._resolved.get(item.options)
            if options is None:
                started = self._require_started()
                options = (item.options or ActivityOptions()).resolved(started.task_queue)
                self._resolved[item.options] = options
            seq = self._next_seq
            cmd = ScheduleActivity(seq, item.name, item.args, options)
            leaf = self._leaf(cmd, "activity", item.result_type, item.name)
            wait = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
            leaf.wait_cancel = options.cancellation_type is wait
            return leaf
        if isinstance(item, Sleep):
            timer = StartTimer(self._next_seq, item.duration, self.context.now)
            return self._leaf(timer, "timer", None)
        if isinstance(item, WaitSignal):
            return self._wait_signal(item)
        if isinstance(item, WaitCondition):
            return self._wait_condition(item)
        if isinstance(item, SideEffect):
            return self._side_effect(item)
        if isinstance(item, ChildWorkflowCall):
            started = self._require_started()
            seq = self._next_seq
            child_id = item.workflow_id or f"{started.workflow_id}-{started.run_id[:8]}-{seq}"
            child = StartChildWorkflow(
                seq,
                item.workflow_type,
                child_id,
                item.args,
                item.task_queue or started.task_queue,
                item.execution_timeout,
                item.parent_close_policy,
            )
            return self._leaf(child, "child", item.result_type, item.workflow_type)
        if isinstance(item, Start | Handle | Cancel):
            return self._handles(item)
        if isinstance(item, LocalActivityCall):
            return self._local_activity(item)
        if isinstance(item, SignalExternal):
            what = f"the arguments of signal {item.name!r} to workflow {item.workflow_id!r}"
            args = tuple(self.payloads.to_payload(a, what) for a in item.args)
            self._issue(SignalExternalWorkflow(self._next_seq, item.workflow_id, item.name, args))
            return self._answered(None)
        if isinstance(item, CancelExternal):
            seq = self._next_seq
            self._issue(RequestCancelExternalWorkflow(seq, item.workflow_id, item.reason))
            return self._answered(None)
        if isinstance(item, AllOf | AnyOf):
            if isinstance(item, AnyOf) and not item.items:
                raise errors.WorkflowError(
                    f"df.any_of() needs at least one command (at {self._step_location})"
                )
            children = [self._build(child) for child in item.items]
            is_any = isinstance(item, AnyOf)
            # runs started before any_of cancelled its losers replay without it
            cancel = is_any and "cancel_losers" in self._require_started().flags
            node = _Composite(children, is_any, cancel and cast(AnyOf, item).cancel_losers)
            self._settle_composite(node)
            return node
        raise errors.WorkflowError(self._bad_yield(item))

    def _handles(self, item: Start | Handle | Cancel) -> _Leaf:
        if isinstance(item, Start):
            started = self._build(item.item)
            assert isinstance(started, _Leaf)
            started.handle = True
            child = self._new.get(started.seq) or self._recorded.get(started.seq)
            child_id = getattr(child, "workflow_id", None) if started.kind == "child" else None
            handle = Handle(started.seq, started.kind, started.name, started, child_id)
            return self._answered(handle)
        leaf = (item if isinstance(item, Handle) else item.handle)._node
        if not isinstance(leaf, _Leaf) or self._leaf_owner(leaf) is not self:
            raise errors.WorkflowError(
                f"workflow {self.definition.name!r} yielded {item!r} at {self._step_location}, "
                "a handle this run did not start"
            )
        if isinstance(item, Cancel):
            self._request_cancel(leaf)
            return self._answered(None)
        leaf.parent = None  # waited on by this yield alone
        return leaf

    def _leaf_owner(self, leaf: _Leaf) -> object:
        return self if leaf.handle and self._started_leaves.get(leaf.seq) is leaf else None

    @staticmethod
    def _answered(value: object) -> _Leaf:
        leaf = _Leaf(0, "answer", None)
        leaf.done, leaf.value = True, value
        return leaf

    def _request_cancel(self, leaf: _Leaf) -> None:
        """Cancel an activity, timer or child (``df.cancel``, or an ``any_of`` loser)."""
        if leaf.done or leaf.cancel_requested or leaf.kind not in ("activity", "timer", "child"):
            return
        leaf.cancel_requested = True
        self._issue(RequestCancellation(self._next_seq, leaf.seq), f"cancel #{leaf.seq}")
        error: BaseException
        if leaf.kind == "timer":
            error = errors.CancelledError(f"timer #{leaf.seq} was cancelled")
        elif leaf.kind == "activity" and not leaf.wait_cancel:
            error = errors.ActivityError(
                f"activity {leaf.name!r} (#{leaf.seq}) was cancelled",
                activity_name=leaf.name,
                activity_id=leaf.seq,
                attempt=0,
                retry_state="cancel_requested",
            )
            error.__cause__ = errors.CancelledError(f"activity {leaf.name!r} was cancelled")
        else:
            return  # the end of the activity or child run resolves it
        leaf.done, leaf.error = True, error
        self._leaves.pop(leaf.seq, None)

    def _cancel_loser(self, node: _Node) -> None:
        if isinstance(node, _Leaf):
            if not node.handle:
                self._request_cancel(node)
        elif isinstance(node, _Composite):
            for child in node.children:
                if not child.done:
                    self._cancel_loser(child)

    def _bad_yield(self, item: object) -> str:
        name = self.definition.name
        hint = f"yield {_VALID_YIELDS}"
        if inspect.iscoroutine(item):
            item.close()
            hint = (
                "a coroutine cannot be yielded: run async code as an activity with "
                "df.activity(fn, ...)"
            )
        elif callable(item):
            hint = f"to run it, yield df.activity({getattr(item, '__name__', 'fn')}, ...)"
        elif (
            isinstance(item, list | tuple)
            and item
            and all(isinstance(i, YIELDABLE_TYPES) for i in item)
        ):
            hint = "to run several commands at once, yield df.all_of(...) (or df.any_of(...))"
        return (
            f"workflow {name!r} yielded {_short(item)} ({type(item).__name__}) at "
            f"{self._step_location}, which is not a DurableFuture command; {hint}"
        )

    def _issue(self, cmd: PrimitiveCommand, description: str | None = None) -> None:
        seq = cmd.seq
        self._next_seq = seq + 1
        self._trace.append((seq, cmd if description is None else description, self._step_location))
        recorded = self._recorded.get(seq)
        if recorded is not None:
            if not matches(recorded, cmd):
                description = description or describe_command(cmd)
                raise self._divergence(
                    recorded,
                    f"history recorded {describe_event(recorded)} as command #{seq} at event "
                    f"{recorded.event_id}, but the code now yields {description}",
                    yielded=description,
                )
        else:
            self._new[seq] = cmd

    def _leaf(self, cmd: PrimitiveCommand, kind: str, result_type: object, name: str = "") -> _Leaf:
        self._issue(cmd)
        leaf = _Leaf(cmd.seq, kind, result_type, name)
        self._leaves[cmd.seq] = leaf
        self._started_leaves[cmd.seq] = leaf
        return leaf

    def _wait_signal(self, item: WaitSignal) -> _Leaf:
        cmd = StartSignalWait(self._next_seq, item.name, item.timeout, self.context.now)
        leaf = self._leaf(cmd, "signal", item.result_type, item.name)
        buffered = self._signals.get(item.name)
        if buffered:
            _, args = buffered.popleft()
            leaf.done = True
            leaf.value = self._signal_value(args, leaf)
            self._leaves.pop(leaf.seq, None)
        else:
            self._signal_waiters.setdefault(item.name, deque()).append(leaf)
        return leaf

    def _condition_met(self, predicate: Callable[[], object]) -> bool:
        """Evaluate a ``df.wait_condition`` predicate as workflow code (helpers work)."""
        token = _current.set(self.context)
        try:
            return bool(predicate())
        finally:
            _current.reset(token)

    def _wait_condition(self, item: WaitCondition) -> _Leaf:
        error: Exception | None = None
        try:
            met = self._condition_met(item.predicate)
        except Exception as exc:
            met, error = False, exc
        if met or error is not None:
            # already decided: nothing is recorded, the yield returns (or raises) at once
            leaf = _Leaf(0, "condition", None)
            leaf.done, leaf.value, leaf.error = True, True, error
            return leaf
        cmd = StartConditionWait(self._next_seq, item.timeout, self.context.now)
        leaf = self._leaf(cmd, "condition", None)
        self._conditions.append((leaf, item.predicate))
        # runs started with the flag cancel the timeout of a condition met in time
        leaf.wait_cancel = item.timeout is not None and "condition_timers" in (
            self._require_started().flags
        )
        return leaf

    def _local_activity(self, item: LocalActivityCall) -> _Leaf:
        seq = self._next_seq
        recorded = self._recorded.get(seq)
        if recorded is not None and not isinstance(recorded, ev.LocalActivityRecorded):
            self._issue(RecordLocalActivity(seq, item.name, item.args))  # names the divergence
        # Reserved now; recorded once the worker ran it (run_local / its recorded event). Its
        # outcome reaches the code only then: after the events its record is based on.
        self._next_seq = seq + 1
        self._trace.append((seq, f"local_activity {item.name!r}", self._step_location))
        leaf = _Leaf(seq, "local", item.result_type, item.name)
        self._leaves[seq] = leaf
        self._started_leaves[seq] = leaf
        self._local[seq] = item
        return leaf

    def _local_outcome(
        self, leaf: _Leaf, rec: RecordLocalActivity | ev.LocalActivityRecorded
    ) -> _Outcome:
        if rec.failure is None:
            what = f"the result of local activity {leaf.name!r}"
            try:
                return _Outcome(self.payloads.from_payload(rec.result, leaf.result_type, what))
            except Exception as exc:
                return _Outcome(error=exc)
        return _activity_failed(leaf, rec.failure, rec.attempts, what="local activity")

    def _side_effect(self, item: SideEffect) -> _Leaf:
        seq = self._next_seq
        recorded = self._recorded.get(seq)
        leaf = _Leaf(seq, "side_effect", item.result_type)
        leaf.done = True
        if isinstance(recorded, ev.SideEffectRecorded):
            self._issue(RecordSideEffect(seq, recorded.value, recorded.failure), "side_effect")
            if recorded.failure is not None:
                leaf.error = exception_from_failure(recorded.failure)
            else:
                try:
                    leaf.value = self.payloads.from_payload(
                        recorded.value, item.result_type, "the side_effect result"
                    )
                except Exception as exc:
                    leaf.error = exc
            return leaf
        if recorded is not None:
            # let _issue raise the divergence with both sides named
            self._issue(RecordSideEffect(seq), "side_effect")
        if self.tentative:
            # the run may never exist: its side effect must not happen, so the code waits
            # here, nothing recorded (the worker declines the decision, history replays it)
            self.held_side_effect = True
            leaf.done = False
            return leaf
        try:
            value = item.fn()
            payload = self.payloads.to_payload(value, "side_effect result")
        except Exception as exc:
            failure = self._failure(exc)
            self._issue(RecordSideEffect(seq, None, failure), "side_effect")
            # the code sees what a replay will see: the error rebuilt from its record
            leaf.error = exception_from_failure(failure)
            return leaf
        self._issue(RecordSideEffect(seq, payload), "side_effect")
        # ... and the value as decoded from its payload, not the object fn returned
        try:
            leaf.value = self.payloads.from_payload(
                payload, item.result_type, "the side_effect result"
            )
        except Exception as exc:
            leaf.error = exc
        return leaf
