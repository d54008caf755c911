"""Workflows and activities used by the integration tests (imported by daemon subprocesses too)."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import durablefuture as df

FAST_RETRY = df.RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_interval=1.0)


def slow_add(x: int, y: int) -> int:
    """Takes long enough for a crash to land mid-activity; records each execution."""
    time.sleep(float(os.environ.get("DF_TEST_ACTIVITY_SECONDS", "0.3")))
    log = os.environ.get("DF_TEST_EXEC_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"slow_add {x} {y} attempt {df.activity_info().attempt}\n")
    return x + y


def double(x: int) -> int:
    return 2 * x


def add_workflow(x: int):  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(start_to_close_timeout=30, retry_policy=FAST_RETRY)
    a = yield df.activity(slow_add, x, 1, options=opts)
    b = yield df.activity(double, a, options=opts)
    c = yield df.activity(slow_add, b, 10, options=opts)
    return {"x": x, "result": c}


def expected_add(x: int) -> dict[str, int]:
    return {"x": x, "result": 2 * (x + 1) + 10}


WORKFLOWS = [add_workflow]
ACTIVITIES = [slow_add, double]


def chaos_workflow(x: int):  # type: ignore[no-untyped-def]
    """Activities, a timer and a fan-out: every kind of step a crash can land in."""
    opts = df.ActivityOptions(start_to_close_timeout=30, retry_policy=FAST_RETRY)
    a = yield df.activity(slow_add, x, 1, options=opts)
    yield df.sleep(0.2)
    b, c = yield df.all_of(
        df.activity(double, a, options=opts), df.activity(slow_add, a, 2, options=opts)
    )
    return {"x": x, "result": b + c}


def expected_chaos(x: int) -> dict[str, int]:
    a = x + 1
    return {"x": x, "result": 2 * a + a + 2}


WORKFLOWS.append(chaos_workflow)


def chaos_child(x: int):  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(start_to_close_timeout=30, retry_policy=FAST_RETRY)
    a = yield df.activity(slow_add, x, 100, options=opts)
    yield df.sleep(0.1)
    return a


def chaos_rich(x: int, hops: int, got: list[list[object]]):  # type: ignore[no-untyped-def]
    """A child workflow, a signal and continue-as-new per hop: the rest of the vocabulary."""
    info = df.workflow.info()
    child = yield df.child_workflow(chaos_child, x, id=f"{info.workflow_id}-child-{hops}")
    signal = yield df.wait_signal("go", timeout=300)
    got = [*got, [child, signal]]
    if hops > 0:
        yield df.continue_as_new(x, hops - 1, got)
    return got


def expected_rich(x: int, hops: int) -> list[list[object]]:
    return [[x + 100, f"g{k}"] for k in range(hops + 1)]


WORKFLOWS.extend([chaos_child, chaos_rich])


def counted_add(x: int, y: int, fails: int) -> int:
    """Fails its first ``fails`` attempts; records every execution in DF_TEST_EXEC_LOG as
    ``<workflow id> <run id> <activity id> <attempt>`` (one line per execution, failed or not)."""
    time.sleep(float(os.environ.get("DF_TEST_ACTIVITY_SECONDS", "0.3")))
    info = df.activity_info()
    log = os.environ.get("DF_TEST_EXEC_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{info.workflow_id} {info.run_id} {info.activity_id} {info.attempt}\n")
    if info.attempt <= fails:
        raise RuntimeError(f"planned failure of attempt {info.attempt}")
    return x + y


def cluster_flow(x: int):  # type: ignore[no-untyped-def]
    """Retries (0 to 2 planned failures), a timer and a fan-out whose branches retry too."""
    opts = df.ActivityOptions(start_to_close_timeout=30, retry_policy=FAST_RETRY)
    a = yield df.activity(counted_add, x, 1, x % 3, options=opts)
    yield df.sleep(0.5)
    b, c = yield df.all_of(
        df.activity(counted_add, a, a, 0, options=opts),
        df.activity(counted_add, a, 2, 1, options=opts),
    )
    return {"x": x, "result": b + c}


def expected_cluster_flow(x: int) -> dict[str, int]:
    a = x + 1
    return {"x": x, "result": 2 * a + a + 2}


def cluster_child(x: int):  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(start_to_close_timeout=30, retry_policy=FAST_RETRY)
    a = yield df.activity(counted_add, x, 100, 1, options=opts)
    yield df.sleep(0.1)
    return a


def cluster_rich(x: int, hops: int, got: list[list[object]]):  # type: ignore[no-untyped-def]
    """Per hop: a child workflow (whose activity retries), a signal, then continue-as-new."""
    info = df.workflow.info()
    child = yield df.child_workflow(cluster_child, x, id=f"{info.workflow_id}-child-{hops}")
    signal = yield df.wait_signal("go", timeout=600)
    got = [*got, [child, signal]]
    if hops > 0:
        yield df.continue_as_new(x, hops - 1, got)
    return got


WORKFLOWS.extend([cluster_flow, cluster_child, cluster_rich])
ACTIVITIES.append(counted_add)


def sleepy_steps(n: int):  # type: ignore[no-untyped-def]
    """``n`` short timers: each firing is a workflow task (no activity result to ride on)."""
    for _ in range(n):
        yield df.sleep(0.05)
    return n


def _hold_once(marker: str) -> None:
    """Deliberately blocks the worker that first gets here (writes ``marker``, then sleeps), so
    that a test can kill it in the middle of a workflow task; never do this in real code."""
    if marker and not os.path.exists(marker):
        with open(marker + ".tmp", "w") as f:  # whole or absent: a reader never sees it empty
            f.write(str(os.getpid()))
        os.replace(marker + ".tmp", marker)
        time.sleep(30)


def held_signal(marker: str):  # type: ignore[no-untyped-def]
    """Waits for a signal; the first worker to see it blocks in that workflow task."""
    got = yield df.wait_signal("go", timeout=600)
    if not df.workflow.is_replaying():
        _hold_once(marker)
    return got


WORKFLOWS.extend([sleepy_steps, held_signal])


def waiting_add(x: int):  # type: ignore[no-untyped-def]
    """Stays open until signal "go" (retention must never touch it), then adds."""
    extra = yield df.wait_signal("go")
    opts = df.ActivityOptions(start_to_close_timeout=30, retry_policy=FAST_RETRY)
    return (yield df.activity(double, x + extra, options=opts))


WORKFLOWS.append(waiting_add)


def poked_add(x: int):  # type: ignore[no-untyped-def]
    """Stays open through signal "poke" (an input that moves it on), until signal "go"."""
    yield df.wait_signal("poke")
    extra = yield df.wait_signal("go")
    opts = df.ActivityOptions(start_to_close_timeout=30, retry_policy=FAST_RETRY)
    return (yield df.activity(double, x + extra, options=opts))


WORKFLOWS.append(poked_add)


# large-payload workflows of the retention and payload-store tests (run in the test process)


def echo_len(text: str):  # type: ignore[no-untyped-def]
    return len(text)
    yield  # a generator: a workflow


def waiting_echo(text: str):  # type: ignore[no-untyped-def]
    yield df.wait_signal("go")
    return len(text)


def three_texts(a: str, b: str, c: str):  # type: ignore[no-untyped-def]
    """Three payloads each under the by-reference threshold: a start whose first workflow
    task is too large to carry the run's history."""
    return len(a) + len(b) + len(c)
    yield  # a generator: a workflow


WORKFLOWS.append(three_texts)


def hop(n: int):  # type: ignore[no-untyped-def]
    """Continues as new ``n`` times, then returns "done"."""
    if n > 0:
        yield df.continue_as_new(n - 1)
    return "done"
    yield  # a generator: a workflow


WORKFLOWS.append(hop)
