"""Every message one W1 or W2 workflow sends through NATS, with the time it was seen.

``python -m bench.trace w1|w2 [always]`` starts a LocalEnvironment (nats-server, df-server and
df-worker in this process; ``always``: ``sync_interval: always``), runs one warm-up workflow,
then one workflow of the kind asked while a core subscription on ``>`` records every message:
publishes to stored subjects (``PUB``), pulls, acknowledgements and replies. It prints the
growth of every stream's last sequence (the messages stored) and the timeline in ms from the
start call. For diagnosis: the subscriber itself costs time. ``DF_EAGER_START_WAIT=0.1``
traces an eager start (df-server ``--eager-start-wait``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import nats

from bench import flows
from durablefuture.server.options import ServerOptions
from durablefuture.testing import LocalEnvironment


async def main(kind: str) -> None:
    eager = float(os.environ.get("DF_EAGER_START_WAIT", "0"))
    options = ServerOptions(status_delay=0, eager_start_wait=eager)
    async with LocalEnvironment(sync_always=len(sys.argv) > 2, server_options=options) as env:
        nc = await nats.connect(env.nats_url)
        js = nc.jetstream()
        log: list[tuple[float, str, int, dict[str, str]]] = []

        async def cb(m: Any) -> None:
            log.append((time.perf_counter(), m.subject, len(m.data), dict(m.headers or {})))

        await nc.subscribe(">", cb=cb)
        async with env.worker(
            task_queue="bench", workflows=flows.WORKFLOWS, activities=flows.ACTIVITIES
        ):
            # warmup
            await env.client.execute_workflow(
                flows.one_activity_workflow, 0, id="warm", task_queue="bench"
            )
            await asyncio.sleep(0.5)

            async def seqs() -> dict[str, int]:
                out: dict[str, int] = {}
                for s in await js.streams_info():
                    out[s.config.name] = s.state.last_seq
                return out

            before = await seqs()
            log.clear()
            t = time.perf_counter()
            if kind == "w1":
                r = await env.client.execute_workflow(
                    flows.order_workflow, "o-1", 1.0, id="o-1", task_queue="bench"
                )
            else:
                r = await env.client.execute_workflow(
                    flows.one_activity_workflow, 1, id="w2-1", task_queue="bench"
                )
            t_end = time.perf_counter()
            await asyncio.sleep(0.5)
            after = await seqs()
            print("result", r, f"e2e ms {(t_end - t) * 1000:.2f}")
            print({k: after[k] - before.get(k, 0) for k in after})
            for ts, subj, n, h in log:
                if subj.startswith("$JS.API.CONSUMER.MSG.NEXT"):
                    tag = "pull"
                elif subj.startswith("$JS.ACK"):
                    tag = "ack"
                elif subj.startswith("_INBOX"):
                    tag = "reply"
                else:
                    tag = "PUB"
                hh = {
                    k: v
                    for k, v in h.items()
                    if k.startswith("Nats") or k.startswith("Df") or k.startswith("df")
                }
                print(f"{(ts - t) * 1000:8.2f} {tag:<5} {subj[:60]:<60} {n:5d} {hh}")
        await nc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "w1"))
