"""A handle on a workflow id: wait for its result, describe it, query, signal, cancel, terminate.

Waiting for a result reads the run's status entry and listens for its closed notice (core NATS)
meanwhile, so it costs no polling loop per call beyond a slow backstop; a notice only says when
to read the run's history, and the result counts once that history ends the run.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from durablefuture.client.requests import error_from_reply
from durablefuture.client.updates import send_update
from durablefuture.client.views import WorkflowDescription, describe_corrupt, describe_state
from durablefuture.codec.records import Removal, decode_query_answer, encode_query, encode_removal
from durablefuture.codec.wire import InputEnvelope, Reply
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.effects import RunStatus, RunSummary
from durablefuture.core.errors import (
    CorruptHistoryError,
    DecodeError,
    DurableFutureError,
    InvalidArgumentError,
    QueryFailedError,
    ResultTimeoutError,
    TransportError,
    WorkflowNotFoundError,
)
from durablefuture.core.state import ending_summary, status_of
from durablefuture.core.types import check_type_name
from durablefuture.outcome import outcome_of
from durablefuture.transport.archive import open_archive
from durablefuture.transport.replies import NoResponders, RequestTimedOut, Watch, request

if TYPE_CHECKING:
    from durablefuture.client.client import Client

__all__ = ["WorkflowHandle"]

log = logging.getLogger("durablefuture.client")

FIRST_READ_AFTER = 0.05
"""Seconds before a wait whose notices were listened to since before the run started first
reads the run's status entry (``execute_workflow``): a run that closes sooner is seen by its
notice, with no read beside its first hops; the read is there for a notice lost on the way."""


class WorkflowHandle:
    """A workflow id (and the run it started with), to wait on and act on."""

    def __init__(
        self,
        client: Client,
        workflow_id: str,
        run_id: str | None,
        *,
        result_type: object = None,
        pinned: bool = False,
    ) -> None:
        self.client = client
        self.id = workflow_id
        self.run_id = run_id
        self.result_type = result_type
        self._pinned = pinned

    def __repr__(self) -> str:
        return f"WorkflowHandle(id={self.id!r}, run_id={self.run_id!r})"

    async def _run(self) -> str:
        if self.run_id is None:
            return await self.client.latest_run_id(self.id)
        return self.run_id

    async def result(
        self, timeout: float | None = None, *, follow_runs: bool = True, result_type: object = None
    ) -> Any:
        """Wait for the run to close; return its result or raise.

        Raises ``WorkflowFailedError`` (``.cause`` is the original error, type and message
        kept), ``WorkflowTimedOutError``, ``WorkflowCancelledError``, ``WorkflowTerminatedError``,
        or ``ResultTimeoutError`` (also a built-in ``TimeoutError``) if ``timeout`` seconds
        pass first (the run goes on). Continue-as-new is followed to the final run unless
        ``follow_runs=False``.
        """
        return await self._result(timeout, follow_runs=follow_runs, result_type=result_type)

    async def _result(
        self,
        timeout: float | None,
        *,
        follow_runs: bool = True,
        result_type: object = None,
        watch: Watch | None = None,
    ) -> Any:
        """:meth:`result`; ``watch``: the closed notices of this id's runs, listened to since
        before the run was started (the caller closes it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        client = self.client
        run_id = await self._run()
        rtype = result_type if result_type is not None else self.result_type
        while True:
            summary = await self._wait_closed(run_id, deadline, watch)
            watch = None  # a next run's notices: as for any handle
            if summary.status == RunStatus.CONTINUED_AS_NEW and follow_runs and summary.new_run_id:
                run_id = summary.new_run_id
                continue
            summary = await client.codec.resolve(summary, RunSummary)  # a result by reference
            return outcome_of(summary, client.codec.payloads, rtype)

    async def _wait_closed(
        self, run_id: str, deadline: float | None, early: Watch | None = None
    ) -> RunSummary:
        """The run's closed status entry, once a notice (confirmed by the history) or a read
        of the entry shows it. ``early``: notices listened to since before the run was
        started, so none of its notices can have gone by: the entry is first read after
        ``FIRST_READ_AFTER`` instead of at once (a notice lost on the way, a reconnect, a
        run that existed already and closed long ago are read then); else it is read at once,
        the run may have closed before this watch was opened."""
        client = self.client
        watch = early or await Watch.open(client.nc, client.layout.closed_notice(self.id, run_id))
        received = watch.received
        try:
            poll = 0.5
            summary = None if early is not None else await self._summary(run_id)
            first = early is not None
            while True:
                if summary is not None and summary.status == RunStatus.CORRUPT:
                    summary = await self._still_corrupt(run_id, summary)
                if summary is not None and (
                    summary.status in RunStatus.CLOSED or summary.status == RunStatus.CORRUPT
                ):
                    return summary
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise ResultTimeoutError(
                        f"workflow {self.id!r} run {run_id} did not finish within the timeout; "
                        "it goes on running (wait again, or cancel it)",
                        workflow_id=self.id,
                        run_id=run_id,
                    )
                wait = FIRST_READ_AFTER if first else poll
                wait = wait if remaining is None else min(wait, remaining)
                await watch.wait(wait)
                if received:
                    # anyone could have sent a notice: it only says when to read the run's
                    # history, which tells whether and how the run ended
                    data = received.pop()
                    received.clear()  # one read answers for every notice so far
                    try:
                        noticed = await self._confirmed(run_id, data)
                    except TransportError:  # (a leader election, say): the status entry next
                        noticed, data = None, b"x"
                    if noticed is not None:
                        summary = noticed
                        continue
                    if not data:
                        # sent with the closing append and read before it was stored (or
                        # the append was refused): the notice that follows a stored close
                        # comes next, no need to read the status entry
                        continue
                if first:
                    first = False
                else:
                    poll = min(poll * 2, 5.0)
                summary = await self._summary(run_id)
        finally:
            if early is None:
                await watch.close()

    async def _summary(self, run_id: str) -> RunSummary | None:
        """The run's status entry, or None while it cannot be read now: a wait for the result
        rides out a read that timed out (a stream leader being elected, NATS reconnecting) and
        reads again, up to its own timeout."""
        try:
            return await self.client.summary(self.id, run_id)
        except TransportError as exc:
            if self.client.nc.is_closed:  # no reconnecting left: nothing to wait for
                raise
            log.debug(
                "reading the status of %s run %s failed (%s); trying again", self.id, run_id, exc
            )
            return None

    async def _confirmed(self, run_id: str, data: bytes) -> RunSummary | None:
        """How the run ended, once a closed notice came and the run's newest history batch
        ends it; None while the history shows the run open (a forged or junk notice, or one
        sent with the closing append that was read before the append was stored).

        The notice only says when to look. The summary it carries (the status entry) is
        returned when the history ends the run the same way (status, result, failure, next
        run); otherwise (no summary: df-server's notice sent right behind the append, or a
        forged one) the history's own ending is."""
        client = self.client
        try:
            # only the ending is compared: the payloads of the events before it stay sealed
            # a notice without a summary is df-server's, sent right behind the closing append
            # on a single-replica stream (or a forged one): read as directly as nats-server
            # allows. Should a replica that is behind answer, the run looks open and the
            # notice that follows the stored close is read from the leader.
            batch = await client.history.last_batch(
                self.id, run_id, payloads="last", direct=not data
            )
        except DurableFutureError:
            return None
        terminal = batch.events[-1] if batch is not None and batch.events else None
        if not isinstance(terminal, ev.TERMINAL_EVENTS):
            return None
        try:
            noticed: RunSummary | None = client.codec.decode_summary(data) if data else None
        except DurableFutureError:
            noticed = None
        same = (
            noticed is not None
            and noticed.workflow_id == self.id
            and noticed.run_id == run_id
            and status_of(terminal) == noticed.status
            and getattr(terminal, "result", None) == noticed.result
            and getattr(terminal, "new_run_id", None) == noticed.new_run_id
            and (not isinstance(terminal, ev.WorkflowFailed) or terminal.failure == noticed.failure)
        )
        if same and noticed is not None:
            return noticed
        return ending_summary(self.id, run_id, terminal)

    async def _still_corrupt(self, run_id: str, summary: RunSummary) -> RunSummary | None:
        """A status entry says the history is corrupt: check. Once the bad message has been
        removed the history folds again, and the run's own state counts (None: still open)."""
        try:
            state = await self.client.run_state(self.id, run_id)
        except CorruptHistoryError:
            return summary
        return state.summary() if not state.is_open else None

    async def describe(self) -> WorkflowDescription:
        """Status, pending activities (attempt, worker, last failure, next retry), timers and
        signal waits (name, deadline).

        A run whose history cannot be read is described with status ``corrupt``, the stream
        sequence of the bad message in ``corrupt_at`` and the reason in ``failure``.
        """
        run_id = await self._run()
        try:
            state = await self.client.run_state(self.id, run_id)
        except CorruptHistoryError as exc:
            return describe_corrupt(exc, await self.client.summary(self.id, run_id))
        return describe_state(state)

    async def fetch_history(self, *, archive: str | None = None) -> list[ev.Event]:
        """The run's events, in order (what ``df.testing.Replayer`` replays).

        ``archive`` (``dir:PATH`` or ``objstore``, as given to ``df-server --archive``): read
        the archived history when the run's history is no longer in the stream (its retention
        is over, or it was deleted), its payloads stored by reference read from the archive
        too (a ``PayloadError`` naming an object the archive lacks or holds altered).
        """
        try:
            run_id = await self._run()
            batches = await self.client.history.read(self.id, run_id)
        except WorkflowNotFoundError:
            if archive is None:
                raise
            run_id, batches = self.run_id or "", []
        if batches:
            return [e for b in batches for e in b.events]
        if archive is not None:
            opened = open_archive(archive, self.client.layout, self.client.pub.js)
            found = await opened.read(self.id, run_id or None)
            if found is not None:
                history = self.client.history
                return await history.decode_raw(
                    found.workflow_id,
                    found.run_id,
                    found.batches,
                    opened.objects(history.codec.claims.store if history.codec.claims else None),
                )
        raise WorkflowNotFoundError(
            f"no history for workflow {self.id!r} run {run_id or '(latest)'}"
            + (f" in the stream or in archive {archive}" if archive else "")
        )

    async def delete(self) -> None:
        """Delete this closed run now: its history, status entry and payloads (archived first
        when df-server has ``--archive``). Raises ``df.WorkflowStillOpenError`` for a run that
        is open. The admin role may do it (``df auth init``); the client role may not."""
        run_id = await self._run()
        reply = await self.client._ask(
            self.client.layout.removal("delete"), encode_removal(Removal(self.id, run_id))
        )
        if not reply.ok:
            raise error_from_reply(reply, self.id)

    @property
    def _target(self) -> str:
        """Signals, cancels and terminates go to the latest run unless a run was pinned."""
        return self.run_id or "" if self._pinned else ""

    async def _send(self, message: inp.RunInput) -> Reply:
        reply = await self.client._request(
            "run", InputEnvelope(self.id, input=message), msg_id=f"{self.id}:{message.input_id}"
        )
        if not reply.ok:
            raise error_from_reply(reply, self.id)
        return reply

    async def query(self, name: str, *args: object, timeout: float = 10.0) -> Any:
        """Ask the run for live state through its query handler ``name`` (history unchanged).

        Answered by a workflow worker of the run's task queue, from the state after the latest
        recorded event. Raises ``df.QueryFailedError`` if no worker serves that queue, the
        workflow has no such handler, or the handler raised.
        """
        client = self.client
        run_id = self.run_id or await client.latest_run_id(self.id)
        summary = await client.summary(self.id, run_id)
        if summary is not None:
            queue = summary.task_queue
        else:
            head = await client.history.first_batch(self.id, run_id)
            started = head.events[0] if head else None
            if not isinstance(started, ev.WorkflowStarted):
                raise WorkflowNotFoundError(f"no history for workflow {self.id!r} run {run_id}")
            queue = started.task_queue
        payloads = client.codec.payloads
        encoded = [payloads.to_payload(a, f"query {name!r} argument") for a in args]
        body = encode_query(self.id, run_id, name, await client.codec.pack_payloads(encoded))
        try:
            data = await request(client.nc, client.layout.query(queue), body, timeout)
        except NoResponders:
            raise QueryFailedError(
                f"no workflow worker is serving task queue {queue!r}; queries are answered by "
                "the workers that run the workflow"
            ) from None
        except RequestTimedOut:
            raise QueryFailedError(f"query {name!r} got no answer within {timeout:g}s") from None
        try:
            answer = decode_query_answer(data)
        except DecodeError as exc:
            raise QueryFailedError(f"query {name!r} got an unreadable answer: {exc}") from None
        if not answer.ok:
            raise QueryFailedError(f"query {name!r} failed: {answer.message}")
        return (await client.codec.unpack_payloads([answer.result]))[0]

    async def signal(self, name: str, *args: object) -> None:
        """Deliver signal ``name`` (buffered in history until the workflow waits for it)."""
        check_type_name(name, "signal name")
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"signal name must be a non-empty string, got {name!r}")
        payloads = self.client.codec.payloads
        encoded = payloads.to_payloads(args, f"signal {name!r}")
        await self._send(inp.SignalWorkflow(self._target, name, uuid.uuid4().hex, encoded))

    async def update(
        self,
        name: str,
        *args: object,
        update_id: str | None = None,
        result_type: object = None,
        timeout: float | None = None,
    ) -> Any:
        """Call update ``name`` of the run and return what its handler returned.

        The validator runs first on a worker holding the run (a rejection records nothing);
        the accepted update is recorded, its handler runs in the workflow and its outcome is
        recorded. ``update_id`` makes it idempotent: a call with an id already accepted does
        not run the handler again, it returns the first outcome. Raises
        ``df.UpdateFailedError`` if the update was rejected, its handler raised, or the run
        closed first; ``df.ResultTimeoutError`` once ``timeout`` seconds pass (it goes on).
        """
        return await send_update(
            self,
            name,
            args,
            update_id=update_id,
            result_type=result_type,
            timeout=timeout,
            validate_timeout=10.0,
        )

    async def cancel(self, reason: str = "") -> None:
        """Ask the run to cancel: ``df.CancelledError`` is raised at its current yield."""
        await self._send(inp.RequestCancel(self._target, uuid.uuid4().hex, reason))

    async def terminate(self, reason: str = "") -> None:
        """End the run at once (no cleanup code runs)."""
        await self._send(inp.TerminateWorkflow(self._target, uuid.uuid4().hex, reason))
