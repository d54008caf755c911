"""Every example in workflows_examples runs end to end (and `df dev --run` works)."""

from __future__ import annotations

import subprocess
import sys

import orjson

from durablefuture.testing import LocalEnvironment
from tests.conftest import ROOT
from workflows_examples import ACTIVITIES, EXAMPLES, TASK_QUEUE, WORKFLOWS
from workflows_examples.approval import approval_workflow
from workflows_examples.saga import trip_workflow

EXPECTED = {
    "order": {
        "charge": {"order_id": "order-1", "amount": 42.0, "status": "charged"},
        "tracking": "TRACK-ORDER-1",
    },
    "recovery": {"order_id": "order-2", "reservation": "reserved:order-2:attempt-3"},
    "saga": {
        "status": "compensated",
        "reason": "no cars left at the destination",
        "undone": ["cancelled hotel-trip-1", "cancelled flight-trip-1"],
    },
    "approval": {
        "request_id": "req-1",
        "decision": "approved",
        "notified": "request req-1: approved",
    },
    "batch": {"items": 100, "sum_of_squares": sum(i * i for i in range(1, 101))},
    "quorum": {"request_id": "req-2", "decision": "approved", "approvers": ["ann", "bob"]},
    "race": {"item": "widget", "quote": None, "outcome": "no quote in time; request cancelled"},
    "coordinator": ["part 1: done", "part 2: done", "part 3: done"],
    "cart": {
        "customer": "ann",
        "items": {"apple": 2, "bread": 1},
        "total": 3.25,
        "receipt": "charged ann 3.25",
    },
}


async def test_every_example_completes_with_its_expected_result() -> None:
    assert set(EXAMPLES) == set(EXPECTED)
    async with LocalEnvironment() as env:
        async with env.worker(task_queue=TASK_QUEUE, workflows=WORKFLOWS, activities=ACTIVITIES):
            for name, (workflow, args, driver) in EXAMPLES.items():
                handle = await env.client.start_workflow(
                    workflow, *args, id=f"ex-{name}", task_queue=TASK_QUEUE
                )
                if driver is not None:
                    await driver(handle)
                assert await handle.result(timeout=30) == EXPECTED[name], name


async def test_saga_books_everything_when_nothing_fails_and_approval_times_out() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(task_queue=TASK_QUEUE, workflows=WORKFLOWS, activities=ACTIVITIES):
            booked = await env.client.execute_workflow(
                trip_workflow, "t2", False, id="trip-ok", task_queue=TASK_QUEUE, timeout=20
            )
            assert booked == {"status": "booked", "bookings": ["flight-t2", "hotel-t2", "car-t2"]}
            handle = await env.client.start_workflow(
                approval_workflow, "r2", 0.5, id="approval-late", task_queue=TASK_QUEUE
            )
            assert await handle.query("status") == {"state": "waiting for a decision"}
            result = await handle.result(timeout=20)
            assert result["decision"] == "rejected (no decision in time)"


def test_df_dev_run_order_prints_the_result(tmp_path: object) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "daemons.df_cli",
            "dev",
            "--run",
            "order",
            "--data-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    printed = orjson.loads(out.stdout)
    assert printed["result"] == EXPECTED["order"]
