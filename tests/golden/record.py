"""Record the golden histories: run every example on a real engine, store its history as JSON.

    python -m tests.golden.record          # every example
    python -m tests.golden.record cart     # only the examples named

Run it only when a change to the wire format or the replayer is intended and old runs are
known to be handled; tests/core/test_golden.py replays the committed files against the current
code, so an accidental change breaks CI instead of runs in production.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from durablefuture.codec.wire import default_codec
from durablefuture.testing import LocalEnvironment
from workflows_examples import ACTIVITIES, EXAMPLES, TASK_QUEUE, WORKFLOWS

HERE = Path(__file__).parent


async def record(names: list[str]) -> None:
    codec = default_codec()
    async with LocalEnvironment() as env:
        async with env.worker(task_queue=TASK_QUEUE, workflows=WORKFLOWS, activities=ACTIVITIES):
            for name, (workflow, args, driver) in sorted(EXAMPLES.items()):
                if names and name not in names:
                    continue
                handle = await env.client.start_workflow(
                    workflow, *args, id=f"golden-{name}", task_queue=TASK_QUEUE
                )
                if driver is not None:
                    await driver(handle)
                await handle.result(timeout=120)
                history = await handle.fetch_history()
                rows = [codec.encode_event(e) for e in history]
                path = HERE / f"{name}.json"
                path.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
                print(f"{path.name}: {len(rows)} events")


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1:]))
