"""What the `df auth init` account boundary costs nats-server: a raw loop, no engine.

``python -m bench.logins [--n 10000] [--rounds 3]`` starts a fresh nats-server per round and
layout and measures its CPU (utime + stime from /proc) over four phases:

* ``server_publish``: the server role stores ``n`` tasks (JetStream publishes, 100 in flight);
* ``worker_publish``: the worker role stores ``n`` reports (the same, from the worker);
* ``worker_core_publish``: ``n`` plain publishes of the worker (no reply, no PubAck);
* ``worker_pull_ack``: the worker pulls the ``n`` tasks (batches of 100) and acks each.

Layouts, in alternating order within a round:

* ``none``: no logins;
* ``accounts``: what ``df auth init`` writes (worker, client and admin in an account apart from
  the stream; every request crosses an export/import);
* ``one_account``: the same users and permissions, all in the stream's account. For comparison
  only: inside one account any user can have JetStream write its answers into any stream subject
  by naming it as the reply subject (see ``tests/integration/test_auth_replies.py``), so this is
  not a layout to deploy.

Prints one JSON line per layout (medians over the rounds, CPU seconds) and a table of ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

LAYOUTS = ("none", "accounts", "one_account")
NAMESPACE = "bench"


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _one_account_config(creds: dict[str, str]) -> str:
    from durablefuture.auth import account_name, permissions, read_credentials

    lines = ["accounts {", f"  {account_name(NAMESPACE)}: {{", "    jetstream: enabled"]
    lines.append("    users: [")
    for role, path in creds.items():
        key = read_credentials(path).public_key
        perms = permissions(role, NAMESPACE, key).render()
        lines.append(f"      {{nkey: {json.dumps(key)}, permissions: {perms}}}")
    lines += ["    ]", "  }", "}"]
    return "\n".join(lines) + "\n"


async def _round(layout: str, n: int, directory: str) -> dict[str, float]:
    from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

    from durablefuture.auth import write
    from durablefuture.natsserver import NatsServer
    from durablefuture.transport.connection import connect
    from durablefuture.transport.subjects import Layout

    lay = Layout(NAMESPACE)
    include = None
    creds: dict[str, str] = {}
    if layout != "none":
        files = write(Path(directory) / "auth", [NAMESPACE])
        creds = {role: str(p) for (_, role), p in files.creds.items()}
        include = str(files.config)
        if layout == "one_account":
            Path(include).write_text(_one_account_config(creds))
    server = NatsServer(str(Path(directory) / "nats"), include=include).start()
    assert server.proc is not None
    pid = server.proc.pid
    try:
        srv = await connect(server.url, creds=creds.get("server"), timeout=10)
        wrk = await connect(server.url, creds=creds.get("worker"), timeout=10)
        js, wjs = srv.jetstream(), wrk.jetstream()
        await js.add_stream(StreamConfig(name=lay.stream, subjects=lay.stream_subjects))
        body = b"x" * 200

        async def stored(j: Any, subject: str) -> None:
            room = asyncio.Semaphore(100)

            async def one() -> None:
                async with room:
                    await j.publish(subject, body)

            await asyncio.gather(*(one() for _ in range(n)))

        out: dict[str, float] = {}
        t0 = _cpu(pid)
        await stored(js, lay.activity_tasks("q"))
        t1 = _cpu(pid)
        await stored(wjs, lay.input("report"))
        t2 = _cpu(pid)
        for _ in range(n):
            await wrk.publish(lay.input("report"), body)
        await wrk.flush()
        t3 = _cpu(pid)
        consumer = lay.activity_consumer("q")
        config = ConsumerConfig(
            durable_name=consumer,
            filter_subject=lay.activity_tasks("q"),
            ack_policy=AckPolicy.EXPLICIT,
        )
        await js.add_consumer(lay.stream, config)
        sub = await wjs.pull_subscribe_bind(consumer, stream=lay.stream)
        t4 = _cpu(pid)
        got = 0
        for _ in range(n):  # bounded: at least one message per fetch
            if got >= n:
                break
            for msg in await sub.fetch(100, timeout=10):
                await msg.ack()
                got += 1
        await wrk.flush()
        t5 = _cpu(pid)
        out = {
            "server_publish": t1 - t0,
            "worker_publish": t2 - t1,
            "worker_core_publish": t3 - t2,
            "worker_pull_ack": t5 - t4,
        }
        await srv.close()
        await wrk.close()
        return out
    finally:
        server.stop()
        server.cleanup()


async def main(n: int, rounds: int) -> None:
    results: dict[str, list[dict[str, float]]] = {x: [] for x in LAYOUTS}
    for r in range(rounds):
        order = LAYOUTS if r % 2 == 0 else LAYOUTS[::-1]
        for layout in order:
            with tempfile.TemporaryDirectory(prefix="df-logins-") as d:
                results[layout].append(await _round(layout, n, d))
    medians = {
        layout: {k: statistics.median(x[k] for x in runs) for k in runs[0]}
        for layout, runs in results.items()
    }
    for layout, m in medians.items():
        print(json.dumps({"layout": layout, "n": n, "rounds": rounds, "cpu_s": m}))
    base = medians["none"]
    print("| phase | " + " | ".join(LAYOUTS) + " | accounts/none | one_account/none |")
    print("|---|" + "---|" * (len(LAYOUTS) + 2))
    for phase, v in base.items():
        cells = " | ".join(f"{medians[x][phase]:.2f}" for x in LAYOUTS)
        ratios = " | ".join(
            f"{medians[x][phase] / v:.2f}" if v else "–" for x in ("accounts", "one_account")
        )
        print(f"| {phase} | {cells} | {ratios} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--n", type=int, default=10000, help="messages per phase (default 10000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    a = ap.parse_args()
    if a.n < 1 or a.rounds < 1:
        ap.error("--n and --rounds must be >= 1")
    asyncio.run(main(a.n, a.rounds))
