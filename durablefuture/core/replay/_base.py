"""The state one replay keeps, and the helpers every part of it shares.

``WorkflowExecution`` is built in layers, each a module: this state, then turning yields into
commands (``_yields``), then running the generator and delivering results (``_running``), then
the public surface and the history checks (``_execution``). Each layer calls only itself and
the layers below it.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, cast

from durablefuture.core import errors
from durablefuture.core import events as ev
from durablefuture.core.commands import LocalActivityCall, PrimitiveCommand, TerminalCommand
from durablefuture.core.definitions import PayloadConverter, WorkflowDefinition
from durablefuture.core.failure import Failure, failure_from_exception
from durablefuture.core.options import ActivityOptions
from durablefuture.core.replay._context import WorkflowContext
from durablefuture.core.replay._waits import _Composite, _Leaf, _Node
from durablefuture.core.types import JsonValue
from durablefuture.core.vocabulary import describe_command, describe_event

_Validator = Callable[..., object] | None
_Gen = Generator[object, object, object]

if TYPE_CHECKING:
    from durablefuture.core.replay._execution import WorkflowExecution


class _ExecutionBase:
    """One run's replay state (see the package docstring)."""

    def __init__(
        self,
        definition: WorkflowDefinition,
        payloads: PayloadConverter,
        *,
        size_of: Callable[[ev.Event], int] | None = None,
    ) -> None:
        self.definition = definition
        self.payloads = payloads
        self._size_of = size_of
        self._fed: list[ev.Event] = []  # kept only to measure the history (size_of given)
        self._sizes: list[int] = [0]  # cumulative encoded size of events 1..n
        # the context hands helpers the public class, which every execution is
        self.context = WorkflowContext(cast("WorkflowExecution", self))
        self.started: ev.WorkflowStarted | None = None
        self._gen: Generator[object, object, object] | None = None
        self._root: _Node | None = None
        self._leaves: dict[int, _Leaf] = {}
        self._started_leaves: dict[int, _Leaf] = {}  # every leaf of a command, by seq
        self._recorded: dict[int, ev.Event] = {}
        self._new: dict[int, PrimitiveCommand] = {}
        # (seq, what was yielded, location); commands are described only for error messages
        self._trace: list[tuple[int, str | PrimitiveCommand, str]] = []
        self._next_seq = 1
        self._queue: deque[ev.Event] = deque()
        self._terminal: TerminalCommand | None = None
        self._terminal_recorded = False
        self._closed_by_server = False
        self._signals: dict[str, deque[tuple[int, tuple[JsonValue, ...]]]] = {}
        self._signal_waiters: dict[str, deque[_Leaf]] = {}
        self._signal_handlers: dict[str, Callable[..., object]] = {}
        # updates accepted before their handler was registered, and the handlers (+ validator)
        self._updates: deque[ev.UpdateAccepted] = deque()
        self._update_handlers: dict[str, tuple[Callable[..., object], _Validator]] = {}
        # generator update handlers waiting, by the node they wait on
        self._update_waits: dict[_Node, tuple[_Gen, ev.UpdateAccepted]] = {}
        # df.wait_condition waits, in the order they were yielded, with their predicates
        self._conditions: list[tuple[_Leaf, Callable[[], object]]] = []
        # local activities the code waits on that have not run yet (the worker runs them)
        self._local: dict[int, LocalActivityCall] = {}
        self._last_at = 0.0  # the time of the last event fed
        self._cancel_delivered = False
        self._patches: dict[str, bool] = {}
        self._horizon = 0
        self.last_event_id = 0
        self._resolved: dict[ActivityOptions | None, ActivityOptions] = {}
        self._step_location = ""
        # set by a worker replaying a run that may never exist (an eager start's offer): a
        # side effect not recorded is not run then, and the code waits at it
        self.tentative = False
        self.held_side_effect = False

    @property
    def finished(self) -> bool:
        """True once the generator ended (or the server closed the run)."""
        return self._terminal is not None or self._closed_by_server

    @property
    def closed(self) -> bool:
        """True once history holds the run's terminal event."""
        return self._terminal_recorded or self._closed_by_server

    def _require_started(self) -> ev.WorkflowStarted:
        if self.started is None:
            raise errors.WorkflowError("history does not start with WorkflowStarted")
        return self.started

    def _waiting_at(self) -> str:
        if self.finished:
            return "already finished"
        return f"waiting at {self._step_location or 'its first yield'}"

    def _divergence(
        self, event: ev.Event, what: str, *, yielded: str | None
    ) -> errors.NonDeterminismError:
        started = self._require_started()
        seq = getattr(event, "seq", None)
        table = self._side_by_side(seq if isinstance(seq, int) else self._next_seq)
        message = (
            f"workflow {started.workflow_type!r} (id {started.workflow_id!r}, run "
            f"{started.run_id}) is not deterministic: {what}"
            f"{' (yield at ' + self._step_location + ')' if self._step_location else ''}. "
            "The code changed while this run was in flight: guard the change with "
            "`if df.workflow.patched('change-id'):` so old runs replay the old path, or let "
            f"old runs finish before deploying.\n{table}"
        )
        return errors.NonDeterminismError(
            message,
            event_id=event.event_id,
            seq=seq if isinstance(seq, int) else None,
            recorded=describe_event(event),
            yielded=yielded,
            location=self._step_location or None,
        )

    def _side_by_side(self, around: int) -> str:
        recorded = {s: describe_event(e) for s, e in self._recorded.items()}
        yielded = {
            s: f"{d if isinstance(d, str) else describe_command(d)} @ {loc}"
            for s, d, loc in self._trace
        }
        lo = max(1, around - 4)
        hi = around + 2
        lines = [f"  {'#':>4}  {'history recorded':<48}  code yields"]
        for s in range(lo, hi + 1):
            if s not in recorded and s not in yielded:
                continue
            mark = "=>" if s == around else "  "
            lines.append(f"{mark}{s:>4}  {recorded.get(s, '-'):<48}  {yielded.get(s, '-')}")
        return "\n".join(lines)

    def _signal_value(self, args: tuple[JsonValue, ...], leaf: _Leaf) -> object:
        if not args:
            return None
        if len(args) == 1:
            return self.payloads.from_payload(
                args[0], leaf.result_type, f"the argument of signal {leaf.name!r}"
            )
        return tuple(self.payloads.from_payload(a) for a in args)

    def _abandon(self, node: _Node) -> None:
        if isinstance(node, _Leaf) and node.handle:
            node.parent = None  # detached: its handle still gets the result
            return
        node.done = True
        if isinstance(node, _Leaf):
            self._leaves.pop(node.seq, None)
            waiters = self._signal_waiters.get(node.name) if node.kind == "signal" else None
            if waiters and node in waiters:
                waiters.remove(node)
        elif isinstance(node, _Composite):
            for child in node.children:
                if not child.done:
                    self._abandon(child)

    def _finish(self, terminal: TerminalCommand) -> None:
        self._terminal = terminal
        self._gen = None
        self._root = None
        for leaf in list(self._leaves.values()):
            self._abandon(leaf)

    def _discard_generator(self) -> None:
        # Unwind the code now rather than when the garbage collector closes it: a `finally`
        # that yields (cleanup on cancellation) would otherwise print "generator ignored
        # GeneratorExit" whenever a worker drops a suspended run. Each close() runs the code
        # to its next yield; nothing it does there can be recorded any more.
        gen, self._gen, self._root = self._gen, None, None
        for _ in range(64):
            if gen is None or getattr(gen, "gi_frame", None) is None:
                return
            with contextlib.suppress(Exception):
                gen.close()

    def __del__(self) -> None:
        self._discard_generator()

    def _failure(self, exc: BaseException) -> Failure:
        def enc(details: tuple[object, ...]) -> tuple[JsonValue, ...]:
            return tuple(self.payloads.to_payload(d, "error detail") for d in details)

        return failure_from_exception(exc, enc)

    def _settle_composite(self, node: _Composite) -> None:
        if not node.children:
            node.done = True
            node.value = []
            return
        for child in node.children:
            if child.done:
                if child.error is not None:
                    node.done, node.error = True, child.error
                elif node.is_any:
                    node.done, node.value = True, (child.index, child.value)
                else:
                    node.values[child.index] = child.value
                    node.remaining -= 1
                if node.done:
                    break
        if not node.done and not node.is_any and node.remaining == 0:
            node.done, node.value = True, list(node.values)
        if node.done:
            self._drop_losers(node)

    def _drop_losers(self, node: _Composite) -> None:
        """The children of a resolved composite nobody waits for any more."""
        for child in node.children:
            if not child.done:
                if node.cancel_losers:
                    self._cancel_loser(child)
                self._abandon(child)

    def _cancel_loser(self, node: _Node) -> None:
        raise NotImplementedError  # issuing commands is the next layer's job (_yields)
