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
failure), a request beyond ``ServerOptions.concurrency`` held at once, or reaching a
stopping server, and a signal with start whose run is running (its signal would be appended
with nothing stored to derive its effects again after a crash) are answered ``store``: the
client stores it. A request
whose reply subject is no inbox is dropped: nobody waits for it, and a client stores a start
it got no answer for.
"""

from __future__ import annotations

import functools

from durablefuture.codec.wire import InputEnvelope, Reply
from durablefuture.core.errors import DecodeError
from durablefuture.server.admission import REQUEST_WAIT
from durablefuture.server.request_desk import Desk, RequestDesks
from durablefuture.server.starts import Starts
from durablefuture.transport.messages import Msg
from durablefuture.transport.payload_store import MissingPayloadError
from durablefuture.transport.start_requests import STORE

__all__ = ["StartRequests"]


class StartRequests(Starts, RequestDesks):
    """Answers clients' start requests (a part of ``Server``)."""

    @functools.cached_property
    def _start_desk(self) -> Desk:
        return Desk(
            kind="start",
            requester="client",
            done="made",
            subject=self.layout.start_requests,
            act=self._make_start,
            refused=self._start_refusal,
            store=STORE,
            # in line with the stored starts (``admission``), for a shorter while
            admit=lambda: self._gate.start(max_wait=REQUEST_WAIT),
            # a start naming a payload that is gone is refused, as a stored one is
            refuses=(DecodeError, MissingPayloadError),
            count_stored=True,
        )

    async def _start_start_requests(self) -> None:
        await self._open_desk(self._start_desk)

    async def _stop_start_requests(self) -> None:
        """Take no more requests (clients store their starts while no server listens)."""
        await self._close_desk(self._start_desk)

    async def _make_start(self, env: InputEnvelope, msg: Msg) -> bytes | None:
        if env.start is None:  # (``sources.refusal`` refuses these already)
            raise DecodeError("a start request without a start")
        replies: list[Reply] = []

        async def keep(reply: Reply) -> None:
            replies.append(reply)

        await self._handle_start(env.start, "", keep)
        return self.codec.encode_reply(replies[0]) if replies else None

    def _start_refusal(self, reason: str, error_type: str, run_id: str) -> bytes:
        refusal = Reply(False, run_id=run_id, error_type=error_type, message=reason)
        return self.codec.encode_reply(refusal)
