"""Prometheus metrics of the server and worker, and a small ``/metrics`` HTTP endpoint.

A deliberately small implementation of the text exposition format (counters, gauges,
histograms with labels) so the daemons need no extra dependency. ``serve(port)`` answers
``GET /metrics``; every other path gets 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
from collections.abc import Callable, Sequence

__all__ = [
    "REGISTRY",
    "Counter",
    "Gauge",
    "Histogram",
    "Registry",
    "record",
    "serve",
]

LabelValues = tuple[str, ...]


class _State:
    recording = False
    """Metrics are recorded only once something can read them (``serve`` or ``record``)."""


def record(enabled: bool = True) -> None:
    """Start (or stop) recording metrics without serving them (e.g. to read them in-process)."""
    _State.recording = enabled


DEFAULT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help
        self.labels = tuple(labels)
        self._lock = threading.Lock()

    def _key(self, values: Sequence[str]) -> LabelValues:
        if len(values) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {tuple(values)}")
        return tuple(str(v) for v in values)

    def _label_text(self, values: LabelValues, extra: str = "") -> str:
        parts = [f'{k}="{_escape(v)}"' for k, v in zip(self.labels, values, strict=True)]
        if extra:
            parts.append(extra)
        return "{" + ",".join(parts) + "}" if parts else ""

    def render(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help, labels)
        self._values: dict[LabelValues, float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        if not _State.recording:
            return
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, *labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = list(self._values.items())
        return [f"{self.name}{self._label_text(k)} {_fmt(v)}" for k, v in items]


class Gauge(_Metric):
    kind = "gauge"

    def __init__(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        fn: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(name, help, labels)
        self._values: dict[LabelValues, float] = {}
        self._fn = fn

    def set(self, value: float, *labels: str) -> None:
        with self._lock:
            self._values[self._key(labels)] = value

    def render(self) -> list[str]:
        if self._fn is not None:
            return [f"{self.name} {_fmt(self._fn())}"]
        with self._lock:
            items = list(self._values.items())
        return [f"{self.name}{self._label_text(k)} {_fmt(v)}" for k, v in items]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        super().__init__(name, help, labels)
        self.buckets = tuple(sorted(buckets))
        self._data: dict[LabelValues, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *labels: str) -> None:
        if not _State.recording:
            return
        key = self._key(labels)
        with self._lock:
            data = self._data.get(key)
            if data is None:
                data = ([0] * (len(self.buckets) + 1), [0.0, 0.0])
                self._data[key] = data
            counts, sums = data
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[i] += 1
            counts[-1] += 1
            sums[0] += value
            sums[1] += 1

    def count(self, *labels: str) -> int:
        data = self._data.get(self._key(labels))
        return 0 if data is None else data[0][-1]

    def render(self) -> list[str]:
        out: list[str] = []
        with self._lock:
            items = [(k, (list(c), list(s))) for k, (c, s) in self._data.items()]
        for key, (counts, sums) in items:
            for bound, n in zip(self.buckets, counts, strict=False):
                le = 'le="' + _fmt(bound) + '"'
                out.append(f"{self.name}_bucket{self._label_text(key, le)} {n}")
            inf = 'le="+Inf"'
            out.append(f"{self.name}_bucket{self._label_text(key, inf)} {counts[-1]}")
            out.append(f"{self.name}_sum{self._label_text(key)} {_fmt(sums[0])}")
            out.append(f"{self.name}_count{self._label_text(key)} {_fmt(sums[1])}")
        return out


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def register(self, metric: _Metric) -> None:
        self._metrics[metric.name] = metric

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        existing = self._metrics.get(name)
        if isinstance(existing, Counter):
            return existing
        metric = Counter(name, help, labels)
        self.register(metric)
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
        metric = Histogram(name, help, labels, buckets)
        self.register(metric)
        return metric

    def gauge(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        fn: Callable[[], float] | None = None,
    ) -> Gauge:
        metric = Gauge(name, help, labels, fn)
        self.register(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics.values():
            lines.append(f"# HELP {metric.name} {metric.help}")
            lines.append(f"# TYPE {metric.name} {metric.kind}")
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"


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
    "Run cache lookups (server: run states; worker: live generators), by result hit/miss.",
    ["component", "result"],
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
