"""Recording an input for a run: load it, ask the core, append with a sequence check, then
perform the effects.

A conflict (another server appended first) refreshes the run and decides again; an input the
run has recorded already is a duplicate whose effects are derived again from the run as it is
now; an input that would produce events too large to store records its failure instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence

from attrs import evolve

from durablefuture import metrics
from durablefuture.codec.records import decode_heartbeat
from durablefuture.codec.wire import Reply
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.commands import ContinueAsNewWorkflow
from durablefuture.core.effects import RunStatus
from durablefuture.core.errors import (
    CorruptHistoryError,
    DecodeError,
    MessageRejectedError,
    RequestRejectedError,
    TransportError,
    WorkflowNotFoundError,
    WorkflowNotRunningError,
)
from durablefuture.core.failure import Failure
from durablefuture.core.namespace import history_verdict
from durablefuture.core.orchestration import (
    APPLIED,
    DUPLICATE,
    IGNORED,
    REJECTED,
    Decision,
    decide,
    effects_again,
    effects_for,
)
from durablefuture.core.state import RunState
from durablefuture.core.timers import TimerKey, TimerKind, spent_by
from durablefuture.server.effects import Effects
from durablefuture.server.effects_hook import effects_hook
from durablefuture.server.event_log import count_events
from durablefuture.server.missing_payloads import described, instead_of_missing
from durablefuture.server.receipts import ANSWERED_RECEIPT
from durablefuture.server.runs import RunCache, RunCaches, RunMissing, new_run_id
from durablefuture.transport.buckets import read_key
from durablefuture.transport.guard import max_payload
from durablefuture.transport.headers import CLOSING_HEADER
from durablefuture.transport.payload_store import MissingPayloadError
from durablefuture.transport.publisher import WrongLastSequence
from durablefuture.transport.subjects import STICKY_TOKEN

__all__ = ["FIRST_APPEND_WAIT", "RunInputs"]

FIRST_APPEND_WAIT = 3.0
"""Seconds a workflow-task report for a run not found waits for its WorkflowStarted."""
_WFT_REPORTS = (inp.CompleteWorkflowTask, inp.FailWorkflowTask)

log = logging.getLogger("durablefuture.server")


class RunInputs(RunCaches, Effects):
    """Signals, cancels, terminations, worker reports and timers: inputs for one run."""

    async def _handle_run_input(
        self,
        workflow_id: str,
        message: inp.RunInput,
        reply_to: str = "",
        receipt_to: str = "",
        input_seq: int = 0,
        sticky: str = "",
    ) -> Decision | None:
        # An input for "the latest run" that lands on a run which has just continued as new
        # follows the chain to the next run (a signal sent during the switch is not lost).
        follow = not message.run_id
        for attempt in range(200):  # bounded: about 10 s for the next run to appear
            try:
                decision, cache, message = await self._run_input_once(
                    workflow_id, message, receipt_to, input_seq, sticky
                )
            except DecodeError as exc:
                if not isinstance(exc, CorruptHistoryError):  # that one is answered by _process
                    await self._reply(
                        reply_to,
                        Reply(False, error_type=WorkflowNotFoundError.__name__, message=str(exc)),
                    )
                raise
            if (
                decision is not None
                and follow
                and decision.outcome == IGNORED
                and cache is not None
                and cache.state.status == RunStatus.CONTINUED_AS_NEW
            ):
                message = evolve(message, run_id="")
                if attempt:
                    await asyncio.sleep(0.05)  # the next run is being started
                continue
            break
        if decision is None or cache is None:
            await self._reply(
                reply_to,
                Reply(
                    False,
                    error_type=WorkflowNotFoundError.__name__,
                    message=f"no workflow with id {workflow_id!r} in namespace "
                    f"{self.layout.namespace!r}",
                ),
            )
            return decision
        if reply_to:
            if decision.outcome in (APPLIED, DUPLICATE):
                await self._reply(reply_to, Reply(True, run_id=message.run_id))
            else:
                status = cache.state.status
                error = (
                    WorkflowNotRunningError if status != RunStatus.RUNNING else RequestRejectedError
                ).__name__
                await self._reply(
                    reply_to,
                    Reply(
                        False,
                        run_id=message.run_id,
                        error_type=error,
                        message=f"workflow {workflow_id!r} run {message.run_id} is {status}: "
                        f"{decision.reason}",
                    ),
                )
        return decision

    async def _run_input_once(
        self,
        workflow_id: str,
        message: inp.RunInput,
        receipt_to: str,
        input_seq: int = 0,
        sticky: str = "",
    ) -> tuple[Decision | None, RunCache | None, inp.RunInput]:
        latest = not message.run_id
        if latest:
            last = await self.history.last_of_workflow(workflow_id)
            if last is None:
                return None, None, message
            message = evolve(message, run_id=last.run_id)
        cache = await self._load_awaited(workflow_id, message)
        if latest and input_seq and cache.first_seq > input_seq:
            # The latest run began after this input was stored: an earlier delivery may have
            # been recorded on a run that has continued as new since (a df-server or
            # nats-server that died before the acknowledgement). Duplicates are detected per
            # run, so send it to the run that holds it.
            holder = await self.history.find_input(workflow_id, message.input_id, input_seq)
            if holder is not None and holder != cache.state.run_id:
                message = evolve(message, run_id=holder)
                try:
                    cache = await self._load(workflow_id, holder)
                except RunMissing as exc:
                    raise DecodeError(f"input for an unknown run: {exc}") from None
        message = await self._enrich(message)
        async with cache.lock:
            if sticky and receipt_to and STICKY_TOKEN.fullmatch(sticky):
                # the reporting worker holds the run's generator: its next tasks go there (one
                # copy of its token for all the runs it holds, not one string a run)
                cache.sticky = sys.intern(sticky)
            decision = await self._decide_and_record(cache, message, receipt_to)
            self._status_seen(cache)
        if isinstance(message, _WFT_REPORTS):
            # the place its start kept, and its queue has workers (``admission``)
            self._gate.going(cache.state.run_id, cache.state.started.task_queue)
        return decision, cache, message

    async def _load_awaited(self, workflow_id: str, message: inp.RunInput) -> RunCache:
        """The run ``message`` is for. A first workflow task is stored just before its run's
        WorkflowStarted (``starts.py``): on a clustered stream its worker may report before
        that append is stored, so a workflow-task report for a run not (yet) found waits for
        it a while (``FIRST_APPEND_WAIT``) before it is refused as one for an unknown run."""
        waits = int(FIRST_APPEND_WAIT / 0.1) if isinstance(message, _WFT_REPORTS) else 0
        for attempt in range(waits + 1):
            try:
                return await self._load(workflow_id, message.run_id)
            except RunMissing as exc:
                if attempt == waits:
                    raise DecodeError(f"input for an unknown run: {exc}") from None
            await asyncio.sleep(0.1)
        raise AssertionError("unreachable")

    async def _enrich(self, message: inp.RunInput) -> inp.RunInput:
        """Add what the core needs but the input cannot carry (the last heartbeat)."""
        if not isinstance(message, inp.FireTimer):
            return message
        key = TimerKey.parse(message.key)
        kv = self._act_kv
        if key is None or key.kind is not TimerKind.HEARTBEAT or kv is None:
            return message
        data = await read_key(kv, self.layout.heartbeat_key(message.run_id, key.seq))
        if data is None:
            return message
        try:
            beat = decode_heartbeat(data)
        except DecodeError as exc:  # as if it never beat: the timeout stands
            log.warning("ignoring the heartbeat of run %s #%d: %s", message.run_id, key.seq, exc)
            return message
        return evolve(message, heartbeat_at=beat.at, heartbeat_details=beat.details)

    async def _decide_and_record(
        self, cache: RunCache, message: inp.RunInput, receipt_to: str = ""
    ) -> Decision:
        verified = False
        spent: Sequence[ev.Event] = ()
        recorded: Sequence[ev.Event] = ()
        for _ in range(50):
            now = self.clock.now()
            run_id = _new_run_id_if_needed(message)
            decision = decide(cache.state, message, now, new_run_id=run_id)
            if decision.outcome in (IGNORED, REJECTED) and not verified:
                verified = True
                latest = await self.history.last_seq(cache.workflow_id, cache.state.run_id)
                if latest != cache.last_seq:
                    await self._refresh(cache)
                    continue
            if decision.outcome == APPLIED and decision.events:
                closing = isinstance(decision.events[-1], ev.TERMINAL_EVENTS)
                if receipt_to:  # its attempts' check list stored beside the append (``grants``)
                    marked = await self._grant_early(cache, decision.events)
                    if marked is not decision.events:
                        decision = evolve(decision, events=marked)
                # encoded once: the same bytes are the append and the receipt
                batch = self.codec.encode_batch(message.input_id, decision.events)
                try:
                    seq, size = await self.history.append_sized(
                        cache.workflow_id,
                        cache.state.run_id,
                        message.input_id,
                        decision.events,
                        cache.last_seq,
                        sent=self._closing_notice(cache) if closing else None,
                        data=batch,
                    )
                except WrongLastSequence:
                    self.stats["conflicts"] += 1
                    metrics.OCC_CONFLICTS.inc(self.layout.namespace)
                    await self._refresh(cache)
                    continue
                except MessageRejectedError as exc:
                    instead = _instead_of_too_large(cache.state, message, exc)
                    if instead is None:
                        raise
                    log.warning(
                        "the events of %s for run %s cannot be stored (%s); recording %s instead",
                        type(message).__name__,
                        cache.state.run_id,
                        exc,
                        type(instead).__name__,
                        extra={"run_id": cache.state.run_id, "workflow_id": cache.workflow_id},
                    )
                    message = instead
                    continue
                except MissingPayloadError as exc:
                    missing = instead_of_missing(cache.state, message, str(exc))
                    if missing is None:
                        raise  # refused, with the reason (server/service.py)
                    log.warning(
                        "%s for run %s names a payload object that is gone; recording %s "
                        "instead: %s",
                        type(message).__name__,
                        cache.state.run_id,
                        described(message, missing),
                        exc,
                        extra={"run_id": cache.state.run_id, "workflow_id": cache.workflow_id},
                    )
                    message = missing
                    continue
                cache.apply(seq, message.input_id, decision.events, size)
                recorded = decision.events  # noted as checked once their effects are done
                count_events(self.layout.namespace, cache, decision.events)
                spent = decision.events
                answered = ANSWERED_RECEIPT.get() if receipt_to else None
                # in the answer if the request asked for it (sent once the effects are stored)
                kept = answered is not None and answered.takes(
                    cache.state.run_id, seq, batch, max_payload(self.nc)
                )
                if receipt_to and not kept:
                    await self._send_receipt(receipt_to, cache.state.run_id, seq, batch)
                effects = effects_for(
                    cache.state, decision.events, decided_through=decision.decided_through
                ) + list(decision.effects)
            elif decision.outcome == DUPLICATE:
                self.stats["duplicates"] += 1
                # re-derive the recorded batch's effects from the run as it is now, not as this
                # server last saw it: another server may have moved it on since (an old view
                # would dispatch finished activities again, or write an old status)
                await self._refresh(cache)
                effects = list(decision.effects)
                if decision.recorded is not None:
                    first, last = decision.recorded
                    effects = effects_again(cache.state, cache.events, first, last) + effects
            else:
                effects = list(decision.effects)
                if decision.outcome == REJECTED:
                    self.stats["rejected"] += 1
                    log.warning(
                        "rejected %s for run %s: %s",
                        type(message).__name__,
                        cache.state.run_id,
                        decision.reason,
                        extra={"run_id": cache.state.run_id, "workflow_id": cache.workflow_id},
                    )
                else:
                    self.stats["ignored"] += 1
                    log.debug("ignored %s: %s", message.input_id, decision.reason)
            if recorded:
                effects_hook(message, cache.state.run_id)  # (a test hook: none unless set)
            await self._execute(cache, effects)
            if recorded:  # (a granted attempt's check has nothing left to do: ``checks``)
                self._grants_recorded(cache.state.run_id, recorded)
            # only now: until the effects are done, a durable timer the events leave with
            # nothing to guard is what finishes them (a timer fired from memory whose effects
            # failed is recorded; its durable copy arrives as a duplicate and derives them
            # again, where a purged one would leave e.g. a retry never dispatched)
            self._cancel_spent_timers(cache, spent)
            await self._check_history_size(cache)
            metrics.SERVER_INPUTS.inc(
                self.layout.namespace, type(message).__name__, decision.outcome
            )
            return decision
        raise TransportError(
            f"run {cache.state.run_id}: gave up after 50 optimistic-concurrency conflicts"
        )

    def _closing_notice(self, cache: RunCache) -> Callable[[], Awaitable[None]] | None:
        """A closed notice without a summary, sent right behind the run's closing append
        (before its PubAck), so a client waiting for the result reads the history one round
        trip sooner than the usual notice after the PubAck would let it.

        Safe because the notice says nothing but "look now": clients believe the run's
        history, read from the stream, and nothing a notice carries (anyone may send one).
        Both go out on one connection, the append first, so nats-server has the append before
        it routes the notice. A client that reads before the append is stored, or after it
        was refused (another server appended first), finds the run open and waits for the
        usual notice, which follows only a stored close. Not on a replicated stream: there an
        append is stored after a round among the nodes, so an early read would mostly find
        the run open and only cost a read.
        """
        if self.options.replicas != 1:
            return None
        subject = self.layout.closed_notice(cache.workflow_id, cache.state.run_id)

        async def notice() -> None:
            with contextlib.suppress(TransportError):
                await self.pub.notify(subject, b"", {CLOSING_HEADER: "1"})

        return notice

    def _cancel_spent_timers(self, cache: RunCache, events: Sequence[ev.Event]) -> None:
        """Purge the durable timers the recorded events leave with nothing to guard (a closed
        run's are all purged at its close), so they neither linger nor fire for nothing."""
        if cache.state.status != RunStatus.RUNNING or not cache.timers:
            return  # (a run with no durable timer stored has none to cancel)
        for e in events:
            pattern = spent_by(e)
            if pattern is not None:
                subject = self.layout.timer(cache.state.run_id, pattern)
                self._track(self._purge_timers(subject))

    async def _check_history_size(self, cache: RunCache) -> None:
        """Warn once when an open run's history reaches the namespace's warning; end it (a
        termination naming the limit) when it reaches the limit."""
        if cache.state.status != RunStatus.RUNNING:
            return
        verdict = history_verdict(self.settings, len(cache.events), cache.history_bytes)
        if not verdict.warn:
            return
        run_id = cache.state.run_id
        extra = {"workflow_id": cache.workflow_id, "run_id": run_id}
        ns = self.layout.namespace
        if verdict.fail:
            log.error("run %s of %s: %s", run_id, cache.workflow_id, verdict.message, extra=extra)
            metrics.HISTORY_LIMITS.inc(ns, "fail")
            end = inp.TerminateWorkflow(run_id, f"history-limit-{run_id}", verdict.message)
            await (await self._send_input(cache.workflow_id, end, f"trm:history-limit:{run_id}"))
        elif not cache.history_warned:
            cache.history_warned = True
            log.warning("run %s of %s: %s", run_id, cache.workflow_id, verdict.message, extra=extra)
            metrics.HISTORY_LIMITS.inc(ns, "warn")


def _instead_of_too_large(
    state: RunState, message: inp.RunInput, exc: MessageRejectedError
) -> inp.RunInput | None:
    """What to record when the events ``message`` produces are too large to store: its
    failure, so the run shows why instead of waiting for a report that can never land."""
    limit = f"{exc.limit:,}" if exc.limit else "max_payload"
    size = f"{exc.size:,} bytes" if exc.size else "too large"
    advice = (
        "Pass large values by reference (store the data elsewhere, e.g. a JetStream object "
        "store, and pass its key), or raise max_payload in the nats-server config"
    )
    if isinstance(message, inp.CompleteWorkflowTask):
        last = state.last_wft_failure
        attempt = last.attempt + 1 if last is not None else 1
        failure = Failure(
            message=(
                f"the decisions of this workflow task cannot be recorded: their events are "
                f"{size}, and the NATS server stores at most {limit} bytes per message "
                f"(max_payload). {advice}"
            ),
            type="MessageRejectedError",
        )
        return inp.FailWorkflowTask(
            message.run_id, message.based_on, failure, attempt, message.worker
        )
    if isinstance(message, inp.CompleteActivityTask):
        if message.commands:  # record the result alone; a workflow task decides again
            return evolve(message, commands=(), event_id=0, completed_at=None, more=False)
        failure = Failure(
            message=(
                f"the result of activity #{message.seq} (attempt {message.attempt}) cannot be "
                f"recorded: its history message is {size}, and the NATS server stores at most "
                f"{limit} bytes per message (max_payload). {advice}; not retried, as another "
                "attempt would return as much"
            ),
            type="MessageRejectedError",
            non_retryable=True,
        )
        return inp.FailActivityTask(message.run_id, message.seq, message.attempt, failure)
    return None


def _new_run_id_if_needed(message: inp.RunInput) -> str:
    if isinstance(message, inp.CompleteWorkflowTask) and any(
        isinstance(c, ContinueAsNewWorkflow) for c in message.commands
    ):
        return new_run_id()
    return ""
