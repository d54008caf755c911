"""What every part of a df-server shares: its connection, options, stores and counters.

The server is split by concern into mixins over this base, each building on the ones before:
``runs.RunCaches`` (the run cache), ``effects.Effects`` (sending what a decision implies),
``inputs.RunInputs`` (recording an input for a run), ``starts.Starts`` (starting runs) and
``service.Server`` (lifecycle and the input loop). Each uses the state declared here and the
methods of the parts below it; nothing else reaches across.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from attrs import frozen

from durablefuture.codec.wire import Codec, Reply, default_codec
from durablefuture.core import inputs as inp
from durablefuture.core.errors import TransportError
from durablefuture.core.namespace import NamespaceSettings
from durablefuture.core.orchestration import Decision
from durablefuture.server.admission import StartGate
from durablefuture.server.local_timers import LocalTimers
from durablefuture.server.options import ServerOptions
from durablefuture.server.schedules import ScheduleService
from durablefuture.server.visibility import VisibilityIndex
from durablefuture.transport.connection import NATS
from durablefuture.transport.consumer import PullConsumer
from durablefuture.transport.guard import check_reply_subject
from durablefuture.transport.headers import GRANTED_HEADER, RUN_HEADER, SEQ_HEADER
from durablefuture.transport.history import HistoryStore
from durablefuture.transport.layout import KeyValue
from durablefuture.transport.publisher import Publisher
from durablefuture.transport.storage import StorageWait
from durablefuture.transport.subjects import Layout

if TYPE_CHECKING:
    from durablefuture.server.runs import RunCache

__all__ = ["STATUS_WRITES", "PendingStatus", "ServerBase"]

STATUS_WRITES = 8
"""Running status entries written at once at most; the others wait their turn."""

log = logging.getLogger("durablefuture.server")


@frozen(slots=True)
class PendingStatus:
    """A run's "running" status entry to write later (``server/status_later.py``): only what
    the write needs, about 600 bytes per run started within the last ``status_delay``
    seconds (or, while NATS is away, since it went)."""

    handle: asyncio.TimerHandle
    workflow_id: str
    body: bytes
    """The entry, encoded."""
    tries: int
    """Writes of it tried so far."""
    created: int = 0
    """The stream sequence of the entry once created (then only the check after it is left)."""


class ServerBase:
    """The state of one df-server, and the answer to a requester that every part may send."""

    def __init__(self, nc: NATS, options: ServerOptions | None = None, codec: Codec | None = None):
        self.nc = nc
        self.options = options or ServerOptions()
        self.codec = codec or default_codec()
        self.layout = Layout(self.options.namespace)
        self.pub = Publisher(nc)
        self.js = self.pub.js
        self.history = HistoryStore(nc, self.pub, self.layout, self.codec)
        self._cache: OrderedDict[str, RunCache] = OrderedDict()
        self._start_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._consumer: PullConsumer | None = None
        self._start_consumer: PullConsumer | None = None
        self._runs_kv: KeyValue | None = None
        self._act_kv: KeyValue | None = None
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._status_pending: dict[str, PendingStatus] = {}
        """Runs whose "running" status entry is due later (``server/status_later.py``)."""
        self._status_writes = asyncio.Semaphore(STATUS_WRITES)
        """Running status entries being written at once (``server/status_later.py``)."""
        self.clock = self.options.clock
        self._local_timers = LocalTimers(self.clock, self._fire_local)
        """The local fast path of the durable timers this server armed (``Effects._arm``)."""
        self._own_nc = False
        self._remove_health: Callable[[], None] = lambda: None
        self.schedules: ScheduleService | None = None
        self.visibility: VisibilityIndex | None = None
        self._storage = StorageWait(
            f"df-server (namespace {self.layout.namespace})",
            keepalive=max(0.1, min(1.0, self.options.input_ack_wait / 3)),
            stopping=self._stopping,
        )
        self._gate = StartGate(
            self.options.start_concurrency, keepalive=max(0.1, self.options.input_ack_wait / 3)
        )
        self._corrupt_runs: OrderedDict[str, int] = OrderedDict()
        self.settings = NamespaceSettings()
        """The namespace's retention and history limits (read from, or written to, its stream
        when the server starts; refreshed by the janitor)."""
        self.stats: dict[str, int] = {
            "inputs": 0,
            "conflicts": 0,
            "duplicates": 0,
            "ignored": 0,
            "rejected": 0,
            "dead_letters": 0,
            "cache_hits": 0,
            "cache_misses": 0,
            "storage_waits": 0,
            "corrupt_histories": 0,
            "compacted": 0,
            "payload_sweeps": 0,
            "overdue_removals": 0,  # closed runs long past their removal time: removal asked
            "sticky_moved": 0,
            "report_requests": 0,
            "report_requests_unanswered": 0,
            "start_requests": 0,
            "report_copies": 0,  # report requests not recorded, stored by df-server itself
            "report_copies_dropped": 0,  # not kept: too many waiting already
            "start_requests_stored": 0,
            "start_requests_unanswered": 0,
            "eager_granted": 0,  # activity attempts granted to the workers that decided them
            "eager_relisted": 0,  # granted attempts whose effects were derived again: listed
            "checks_timed_out": 0,  # attempts of fired check lists nobody ran: timed out
            "checks_published": 0,  # not marked eager (granted by a df-server of before)
            "checks_later": 0,  # listed again (a live holder runs them)
            "checks_done": 0,  # their outcome recorded (or the run gone)
            "checks_again": 0,  # their outcome the newest batch: its effects derived again
        }
        self._gone_sticky: OrderedDict[str, None] = OrderedDict()
        """Sticky tokens of workers found gone: no workflow task is sent to them again."""

    async def _reply(self, reply_to: str, reply: Reply) -> None:
        if not reply_to:
            return
        try:
            await self.pub.notify(check_reply_subject(reply_to), self.codec.encode_reply(reply))
        except TransportError as exc:
            log.warning("could not answer %s: %s", reply_to[:100], exc)

    async def _send_receipt(
        self, receipt_to: str, run_id: str, seq: int, batch: bytes, granted: Sequence[int] = ()
    ) -> None:
        """Tell the worker what was recorded (``batch``, appended to ``run_id`` at ``seq``),
        so its cached generator stays current; ``granted``: the activity seqs whose first
        attempts it is to run (an eager start's). Never raises: without it, the worker's cache
        catches up by reading."""
        headers = {RUN_HEADER: run_id, SEQ_HEADER: str(seq)}
        if granted:
            headers[GRANTED_HEADER] = ",".join(str(g) for g in granted)
        try:
            await self.pub.notify(
                check_reply_subject(receipt_to, "receipt subject"), batch, headers=headers
            )
        except TransportError as exc:
            log.debug("no receipt sent to %s: %s", receipt_to[:100], exc)

    def _fire_local(self, workflow_id: str, run_id: str, key: str) -> None:
        """A local timer is due (``effects.Effects``)."""
        raise NotImplementedError

    async def _handle_run_input(
        self,
        workflow_id: str,
        message: inp.RunInput,
        reply_to: str = "",
        receipt_to: str = "",
        input_seq: int = 0,
        sticky: str = "",
    ) -> Decision | None:
        """Record one input for a run (``inputs.RunInputs``; local timers fire through it)."""
        raise NotImplementedError
