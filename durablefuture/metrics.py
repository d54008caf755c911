"""Prometheus metrics of the server and worker, and a small ``/metrics`` + ``/healthz`` endpoint.

The metrics live in a registry of ``prometheus_client`` (the exposition format is its job); the
small wrappers below keep the engine's call style (label values as positional arguments) and
record nothing until something can read them. ``serve(port)`` answers ``GET /metrics`` and
``GET /healthz``; every other path gets 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest

__all__ = [
    "REGISTRY",
    "Counter",
    "Gauge",
    "Histogram",
    "Registry",
    "record",
    "serve",
]

# no ``*_created`` series: the engine's dashboards never used them
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


class _State:
    recording = False
    """Metrics are recorded only once something can read them (``serve`` or ``record``)."""


def record(enabled: bool = True) -> None:
    """Start (or stop) recording metrics without serving them (e.g. to read them in-process)."""
    _State.recording = enabled


DEFAULT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _check(name: str, labels: tuple[str, ...], values: Sequence[str]) -> tuple[str, ...]:
    if len(values) != len(labels):
        raise ValueError(f"{name} takes labels {labels}, got {tuple(values)}")
    return tuple(str(v) for v in values)


_MAX_CHILDREN = 1024
"""Label sets per metric whose series are kept at hand (more are looked up each time)."""


def _child(metric: Counter | Histogram, values: tuple[str, ...]) -> Any:
    """The series of ``metric`` for label ``values``, looked up in prometheus_client once
    (``labels()`` takes a lock and builds the key on every call)."""
    children = metric._children
    try:
        return children[values]
    except KeyError:
        pass
    except TypeError:  # an unhashable label value: look it up every time
        return metric._m.labels(*_check(metric.name, metric.labels, values))
    checked = _check(metric.name, metric.labels, values)
    child = metric._m.labels(*checked) if checked else metric._m
    if len(children) < _MAX_CHILDREN:
        children[values] = child
    return child


class Counter:
    def __init__(
        self, registry: CollectorRegistry, name: str, help: str, labels: Sequence[str] = ()
    ) -> None:
        self.name = name
        self.labels = tuple(labels)
        self._m = prometheus_client.Counter(name, help, self.labels, registry=registry)
        self._children: dict[tuple[str, ...], Any] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        if not _State.recording:
            return
        _child(self, labels).inc(amount)


class Gauge:
    def __init__(
        self,
        registry: CollectorRegistry,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        fn: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self.labels = tuple(labels)
        self._m = prometheus_client.Gauge(name, help, self.labels, registry=registry)
        if fn is not None:
            self._m.set_function(fn)

    def set(self, value: float, *labels: str) -> None:
        values = _check(self.name, self.labels, labels)
        (self._m.labels(*values) if values else self._m).set(value)


class Histogram:
    def __init__(
        self,
        registry: CollectorRegistry,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        self.name = name
        self.labels = tuple(labels)
        self.buckets = tuple(sorted(buckets))
        self._m = prometheus_client.Histogram(
            name, help, self.labels, registry=registry, buckets=self.buckets
        )
        self._children: dict[tuple[str, ...], Any] = {}

    def observe(self, value: float, *labels: str) -> None:
        if not _State.recording:
            return
        _child(self, labels).observe(value)


class Registry:
    """The engine's metrics, by name (asking twice for the same counter gives the same one)."""

    def __init__(self) -> None:
        self.collectors = CollectorRegistry()
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        existing = self._metrics.get(name)
        if isinstance(existing, Counter):
            return existing
        metric = Counter(self.collectors, name, help, labels)
        self._metrics[name] = metric
        return metric

    def histogram(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        existing = self._metrics.get(name)
        if isinstance(existing, Histogram):
            return existing
        metric = Histogram(self.collectors, name, help, labels, buckets)
        self._metrics[name] = metric
        return metric

    def gauge(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        fn: Callable[[], float] | None = None,
    ) -> Gauge:
        old = self._metrics.pop(name, None)
        if old is not None:
            self.collectors.unregister(old._m)
        metric = Gauge(self.collectors, name, help, labels, fn)
        self._metrics[name] = metric
        return metric

    def render(self) -> str:
        """The Prometheus text exposition format (0.0.4) of every metric."""
        return generate_latest(self.collectors).decode()


REGISTRY = Registry()
"""The process-wide registry the server and worker record into."""

# ---------------------------------------------------------------- what the engine records

WORKFLOWS_STARTED = REGISTRY.counter(
    "df_workflows_started_total", "Workflow runs started (server).", ["namespace"]
)
WORKFLOWS_CLOSED = REGISTRY.counter(
    "df_workflows_closed_total",
    "Workflow runs closed, by status: completed, failed, cancelled, terminated, timed_out, "
    "continued_as_new (server).",
    ["namespace", "status"],
)
HISTORY_LIMITS = REGISTRY.counter(
    "df_history_limits_total",
    "Runs whose history reached the namespace's warning (warn) or limit (fail) (server).",
    ["namespace", "kind"],
)
ACTIVITY_OUTCOMES = REGISTRY.counter(
    "df_activity_attempt_outcomes_total",
    "Activity attempt outcomes recorded in history: completed, retried, failed, timed_out.",
    ["namespace", "outcome"],
)
ACTIVITY_TIMEOUTS = REGISTRY.counter(
    "df_activity_timeouts_total",
    "Activity attempts ended by a timeout, by type (start_to_close, heartbeat, ...).",
    ["namespace", "timeout_type"],
)
SERVER_INPUTS = REGISTRY.counter(
    "df_server_inputs_total",
    "Inputs processed by the server, by kind and outcome (applied, duplicate, ignored, ...).",
    ["namespace", "kind", "outcome"],
)
SERVER_INPUT_SECONDS = REGISTRY.histogram(
    "df_server_input_seconds", "Time to record an input and perform its effects.", ["namespace"]
)
OCC_CONFLICTS = REGISTRY.counter(
    "df_occ_conflicts_total",
    "History appends that lost an optimistic-concurrency race (reloaded and decided again).",
    ["namespace"],
)
REDELIVERIES = REGISTRY.counter(
    "df_redeliveries_total", "Messages delivered more than once.", ["component"]
)
DEAD_LETTERS = REGISTRY.counter(
    "df_dead_letters_total", "Messages moved to a dead-letter subject.", ["component"]
)
CACHE_LOOKUPS = REGISTRY.counter(
    "df_cache_lookups_total",
    "Run cache lookups (server: run states; worker: live generators), by result hit/miss "
    "(worker: 'new' for a run's first workflow task, which no cache can hold).",
    ["component", "result"],
)


class _WorkerCache:
    hits = 0
    misses = 0


def worker_cache_lookup(result: str) -> None:
    """A workflow task found its run's generator in the worker's cache (``hit``), had to
    replay (``miss``), or is its run's first (``new``, not a lookup)."""
    if result == "hit":
        _WorkerCache.hits += 1
    elif result == "miss":
        _WorkerCache.misses += 1
    CACHE_LOOKUPS.inc("worker", result)


def _worker_hit_ratio() -> float:
    looked = _WorkerCache.hits + _WorkerCache.misses
    return _WorkerCache.hits / looked if looked else 0.0


WORKER_CACHE_HIT_RATIO = REGISTRY.gauge(
    "df_worker_cache_hit_ratio",
    "Share of this process's workflow task lookups that found the run's generator cached "
    "(hits / (hits + misses) since the start; a run's first task is not a lookup).",
    fn=_worker_hit_ratio,
)
STICKY_TASKS = REGISTRY.counter(
    "df_sticky_tasks_total",
    "Workflow tasks stored, by route (server): 'sticky' to the worker holding the run, "
    "'shared' to the task queue, 'moved' from a worker that did not take them in time to the "
    "task queue.",
    ["namespace", "route"],
)
EAGER_ATTEMPTS = REGISTRY.counter(
    "df_eager_attempts_total",
    "Activity attempts run by the worker that decided them (server): 'granted' with no stored "
    "task; when their check list fired, 'done' (outcome recorded), 'later' (still running, its "
    "lease claimed), 'timed_out' (no outcome, no lease: recorded timed out, retried) or "
    "'published' (granted by a df-server of before: its task stored).",
    ["namespace", "outcome"],
)
WORKFLOW_TASKS = REGISTRY.counter(
    "df_workflow_tasks_total",
    "Workflow tasks run by workers, by outcome (commands, idle, failed).",
    ["task_queue", "outcome"],
)
WORKFLOW_TASK_SECONDS = REGISTRY.histogram(
    "df_workflow_task_seconds", "Time to run a workflow task (replay + report).", ["task_queue"]
)
REPLAY_SECONDS = REGISTRY.histogram(
    "df_replay_seconds", "Time of full replays (cache misses).", ["task_queue"]
)
WORKER_ACTIVITIES = REGISTRY.counter(
    "df_worker_activity_attempts_total",
    "Activity attempts run by workers, by outcome (completed, failed, timed_out, lost; "
    "duplicate: a task delivered again for an attempt that runs or ran, not run again).",
    ["task_queue", "activity", "outcome"],
)
SCHEDULE_TO_START_SECONDS = REGISTRY.histogram(
    "df_activity_schedule_to_start_seconds",
    "Time an activity attempt waited for a worker.",
    ["task_queue"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 60, 300),
)
ACTIVITY_RUN_SECONDS = REGISTRY.histogram(
    "df_activity_run_seconds", "Run time of activity attempts.", ["task_queue", "activity"]
)


_HEALTH: dict[str, Callable[[], str | None]] = {}


def add_health_check(name: str, check: Callable[[], str | None]) -> Callable[[], None]:
    """Make ``/healthz`` answer 503 while ``check()`` returns a problem (a string).

    Returns a function that removes the check (call it on shutdown).
    """
    _HEALTH[name] = check

    def remove() -> None:
        if _HEALTH.get(name) is check:
            del _HEALTH[name]

    return remove


def health() -> dict[str, str]:
    """The problems of every registered component (empty when all can work)."""
    problems: dict[str, str] = {}
    for name, check in list(_HEALTH.items()):
        try:
            problem = check()
        except Exception as exc:  # a check must not break the endpoint
            problem = f"health check failed: {exc}"
        if problem:
            problems[name] = problem
    return problems


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        request = await asyncio.wait_for(reader.readline(), 5)
        while True:  # skip headers
            line = await asyncio.wait_for(reader.readline(), 5)
            if line in (b"\r\n", b"\n", b""):
                break
        parts = request.decode(errors="replace").split()
        path = parts[1].split("?")[0] if len(parts) >= 2 and parts[0] == "GET" else ""
        if path == "/metrics":
            body = REGISTRY.render().encode()
            head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
        elif path == "/healthz":
            problems = health()
            status = "unavailable" if problems else "ok"
            body = (json.dumps({"status": status, "problems": problems}) + "\n").encode()
            code = "503 Service Unavailable" if problems else "200 OK"
            head = f"HTTP/1.1 {code}\r\nContent-Type: application/json\r\n"
        else:
            body = b"not found; metrics are at /metrics, readiness at /healthz\n"
            head = "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
        writer.write(f"{head}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        writer.write(body)
        await writer.drain()
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def serve(port: int, host: str = "127.0.0.1") -> asyncio.Server:
    """Serve ``GET /metrics`` and ``GET /healthz`` (readiness: 200, or 503 with the problems)
    on ``host:port`` (0 picks a free port: see ``sockets``)."""
    record(True)
    return await asyncio.start_server(_handle, host, port)


SCHEDULE_ACTIONS = REGISTRY.counter(
    "df_schedule_actions_total",
    "Schedule actions by outcome: taken (a run was started), skipped (overlap policy), "
    "missed (older than the catch-up window).",
    ["namespace", "outcome"],
)
SCHEDULE_LATENESS_SECONDS = REGISTRY.histogram(
    "df_schedule_action_lateness_seconds",
    "Time between a schedule action's due time (jitter included) and when it was taken.",
    ["namespace"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
