"""Reports asked of df-server as core-NATS requests (``dfev.<ns>.report``, queue group
``df-server``), recorded without being stored as inputs first.

A request is handled as the same report stored on ``df.<ns>.in.report`` would be: decoded by
the one codec, checked against what a report may carry (``sources.refusal``), recorded in the
run's history with its effects, and only then answered ``recorded``. What a stored input would
dead-letter is stored as a dead letter with its reason and answered ``refused``. Whatever a
stored input would retry (a full store, NATS away, a failure), a server that is stopping or
already handling ``ServerOptions.concurrency`` requests answers ``store``: the worker then
stores the report on the input subject, where the usual redelivery rules apply
(``durablefuture/transport/report_requests.py``). A request without a reply subject is
dropped, as is one whose reply subject is no inbox: nobody waits for it, and a worker
stores a report it got no answer for.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time

from durablefuture import metrics
from durablefuture.codec.wire import InputEnvelope
from durablefuture.core.errors import CorruptHistoryError, DecodeError, MessageRejectedError
from durablefuture.server.base import ServerBase
from durablefuture.server.sources import REPORT, refusal
from durablefuture.transport.deadletter import dead_letter
from durablefuture.transport.guard import check_reply_subject
from durablefuture.transport.headers import RECEIPT_HEADER, STICKY_HEADER
from durablefuture.transport.messages import Msg, Subscription
from durablefuture.transport.report_requests import RECORDED, REFUSED, STORE
from durablefuture.transport.translate import translated

__all__ = ["ReportRequests"]

log = logging.getLogger("durablefuture.server")


class ReportRequests(ServerBase):
    """Answers workers' report requests (a part of ``Server``)."""

    _report_sub: Subscription | None = None
    _asked = 0

    async def _handle(
        self, env: InputEnvelope, reply_to: str, receipt_to: str, input_seq: int, sticky: str = ""
    ) -> None:
        raise NotImplementedError  # service.Server

    async def _corrupt(self, exc: CorruptHistoryError, reply_to: str = "") -> None:
        raise NotImplementedError  # service.Server

    async def _start_report_requests(self) -> None:
        if self._report_sub is None:
            with translated("subscribing to the workers' report requests"):
                self._report_sub = await self.nc.subscribe(
                    self.layout.report_requests, queue="df-server", cb=self._on_report_request
                )

    async def _stop_report_requests(self) -> None:
        """Take no more requests (workers store their reports while no server listens)."""
        sub, self._report_sub = self._report_sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_report_request(self, msg: Msg) -> None:
        try:  # a requester's inbox, or the one nats-server makes for a request that crossed
            # from the users' account (``df auth init``); answering any other subject would
            # write where the sender chose. A worker stores what stays unanswered.
            check_reply_subject(msg.reply, "report reply subject", imported=True)
        except MessageRejectedError:
            self.stats["report_requests_unanswered"] += 1
            return
        if self._stopping.is_set() or self._asked >= self.options.concurrency:
            await self._answer(msg, STORE)
            return
        self._asked += 1
        task = asyncio.create_task(self._take_report(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _take_report(self, msg: Msg) -> None:
        began = time.perf_counter()
        try:
            answer = await self._record_report(msg)
        finally:
            self._asked -= 1
        seconds = time.perf_counter() - began
        metrics.SERVER_INPUT_SECONDS.observe(seconds, self.layout.namespace)
        await self._answer(msg, answer)

    async def _answer(self, msg: Msg, answer: bytes) -> None:
        with contextlib.suppress(Exception):  # unanswered: the worker stores the report
            await self.pub.notify(msg.reply, answer)

    async def _record_report(self, msg: Msg) -> bytes:
        self.stats["inputs"] += 1
        self.stats["report_requests"] += 1
        try:
            env = self.codec.decode_input(msg.data)
        except DecodeError as exc:
            return await self._refuse(msg, str(exc))
        refused = refusal(REPORT, env)
        if refused is not None:
            log.error("refused a report request on %s: %s", msg.subject, refused)
            return await self._refuse(msg, refused)
        headers = msg.headers or {}
        receipt_to = headers.get(RECEIPT_HEADER, "")
        sticky = headers.get(STICKY_HEADER, "")
        try:
            await self._handle(env, "", receipt_to, 0, sticky)
        except asyncio.CancelledError:
            raise
        except CorruptHistoryError as exc:
            await self._corrupt(exc)
            return await self._refuse(msg, str(exc))
        except DecodeError as exc:  # e.g. a report for a run that does not exist
            return await self._refuse(msg, str(exc))
        except Exception as exc:  # what a stored input would retry: the worker stores it
            log.info("a report request was not recorded now (%s); the worker stores it", exc)
            return STORE
        self._storage.stored()
        return RECORDED

    async def _refuse(self, msg: Msg, reason: str) -> bytes:
        # stored without the reply subject: the dead letter has nothing to terminate
        copy = dataclasses.replace(msg, reply="")
        if not await dead_letter(
            self.pub, self.layout.dead_letter("server-input"), copy, "server-input", reason
        ):
            return STORE
        self.stats["dead_letters"] += 1
        metrics.DEAD_LETTERS.inc("server")
        return REFUSED
