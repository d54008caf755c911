"""What TLS costs nats-server per message: a raw request/reply loop, no engine.

``python -m bench.tls_writes [--n 40000] [--in-flight 100] [--rounds 3]`` starts a fresh
nats-server per round and mode (``plain``, then ``tls`` with client certificates, alternating
which goes first) and sends ``n`` core requests of 200 bytes (``in-flight`` at a time) from one
connection to a responder on another, both of this process (on uvloop when it is installed,
as the daemons run). Per request it reports nats-server's CPU, its write system calls and
bytes (``syscw`` and ``wchar`` of ``/proc/PID/io``), this process's CPU, and the wall time
(with ``--in-flight 1``: the round trip). Each request is
four messages through nats-server: the request in and out, the reply in and out.

nats-server 2.15 queues what it sends a client in pooled buffers of 512 bytes (4 KiB or
64 KiB only for a longer piece) and writes them with ``net.Buffers.WriteTo``: on a plain
connection one ``writev`` per flush, on a TLS connection one ``Write`` per buffer, so one TLS
record and one system call per 512 bytes. Its writes per request show that.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from durablefuture.natsserver import NatsServer

MODES = ("plain", "tls")


def _proc(pid: int) -> dict[str, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    io = dict(
        (k, int(v))
        for k, v in (line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    )
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return {"cpu": cpu, "writes": io["syscw"], "bytes": io["wchar"]}


async def _loop(url: str, tls: object, n: int, in_flight: int) -> tuple[float, float]:
    from durablefuture.transport.connection import connect

    a = await connect(url, tls=tls, timeout=10)  # type: ignore[arg-type]
    b = await connect(url, tls=tls, timeout=10)  # type: ignore[arg-type]

    async def answer(msg: object) -> None:
        await b.publish(msg.reply, msg.data)  # type: ignore[attr-defined]

    await b.subscribe("svc", cb=answer)
    await b.flush()
    room = asyncio.Semaphore(in_flight)
    body = b"x" * 200

    async def one() -> None:
        async with room:
            await a.request("svc", body, timeout=10)

    t0 = time.process_time()
    w0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    wall = time.perf_counter() - w0
    spent = time.process_time() - t0
    await a.close()
    await b.close()
    return spent, wall


def measure(
    server: NatsServer, run: Callable[[str], Coroutine[Any, Any, tuple[float, float]]], n: int
) -> dict[str, float]:
    """Start ``server``, run the loop ``run(url)`` makes (on uvloop when installed), stop the
    server; what it cost per request: nats-server's CPU, writes and bytes, this process's CPU
    and the wall time."""
    server.start()
    assert server.proc is not None
    try:
        before = _proc(server.proc.pid)
        try:
            import uvloop

            spent, wall = uvloop.run(run(server.url))
        except ImportError:
            spent, wall = asyncio.run(run(server.url))
        after = _proc(server.proc.pid)
    finally:
        server.stop()
        server.cleanup()
    return {
        "nats_cpu_us": (after["cpu"] - before["cpu"]) / n * 1e6,
        "nats_writes": (after["writes"] - before["writes"]) / n,
        "nats_bytes": (after["bytes"] - before["bytes"]) / n,
        "client_cpu_us": spent / n * 1e6,
        "wall_us": wall / n * 1e6,
    }


def compare(
    modes: Sequence[str],
    one_round: Callable[[str, int, int, str], dict[str, float]],
    n: int,
    in_flight: int,
    rounds: int,
) -> None:
    """``rounds`` rounds of every mode (alternating their order), each in a temp dir; prints
    the medians as JSON lines and a table."""
    results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    for r in range(rounds):
        for mode in modes if r % 2 == 0 else modes[::-1]:
            with tempfile.TemporaryDirectory() as d:
                results[mode].append(one_round(mode, n, in_flight, d))
    medians = {}
    for mode, runs in results.items():
        medians[mode] = {k: round(statistics.median(x[k] for x in runs), 2) for k in runs[0]}
        print(json.dumps({"mode": mode, "n": n, "in_flight": in_flight, **medians[mode]}))
    first = modes[0]
    print("| per request (medians) | " + " | ".join(modes) + f" | last / {first} |")
    print("|---" * (len(modes) + 2) + "|")
    for k in medians[first]:
        base, last = medians[first][k], medians[modes[-1]][k]
        ratio = f"{last / base:.2f}" if base else "nan"
        print(f"| {k} | " + " | ".join(str(medians[m][k]) for m in modes) + f" | {ratio} |")


def _round(mode: str, n: int, in_flight: int, directory: str) -> dict[str, float]:
    from bench.secure import make
    from durablefuture.natsserver import NatsServer
    from durablefuture.transport.tls import TlsConfig

    files = make(directory, "bench", parts=("tls",))
    tls_args = {}
    tls = None
    if mode == "tls":
        tls_args = {"tls_cert": files.server_cert, "tls_key": files.server_key, "tls_ca": files.ca}
        tls = TlsConfig(ca=files.ca, cert=files.client_cert, key=files.client_key)
    server = NatsServer(str(Path(directory) / "nats"), **tls_args)  # type: ignore[arg-type]
    return measure(server, lambda url: _loop(url, tls, n, in_flight), n)


def cli(
    doc: str | None,
    modes: Sequence[str],
    one_round: Callable[[str, int, int, str], dict[str, float]],
    *,
    n: int,
    in_flight: int,
) -> None:
    """The command line of a raw request loop (``--n``, ``--in-flight``, ``--rounds``), then
    :func:`compare`."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    ap.add_argument("--n", type=int, default=n)
    ap.add_argument("--in-flight", type=int, default=in_flight)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    compare(modes, one_round, args.n, args.in_flight, args.rounds)


if __name__ == "__main__":
    cli(__doc__, MODES, _round, n=40000, in_flight=100)
