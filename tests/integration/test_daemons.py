"""The order example end to end through real df-server and df-worker processes, and how the
daemons set up Python's garbage collector once started (``DF_GC``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import durablefuture as df
from tests.conftest import ROOT, Daemons, wait_namespace


@pytest.mark.asyncio
@pytest.mark.parametrize("gc_setting", ["tuned", "default", "700"])
async def test_order_example_through_daemons(daemons: Daemons, gc_setting: str) -> None:
    daemons.env["DF_GC"] = gc_setting
    daemons.server()
    daemons.worker(
        "--workflows",
        "workflows_examples:WORKFLOWS",
        "--activities",
        "workflows_examples:ACTIVITIES",
        task_queue="examples",
    )
    await wait_namespace(daemons.url)
    client = await df.Client.connect(daemons.url)
    try:
        from workflows_examples.order import order_workflow

        result = await client.execute_workflow(
            order_workflow, "o-1", 42.0, id="o-1", task_queue="examples", timeout=30
        )
    finally:
        await client.close()
    assert result == {
        "charge": {"order_id": "o-1", "amount": 42.0, "status": "charged"},
        "tracking": "TRACK-O-1",
    }, daemons.logs()


@pytest.mark.asyncio
@pytest.mark.parametrize("value", ["lots", "99", "10000001", "-5", "1e6"])
async def test_a_wrong_gc_setting_stops_both_daemons_with_the_reason(
    daemons: Daemons, value: str
) -> None:
    daemons.env["DF_GC"] = value
    server = daemons.server()
    worker = daemons.worker("--workflows", "workflows_examples:WORKFLOWS")
    for d in (server, worker):
        assert d.proc is not None
        assert d.proc.wait(60) == 2, d.log()
        assert f"error: DF_GC={value!r} is not 'tuned', 'default' or a number" in d.log()


SETTLE = """
import gc, json, os, sys
from daemons.common import gc_threshold, settle_gc

start = gc.get_threshold()
settle_gc(gc_threshold())
tuned = gc.get_threshold()
frozen = gc.get_freeze_count()
collections = sum(s["collections"] for s in gc.get_stats())
base = len(gc.get_objects())
for _ in range(1_000_000):  # a cycle dropped at once, a million times
    a: list[object] = []
    a.append(a)
del a
peak = len(gc.get_objects()) - base  # objects left from the loop, cycles waiting
print(json.dumps({
    "start": start, "tuned": tuned, "frozen": frozen, "live": peak,
    "collections": sum(s["collections"] for s in gc.get_stats()) - collections,
}))
"""


def settle(gc_setting: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", SETTLE],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "DF_GC": gc_setting},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out: dict[str, object] = json.loads(done.stdout)
    return out


def test_started_daemons_freeze_what_start_up_built_and_still_collect_cycles() -> None:
    tuned = settle("tuned")
    assert tuned["start"] == [700, 10, 10]
    assert tuned["tuned"] == [5_000, 10, 10]
    assert isinstance(tuned["frozen"], int) and tuned["frozen"] > 1_000
    # a million dropped cycles are collected as they go: at most one threshold's worth waits
    assert isinstance(tuned["live"], int) and tuned["live"] < 5_000 + 10_000
    assert isinstance(tuned["collections"], int) and tuned["collections"] >= 1_000_000 // 5_000 // 2

    plain = settle("default")
    assert plain["tuned"] == [700, 10, 10]
    assert plain["frozen"] == 0
    assert isinstance(plain["live"], int) and plain["live"] < 10_000

    chosen = settle("50000")
    assert chosen["tuned"] == [50_000, 10, 10]
    assert isinstance(chosen["live"], int) and chosen["live"] < 50_000 + 10_000
