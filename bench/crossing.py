"""What a request crossing the accounts of ``df auth init`` costs, against one inside an account.

``python -m bench.crossing [--n 4000] [--in-flight 1] [--rounds 3]`` starts a fresh
nats-server per round and mode and sends ``n`` core requests of 200 bytes (``in-flight`` at a
time) to a responder on another connection, both of this process (on uvloop when installed):

- ``plain``: no logins;
- ``account``: logins, both sides the ``server`` user of one namespace (one account);
- ``crossing``: logins, a ``worker`` asking on ``dfev.<ns>.report`` (the users' account) and
  the ``server`` user answering in the namespace's account, as a report request does: the
  request crosses by the service import (nats-server adds ``Nats-Request-Info`` and maps the
  reply subject), the answer back by the worker's exported inbox.

Per request: nats-server's CPU, its write system calls and bytes (``/proc/PID/io``), this
process's CPU and the wall time (with ``--in-flight 1``: the round trip).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench.tls_writes import cli, measure

MODES = ("plain", "account", "crossing")
NAMESPACE = "bench"


async def _loop(
    url: str, asker: str | None, answerer: str | None, subject: str, n: int, in_flight: int
) -> tuple[float, float]:
    from durablefuture.transport.connection import connect

    a = await connect(url, creds=asker, timeout=10)
    b = await connect(url, creds=answerer, timeout=10, own_inbox=False)

    async def answer(msg: Any) -> None:
        await b.publish(msg.reply, msg.data)

    await b.subscribe(subject, queue="df-server", cb=answer)
    await b.flush()
    room = asyncio.Semaphore(in_flight)
    body = b"x" * 200

    async def one() -> None:
        async with room:
            await a.request(subject, body, timeout=10)

    await one()  # the first crossing sets up the response import
    t0 = time.process_time()
    w0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    wall = time.perf_counter() - w0
    spent = time.process_time() - t0
    await a.close()
    await b.close()
    return spent, wall


def _round(mode: str, n: int, in_flight: int, directory: str) -> dict[str, float]:
    from durablefuture.auth import write
    from durablefuture.natsserver import NatsServer
    from durablefuture.transport.subjects import Layout

    subject = Layout(NAMESPACE).report_requests
    include = None
    asker = answerer = None
    if mode != "plain":
        files = write(Path(directory) / "auth", [NAMESPACE])
        include = str(files.config)
        answerer = str(files.creds[(NAMESPACE, "server")])
        asker = str(files.creds[(NAMESPACE, "worker" if mode == "crossing" else "server")])
    server = NatsServer(str(Path(directory) / "nats"), include=include)
    return measure(server, lambda url: _loop(url, asker, answerer, subject, n, in_flight), n)


if __name__ == "__main__":
    cli(__doc__, MODES, _round, n=4000, in_flight=1)
