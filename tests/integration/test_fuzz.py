"""Fuzzing the daemons with malformed messages on every subject they consume.

A seeded generator (``tests/integration/fuzzing.py``) mangles valid messages of every kind and
sends them where the daemons read:

* stored, through durable consumers: the server's inputs (``in.start``; ``in.run`` with
  signals, updates, cancels and terminations; ``in.report``, ``in.timer``, ``in.server`` and a
  kind nobody reads), schedule inputs (``sci.*``), removals (``rm.delete`` from
  ``df workflow delete``, ``rm.expire`` from retention), workflow tasks (``wt.<queue>``), a
  worker's sticky workflow tasks (``wt.<queue>.<token>``; and those of a gone worker, which
  df-server moves to the queue) and activity tasks (``at.<queue>``);
* core NATS: update validations and queries to the workers (``dfev.<ns>.query.<queue>``),
  visibility list/count requests to the df-servers (``dfev.<ns>.visibility``), some of both
  asking for the answer on a run's history subject; notices (``vis-removed`` between
  df-servers; ``closed.*``, also forged ones for a run whose result a client waits for), a
  worker's receipt inbox and every pull inbox;
* the status bucket that the visibility index follows and ``df namespace describe`` reads;
* the payload store: dead letters a worker may publish (``dlq.worker``) whose
  ``Df-Original-Object`` header names nothing, junk, or an object something else holds; meta
  records and chunks in the payload bucket under held names and junk ones, naming the chunks
  of held objects; then df-server sweeps the payload objects nothing holds, with no grace.

Then: no daemon died or disconnected; every stored message was dealt with (acknowledged or
terminated) and every undecodable one is in the dead letters with a reason; every request got
an answer saying why it was refused; histories are byte-identical and got nothing new;
listing, counting and describing the namespace still see every run (and the junk entries as
unreadable); workflows in flight and new ones complete; every payload object a run or a dead
letter holds reads back as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Callable
from typing import Any

import nats
import orjson
import pytest
from attrs import frozen
from nats.aio.msg import Msg

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.server.sources import refusal
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.headers import RUN_HEADER
from durablefuture.transport.layout import open_bucket
from durablefuture.transport.payload_gc import ABANDONED_AFTER, sweep
from durablefuture.transport.payload_meta import newest_record
from durablefuture.transport.payload_store import ObjectPayloads
from durablefuture.worker import Worker
from tests.conftest import wait_for
from tests.integration import fuzzing as fz
from tests.integration.helpers import handled

pytestmark = pytest.mark.asyncio

CODEC = fz.CODEC
BIG = "b" * (300 * 1024)  # travels by reference (payload object)


def greet(name: str) -> str:
    return f"hello {name}"


def greet_then_wait(name: str):  # type: ignore[no-untyped-def]
    first = yield df.activity(greet, name)
    extra = yield df.wait_signal("go")
    return f"{first} {extra}"


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


@frozen
class DeadLetter:
    seq: int
    """The stream sequence of the message it stands for."""
    subject: str
    reason: str
    data: bytes


async def _dead_letters(env: LocalEnvironment, forged: set[int] | None = None) -> list[DeadLetter]:
    """The dead letters stored, but the ``forged`` ones (stream sequences)."""
    out = []
    for m in await _stored(env, env.client.layout.dead_letters()):
        if forged and m.metadata.sequence.stream in forged:
            continue
        headers = m.headers or {}
        seq = headers.get("Df-Stream-Seq", "")
        subject, reason = headers.get("Df-Subject", ""), headers.get("Df-Reason", "")
        out.append(DeadLetter(int(seq) if seq.isdigit() else 0, subject, reason, m.data))
    return out


def _unaccounted(
    sent: list[Sent], letters: list[DeadLetter]
) -> tuple[list[Sent], list[DeadLetter]]:
    """The messages due a dead letter that have none, and the dead letters of nothing sent
    (a message df-server may move is matched by its bytes on the subject it goes to, too)."""
    by_seq = {m.seq for m in sent}
    moved = {(m.target.moved_to, m.data) for m in sent if m.target.moved_to}
    stray = [d for d in letters if d.seq not in by_seq and (d.subject, d.data) not in moved]
    dead_seqs = {d.seq for d in letters}
    dead_moved = {(d.subject, d.data) for d in letters}
    missing = [
        m
        for m in sent
        if m.fate == "dead"
        and m.seq not in dead_seqs
        and (m.target.moved_to, m.data) not in dead_moved
    ]
    return missing, stray


# ------------------------------------------------------------------ stored subjects


@frozen
class Target:
    """A stored subject, the consumer that reads it, its decoder and valid messages to mangle.
    ``decodable`` is what becomes of a mangled message that still decodes: ``skip`` (valid by
    chance: not sent), ``dead`` (refused: dead-lettered, like every undecodable one),
    ``either`` (dead-lettered, or handled and acknowledged) or ``input`` (a server input: a
    start is skipped; one the subject does not take, or naming a run that does not exist, is
    dead-lettered; one for the latest run of a workflow that does not exist is answered "not
    found" and acknowledged)."""

    subject: str
    consumer: str
    decode: Callable[[bytes], object]
    valids: list[Any]
    decodable: str
    moved_to: str = ""
    """Where df-server moves what is stored here and not taken (a sticky subject's queue)."""

    def fate(self, data: bytes) -> str:
        """``dead``, ``either`` or ``skip`` for ``data``."""
        if fz.refused_by(self.decode, data):
            return "dead"
        if self.decodable != "input":
            return self.decodable
        env = CODEC.decode_input(data)
        if env.start is not None:
            return "skip"
        if refusal(self.subject.rpartition(".")[2], env) is not None:
            return "dead"
        return "either" if env.input is not None and not env.input.run_id else "dead"


def stored_targets(env: LocalEnvironment, worker: Worker, rng: random.Random) -> list[Target]:
    layout = env.client.layout
    server, schedules, removals = layout.server_consumer, layout.schedule_consumer, "removals"
    inputs = CODEC.decode_input
    sticky = worker.sticky_token
    assert sticky, "the worker takes sticky workflow tasks"
    run_inputs = fz.client_inputs(rng)
    return [
        Target(
            layout.input("start"),
            layout.start_consumer,
            inputs,
            [*fz.start_requests(), *run_inputs],
            "input",
        ),
        Target(layout.input("run"), server, inputs, [*run_inputs, *fz.reports(rng)], "input"),
        Target(layout.input("report"), server, inputs, fz.reports(rng), "input"),
        Target(layout.input("timer"), server, inputs, fz.timer_inputs(rng), "input"),
        Target(
            layout.input("server"),
            server,
            inputs,
            [*fz.reports(rng), *fz.client_inputs(rng), *fz.start_requests()],
            "input",
        ),
        # no consumer reads an unknown kind: the janitor dead-letters what is stored there
        Target(layout.input("zz"), "", inputs, fz.client_inputs(rng), "input"),
        Target(
            layout.schedule_input("tick"),
            schedules,
            fz.SCHEDULES.decode_input,
            fz.schedule_inputs(),
            "either",
        ),
        Target(
            layout.schedule_input("ctl"),
            schedules,
            fz.SCHEDULES.decode_input,
            fz.schedule_inputs(),
            "either",
        ),
        Target(layout.removal("delete"), removals, fz.decode_removal, fz.removals(rng), "either"),
        Target(layout.removal("expire"), removals, fz.decode_removal, fz.removals(rng), "either"),
        Target(
            layout.removal("expire-list"),
            removals,
            fz.decode_expiry_list,
            fz.expiry_lists(rng),
            "either",
        ),
        Target(
            layout.removal("check-list"),
            removals,
            fz.decode_check_list,
            fz.check_lists(rng),
            "either",
        ),
        Target(
            layout.activity_tasks("default"),
            layout.activity_consumer("default"),
            CODEC.decode_activity_task,
            [fz.activity_task()],
            "skip",
        ),
        Target(
            layout.workflow_tasks("default"),
            layout.workflow_consumer("default"),
            CODEC.decode_workflow_task,
            [fz.workflow_task()],
            "skip",
        ),
        Target(  # df-server moves a task its worker did not take in time to the queue
            layout.sticky_tasks("default", sticky),
            layout.sticky_consumer("default", sticky),
            CODEC.decode_workflow_task,
            [fz.workflow_task()],
            "skip",
            moved_to=layout.workflow_tasks("default"),
        ),
        # the sticky subject of a worker that is gone: df-server moves its tasks to the queue
        Target(
            layout.sticky_tasks("default", rng.randbytes(8).hex()),
            "",
            CODEC.decode_workflow_task,
            [fz.workflow_task()],
            "skip",
            moved_to=layout.workflow_tasks("default"),
        ),
    ]


@frozen
class Sent:
    seq: int
    target: Target
    fate: str
    data: bytes


async def fuzz_stored(
    env: LocalEnvironment, targets: list[Target], rng: random.Random, count: int
) -> tuple[list[Sent], int]:
    """Store ``count`` mangled messages; what was sent, and how many were valid by chance
    (not sent)."""
    sent: list[Sent] = []
    skipped = 0
    pending: list[tuple[Any, Target, str, bytes]] = []

    async def settle() -> None:
        for f, target, fate, data in pending:
            ack = await f
            sent.append(Sent(ack.seq, target, fate, data))
        pending.clear()

    while len(sent) + len(pending) < count:
        target = rng.choice(targets)
        data = fz.mangle(rng, rng.choice(target.valids))
        fate = target.fate(data)
        if fate == "skip":
            skipped += 1
            continue
        pending.append((await env.client.pub.send(target.subject, data), target, fate, data))
        if len(pending) >= 200:
            await settle()
    await settle()
    return sent, skipped


# ------------------------------------------------------------------ core NATS subjects


async def fuzz_requests(
    env: LocalEnvironment,
    attacker: nats.NATS,
    rng: random.Random,
    count: int,
    live: tuple[str, str],
) -> int:
    """Mangled queries, update validations and visibility requests: each is answered with a
    refusal (or, valid by chance, an answer); as many again ask for the answer on the live
    run's history subject, which must never get it."""
    layout = env.client.layout
    targets = [
        (layout.query("default"), fz.queries(*live)),
        (layout.visibility, fz.visibility_requests()),
    ]
    answered = 0
    for i in range(count):
        subject, valids = targets[i % len(targets)]
        data = fz.mangle(rng, rng.choice(valids))
        answer = await attacker.request(subject, data, timeout=10)
        body = orjson.loads(answer.data)
        assert isinstance(body, dict), body
        if not body.get("ok", True) or "error" in body:
            assert body.get("message"), f"a refusal says why: {body}"
        answered += 1
        await attacker.publish(subject, data, reply=layout.history(*live))
        await attacker.publish(subject, data, reply=rng.choice(["df.x", "a.b.c", "_INBOX"]))
    await attacker.flush()
    return answered


async def fuzz_notices(
    env: LocalEnvironment,
    worker: Worker,
    attacker: nats.NATS,
    rng: random.Random,
    count: int,
    live_run: str,
    awaited: tuple[str, str],
) -> None:
    """Junk on the subjects nobody answers: removal notices between df-servers, closed
    notices (also forged ones, saying that the run ``awaited``, whose result a client waits
    for, completed), and the worker's receipt inbox (naming a run it holds)."""
    layout = env.client.layout
    receipt = orjson.loads(
        CODEC.encode_batch("fz", [ev.SignalReceived(900, 1.0, "go", ("forged",))])
    )
    receipts = worker._reports.receipts
    assert receipts
    kv = await open_bucket(env.client.pub.js, layout.runs_bucket)
    entry = await kv.get(layout.status_key(*awaited))
    status = orjson.loads(entry.value or b"{}")
    forged = {**status, "status": "completed", "result": "forged", "close_time": 2e9}
    for _ in range(count):
        junk = rng.randbytes(rng.randrange(0, 2000))
        await attacker.publish(layout.visibility_removed, rng.choice([junk, b"x" * 5000, b""]))
        token = rng.choice(["a", "=", "=%%%", "x" * 300, "*"]).replace("*", "s")
        await attacker.publish(f"{layout.events_prefix}.closed.{token}.{token}", junk)
        notice = rng.choice([orjson.dumps(forged), fz.mangle(rng, forged), junk])
        await attacker.publish(layout.closed_notice(*awaited), notice)
        await attacker.publish(receipts, fz.mangle(rng, receipt), headers={RUN_HEADER: live_run})
    await attacker.flush()


async def fuzz_status_entries(env: LocalEnvironment, rng: random.Random, count: int) -> None:
    """Junk status entries in the runs bucket (read by the index and namespace describe)."""
    kv = await open_bucket(env.client.pub.js, env.client.layout.runs_bucket)
    real = (await kv.get((await kv.keys())[0])).value or b"{}"
    for i in range(count):  # cut JSON, or random bytes: never a status entry
        value = (
            real[: rng.randrange(1, len(real))] if i % 2 else rng.randbytes(rng.randrange(1, 500))
        )
        await kv.put(f"fz-junk-{i}.{'0' * 32}", value)


async def fuzz_payload_store(
    env: LocalEnvironment, rng: random.Random, count: int, held: list[str]
) -> set[int]:
    """Junk dead letters, meta records and chunks (see the module docstring); returns the
    stream sequences of the dead letters."""
    layout = env.client.layout
    bucket = layout.payloads_bucket
    nuids = []
    for name in held:
        record = await newest_record(env.client.pub.nc, bucket, name)
        assert record is not None and record.live
        nuids.append(record.nuid)
    attacker = await nats.connect(env.nats_url)
    js = attacker.jetstream()
    forged: set[int] = set()
    try:
        for _ in range(count):
            for data, headers in fz.junk_dead_letters(rng, held):
                ack = await js.publish(layout.dead_letter("worker"), data, headers=headers)
                forged.add(ack.seq)
            for subject, data in [
                *fz.junk_meta_records(rng, bucket, held, nuids),
                *fz.junk_chunks(rng, bucket, nuids),
            ]:
                await js.publish(subject, data)
    finally:
        await attacker.close()
    return forged


# ------------------------------------------------------------------ the test


async def fuzz(count: int, seed: int) -> None:
    rng = random.Random(seed)
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[greet_then_wait], activities=[greet]) as worker:
            client = env.client
            done = [
                await client.start_workflow(greet_then_wait, f"d{i}", id=f"done-{i}")
                for i in range(3)
            ]
            for i, h in enumerate(done):
                await h.signal("go", "ok")
                assert await h.result(timeout=15) == f"hello d{i} ok"
            waiting = [
                await client.start_workflow(greet_then_wait, f"w{i}", id=f"wait-{i}")
                for i in range(3)
            ]
            live = (waiting[0].id, await waiting[0]._run())
            awaited = (waiting[1].id, await waiting[1]._run())
            # its argument and its activity's result travel by reference (payload objects)
            big = await client.start_workflow(greet_then_wait, BIG, id="big")

            async def all_wait_for_their_signal() -> bool:
                for h in [*waiting, big]:
                    events = await h.fetch_history()
                    if not any(isinstance(e, ev.SignalWaitStarted) for e in events):
                        return False
                return True

            await wait_for(all_wait_for_their_signal, 15)
            runs = len(done) + len(waiting) + 1

            async def all_listed() -> bool:  # open ones once open ServerOptions.status_delay
                return await client.count_workflows() == runs

            await wait_for(all_listed, 15)
            runs_before = await client.count_workflows()
            before = await _history_bytes(env)
            assert before

            # a client waits for a result meanwhile (forged closed notices must not end it; no
            # timeout of its own: the long run's fuzzing may outlast any under load)
            result = asyncio.ensure_future(waiting[1].result())
            targets = stored_targets(env, worker, rng)
            sent, skipped = await fuzz_stored(env, targets, rng, count)
            # an undecodable report too large to fit in its dead letter: its whole original is
            # kept as a payload object, which the dead letter holds
            report = next(t for t in targets if t.subject == client.layout.input("report"))
            huge = b"\xff" + rng.randbytes(1024 * 1024 - 400)
            ack = await (await client.pub.send(report.subject, huge))
            sent.append(Sent(ack.seq, report, "dead", huge))

            # junk on the pull inboxes too
            assert env.server is not None and env.server._consumer is not None
            assert env.server.schedules is not None and env.server.schedules._consumer
            assert env.server._removals is not None
            assert env.server._start_consumer is not None
            consumers = [
                env.server._consumer,
                env.server._start_consumer,
                env.server.schedules._consumer,
                env.server._removals,
                *worker._consumers,
            ]
            inbox_junk = 0
            attacker = await nats.connect(env.nats_url)
            try:
                for consumer in consumers:
                    for _ in range(min(count, 2000) // 8):
                        await attacker.publish(consumer._inbox, rng.randbytes(20))
                        inbox_junk += 1
                await attacker.flush()
                answered = await fuzz_requests(env, attacker, rng, count // 20, live)
                await fuzz_notices(env, worker, attacker, rng, count // 20, live[1], awaited)
            finally:
                await attacker.close()
            junk_entries = 20
            await fuzz_status_entries(env, rng, junk_entries)

            async def all_handled() -> bool:
                for target in targets:
                    if target.consumer and not await handled(
                        client, target.consumer, target.subject
                    ):
                        return False
                missing, _ = _unaccounted(sent, await _dead_letters(env))
                return not missing

            await wait_for(all_handled, 60 + count / 50)

            async def inbox_junk_seen() -> bool:
                return sum(c.junk for c in consumers) >= inbox_junk

            await wait_for(inbox_junk_seen, 30)

            # junk in the payload store, then a sweep of every object nothing holds, at once
            payloads = ObjectPayloads(client.pub.js, client.layout)
            held = sorted(await payloads.names())
            assert hashlib.sha256(huge).hexdigest() in held and len(held) >= 3, held
            objects = {name: await payloads.get(name) for name in held}
            forged = await fuzz_payload_store(env, rng, count // 20, held)
            for _ in range(2):
                now = time.time() + ABANDONED_AFTER
                await sweep(env.server.pub, client.layout, grace=0.0, now=now)
            for name, data in objects.items():
                assert await payloads.get(name) == data, f"payload object {name} was lost"

            letters = await _dead_letters(env, forged)
            print(
                f"fuzz (seed {seed}): {len(sent)} malformed messages stored ({skipped} valid by "
                f"chance, not sent), {len(letters)} dead-lettered; {answered} requests "
                f"answered; {inbox_junk} junk messages on {len(consumers)} pull inboxes, "
                f"{sum(c.junk for c in consumers)} ignored"
            )
            missing, stray = _unaccounted(sent, letters)
            assert not missing, f"{len(missing)} not dead-lettered, e.g. {missing[:3]}"
            assert not stray, f"dead letters of nothing sent: {stray[:3]}"
            assert all(d.reason for d in letters), "every dead letter says why"
            assert await client.list_schedules() == [], "no schedule was made"

            assert env.server.nc.is_connected and worker.client.nc.is_connected
            assert env._server_task is not None and not env._server_task.done()
            assert worker._run_task is not None and not worker._run_task.done()
            assert await _history_bytes(env) == before, "histories changed or grew"
            assert await client.count_workflows() == runs_before
            ids = {h.id for h in [*done, *waiting, big]}
            assert {r.workflow_id for r in await client.list_workflows(page_size=100)} == ids
            assert {r.workflow_id for r in await client.list_workflows()} == ids
            described = await client.describe_namespace()
            assert described.runs_by_status.get("unreadable") == junk_entries, described

            assert not result.done(), "a forged closed notice ended the wait"
            for i, h in enumerate(waiting):
                await h.signal("go", "late")
                assert await h.result(timeout=15) == f"hello w{i} late"
            assert await asyncio.wait_for(result, 30) == "hello w1 late"
            await big.signal("go", "big")
            assert await big.result(timeout=60) == f"hello {BIG} big"
            fresh = await client.start_workflow(greet_then_wait, "n", id="new-after-fuzz")
            await fresh.signal("go", "fine")
            assert await fresh.result(timeout=15) == "hello n fine"
            after = await _history_bytes(env)
            assert {k: after[k] for k in before} == before, "histories changed"


async def test_fuzz_bounded() -> None:
    await fuzz(2000, seed=11)


@pytest.mark.slow
async def test_fuzz_long() -> None:
    await fuzz(20000, seed=12)


async def test_a_visibility_request_is_answered_on_an_inbox_only() -> None:
    # an answer on any other subject would be written wherever the asker names: on a run's
    # history subject it was stored in the history (and the run could no longer be read)
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[greet_then_wait], activities=[greet]):
            client = env.client
            handle = await client.start_workflow(greet_then_wait, "v", id="vis")
            run_id = await handle._run()

            async def waiting() -> bool:
                events = await handle.fetch_history()
                return any(isinstance(e, ev.SignalWaitStarted) for e in events)

            await wait_for(waiting, 15)

            async def listed() -> bool:  # once open ServerOptions.status_delay
                return await client.count_workflows() == 1

            await wait_for(listed, 15)
            history = client.layout.history("vis", run_id)
            before = await _history_bytes(env)
            request = orjson.dumps({"op": "count", "query": "", "page_size": 1})
            asker = await nats.connect(env.nats_url)
            try:
                for reply in (history, "df.default.in.run", "elsewhere"):
                    await asker.publish(client.layout.visibility, request, reply=reply)
                # answered in order: once this one is, the three before it were handled
                answer = await asker.request(client.layout.visibility, request, timeout=10)
            finally:
                await asker.close()
            assert orjson.loads(answer.data)["count"] == 1
            assert await _history_bytes(env) == before, f"an answer was stored on {history}"
            await handle.signal("go", "fine")
            assert await handle.result(timeout=15) == "hello v fine"
