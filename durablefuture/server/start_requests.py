"""Client starts asked of df-server as core-NATS requests (``dfev.<ns>.start``, queue group
``df-server``), made without being stored as inputs first.

A request is handled as the same start stored on ``df.<ns>.in.start`` would be: decoded by
the one codec, checked against what a client's start may carry (``sources.refusal``), and the
run created (or found by its request id, or refused by the reuse policy) with its effects;
only then is the ``Reply`` sent back. The run's first workflow task is stored before its
WorkflowStarted (``server/starts.py``), so a df-server that dies while it holds a request
leaves either no run, or one that goes on; its client stores the start after
``transport.start_requests.ANSWER_WAIT`` and gets the same run (one run per request id).

A start request waits for a place in start admission (``admission.StartGate``) in line with
the stored starts, for at most ``admission.REQUEST_WAIT`` seconds (its client waits 5 s for
the answer). What a stored start would dead-letter is stored as a dead letter with its reason
and answered with a refusal. Whatever a stored start would retry (a full store, NATS away, a
failure), and a request beyond ``ServerOptions.concurrency`` held at once, or reaching a
stopping server, is answered ``store``: the client stores it. A request
whose reply subject is no inbox is dropped: nobody waits for it, and a client stores a start
it got no answer for.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time

from durablefuture import metrics
from durablefuture.codec.wire import Reply
from durablefuture.core.errors import (
    CorruptHistoryError,
    DecodeError,
    MessageRejectedError,
    RequestRejectedError,
)
from durablefuture.server.admission import REQUEST_WAIT
from durablefuture.server.sources import refusal
from durablefuture.server.starts import Starts
from durablefuture.transport.deadletter import dead_letter
from durablefuture.transport.guard import check_reply_subject
from durablefuture.transport.messages import Msg, Subscription
from durablefuture.transport.payload_store import MissingPayloadError
from durablefuture.transport.start_requests import STORE
from durablefuture.transport.translate import translated

__all__ = ["StartRequests"]

log = logging.getLogger("durablefuture.server")


class StartRequests(Starts):
    """Answers clients' start requests (a part of ``Server``)."""

    _start_sub: Subscription | None = None
    _starts_asked = 0

    async def _corrupt(self, exc: CorruptHistoryError, reply_to: str = "") -> None:
        raise NotImplementedError  # service.Server

    async def _start_start_requests(self) -> None:
        if self._start_sub is None:
            with translated("subscribing to the clients' start requests"):
                self._start_sub = await self.nc.subscribe(
                    self.layout.start_requests, queue="df-server", cb=self._on_start_request
                )

    async def _stop_start_requests(self) -> None:
        """Take no more requests (clients store their starts while no server listens)."""
        sub, self._start_sub = self._start_sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_start_request(self, msg: Msg) -> None:
        try:  # a requester's inbox, or the one nats-server makes for a request that crossed
            # from the users' account (``df auth init``)
            check_reply_subject(msg.reply, "start reply subject", imported=True)
        except MessageRejectedError:
            self.stats["start_requests_unanswered"] += 1
            return
        if self._stopping.is_set() or self._starts_asked >= self.options.concurrency:
            self.stats["start_requests_stored"] += 1
            await self._answer_start(msg, STORE)
            return
        self._starts_asked += 1
        task = asyncio.create_task(self._take_start(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _take_start(self, msg: Msg) -> None:
        began = time.perf_counter()
        try:
            # in line with the stored starts (``admission``), for a shorter while
            async with self._gate.start(max_wait=REQUEST_WAIT):
                answer = await self._make_start(msg)
        finally:
            self._starts_asked -= 1
        seconds = time.perf_counter() - began
        metrics.SERVER_INPUT_SECONDS.observe(seconds, self.layout.namespace)
        await self._answer_start(msg, answer)

    async def _answer_start(self, msg: Msg, answer: bytes) -> None:
        with contextlib.suppress(Exception):  # unanswered: the client stores the start
            await self.pub.notify(msg.reply, answer)

    async def _make_start(self, msg: Msg) -> bytes:
        self.stats["inputs"] += 1
        self.stats["start_requests"] += 1
        try:
            env = self.codec.decode_input(msg.data)
        except DecodeError as exc:
            return await self._refuse_start(msg, str(exc))
        refused = refusal("start", env)
        if refused is not None or env.start is None:
            reason = refused or "a start request without a start"
            log.error("refused a start request on %s: %s", msg.subject, reason)
            return await self._refuse_start(msg, reason)
        replies: list[Reply] = []

        async def keep(reply: Reply) -> None:
            replies.append(reply)

        try:
            await self._handle_start(env.start, "", keep)
        except asyncio.CancelledError:
            raise
        except CorruptHistoryError as exc:
            await self._corrupt(exc)
            return await self._refuse_start(
                msg, str(exc), CorruptHistoryError.__name__, run_id=exc.run_id
            )
        except (DecodeError, MissingPayloadError) as exc:
            return await self._refuse_start(msg, str(exc))
        except Exception as exc:  # what a stored start would retry: the client stores it
            log.info("a start request was not made now (%s); the client stores it", exc)
            return STORE
        if not replies:
            return STORE
        self._storage.stored()
        return self.codec.encode_reply(replies[0])

    async def _refuse_start(
        self,
        msg: Msg,
        reason: str,
        error_type: str = RequestRejectedError.__name__,
        *,
        run_id: str = "",
    ) -> bytes:
        # stored without the reply subject: the dead letter has nothing to answer
        copy = dataclasses.replace(msg, reply="")
        if not await dead_letter(
            self.pub, self.layout.dead_letter("server-input"), copy, "server-input", reason
        ):
            return STORE
        self.stats["dead_letters"] += 1
        metrics.DEAD_LETTERS.inc("server")
        refusal = Reply(False, run_id=run_id, error_type=error_type, message=reason)
        return self.codec.encode_reply(refusal)
