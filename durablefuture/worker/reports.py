"""Reports: how a worker tells the server what happened (a workflow task's decisions, an
activity attempt's outcome, a task given up on).

A report is first asked of a df-server as a core-NATS request, answered once the run's history
holds it (nothing stored for the report itself); when no server answers ``recorded`` or
``refused`` in time, it is a server input stored on the namespace's stream, with a message id
made of stable facts (run, input id, and for a workflow task the task it answers and, if the
task carries it, its run's start time: :func:`report_id`), so a report sent twice is recorded
once (``durablefuture/transport/report_requests.py``). Reports that cannot fit in a NATS
message are bounded or cut here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping

from durablefuture.codec.sizes import command_size
from durablefuture.codec.wire import Codec, InputEnvelope, WorkflowTaskMessage
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.commands import Command
from durablefuture.core.errors import MessageRejectedError, TransportError
from durablefuture.core.failure import Failure
from durablefuture.core.replay import describe_command
from durablefuture.transport.dedup import publish_report
from durablefuture.transport.guard import max_payload
from durablefuture.transport.headers import (
    ANSWER_RECEIPT_HEADER,
    EAGER_ASK_HEADER,
    EAGER_HEADER,
    RECEIPT_HEADER,
    STICKY_HEADER,
)
from durablefuture.transport.messages import Msg
from durablefuture.transport.publisher import MSG_ID, Publisher
from durablefuture.transport.report_requests import REFUSED, STORE, ask_report
from durablefuture.transport.storage import StorageWait
from durablefuture.transport.subjects import Layout
from durablefuture.worker.options import (
    MAX_FAILURE_CHARS,
    MAX_REPORT_BYTES,
    MAX_REPORT_COMMANDS,
    REPORT_TRIES,
)

__all__ = ["STORE_ANSWER_HOOK", "Reports", "cut", "report_id"]

log = logging.getLogger("durablefuture.worker")

STORE_ANSWER_HOOK = "DF_TEST_STORE_ANSWER"
"""Test hook (environment): ``die`` kills the worker (SIGKILL) when a report is answered
``store`` (or not in time), before it stores the report."""


class Reports:
    """Sends a worker's reports to the server and keeps them within the message size limit."""

    def __init__(
        self,
        codec: Codec,
        pub: Publisher,
        layout: Layout,
        storage: StorageWait,
        stopping: asyncio.Event,
    ) -> None:
        self.ask = True
        """Ask a df-server to record each report before storing it (``WorkerOptions``)."""
        self.codec = codec
        self.pub = pub
        self.layout = layout
        self.storage = storage
        self.stopping = stopping
        self.receipts = ""
        """The inbox the server sends receipts to (set once the worker listens on one)."""
        self.on_answered: Callable[[str, int, bytes, tuple[int, ...]], Awaitable[None]] | None = (
            None
        )
        """Applies a receipt carried in the answer to a report (run id, stream sequence,
        batch, activity seqs granted to this worker); called with the run's lock held, as
        every report with a receipt is sent."""
        self.eager: Callable[[str], int] | None = None
        """How many activity attempts this worker offers to run with a report for a run (by
        its id: ``eager.py``)."""
        self.sticky = ""
        """The worker's sticky token (set once it takes sticky workflow tasks)."""

    async def send(
        self,
        workflow_id: str,
        message: inp.RunInput,
        receipt: bool = False,
        *,
        keep: Msg | None = None,
        task: WorkflowTaskMessage | None = None,
        persist: bool = True,
    ) -> None:
        """Have the server record a report (asked, else stored). With ``keep`` (the task it
        reports on), a full
        JetStream store is waited out with that task kept in progress, never given up on.
        ``task``: the workflow task it answers (part of the message id). ``persist``: a
        report no server answered is stored through transport errors for a few minutes (a
        server may have recorded it in part); :meth:`store` retries on its own."""
        data = await self.codec.pack_input(InputEnvelope(workflow_id, input=message))
        msg_id = report_id(message, task)
        # the message id is for the stream's duplicate window: a stored report carries it, a
        # request does not (df-server never reads it there; 62 bytes less per report asked)
        headers: dict[str, str] = {}
        if receipt and self.receipts:
            headers[RECEIPT_HEADER] = self.receipts
            # in the answer when asked (one message less); apart when stored
            headers[ANSWER_RECEIPT_HEADER] = "1"
            if self.sticky:
                # this worker holds the run's generator: its next workflow tasks come here
                headers[STICKY_HEADER] = self.sticky
            if self.eager is not None and (offer := self.eager(message.run_id)) > 0:
                headers[EAGER_HEADER] = str(offer)  # runs activities the report schedules
                # stored if no usable answer comes: then no grant of this request is run
                headers[EAGER_ASK_HEADER] = os.urandom(6).hex()

        if self.ask:
            answer = await ask_report(self.pub.replies, self.layout.report_requests, data, headers)
            if answer.word == REFUSED:
                log.error(
                    "df-server refused a report of run %s (stored as a dead letter with the "
                    "reason)",
                    message.run_id,
                    extra={"workflow_id": workflow_id, "run_id": message.run_id},
                )
            if answer.word == STORE and os.environ.get(STORE_ANSWER_HOOK) == "die":
                os.kill(os.getpid(), signal.SIGKILL)
            if answer.word != STORE:
                if answer.receipt and receipt and self.on_answered is not None:
                    run_id = message.run_id
                    await self.on_answered(run_id, answer.seq, answer.receipt, answer.granted)
                return

        async def publish() -> None:
            await publish_report(
                self.pub, self.layout.input("report"), data, {MSG_ID: msg_id, **headers}
            )

        tries = REPORT_TRIES if self.ask and persist else 1  # store() retries on its own
        delay = 0.25
        for attempt in range(1, tries + 1):
            try:
                if keep is None:
                    await publish()
                    self.storage.stored()
                else:
                    await self.storage.retry(publish, keep)
                return
            except MessageRejectedError:
                raise
            except TransportError:
                # an unanswered request may have been recorded in part (history appended, its
                # effects not): the stored report is what finishes it, so keep at it
                if attempt == tries or self.stopping.is_set():
                    raise
            if keep is not None:
                with contextlib.suppress(Exception):
                    await keep.in_progress()
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)

    async def store(
        self,
        workflow_id: str,
        report: inp.RunInput,
        msg: Msg,
        *,
        what: str,
        extra: Mapping[str, object],
        receipt: bool = False,
        task: WorkflowTaskMessage | None = None,
        on_retry: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Store ``report``, retrying while NATS is away (up to REPORT_TRIES, a few minutes;
        not once the worker is stopping). Meanwhile ``msg`` stays in progress, and
        ``on_retry`` runs before each new try. ``what`` names the report in the log."""
        delay = 0.25
        for tries in range(1, REPORT_TRIES + 1):
            try:
                await self.send(
                    workflow_id, report, receipt=receipt, keep=msg, task=task, persist=False
                )
                return
            except MessageRejectedError:
                raise
            except TransportError as exc:
                if tries == REPORT_TRIES or self.stopping.is_set():
                    raise
                if tries == 1:
                    log.warning(
                        "could not store %s yet (%s); retrying", what, exc, extra=dict(extra)
                    )
            with contextlib.suppress(Exception):
                await msg.in_progress()
            if on_retry is not None:
                await on_retry()
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)

    def bounded(self, commands: tuple[Command, ...]) -> tuple[tuple[Command, ...], bool]:
        """At most MAX_REPORT_COMMANDS commands and ~MAX_REPORT_BYTES per report.

        A NATS message is limited (1 MiB by default); a fan-out of thousands of activities is
        recorded over several reports, each followed by a workflow task for the next.
        """
        if len(commands) == 1:
            return commands, False
        # leave room for the envelope, and for the events the server makes of the commands
        budget = min(MAX_REPORT_BYTES, max(1024, (max_payload(self.pub.nc) - 4096) // 2))
        size = 0
        for i, cmd in enumerate(commands):
            if i >= MAX_REPORT_COMMANDS:
                return commands[:i], True
            size += command_size(self.codec, cmd)
            if size > budget and i > 0:
                return commands[:i], True
        return commands, False

    def too_large(self, report: inp.CompleteWorkflowTask, exc: MessageRejectedError) -> Failure:
        """Why a workflow task's decisions cannot be reported: which command, how big, the
        limit, and what to do."""
        limit = exc.limit or max_payload(self.pub.nc)
        sized = [(command_size(self.codec, c), c) for c in report.commands]
        if sized:
            size, biggest = max(sized, key=lambda pair: pair[0])
            seq = getattr(biggest, "seq", None)
            what = f"command {type(biggest).__name__}"
            what += f" #{seq}" if seq is not None else ""
            brief = describe_command(biggest).split(" args=")[0]  # the args are the bulk
            what += f" ({brief}) is {size:,} bytes encoded"
        else:
            what = f"the report is {exc.size or 0:,} bytes"
        return Failure(
            message=(
                f"the workflow task's decisions cannot be reported: {what}, and the NATS "
                f"server accepts at most {limit:,} bytes per message (max_payload). Pass large "
                "values by reference (store the data elsewhere, e.g. in a JetStream object "
                "store, and pass its key), or raise max_payload in the nats-server config; the "
                "workflow task is retried with backoff"
            ),
            type="MessageRejectedError",
        )


def report_id(message: inp.RunInput, task: WorkflowTaskMessage | None) -> str:
    """The ``Nats-Msg-Id`` of a report stored on ``in.report``, ``task`` the workflow task it
    answers: ``<run>:<input id>[:<trigger>.<attempt>[:<run's start time>]]``."""
    msg_id = f"{message.run_id}:{message.input_id}"
    if task is None:
        return msg_id
    # The answer to a workflow task is a fact of that task: a report based on the same event
    # that the server could not use (it rejected one based on an event it had not stored yet)
    # must not make the store drop this one as its duplicate.
    msg_id = f"{msg_id}:{task.task.trigger}.{task.task.attempt}"
    started = task.events[0] if task.events else None
    if isinstance(started, ev.WorkflowStarted):
        # A run's first task is written before the run's WorkflowStarted is. A run continued
        # as new has its run id chosen beforehand: if df-server dies in between, the run is
        # created again under the same id and its first task written again (with the new
        # start time, server/effects.py), answered by the same decisions. Without the start
        # time, the stream would answer the report of that task "duplicate" of the orphan
        # task's (refused, its id still in the duplicate window) and, while it still holds
        # that copy, byte for byte the same, the worker would take it for its own earlier
        # one (transport/dedup.py): the report lost, the run would never move.
        msg_id += f":{started.at!r}"
    return msg_id


def cut(failure: Failure) -> Failure:
    """``failure`` small enough to report: its message cut, without stack, details or cause."""
    message = failure.message
    if len(message) > MAX_FAILURE_CHARS:
        message = message[:MAX_FAILURE_CHARS] + " [cut]"
    return Failure(
        message=message + " (the full failure was too large to report)",
        type=failure.type[:200],
        kind=failure.kind,
        non_retryable=failure.non_retryable,
        timeout_type=failure.timeout_type,
    )
