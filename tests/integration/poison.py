"""Code that kills the process running it, and daemons that run it (crash tests of tasks and
inputs whose every handling kills their worker or df-server).

``python -m tests.integration.poison worker URL MAX_DELIVER KINDS``: a worker on task queue
``poison`` (KINDS: ``workflows``, ``activities`` or ``both``) whose consumers allow MAX_DELIVER
deliveries, with short redelivery waits. Its workflow ``doomed`` SIGKILLs its own process while
DF_TEST_POISON_WORKFLOW=1, its activity ``doomed_activity`` while DF_TEST_POISON_ACTIVITY=1.

``python -m tests.integration.poison server URL MAX_DELIVER``: a df-server whose consumer
allows MAX_DELIVER deliveries of an input, and which SIGKILLs itself on handling a signal named
``poison``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import timedelta

import durablefuture as df
from durablefuture.worker.options import WorkerOptions


def _die(variable: str) -> None:
    if os.environ.get(variable) == "1":
        os.kill(os.getpid(), signal.SIGKILL)


def doomed(name: str):  # type: ignore[no-untyped-def]
    _die("DF_TEST_POISON_WORKFLOW")
    greeting = yield df.side_effect(lambda: f"hello {name}")
    return greeting


def doomed_activity(name: str) -> str:
    _die("DF_TEST_POISON_ACTIVITY")
    return f"done {name}"


def calls_doomed_activity(name: str):  # type: ignore[no-untyped-def]
    options = df.ActivityOptions(
        start_to_close_timeout=timedelta(seconds=60),
        retry_policy=df.RetryPolicy(initial_interval=0.1, maximum_attempts=2),
    )
    result = yield df.activity(doomed_activity, name, options=options)
    return result


def waits_for_go():  # type: ignore[no-untyped-def]
    value = yield df.wait_signal("go")
    return value


async def _worker(url: str, max_deliver: int, kinds: str) -> None:
    client = await df.Client.connect(url)
    workflows = [doomed, calls_doomed_activity, waits_for_go]
    worker = df.Worker(
        client,
        task_queue="poison",
        workflows=workflows if kinds in ("workflows", "both") else [],
        activities=[doomed_activity] if kinds in ("activities", "both") else [],
        options=WorkerOptions(
            workflow_task_timeout=1.0,
            activity_lease=1.0,
            liveness_interval=0.5,
            task_max_deliver=max_deliver,
        ),
    )
    await worker.run()


async def _server(url: str, max_deliver: int) -> None:
    from durablefuture.core import inputs as inp
    from durablefuture.server import Server, ServerOptions

    original = Server._handle

    async def handle(self: Server, env: object, *args: object, **kw: object) -> None:
        message = getattr(env, "input", None)
        if isinstance(message, inp.SignalWorkflow) and message.name == "poison":
            os.kill(os.getpid(), signal.SIGKILL)
        await original(self, env, *args, **kw)  # type: ignore[arg-type]

    Server._handle = handle  # type: ignore[method-assign]
    options = ServerOptions(input_ack_wait=1.0, input_max_deliver=max_deliver)
    server = await Server.connect(url, options)
    await server.start()
    await server.run()


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        asyncio.run(_worker(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
    else:
        asyncio.run(_server(sys.argv[2], int(sys.argv[3])))
