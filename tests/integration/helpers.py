"""Assertions over many workflows: right results, exactly one terminal event, no duplicates."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from pathlib import Path

import nats.js.errors
from nats.aio.msg import Msg

import durablefuture as df
from durablefuture.core import events as ev
from tests.conftest import Daemon, Daemons, wait_for
from tests.integration.flows import add_workflow, expected_add

CONNECTION_LOGGER = "durablefuture.transport.connection"


async def start_many(
    client: df.Client, n: int, prefix: str, task_queue: str = "tests"
) -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(n)]
    await asyncio.gather(
        *(
            client.start_workflow(add_workflow, i, id=wid, task_queue=task_queue)
            for i, wid in enumerate(ids)
        )
    )
    return ids


async def check_all(client: df.Client, ids: list[str], timeout: float = 90.0) -> None:
    """Every workflow completed once with the right result; histories are clean."""
    results = await asyncio.gather(
        *(client.get_workflow_handle(wid).result(timeout=timeout) for wid in ids)
    )
    for i, (wid, result) in enumerate(zip(ids, results, strict=True)):
        assert result == expected_add(i), (wid, result)
    for wid in ids:
        history = await client.get_workflow_handle(wid).fetch_history()
        check_history(wid, history)


def check_history(wid: str, history: list[ev.Event]) -> None:
    ids = [e.event_id for e in history]
    assert ids == list(range(1, len(history) + 1)), (wid, ids)
    terminals = [e for e in history if isinstance(e, ev.TERMINAL_EVENTS)]
    assert len(terminals) == 1 and history[-1] is terminals[0], (wid, terminals)
    assert isinstance(terminals[0], ev.WorkflowCompleted), (wid, terminals[0])
    completed = Counter(e.seq for e in history if isinstance(e, ev.ActivityCompleted))
    assert all(n == 1 for n in completed.values()), (wid, completed)
    scheduled = Counter(e.seq for e in history if isinstance(e, ev.ActivityScheduled))
    assert all(n == 1 for n in scheduled.values()), (wid, scheduled)
    outcomes = Counter(
        (e.seq, e.attempt)
        for e in history
        if isinstance(
            e,
            ev.ActivityCompleted
            | ev.ActivityFailed
            | ev.ActivityRetryScheduled
            | ev.ActivityTimedOut,
        )
    )
    assert all(n == 1 for n in outcomes.values()), (wid, outcomes)


class ConnectRetries(logging.Handler):
    """Counts the "cannot reach NATS ...; retrying" warnings of the connection while installed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying" in record.getMessage():
            self.count += 1

    def __enter__(self) -> ConnectRetries:
        logging.getLogger(CONNECTION_LOGGER).addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger(CONNECTION_LOGGER).removeHandler(self)


async def handled(client: df.Client, consumer: str, subject: str) -> bool:
    """Whether the durable ``consumer`` has acknowledged or terminated every message stored so
    far on ``subject`` (wildcards allowed): the evidence that its daemon has dealt with them,
    whatever it made of them. Daemons ack only after the outcome, and every message it sent,
    is stored."""
    js = client.pub.js
    stream = client.layout.stream
    try:
        last = await js.get_last_msg(stream, subject)
    except nats.js.errors.NotFoundError:
        return True  # nothing stored
    try:
        info = await js.consumer_info(stream, consumer)
    except nats.js.errors.NotFoundError:
        return False
    return info.ack_floor.stream_seq >= last.seq


async def settled(client: df.Client, *task_queues: str, timeout: float = 15.0) -> None:
    """Wait until df-server and the workers of ``task_queues`` have handled every input and
    task stored so far, and every one those led to: a round in which all of them caught up
    and nothing new was stored. After it, whatever effect a message already stored could
    have has happened. Timers still due (message schedules) are not waited for."""
    layout = client.layout
    js = client.pub.js
    pairs = [(layout.server_consumer, subject) for subject in layout.run_inputs]
    pairs.append((layout.start_consumer, layout.input("start")))
    for queue in task_queues:
        pairs.append((layout.workflow_consumer(queue), layout.workflow_tasks(queue)))
        pairs.append((layout.activity_consumer(queue), layout.activity_tasks(queue)))
        # each worker's sticky workflow tasks (the runs it caches)
        for info in await js.consumers_info(layout.stream):
            if info.name.startswith(f"wts_{queue}_") and info.config.filter_subject:
                pairs.append((info.name, info.config.filter_subject))
    for _ in range(20):
        before = (await js.stream_info(layout.stream)).state.last_seq
        for consumer, subject in pairs:
            try:
                await js.consumer_info(layout.stream, consumer)
            except nats.js.errors.NotFoundError:
                continue  # nobody serves it: its messages have no effect
            await wait_for(lambda c=consumer, s=subject: handled(client, c, s), timeout)
        if (await js.stream_info(layout.stream)).state.last_seq == before:
            return
    raise AssertionError("the server and workers were still busy after 20 rounds")


async def until_signal_recorded(
    client: df.Client, wid: str, name: str, arg: str, deadline: float
) -> None:
    """Wait until some run of ``wid`` has recorded signal ``name`` with ``arg``.

    For a signal whose reply was lost (``df.ServerUnavailableError``): it was stored (the
    client saw its PubAck) and a df-server applies it; sending it again would make a second
    signal. Bounded by ``deadline`` (``time.monotonic()``).
    """
    for _ in range(100_000):  # bounded by the deadline too
        try:
            for _run_id, batch in await client.history.read_workflow(wid):
                for e in batch.events:
                    if isinstance(e, ev.SignalReceived) and e.name == name and e.args == (arg,):
                        return
        except df.TransportError:
            pass  # NATS fails over: read again
        if time.monotonic() > deadline:
            raise AssertionError(f"{wid}: signal {name}({arg!r}) never recorded")
        await asyncio.sleep(0.5)
    raise AssertionError(f"{wid}: signal {name}({arg!r}) never recorded")


async def watch(client: df.Client, subject: str) -> list[Msg]:
    """Every message stored on ``subject`` from now on (an ordered consumer: it sees a task
    even if the compactor purges it once acknowledged)."""
    seen: list[Msg] = []

    async def got(msg: Msg) -> None:
        seen.append(msg)

    await client.pub.js.subscribe(subject, ordered_consumer=True, cb=got)
    return seen


async def unanswered_start(
    daemons: Daemons, server: Daemon, held: Path, url: str, *client_args: str
) -> None:
    """A client asks ``server`` (a ``held_start`` df-server) for a start (``client_args``:
    workflow id, request id, ...); once the server holds it where its test asked (``held``
    exists), both are SIGKILLed. The client was answered nothing."""
    args = ["client", url, *client_args]
    asker = daemons.special("asker", "tests.integration.held_start", *args)
    await wait_for(held.exists, 30)
    server.kill()
    asker.kill()
    said = asker.log()
    assert "started" not in said, said


def hooked_server(daemons: Daemons, hook: str, *args: str) -> Daemon:
    """A df-server named ``failing`` whose effects hook (``server/effects_hook.py``) is
    ``hook``: its effects fail, or it dies (SIGKILL), right after an append."""
    from durablefuture.server.effects_hook import EFFECTS_HOOK

    env = dict(daemons.env, **{EFFECTS_HOOK: hook})
    return daemons.special("failing", "daemons.df_server", "--nats", daemons.url, *args, env=env)


def doomed_worker(daemons: Daemons, *args: str) -> Daemon:
    """A df-worker of task queue ``tests`` named ``doomed`` that dies (SIGKILL) when a report
    is answered ``store``, or not in time, before it stores the report."""
    from durablefuture.worker.reports import STORE_ANSWER_HOOK

    env = dict(daemons.env, **{STORE_ANSWER_HOOK: "die"})
    worker = ("daemons.df_worker", "--nats", daemons.url, "--task-queue", "tests")
    return daemons.special("doomed", *worker, *args, env=env)


async def killed(*started: Daemon) -> None:
    """Wait for each of ``started`` to exit, and check that SIGKILL ended it."""
    for d in started:
        await wait_for(lambda d=d: d.proc is not None and d.proc.poll() is not None, 30)
        assert d.proc is not None and d.proc.returncode == -9, d.name
