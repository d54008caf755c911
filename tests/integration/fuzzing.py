"""Malformed messages for the fuzz test: valid messages of every kind the daemons consume,
and a seeded mangler that breaks them (random bytes, truncated JSON, wrong types, huge
numbers, missing fields, wrong versions, oversized ids and strings, unknown kinds).

Every valid message names a run, schedule or workflow that does not exist, unless it is
read-only (queries, update validations): a mangled one that still decodes must change
nothing that exists.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from typing import Any

import orjson

from durablefuture.codec.checks import CheckedAttempt, decode_check_list, encode_check_list
from durablefuture.codec.queries import QueryRequest
from durablefuture.codec.records import (
    Removal,
    decode_expiry_list,
    decode_removal,
    encode_expiry_list,
    encode_removal,
)
from durablefuture.codec.schedules import ScheduleCodec, ScheduleInput
from durablefuture.codec.wire import InputEnvelope, default_codec
from durablefuture.core import inputs as inp
from durablefuture.core.commands import ScheduleActivity
from durablefuture.core.errors import DecodeError
from durablefuture.core.failure import Failure
from durablefuture.core.inputs import StartWorkflowRequest
from durablefuture.core.options import ActivityOptions

CODEC = default_codec()
SCHEDULES = ScheduleCodec(CODEC)

__all__ = [
    "CODEC",
    "JUNK_VALUES",
    "SCHEDULES",
    "activity_task",
    "check_lists",
    "client_inputs",
    "decode_check_list",
    "decode_expiry_list",
    "decode_removal",
    "expiry_lists",
    "junk_chunks",
    "junk_dead_letters",
    "junk_meta_records",
    "mangle",
    "queries",
    "refused_by",
    "removals",
    "reports",
    "schedule_inputs",
    "start_requests",
    "timer_inputs",
    "visibility_requests",
    "workflow_task",
]

Valid = dict[str, Any]


def _input(env: InputEnvelope) -> Valid:
    loaded: Valid = orjson.loads(CODEC.encode_input(env))
    return loaded


def _run(rng: random.Random) -> str:
    return "".join(rng.choices("0123456789abcdef", k=32))  # a run that does not exist


def start_requests() -> list[Valid]:
    start = StartWorkflowRequest("fz", "greet_then_wait", "default", "req-1", ("x",))
    return [_input(InputEnvelope("fz", start=start))]


def client_inputs(rng: random.Random) -> list[Valid]:
    """What clients send on ``in.run``: signals, updates, cancels, terminations."""
    run = _run(rng)
    return [
        _input(InputEnvelope("fz", inp.SignalWorkflow(run, "go", "s1", ("x",)))),
        _input(InputEnvelope("fz", inp.AcceptUpdate(run, "u1", "add", (1, "x")))),
        _input(InputEnvelope("fz", inp.RequestCancel(run, "c1", "why"))),
        _input(InputEnvelope("fz", inp.TerminateWorkflow(run, "t1", "why"))),
    ]


def reports(rng: random.Random) -> list[Valid]:
    """What workers send on ``in.report``."""
    run = _run(rng)
    failure = Failure("boom", "ValueError")
    options = ActivityOptions(start_to_close_timeout=5).resolved("default")
    schedule = ScheduleActivity(2, "greet", ("x",), options)
    return [
        _input(InputEnvelope("fz", inp.CompleteWorkflowTask(run, 3, (schedule,), "w1"))),
        _input(InputEnvelope("fz", inp.FailWorkflowTask(run, 3, failure, 1, "w1"))),
        _input(InputEnvelope("fz", inp.ReportActivityStarted(run, 1, 1, "w1"))),
        _input(InputEnvelope("fz", inp.CompleteActivityTask(run, 1, 1, "r"))),
        _input(InputEnvelope("fz", inp.FailActivityTask(run, 1, 1, failure))),
    ]


def timer_inputs(rng: random.Random) -> list[Valid]:
    return [_input(InputEnvelope("fz", inp.FireTimer(_run(rng), "t1")))]


def activity_task() -> Valid:
    return {
        "v": 1,
        "task": {
            "namespace": "default",
            "workflow_id": "w",
            "run_id": "r1",
            "workflow_type": "greet_then_wait",
            "seq": 1,
            "attempt": 1,
            "name": "greet",
            "task_queue": "default",
            "options": {"start_to_close_timeout": 5.0},
            "scheduled_at": 1.0,
            "attempt_scheduled_at": 1.0,
            "args": ["x"],
        },
    }


def workflow_task() -> Valid:
    return {"v": 1, "task": {**activity_task()["task"], "trigger": 3}, "ev": []}


def schedule_inputs() -> list[Valid]:
    return [
        orjson.loads(SCHEDULES.encode_input(ScheduleInput("fz-none", "tick", due=1.0))),
        orjson.loads(SCHEDULES.encode_input(ScheduleInput("fz-none", "pause", "r1", note="n"))),
        orjson.loads(SCHEDULES.encode_input(ScheduleInput("fz-none", "delete", "r2"))),
    ]


def removals(rng: random.Random) -> list[Valid]:
    loaded: Valid = orjson.loads(encode_removal(Removal("fz-gone", _run(rng))))
    return [loaded]


def expiry_lists(rng: random.Random) -> list[Valid]:
    runs = [Removal(f"fz-gone-{i}", _run(rng)) for i in range(3)]
    loaded: Valid = orjson.loads(encode_expiry_list(runs))
    return [loaded]


def check_lists(rng: random.Random) -> list[Valid]:
    """Check lists naming attempts of runs that do not exist (each is checked: nothing)."""
    attempts = [CheckedAttempt(f"fz-gone-{i}", _run(rng), i + 1, 1) for i in range(3)]
    loaded: Valid = orjson.loads(encode_check_list(attempts))
    return [loaded]


def queries(workflow_id: str, run_id: str) -> list[Valid]:
    """Queries and update validations of a live run (read-only: nothing is recorded)."""
    q = QueryRequest(workflow_id, run_id, "state", ("x",))
    return [
        {"wid": q.workflow_id, "run": q.run_id, "name": q.name, "args": list(q.args)},
        {"wid": workflow_id, "run": run_id, "name": "add", "args": [1], "update": True},
    ]


def visibility_requests() -> list[Valid]:
    return [
        {"op": "list", "query": "WorkflowType = 'greet_then_wait'", "page_size": 5},
        {"op": "count", "query": "ExecutionStatus = 'Running'", "page_size": 1},
        {"op": "list", "query": "", "page_size": 2, "token": "abc"},
    ]


JUNK_VALUES: list[Any] = [
    None,
    True,
    -1,
    2**80,
    -(2**70),
    1e308,
    -1e308,
    "",
    "x" * 5000,
    "a.b.*.>",
    "\r\n",
    [],
    [1, [2, [3]]],
    {},
    {"t": "Bogus"},
]


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _set(obj: Any, path: tuple[Any, ...], value: Any, delete: bool = False) -> Any:
    obj = orjson.loads(orjson.dumps(obj))
    target = obj
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return obj


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()  # the stdlib writes integers of any size


_ID_KEYS = ["workflow_id", "run_id", "name", "task_queue", "request_id", "wid", "run", "query"]


def mangle(rng: random.Random, valid: Valid) -> bytes:
    kind = rng.randrange(9)
    raw = orjson.dumps(valid)
    if kind == 0:  # random bytes
        return rng.randbytes(rng.randrange(1, 300))
    if kind == 1:  # truncated JSON
        return raw[: rng.randrange(1, len(raw))]
    paths = _paths(valid)
    path = rng.choice(paths)
    if kind == 2:  # wrong type or huge number anywhere
        return _dumps(_set(valid, path, rng.choice(JUNK_VALUES)))
    if kind == 3:  # a missing field
        return _dumps(_set(valid, path, None, delete=True))
    if kind == 4:  # wrong version
        return _dumps({**valid, "v": rng.choice([0, 2, 99, "1", None, -1])})
    if kind == 5:  # oversized ids and names
        key = rng.choice(_ID_KEYS)
        for p in paths:
            if p[-1] == key:
                return _dumps(_set(valid, p, rng.choice(["I" * 600, "r.*>", "a b", "*", ">"])))
        return _dumps({**valid, "wid": "W" * 700})
    if kind == 6:  # unknown kinds
        for p in paths:
            if p[-1] in ("t", "op", "kind"):
                return _dumps(_set(valid, p, rng.choice(["Bogus", "", 7, None])))
        return _dumps({**valid, "task": {"t": "Bogus"}})
    if kind == 7:  # not an object at all
        return _dumps(rng.choice([[valid], "text", 12, None]))
    return _dumps(_set(valid, path, rng.choice(JUNK_VALUES)))  # kind 8: wrong values


def refused_by(decode: Callable[[bytes], object], data: bytes) -> bool:
    try:
        decode(data)
    except DecodeError:
        return True
    except Exception:  # the codec must only ever raise DecodeError
        raise
    return False


# ------------------------------------------------------------------ the payload store


def _hex(rng: random.Random) -> str:
    return rng.randbytes(32).hex()


def junk_dead_letters(rng: random.Random, held: list[str]) -> list[tuple[bytes, dict[str, str]]]:
    """Dead letters a worker may publish (data and headers): their ``Df-Original-Object``
    names nothing, junk, a huge or odd token, or an object something else holds."""
    name = rng.choice(held)
    original = rng.choice(
        [_hex(rng), name, name.upper(), f" {name}", name[:63], "x" * 4000, "", "../../x", "*"]
    )
    headers = {
        "Df-Original-Object": original,
        "Df-Reason": rng.choice(["", "r" * 3000, "forged"]),
        "Df-Stream-Seq": rng.choice(["1", "-5", "99999999999999999999999", "x"]),
        "Df-Subject": rng.choice(["", "df.default.in.start", "s" * 2000]),
    }
    for key in rng.sample(sorted(headers), rng.randrange(len(headers))):
        del headers[key]
    return [(rng.randbytes(rng.randrange(0, 2000)), headers)]


def junk_meta_records(
    rng: random.Random, bucket: str, held: list[str], nuids: list[str]
) -> list[tuple[str, bytes]]:
    """Meta records (subject, data) anyone who may put objects may publish: under the name of
    an object something holds, a name nothing holds, or a name that is no object's; naming the
    chunks of a held object, chunks that are not there, or junk; as JSON, mangled or bytes."""
    token = rng.choice(
        [
            base64.urlsafe_b64encode(rng.choice([*held, _hex(rng), "n" * 300]).encode()).decode(),
            "%%%not-base64",
            "Q" * 3000,
        ]
    )
    valid = {
        "name": rng.choice([*held, _hex(rng)]),
        "bucket": bucket,
        "nuid": rng.choice([*nuids, rng.randbytes(11).hex(), "", "n" * 100, "a.b"]),
        "size": rng.choice([0, 1, 300 * 1024, 2**40, -1]),
        "chunks": rng.choice([0, 3, 10**9]),
        "digest": rng.choice(["", "SHA-256=" + _hex(rng)]),
        "deleted": rng.choice([True, False, None]),
    }
    data = rng.choice([orjson.dumps(valid), mangle(rng, valid), rng.randbytes(100)])
    # and always one a deleter must not trust: a name nothing holds, a held object's chunks
    name = base64.urlsafe_b64encode(_hex(rng).encode()).decode()
    stolen = {**valid, "nuid": rng.choice(nuids), "deleted": False}
    return [(f"$O.{bucket}.M.{token}", data), (f"$O.{bucket}.M.{name}", orjson.dumps(stolen))]


def junk_chunks(rng: random.Random, bucket: str, nuids: list[str]) -> list[tuple[str, bytes]]:
    """Chunks appended to a held object's chunks, or to chunks that are no object's."""
    nuid = rng.choice([*nuids, rng.randbytes(11).hex()])
    return [(f"$O.{bucket}.C.{nuid}", rng.randbytes(rng.randrange(0, 5000)))]
