"""Fuzzing the daemons with malformed messages on every subject they consume.

A seeded generator makes random bytes, truncated JSON, wrong types, huge numbers, missing
fields, wrong versions, oversized ids and strings, unknown kinds and inputs for runs that do
not exist, and sends them to the server's inputs and the workers' task queues, plus junk on
their pull inboxes. Then: no daemon died or disconnected; every bad message is in the dead
letters with a reason; workflows in flight and new ones complete; histories written before the
fuzzing are byte-identical after it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import nats
import orjson
import pytest
from nats.aio.msg import Msg

import durablefuture as df
from durablefuture.codec.wire import InputEnvelope, default_codec
from durablefuture.core import inputs as inp
from durablefuture.core.errors import DecodeError
from durablefuture.core.inputs import StartWorkflowRequest
from durablefuture.testing import LocalEnvironment
from tests.conftest import wait_for

pytestmark = pytest.mark.asyncio

CODEC = default_codec()


def greet(name: str) -> str:
    return f"hello {name}"


def greet_then_wait(name: str):  # type: ignore[no-untyped-def]
    first = yield df.activity(greet, name)
    extra = yield df.wait_signal("go")
    return f"{first} {extra}"


# ----------------------------------------------------------------- valid messages to mangle


def _valid_inputs(rng: random.Random) -> list[dict[str, Any]]:
    run = "".join(rng.choices("0123456789abcdef", k=32))  # a run that does not exist
    start = StartWorkflowRequest("fz", "greet_then_wait", "default", "req-1", ("x",))
    return [
        orjson.loads(CODEC.encode_input(InputEnvelope("fz", start=start))),
        orjson.loads(
            CODEC.encode_input(InputEnvelope("fz", inp.CompleteActivityTask(run, 1, 1, "r")))
        ),
        orjson.loads(CODEC.encode_input(InputEnvelope("fz", inp.FireTimer(run, "t1")))),
        orjson.loads(
            CODEC.encode_input(InputEnvelope("fz", inp.SignalWorkflow(run, "go", "s1", ("x",))))
        ),
    ]


def _valid_task() -> dict[str, Any]:
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


def mangle(rng: random.Random, valid: dict[str, Any]) -> bytes:
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
        key = rng.choice(["workflow_id", "run_id", "name", "task_queue", "request_id", "wid"])
        for p in paths:
            if p[-1] == key:
                return _dumps(_set(valid, p, rng.choice(["I" * 600, "r.*>", "a b"])))
        return _dumps({**valid, "wid": "W" * 700})
    if kind == 6:  # unknown kinds
        for p in paths:
            if p[-1] == "t":
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


async def _stored(env: LocalEnvironment, subject: str) -> list[Msg]:
    """Every message stored on ``subject`` (wildcards allowed) when called, oldest first."""
    js = env.client.pub.js
    info = await js.stream_info(env.client.layout.stream, subjects_filter=subject)
    count = sum((info.state.subjects or {}).values())
    sub = await js.subscribe(subject, ordered_consumer=True)
    try:
        return [await sub.next_msg(timeout=10) for _ in range(count)]
    finally:
        await sub.unsubscribe()


async def _history_bytes(env: LocalEnvironment) -> dict[int, bytes]:
    stored = await _stored(env, f"{env.client.layout.prefix}.h.>")
    return {msg.metadata.sequence.stream: msg.data for msg in stored}


async def _dead_letters(env: LocalEnvironment) -> list[str]:
    stored = await _stored(env, env.client.layout.dead_letters())
    return [(msg.headers or {}).get("Df-Reason", "") for msg in stored]


async def fuzz(count: int, seed: int) -> None:
    rng = random.Random(seed)
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[greet_then_wait], activities=[greet]) as worker:
            layout = env.client.layout
            done = [
                await env.client.start_workflow(greet_then_wait, f"d{i}", id=f"done-{i}")
                for i in range(3)
            ]
            for i, h in enumerate(done):
                await h.signal("go", "ok")
                assert await h.result(timeout=15) == f"hello d{i} ok"
            waiting = [
                await env.client.start_workflow(greet_then_wait, f"w{i}", id=f"wait-{i}")
                for i in range(3)
            ]
            before = await _history_bytes(env)
            assert before

            targets: list[tuple[str, Callable[[bytes], object], list[dict[str, Any]]]] = [
                (layout.input("start"), CODEC.decode_input, _valid_inputs(rng)[:1]),
                (layout.input("run"), CODEC.decode_input, _valid_inputs(rng)[1:]),
                (layout.input("timer"), CODEC.decode_input, _valid_inputs(rng)[2:3]),
                (layout.activity_tasks("default"), CODEC.decode_activity_task, [_valid_task()]),
                (
                    layout.workflow_tasks("default"),
                    CODEC.decode_workflow_task,
                    [{"v": 1, "task": {**_valid_task()["task"], "trigger": 3}, "ev": []}],
                ),
            ]
            sent = skipped = 0
            pub = env.client.pub
            pending = []
            while sent < count:
                subject, decode, valids = rng.choice(targets)
                data = mangle(rng, rng.choice(valids))
                # a decodable input names a run that does not exist: the server refuses it;
                # anything else that decodes is valid by chance, not junk
                if not refused_by(decode, data) and (
                    decode is not CODEC.decode_input or "start" in orjson.loads(data)
                ):
                    skipped += 1
                    continue
                pending.append(await pub.send(subject, data))
                sent += 1
                if len(pending) >= 200:
                    for f in pending:
                        await f
                    pending.clear()
            for f in pending:
                await f

            # junk on the pull inboxes too
            assert env.server is not None and env.server._consumer is not None
            consumers = [env.server._consumer, *worker._consumers]
            inbox_junk = 0
            attacker = await nats.connect(env.nats_url)
            try:
                for consumer in consumers:
                    for _ in range(min(count, 2000) // 4):
                        await attacker.publish(consumer._inbox, rng.randbytes(20))
                        inbox_junk += 1
                await attacker.flush()
            finally:
                await attacker.close()

            async def all_dead_lettered() -> bool:
                return len(await _dead_letters(env)) >= sent

            await wait_for(all_dead_lettered, 30 + count / 100)
            reasons = await _dead_letters(env)

            async def inbox_junk_seen() -> bool:
                return sum(c.junk for c in consumers) >= inbox_junk

            await wait_for(inbox_junk_seen, 30)
            print(
                f"fuzz (seed {seed}): {sent} malformed messages sent ({skipped} generated "
                f"valid by chance, not sent), {len(reasons)} dead-lettered; {inbox_junk} junk "
                f"messages on {len(consumers)} pull inboxes, "
                f"{sum(c.junk for c in consumers)} ignored, credits held "
                f"{[c._held for c in consumers]} of {[c.capacity for c in consumers]}"
            )
            assert len(reasons) == sent, (len(reasons), sent, skipped)
            assert all(reasons), "every dead letter says why"

            assert env.server.nc.is_connected and worker.client.nc.is_connected
            assert env._server_task is not None and not env._server_task.done()
            assert worker._run_task is not None and not worker._run_task.done()
            for i, h in enumerate(waiting):
                await h.signal("go", "late")
                assert await h.result(timeout=15) == f"hello w{i} late"
            fresh = await env.client.start_workflow(greet_then_wait, "n", id="new-after-fuzz")
            await fresh.signal("go", "fine")
            assert await fresh.result(timeout=15) == "hello n fine"
            after = await _history_bytes(env)
            assert {k: after[k] for k in before} == before, "histories changed"


async def test_fuzz_bounded() -> None:
    await fuzz(2000, seed=11)


@pytest.mark.slow
async def test_fuzz_long() -> None:
    await fuzz(20000, seed=12)
