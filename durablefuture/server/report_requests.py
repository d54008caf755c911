"""Reports asked of df-server as core-NATS requests (``dfev.<ns>.report``, queue group
``df-server``), recorded without being stored as inputs first.

A request is handled as the same report stored on ``df.<ns>.in.report`` would be: decoded by
the one codec, checked against what a report may carry (``sources.refusal``), recorded in the
run's history with its effects, and only then answered ``recorded``. What a stored input would
dead-letter is stored as a dead letter with its reason and answered ``refused``. Whatever a
stored input would retry (a full store, NATS away, a failure), a server that is stopping or
already handling ``ServerOptions.concurrency`` requests answers ``store``: the worker then
stores the report on the input subject, where the usual redelivery rules apply
(``durablefuture/transport/report_requests.py``). A request whose handling failed may be in
the run's history already, its effects not all stored: df-server stores a copy of it on the
input subject as well (``request_copies``), so the effects are derived again even when the
worker dies before it stores its own. A request without a reply subject is
dropped, as is one whose reply subject is no inbox: nobody waits for it, and a worker
stores a report it got no answer for. A request that asks for it (``Df-Answer-Receipt``) has
its receipt, the batch appended for it, in the answer ``recorded`` rather than sent apart;
it is sent apart all the same when the answer cannot carry it (``store``: the batch's
effects failed) or may come after the worker stopped waiting (half ``ANSWER_WAIT`` gone).
A request that also offers to run activities (``Df-Eager``) may be answered ``eager``,
naming the activity attempts granted to its worker (``server/grants.py``).
"""

from __future__ import annotations

import functools
import os
import signal
import time

from durablefuture.codec.wire import InputEnvelope
from durablefuture.server.receipts import (
    ANSWERED_RECEIPT,
    AnsweredReceipt,
    eager_ask,
    eager_offer,
)
from durablefuture.server.request_desk import Desk, RequestDesks
from durablefuture.server.sources import REPORT
from durablefuture.transport.headers import (
    ANSWER_RECEIPT_HEADER,
    EAGER_ASK_HEADER,
    EAGER_HEADER,
    RECEIPT_HEADER,
    STICKY_HEADER,
)
from durablefuture.transport.messages import Msg
from durablefuture.transport.report_requests import (
    ANSWER_WAIT,
    RECORDED,
    REFUSED,
    STORE,
    recorded_with,
)

__all__ = ["BEFORE_ANSWER_HOOK", "ReportRequests"]

BEFORE_ANSWER_HOOK = "DF_TEST_BEFORE_ANSWER"
"""Test hook (environment): ``die`` kills df-server (SIGKILL) after the append and effects
of a report whose answer grants attempts, before that answer goes out."""


class ReportRequests(RequestDesks):
    """Answers workers' report requests (a part of ``Server``)."""

    async def _handle(
        self, env: InputEnvelope, reply_to: str, receipt_to: str, input_seq: int, sticky: str = ""
    ) -> None:
        raise NotImplementedError  # service.Server

    @functools.cached_property
    def _report_desk(self) -> Desk:
        return Desk(
            kind=REPORT,
            requester="worker",
            done="recorded",
            subject=self.layout.report_requests,
            act=self._record_report,
            refused=_refused,
            store=STORE,
            # appended, its effects not all stored: df-server stores it too, for a worker
            # killed before it does (``request_copies``)
            copied=True,
        )

    async def _start_report_requests(self) -> None:
        await self._open_desk(self._report_desk)

    async def _stop_report_requests(self) -> None:
        """Take no more requests (workers store their reports while no server listens)."""
        await self._close_desk(self._report_desk)

    async def _record_report(self, env: InputEnvelope, msg: Msg) -> bytes:
        headers = msg.headers or {}
        receipt_to = headers.get(RECEIPT_HEADER, "")
        sticky = headers.get(STICKY_HEADER, "")
        began = time.monotonic()
        answered = None
        if receipt_to and env.input is not None and headers.get(ANSWER_RECEIPT_HEADER) == "1":
            offer = eager_offer(headers.get(EAGER_HEADER, ""))
            ask = eager_ask(headers.get(EAGER_ASK_HEADER, ""))
            answered = AnsweredReceipt(env.input.run_id, eager=offer, ask=ask, began=began)
        token = ANSWERED_RECEIPT.set(answered)
        try:
            await self._handle(env, "", receipt_to, 0, sticky)
        except Exception:
            if answered is not None and answered.batch:
                # appended, then failed (its effects not stored): the answer is "store",
                # which carries no receipt, and the stored report is a duplicate, which
                # gets none; send it apart, as to a server that does not carry it
                await self._send_receipt(
                    receipt_to, answered.run_id, answered.seq, answered.spend()
                )
            raise
        finally:
            ANSWERED_RECEIPT.reset(token)
            if answered is not None:
                answered.answered = True  # work this handling started grants nothing more
        if answered is not None and answered.batch:
            batch = answered.spend()
            if time.monotonic() - began > ANSWER_WAIT / 2:
                # the worker may have stopped waiting and stored the report (a duplicate,
                # which gets no receipt): send it apart as well (a worker that has it already
                # takes the second as nothing new)
                await self._send_receipt(receipt_to, answered.run_id, answered.seq, batch)
            if answered.granted and os.environ.get(BEFORE_ANSWER_HOOK) == "die":
                os.kill(os.getpid(), signal.SIGKILL)
            return recorded_with(answered.seq, batch, answered.granted)
        return RECORDED


def _refused(reason: str, error_type: str, run_id: str) -> bytes:
    return REFUSED  # the answer is one word: the reason stays with the dead letter
