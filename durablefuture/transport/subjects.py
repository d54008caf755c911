"""Names of everything DurableFuture keeps in NATS, per namespace.

One stream per namespace, ``DF_<ns>``, holds every subject under ``df.<ns>.``:

=================================  =================================================
``df.<ns>.h.<workflow>.<run>``     a run's history (one message per recorded batch)
``df.<ns>.wt.<queue>``             workflow tasks of a task queue
``df.<ns>.wt.<queue>.<token>``     sticky workflow tasks: those of the runs one worker
                                   holds in its cache (``token``: :func:`sticky_token`
                                   of the worker's identity); moved to the queue's
                                   subject when that worker does not take them
``df.<ns>.at.<queue>``             activity tasks of a task queue
``df.<ns>.in.<kind>``              server inputs: ``start`` and ``run`` (signals,
                                   cancels, terminations) from clients, ``report`` from
                                   workers, ``server`` and ``timer`` from df-server only
                                   (durablefuture/server/sources.py: what each may carry)
``df.<ns>.tm.<run>.<key>``         durable timers (JetStream message schedules)
``df.<ns>.dlq.<source>``           dead letters: undecodable or impossible messages
``df.<ns>.sch.<schedule>``         a schedule's state (one record, rewritten with a
                                   sequence check and rolled up: only the newest is kept)
``df.<ns>.sct.<schedule>``         a schedule's timer (one ``@at`` message schedule)
``df.<ns>.sci.<kind>``             schedule inputs (``tick`` from timers, ``ctl`` from clients)
``df.<ns>.rx.<run>``               a closed run's expiry (one ``@at`` message schedule
                                   firing on ``rm.expire`` when its retention is over;
                                   armed again so when the retention grew)
``df.<ns>.rx.l.<list>``            the expiries of runs that closed together (one ``@at``
                                   schedule listing them, firing on ``rm.expire-list``
                                   when the last one's retention is over)
``df.<ns>.ck.<list>``              activity attempts granted to the workers that
                                   decided them, with no stored task (one ``@at``
                                   schedule listing them, firing on ``rm.check-list``:
                                   the task of one nobody ran is published then)
``df.<ns>.rm.<kind>``              removals of closed runs: ``expire`` and
                                   ``expire-list`` (fired by the expiry schedules),
                                   ``delete`` (operators' requests); and the fired
                                   ``check-list`` (df-server's housekeeping, one consumer)
``df.<ns>.ref.<object>.<run>``     a run refers to payload object ``<object>`` (empty
                                   marker; the object goes with the last run naming it)
=================================  =================================================

KV buckets: ``DF_<ns>_runs`` (one status entry per run, key ``<workflow>.<run>``),
``DF_<ns>_act`` (activity heartbeats, cancellation flags and attempt leases) and
``DF_<ns>_workers`` (one liveness record per live worker, key ``<queue>.<identity>``, each
with a per-key TTL).
Core-NATS notifications and requests (not stored) use ``dfev.<ns>.``. Workflow ids are free
text, so they are encoded into one subject token: kept as-is when they are
``[A-Za-z0-9_-]+``, else ``=`` + base64url.
"""

from __future__ import annotations

import base64
import hashlib
import re

from durablefuture.core.types import check_name, check_namespace

__all__ = ["STICKY_TOKEN", "Layout", "decode_token", "encode_token", "sticky_token"]

_SAFE = re.compile(r"[A-Za-z0-9_-]{1,200}")
STICKY_TOKEN = re.compile(r"[0-9a-f]{16}")
"""What a sticky token looks like (anything else on the wire is refused)."""


def sticky_token(identity: str) -> str:
    """The token of a worker's sticky subject and consumer: derived from its identity, so
    that a df-server can tell from the live workers' records whose subject it is."""
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def encode_token(text: str) -> str:
    """Encode free text (a workflow id) as one subject token / KV key part, injectively."""
    if _SAFE.fullmatch(text):
        return text
    return "=" + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_token(token: str) -> str:
    if not token.startswith("="):
        return token
    raw = token[1:]
    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()


class Layout:
    """Subject, stream, bucket and consumer names of one namespace."""

    def __init__(self, namespace: str) -> None:
        self.namespace = check_namespace(namespace)
        ns = self.namespace
        self.stream = f"DF_{ns}"
        self.prefix = f"df.{ns}"
        self.stream_subjects = [f"df.{ns}.>"]
        self.runs_bucket = f"DF_{ns}_runs"
        self.activity_bucket = f"DF_{ns}_act"
        self.workers_bucket = f"DF_{ns}_workers"
        self.payloads_bucket = f"DF_{ns}_payloads"
        """Object store of the payloads that travel by reference."""
        self.inputs = f"df.{ns}.in.>"
        self.server_consumer = "server"
        self.events_prefix = f"dfev.{ns}"

    # history
    def history(self, workflow_id: str, run_id: str) -> str:
        return f"{self.prefix}.h.{encode_token(workflow_id)}.{run_id}"

    def history_of_workflow(self, workflow_id: str) -> str:
        return f"{self.prefix}.h.{encode_token(workflow_id)}.>"

    def parse_history(self, subject: str) -> tuple[str, str]:
        """(workflow id, run id) of a history subject; ("", "") for any other subject."""
        head = f"{self.prefix}.h."
        if not subject.startswith(head):
            return "", ""
        token, _, run_id = subject[len(head) :].partition(".")
        try:
            return decode_token(token), run_id
        except ValueError:
            return token, run_id

    # tasks
    def workflow_tasks(self, queue: str) -> str:
        return f"{self.prefix}.wt.{check_name(queue)}"

    def activity_tasks(self, queue: str) -> str:
        return f"{self.prefix}.at.{check_name(queue)}"

    def workflow_consumer(self, queue: str) -> str:
        return f"wt_{check_name(queue)}"

    def activity_consumer(self, queue: str) -> str:
        return f"at_{check_name(queue)}"

    def sticky_tasks(self, queue: str, token: str) -> str:
        """The workflow tasks of the runs whose generators worker ``token`` holds."""
        return f"{self.prefix}.wt.{check_name(queue)}.{_sticky(token)}"

    def sticky_consumer(self, queue: str, token: str) -> str:
        return f"wts_{check_name(queue)}_{_sticky(token)}"

    @property
    def sticky_filter(self) -> str:
        """Every sticky subject of the namespace."""
        return f"{self.prefix}.wt.*.*"

    def parse_sticky(self, subject: str) -> tuple[str, str] | None:
        """(queue, token) of a sticky subject; None for any other subject."""
        head = f"{self.prefix}.wt."
        if not subject.startswith(head):
            return None
        queue, dot, token = subject[len(head) :].partition(".")
        if not dot or not STICKY_TOKEN.fullmatch(token):
            return None
        return queue, token

    # server inputs
    def input(self, kind: str) -> str:
        return f"{self.prefix}.in.{kind}"

    RUN_INPUT_KINDS = ("run", "report", "timer", "server")
    """The inputs ``server_consumer`` reads: those of the runs that exist, and df-server's
    own. Client starts (``in.start``) have a consumer of their own, ``start_consumer``, so a
    burst of starts waiting for admission (``server/admission.py``) never holds the pull
    places of the runs already going."""

    start_consumer = "starts"

    @property
    def run_inputs(self) -> list[str]:
        """The filter subjects of ``server_consumer``: the kinds it reads, and every longer
        subject under ``in`` (refused by their last token, as before)."""
        return [*(self.input(kind) for kind in self.RUN_INPUT_KINDS), self.input("*.>")]

    # timers
    def timer(self, run_id: str, key: str) -> str:
        return f"{self.prefix}.tm.{run_id}.{key}"

    # schedules
    def schedule_state(self, schedule_id: str) -> str:
        return f"{self.prefix}.sch.{encode_token(schedule_id)}"

    def schedule_states(self) -> str:
        return f"{self.prefix}.sch.>"

    def schedule_timer(self, schedule_id: str) -> str:
        return f"{self.prefix}.sct.{encode_token(schedule_id)}"

    def schedule_input(self, kind: str) -> str:
        return f"{self.prefix}.sci.{kind}"

    @property
    def schedule_inputs(self) -> str:
        return f"{self.prefix}.sci.>"

    schedule_consumer = "schedules"

    # retention and removals
    def expiry(self, run_id: str) -> str:
        return f"{self.prefix}.rx.{run_id}"

    def expiry_list(self, list_id: str) -> str:
        """An expiry list's schedule subject (two tokens after ``rx``: never a run's
        ``rx.<run>``, which a removal purges)."""
        return f"{self.prefix}.rx.l.{list_id}"

    def check_list(self, list_id: str) -> str:
        """A check list's schedule subject (eager activity attempts: ``server/checks.py``)."""
        return f"{self.prefix}.ck.{list_id}"

    def removal(self, kind: str) -> str:
        return f"{self.prefix}.rm.{kind}"

    @property
    def removals(self) -> str:
        return f"{self.prefix}.rm.>"

    removal_consumer = "removals"

    def payload_ref(self, name: str, run_id: str) -> str:
        return f"{self.prefix}.ref.{name}.{run_id}"

    def payload_refs(self, name: str) -> str:
        """Every run's marker for payload object ``name``."""
        return f"{self.prefix}.ref.{name}.>"

    def payload_deleting(self, name: str) -> str:
        """The marker of a deletion of payload object ``name`` under way (never a holder's
        token: run ids and schedule holders are hexadecimal)."""
        return f"{self.prefix}.ref.{name}._deleting"

    def payload_refs_of_run(self, run_id: str) -> str:
        return f"{self.prefix}.ref.*.{run_id}"

    # dead letters
    def dead_letter(self, source: str) -> str:
        return f"{self.prefix}.dlq.{source}"

    def dead_letters(self) -> str:
        return f"{self.prefix}.dlq.>"

    # status index
    def status_key(self, workflow_id: str, run_id: str) -> str:
        return f"{encode_token(workflow_id)}.{run_id}"

    @property
    def visibility(self) -> str:
        """Core NATS requests to the df-servers' visibility index (list, count)."""
        return f"{self.events_prefix}.visibility"

    @property
    def report_requests(self) -> str:
        """Core NATS requests of workers to the df-servers: a report to record now, answered
        once it is in the run's history (``df.<ns>.in.report`` stays the stored fallback)."""
        return f"{self.events_prefix}.report"

    @property
    def start_requests(self) -> str:
        """Core NATS requests of clients to the df-servers: a start to make now, answered once
        the run is created (``df.<ns>.in.start`` stays the stored fallback)."""
        return f"{self.events_prefix}.start"

    @property
    def visibility_removed(self) -> str:
        """Core NATS notices between df-servers: these status entries were removed."""
        return f"{self.events_prefix}.vis-removed"

    def closed_notice(self, workflow_id: str, run_id: str) -> str:
        return f"{self.events_prefix}.closed.{encode_token(workflow_id)}.{run_id}"

    def closed_notices(self, workflow_id: str) -> str:
        """The closed notices of every run of ``workflow_id`` (a wildcard to subscribe to)."""
        return f"{self.events_prefix}.closed.{encode_token(workflow_id)}.*"

    # activity heartbeats / cancellation
    def heartbeat_key(self, run_id: str, seq: int) -> str:
        return f"hb.{run_id}.{seq}"

    def cancel_key(self, run_id: str, seq: int) -> str:
        return f"cx.{run_id}.{seq}"

    def lease_key(self, run_id: str, seq: int, attempt: int) -> str:
        return f"lease.{run_id}.{seq}.{attempt}"

    # worker liveness records
    def worker_key(self, queue: str, identity: str) -> str:
        return f"{check_name(queue)}.{encode_token(identity)}"

    # queries (core request/reply, answered by workflow workers)
    def query(self, queue: str) -> str:
        return f"{self.events_prefix}.query.{check_name(queue)}"

    # eager starts (core request/reply: df-server offers, workflow workers answer)
    def eager_starts(self, queue: str) -> str:
        """A new run's first workflow task offered to a workflow worker of ``queue`` before
        anything of the run is stored (``server/eager_starts.py``)."""
        return f"{self.events_prefix}.ws.{check_name(queue)}"


def _sticky(token: str) -> str:
    if not STICKY_TOKEN.fullmatch(token):
        raise ValueError(f"a sticky token is 16 lowercase hex digits, got {token[:40]!r}")
    return token
