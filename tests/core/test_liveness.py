"""Worker records: capping, registration checks, the wire format. Pure: no NATS."""

from __future__ import annotations

import orjson
import pytest

from durablefuture.codec import default_codec
from durablefuture.core.errors import DecodeError
from durablefuture.core.liveness import (
    AttemptClaim,
    RunningAttempt,
    WorkerRecord,
    capped,
    describe_names,
    describe_worker,
    registers_activity,
    registers_workflow,
    running_attempt,
    unserved_workflow,
)

CODEC = default_codec()


def record(**fields: object) -> WorkerRecord:
    base: dict[str, object] = {
        "identity": "h:1:abc",
        "namespace": "default",
        "task_queue": "q",
        "host": "h",
        "pid": 1,
        "started_at": 100.0,
        "last_seen": 110.0,
        "interval": 2.0,
        "ttl": 6.0,
    }
    base.update(fields)
    return WorkerRecord(**base)  # type: ignore[arg-type]


def test_capped_keeps_the_first_names_in_order_and_counts_the_rest() -> None:
    assert capped(["b", "a", "c"], 2) == (("a", "b"), 1)
    assert capped(["a"], 2) == (("a",), 0)
    assert describe_names(("a", "b"), 3) == "a, b and 3 more"
    assert describe_names((), 0) == "none"


def test_registration_checks_answer_unknown_when_a_list_was_capped() -> None:
    full = record(workflows=("order",), activities=("charge",))
    assert registers_workflow([full], "order") is True
    assert registers_workflow([full], "refund") is False
    assert registers_activity([full], "ship") is False
    partial = record(identity="h:2:def", workflows=("a",), workflows_more=5)
    assert registers_workflow([full, partial], "refund") is None
    assert unserved_workflow([full, partial], "q", "refund") is None


def test_unserved_workflow_names_the_queue_and_what_its_workers_register() -> None:
    workers = [
        record(workflows=("order", "refund")),
        record(identity="h:2:x", workflows=("audit",)),
        record(identity="h:3:y", activities=("charge",)),  # polls activities only
        record(identity="h:4:z", task_queue="other", workflows=("ship",)),
    ]
    text = unserved_workflow(workers, "q", "shipment")
    assert text is not None
    assert "task queue 'q' registers workflow type 'shipment'" in text
    assert "2 live worker(s) there register: audit, order, refund" in text
    assert unserved_workflow(workers, "q", "order") is None
    nobody = unserved_workflow(workers, "empty", "order")
    assert nobody is not None and "no live worker polls task queue 'empty'" in nobody


def test_running_attempt_and_the_one_line_description() -> None:
    attempt = RunningAttempt("wf-1", "run-1", 3, "charge", 2, 105.0)
    w = record(activities=("charge",), running=(attempt,), running_more=1)
    assert running_attempt([w], "run-1", 3, 2) == (w, attempt)
    assert running_attempt([w], "run-1", 3, 1) is None
    line = describe_worker(w, now=112.0)
    assert line.startswith("h:1:abc (pid 1 on h; activities: charge; ")
    assert "running 2 activity attempt(s); last seen 2s ago" in line


def test_worker_records_round_trip_and_tolerate_other_versions() -> None:
    w = record(
        workflows=("order",),
        activities=("charge", "ship"),
        activities_more=7,
        running=(RunningAttempt("wf-1", "run-1", 3, "charge", 2, 105.0),),
    )
    data = CODEC.encode_worker(w)
    assert orjson.loads(data)["v"] == 1
    assert CODEC.decode_worker(data) == w
    # a newer worker's extra fields are ignored; an older one's missing fields default
    newer = orjson.loads(data) | {"gpu": "none"}
    assert CODEC.decode_worker(orjson.dumps(newer)) == w
    older = {"v": 1, "identity": "i", "namespace": "default", "task_queue": "q"}
    assert CODEC.decode_worker(orjson.dumps(older)) == WorkerRecord("i", "default", "q")
    with pytest.raises(DecodeError, match="schema version 9"):
        CODEC.decode_worker(orjson.dumps({**older, "v": 9}))


def test_attempt_claim_wire_format() -> None:
    claim = AttemptClaim("host:1:abc", 100.5, 30.0)
    data = CODEC.encode_claim(claim)
    assert orjson.loads(data) == {"v": 1, "holder": "host:1:abc", "at": 100.5, "lease": 30.0}
    assert CODEC.decode_claim(data) == claim
    with pytest.raises(DecodeError, match="attempt claim does not match the schema"):
        CODEC.decode_claim(orjson.dumps({"v": 1, "holder": "x"}))
