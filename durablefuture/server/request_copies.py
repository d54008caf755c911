"""Copies of the report requests df-server could not finish, stored by df-server itself.

A report asked as a request (``report_requests``) is answered ``store`` when its handling
fails: a full store, NATS away, no PubAck within its wait. The failure may come after the
run's history holds the report: its batch appended, some of its effects (an activity task, a
retry timer) not stored. Its worker then stores the report on ``df.<ns>.in.report``; that
stored copy, recorded once by its input id, is taken as a duplicate whose effects are derived
again. A worker killed before it stores the report (or one that cannot store it for minutes)
would leave the run waiting for effects nobody derives, with no recorded reason. So df-server
stores a copy as well, in the background:

- the same bytes and the headers a stored report is read with (the receipt subject, the
  sticky token, the eager ask: the attempts that request was granted get their tasks stored,
  as for the worker's own stored copy), under a message id of its own (a digest of the
  report and ``:s``), so that its own tries are one message;
- tried again with backoff through a NATS outage, ``COPY_TRIES`` tries (a few minutes); a
  try that fails once the server is stopping is the last;
- at most ``MAX_COPIES`` copies, ``MAX_COPY_BYTES`` bytes in all, wait at once; beyond that
  a copy is not kept, and the log names the run that may wait.

Two stored copies (the worker's and df-server's) cost one input more, recorded as nothing new
(the server's ``stats`` count its copies: ``report_copies``). What a copy cannot mend:
df-server and the worker both killed between the append and the answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math

from durablefuture.core.errors import MessageRejectedError, TransportError
from durablefuture.server.base import ServerBase
from durablefuture.transport.dedup import publish_report
from durablefuture.transport.headers import (
    EAGER_ASK_HEADER,
    RECEIPT_HEADER,
    STICKY_HEADER,
)
from durablefuture.transport.messages import Msg
from durablefuture.transport.publisher import MSG_ID
from durablefuture.transport.retrying import Backoff, retry_until

__all__ = ["COPY_BACKOFF", "COPY_TRIES", "MAX_COPIES", "MAX_COPY_BYTES", "RequestCopies"]

log = logging.getLogger("durablefuture.server")

COPY_TRIES = 40
"""Tries to store a copy (``COPY_BACKOFF``: about three minutes)."""
COPY_BACKOFF = Backoff(first=0.25, most=5.0)
MAX_COPIES = 4096
"""Copies waiting to be stored at once, at most."""
MAX_COPY_BYTES = 64 * 1024 * 1024
"""Bytes of the copies waiting to be stored at once, at most."""
_KEPT_HEADERS = (RECEIPT_HEADER, STICKY_HEADER, EAGER_ASK_HEADER)
"""The request headers a stored report is read with."""


class RequestCopies(ServerBase):
    """Stores copies of the report requests whose handling failed (a part of ``Server``)."""

    _copies_waiting = 0
    _copy_bytes = 0

    def _keep_copy(self, subject: str, msg: Msg, workflow_id: str, run_id: str) -> None:
        """Store ``msg`` (a report request whose handling failed) on ``subject``, in the
        background."""
        if self._copies_waiting >= MAX_COPIES or self._copy_bytes + len(msg.data) > MAX_COPY_BYTES:
            self.stats["report_copies_dropped"] += 1
            log.error(
                "a report of run %s was not recorded and %d copies already wait to be stored: "
                "this one is left to its worker (if it died meanwhile, the run waits; "
                "`df why %s` shows what for)",
                run_id,
                self._copies_waiting,
                workflow_id,
                extra={"workflow_id": workflow_id, "run_id": run_id},
            )
            return
        headers = {k: v for k, v in (msg.headers or {}).items() if k in _KEPT_HEADERS}
        headers[MSG_ID] = hashlib.blake2b(msg.data, digest_size=16).hexdigest() + ":s"
        self._copies_waiting += 1
        self._copy_bytes += len(msg.data)
        task = asyncio.create_task(
            self._store_copy(subject, msg.data, headers, workflow_id, run_id)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _store_copy(
        self, subject: str, data: bytes, headers: dict[str, str], workflow_id: str, run_id: str
    ) -> None:
        extra = {"workflow_id": workflow_id, "run_id": run_id}

        async def store() -> None:
            try:
                await publish_report(self.pub, subject, data, headers)
            except MessageRejectedError:
                raise
            except TransportError as exc:
                if self._stopping.is_set():  # no try after this one
                    raise _Stopping(str(exc)) from exc
                raise

        try:
            await retry_until(
                store,
                deadline=math.inf,
                retry_on=(TransportError,),
                never=(MessageRejectedError, _Stopping),
                backoff=COPY_BACKOFF,
                max_tries=COPY_TRIES,
            )
        except MessageRejectedError as exc:  # it never will be: say so
            log.error("a copy of a report of run %s cannot be stored: %s", run_id, exc, extra=extra)
        except TransportError as exc:
            log.error(
                "a copy of a report of run %s was not stored (%s); it is left to its worker",
                run_id,
                exc,
                extra=extra,
            )
        else:
            self.stats["report_copies"] += 1
            log.info("stored a copy of a report of run %s", run_id, extra=extra)
        finally:
            self._copies_waiting -= 1
            self._copy_bytes -= len(data)


class _Stopping(TransportError):
    """A copy's try failed while df-server stops: the last one."""
