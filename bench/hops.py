"""W2's hops with the daemons in their own processes: the median time of every message.

``python -m bench.hops [--always] [--n 40] [--root DIR]`` starts a nats-server, a df-server and
a df-worker as separate processes (as the bench does) and a tracer process whose core
subscription on ``>`` notes every message with its monotonic time. The driver (this process)
runs one warm-up and then ``--n`` one-activity workflows one after the other, and prints, for
each message of a workflow's timeline (publishes, deliveries to a puller, PubAcks, receipts,
pulls, acknowledgements), its median time from the start call, with the W2 p50 beside it.

The subject of a message a consumer delivers is the stored one, so a stored subject seen twice
is its publish and then its delivery. ``--root DIR`` runs the engine of another checkout (its
``durablefuture`` and ``daemons``; this ``bench/flows.py`` is used for the workflows), which is
how two commits' hops are compared. For diagnosis: the tracer costs nats-server some work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

TRACER = r"""
import asyncio, json, sys, time
import nats

async def main():
    nc = await nats.connect(sys.argv[1])
    out = open(sys.argv[2], "w")
    def cb(m):
        h = m.headers or {}
        out.write(json.dumps([time.monotonic(), m.subject, len(m.data),
                              sorted(k for k in h if k.startswith(("Df", "Nats")))]) + "\n")
    async def acb(m):
        cb(m)
    await nc.subscribe(">", cb=acb)
    await nc.flush()
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(15, stop.set)
    await stop.wait()
    out.flush()
    await nc.close()

asyncio.run(main())
"""

_HEX = re.compile(r"[0-9a-f]{32}")
_INBOX = re.compile(r"_INBOX\.[A-Za-z0-9]+(\.[A-Za-z0-9]+)*")


def _norm(subject: str, wf: str, headers: list[str]) -> str:
    if subject.startswith("$JS.API.CONSUMER.MSG.NEXT"):
        return "pull " + subject.split(".")[-1]
    if subject.startswith("$JS.ACK"):
        return "ack " + subject.split(".")[3]
    if subject.startswith("_INBOX"):
        kind = "receipt" if "Df-Run" in headers else "reply"
        return f"{kind} ({len(subject.split('.'))})"
    s = _HEX.sub("RUN", subject).replace(wf, "WF")
    return "msg " + _INBOX.sub("INBOX", s)


async def drive(args: argparse.Namespace) -> None:
    root = Path(args.root).resolve() if args.root else HERE.parent
    sys.path.insert(0, str(root))
    sys.path.insert(1, str(HERE.parent))
    from bench import flows
    from durablefuture.client import Client
    from durablefuture.natsserver import NatsServer

    tmp = tempfile.mkdtemp(prefix="df-hops-")
    nats_srv = NatsServer(os.path.join(tmp, "nats"), sync_always=args.always).start()
    procs: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{root}{os.pathsep}{HERE.parent}"
    url = nats_srv.url

    def spawn(name: str, *argv: str) -> subprocess.Popen[bytes]:
        if args.cprofile_daemons:
            os.makedirs(args.cprofile_daemons, exist_ok=True)
            out = os.path.join(args.cprofile_daemons, f"{name}.prof")
            argv = ("-m", "cProfile", "-o", out, *argv)
        with open(os.path.join(tmp, f"{name}.log"), "ab") as logf:
            p = subprocess.Popen(
                [sys.executable, *argv], cwd=str(root), env=env, stdout=logf, stderr=logf
            )
        procs.append(p)
        return p

    trace_path = os.path.join(tmp, "trace.jsonl")
    tracer = None
    if not args.no_trace:
        tracer = subprocess.Popen(
            [sys.executable, "-c", TRACER, url, trace_path], stdout=subprocess.PIPE
        )
        procs.append(tracer)  # type: ignore[arg-type]
    try:
        if tracer is not None:
            assert tracer.stdout is not None
            tracer.stdout.readline()
        common = ["--nats", url, "--namespace", "default", "--log-level", "warning"]
        server = spawn("server", "-m", "daemons.df_server", *common)
        worker = spawn(
            "worker",
            "-m",
            "daemons.df_worker",
            *common,
            "--task-queue",
            "bench",
            "--workflows",
            "bench.flows:WORKFLOWS",
            "--activities",
            "bench.flows:ACTIVITIES",
        )
        import nats

        nc = await nats.connect(url)
        js = nc.jetstream()
        deadline = time.monotonic() + 30
        while True:  # df-server has made the stream and its input consumer
            try:
                await js.consumer_info("DF_default", "server")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        await nc.close()
        client = await Client.connect(url, "default", connect_timeout=10)
        for i in range(3):  # warm-up (the first waits for the daemons)
            await client.execute_workflow(
                flows.one_activity_workflow, i, id=f"warm-{i}", task_queue="bench", timeout=60
            )
        await asyncio.sleep(0.3)
        spans: list[tuple[str, float, float]] = []
        prof = None
        spies = []
        if args.spy:
            import shutil

            os.makedirs(args.spy, exist_ok=True)
            for name, p in (("server", server), ("worker", worker)):
                spies.append(
                    subprocess.Popen(
                        [
                            shutil.which("py-spy") or "/tmp/spyenv/bin/py-spy",
                            "record",
                            "--format",
                            "raw",
                            "-r",
                            "500",
                            "--nonblocking",
                            "-p",
                            str(p.pid),
                            "-o",
                            os.path.join(args.spy, f"{name}.txt"),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            await asyncio.sleep(1.0)

        def io(p: subprocess.Popen[bytes]) -> dict[str, int]:
            with open(f"/proc/{p.pid}/io") as f:
                return {k: int(v) for k, v in (line.split(": ") for line in f)}

        def cpu(p: subprocess.Popen[bytes]) -> float:
            with open(f"/proc/{p.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        io0 = {n: (io(p), cpu(p)) for n, p in (("server", server), ("worker", worker))}
        if args.cprofile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        for i in range(args.n):
            wf = f"w2h-{i:04d}"
            t0 = time.monotonic()
            await client.execute_workflow(
                flows.one_activity_workflow, i, id=wf, task_queue="bench", timeout=60
            )
            spans.append((wf, t0, time.monotonic()))
            await asyncio.sleep(0.02)
        for n, p in (("server", server), ("worker", worker)):
            a, c = io(p), cpu(p)
            b, c0 = io0[n]
            print(
                f"{n}: per workflow {(a['syscw'] - b['syscw']) / args.n:.2f} write calls, "
                f"{(a['syscr'] - b['syscr']) / args.n:.2f} read calls, "
                f"{(c - c0) * 1000 / args.n:.2f} ms CPU"
            )
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        if prof is not None:
            prof.disable()
            prof.dump_stats(args.cprofile)
        await asyncio.sleep(0.3)
        await client.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        nats_srv.stop()
    if tracer is None:
        e2e = sorted((t1 - t0) * 1000 for _, t0, t1 in spans)
        print(
            f"W2 e2e ms over {len(e2e)}: p50 {statistics.median(e2e):.2f}  "
            f"p90 {e2e[int(len(e2e) * 0.9)]:.2f}  mean {statistics.mean(e2e):.2f}"
        )
        return
    with open(trace_path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    report(rows, spans)


def report(rows: list[list[Any]], spans: list[tuple[str, float, float]]) -> None:
    times: dict[tuple[str, int], list[float]] = {}
    e2e = [(t1 - t0) * 1000 for _, t0, t1 in spans]
    for wf, t0, t1 in spans:
        seen: dict[str, int] = {}
        for ts, subject, _n, headers in rows:
            if ts < t0 - 0.0005 or ts > t1 + 0.003:
                continue
            if subject.startswith("$JS.EVENT") or "STREAM.INFO" in subject:
                continue
            key = _norm(subject, wf, headers)
            k = (key, seen.get(key, 0))
            seen[key] = k[1] + 1
            times.setdefault(k, []).append((ts - t0) * 1000)
    n = len(spans)
    lines = []
    for k, v in times.items():
        if len(v) >= n // 2:
            lines.append((statistics.median(v), k, len(v)))
    lines.sort()
    print(f"W2 e2e ms over {n}: p50 {statistics.median(e2e):.2f}  mean {statistics.mean(e2e):.2f}")
    prev = 0.0
    for med, (key, occ), cnt in lines:
        print(f"{med:7.2f} (+{med - prev:5.2f})  {key}#{occ}  [{cnt}/{n}]")
        prev = med
    print(f"{statistics.median(e2e):7.2f}           client has the result")
    # the workflow with the median e2e, message by message
    wf, t0, t1 = sorted(spans, key=lambda s: s[2] - s[1])[len(spans) // 2]
    print(f"--- {wf}: {(t1 - t0) * 1000:.2f} ms")
    for ts, subject, n, headers in rows:
        if t0 - 0.0005 <= ts <= t1 + 0.003 and not subject.startswith("$JS.EVENT"):
            print(f"{(ts - t0) * 1000:7.2f}  {_norm(subject, wf, headers)}  {n}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--always", action="store_true", help="nats-server sync_interval: always")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--cprofile", default=None, help="profile the driver into this file")
    ap.add_argument("--no-trace", action="store_true", help="no tracer: timings and CPU only")
    ap.add_argument("--cprofile-daemons", default=None, help="cProfile the daemons into DIR")
    ap.add_argument("--spy", default=None, help="py-spy the daemons into this directory")
    ap.add_argument("--root", default=None, help="checkout whose engine runs (default: this one)")
    asyncio.run(drive(ap.parse_args()))


if __name__ == "__main__":
    main()
