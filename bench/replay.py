"""Pure-core replay speed: ``python bench/replay.py``.

Builds (with the in-memory Simulation) the history of one workflow running N sequential
activities, for N = 1,000 and 10,000, then times a from-scratch replay,
``WorkflowExecution(...).feed(events)``, several times and prints one JSON line per size:
``{"bench": "replay", "activities": N, "events": E, "ms_per_replay": ..., "events_per_s": ...}``.
Target: >= 200,000 events/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Generator
from typing import Any

import durablefuture as df
from durablefuture.codec import default_codec
from durablefuture.core import events as ev
from durablefuture.core.definitions import WorkflowDefinition
from durablefuture.core.replay import WorkflowExecution
from durablefuture.testing import Simulation


def noop(i: int) -> int:
    return i


def sequential(n: int) -> Generator[Any, Any, Any]:
    total = 0
    for i in range(n):
        total += yield df.activity(noop, i)
    return total


def build_history(n: int) -> list[ev.Event]:
    sim = Simulation([sequential], [noop])
    sim.start(sequential, n, id="bench")
    sim.run()
    assert sim.result("bench") == n * (n - 1) // 2
    return sim.run_of("bench").events


def time_replay(events: list[ev.Event], repetitions: int) -> list[float]:
    definition = WorkflowDefinition.from_fn(sequential)
    payloads = default_codec().payloads
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        act = WorkflowExecution(definition, payloads).feed(events)
        times.append(time.perf_counter() - start)
        assert act.finished and act.commands == ()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated activity counts")
    parser.add_argument("--repetitions", type=int, default=7)
    args = parser.parse_args(argv)
    for n in (int(s) for s in args.sizes.split(",")):
        events = build_history(n)
        times = time_replay(events, args.repetitions)
        best = statistics.median(times)
        line = {
            "bench": "replay",
            "activities": n,
            "events": len(events),
            "ms_per_replay": round(best * 1000, 2),
            "events_per_s": round(len(events) / best),
        }
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
