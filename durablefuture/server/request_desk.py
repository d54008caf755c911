"""What df-server does alike for every kind of input it takes as a core-NATS request (queue
group ``df-server``) instead of from its input stream: clients' starts (``start_requests``) and
workers' reports (``report_requests``). Each kind is a ``Desk``: its subject, its names, and the
few steps that are its own; ``RequestDesks`` answers at every desk the same way.

A request whose reply subject is no inbox (nor the one nats-server makes for a request that
crossed from the users' account) is dropped: nobody waits for it, and its requester stores what
got no answer. A server that is stopping, or already holds ``ServerOptions.concurrency``
requests of the kind, answers ``store``. Any other request is handled as the same input stored
on its input subject would be: decoded by the one codec, checked against what that subject may
carry (``sources.refusal``), then acted on. What a stored input would dead-letter is stored as a
dead letter with its reason and answered with a refusal; whatever a stored input would retry (a
full store, NATS away, a failure) is answered ``store``, and the requester stores it where the
usual redelivery rules apply. A request is timed into ``df_server_input_seconds`` like a stored
input.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import attrs

from durablefuture import metrics
from durablefuture.codec.wire import InputEnvelope
from durablefuture.core.errors import (
    CorruptHistoryError,
    DecodeError,
    MessageRejectedError,
    RequestRejectedError,
)
from durablefuture.server.request_copies import RequestCopies
from durablefuture.server.sources import refusal
from durablefuture.transport.deadletter import dead_letter
from durablefuture.transport.guard import check_reply_subject
from durablefuture.transport.messages import Msg, Subscription
from durablefuture.transport.translate import translated

__all__ = ["Desk", "RequestDesks"]

log = logging.getLogger("durablefuture.server")


@attrs.define(eq=False)
class Desk:
    """One kind of request: what names it, what of its handling is its own, and its state."""

    kind: str
    """The input subject whose rules it follows (``sources.refusal``); it names the counters
    ``<kind>_requests`` and ``<kind>_requests_unanswered`` (and ``<kind>_requests_stored``
    with ``count_stored``), and the log lines."""
    requester: str
    """Who asks, and stores what is answered ``store`` or not at all ("client", "worker")."""
    done: str
    """What acting on a request does, for the log ("made", "recorded")."""
    subject: str
    act: Callable[[InputEnvelope, Msg], Awaitable[bytes | None]]
    """Act on a request that passed the checks: the answer, or None when nothing was done
    (answered ``store``). Raises what a stored input would be retried or refused for."""
    refused: Callable[[str, str, str], bytes]
    """The answer to a refused request, from its reason, error type and run id."""
    store: bytes
    """The answer that has the requester store the input itself."""
    admit: Callable[[], AbstractAsyncContextManager[None]] | None = None
    """Held while a request is handled (a place in start admission)."""
    refuses: tuple[type[Exception], ...] = (DecodeError,)
    """The failures to act that refuse a request (any other is answered ``store``); a
    corrupt history always refuses it."""
    count_stored: bool = False
    copied: bool = False
    """A request whose handling failed is also stored by df-server itself
    (``request_copies``): its failure may come after the run's history holds it."""
    sub: Subscription | None = None
    asked: int = 0
    """Requests held now, at most ``ServerOptions.concurrency``."""
    # worked out once: every request names them
    reply_label: str = attrs.field(init=False)
    counted: str = attrs.field(init=False)
    unanswered: str = attrs.field(init=False)
    stored: str = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.reply_label = f"{self.kind} reply subject"
        self.counted = f"{self.kind}_requests"
        self.unanswered = f"{self.kind}_requests_unanswered"
        self.stored = f"{self.kind}_requests_stored"


class RequestDesks(RequestCopies):
    """Answers the requests of every ``Desk`` (a part of ``Server``)."""

    async def _corrupt(self, exc: CorruptHistoryError, reply_to: str = "") -> None:
        raise NotImplementedError  # service.Server

    async def _open_desk(self, desk: Desk) -> None:
        if desk.sub is None:
            with translated(f"subscribing to the {desk.requester}s' {desk.kind} requests"):
                desk.sub = await self.nc.subscribe(
                    desk.subject, queue="df-server", cb=functools.partial(self._at_desk, desk)
                )

    async def _close_desk(self, desk: Desk) -> None:
        """Take no more requests (requesters store their inputs while no server listens)."""
        sub, desk.sub = desk.sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _at_desk(self, desk: Desk, msg: Msg) -> None:
        try:  # a requester's inbox, or the one nats-server makes for a request that crossed
            # from the users' account (``df auth init``); answering any other subject would
            # write where the sender chose. A requester stores what stays unanswered.
            check_reply_subject(msg.reply, desk.reply_label, imported=True)
        except MessageRejectedError:
            self.stats[desk.unanswered] += 1
            return
        if self._stopping.is_set() or desk.asked >= self.options.concurrency:
            if desk.count_stored:
                self.stats[desk.stored] += 1
            await self._answer_request(msg, desk.store)
            return
        desk.asked += 1
        task = asyncio.create_task(self._take_request(desk, msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _take_request(self, desk: Desk, msg: Msg) -> None:
        began = time.perf_counter()
        try:
            if desk.admit is None:
                answer = await self._handle_request(desk, msg)
            else:
                async with desk.admit():
                    answer = await self._handle_request(desk, msg)
        finally:
            desk.asked -= 1
        seconds = time.perf_counter() - began
        metrics.SERVER_INPUT_SECONDS.observe(seconds, self.layout.namespace)
        await self._answer_request(msg, answer)

    async def _answer_request(self, msg: Msg, answer: bytes) -> None:
        with contextlib.suppress(Exception):  # unanswered: the requester stores the input
            await self.pub.notify(msg.reply, answer)

    async def _handle_request(self, desk: Desk, msg: Msg) -> bytes:
        self.stats["inputs"] += 1
        self.stats[desk.counted] += 1
        try:
            env = self.codec.decode_input(msg.data)
        except DecodeError as exc:
            return await self._refuse_request(desk, msg, str(exc))
        refused = refusal(desk.kind, env)
        if refused is not None:
            log.error("refused a %s request on %s: %s", desk.kind, msg.subject, refused)
            return await self._refuse_request(desk, msg, refused)
        try:
            answer = await desk.act(env, msg)
        except asyncio.CancelledError:
            raise
        except CorruptHistoryError as exc:
            await self._corrupt(exc)
            return await self._refuse_request(
                desk, msg, str(exc), CorruptHistoryError.__name__, run_id=exc.run_id
            )
        except desk.refuses as exc:
            return await self._refuse_request(desk, msg, str(exc))
        except Exception as exc:  # what a stored input would retry: the requester stores it
            log.info(
                "a %s request was not %s now (%s); the %s stores it",
                desk.kind,
                desk.done,
                exc,
                desk.requester,
            )
            if desk.copied and env.input is not None:
                self._keep_copy(
                    self.layout.input(desk.kind), msg, env.workflow_id, env.input.run_id
                )
            return desk.store
        if answer is None:
            return desk.store
        self._storage.stored()
        return answer

    async def _refuse_request(
        self,
        desk: Desk,
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
            return desk.store
        self.stats["dead_letters"] += 1
        metrics.DEAD_LETTERS.inc("server")
        return desk.refused(reason, error_type, run_id)
