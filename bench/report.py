"""Side-by-side markdown table of a run's JSON lines: ``python -m bench.report FILE.jsonl...``.

One column per engine (DurableFuture once per fsync setting), the median over rounds of the
headline figures of each workload, and the targets of issue 6 for DurableFuture.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

# (workload, key, label, target for DurableFuture or "")
ROWS: list[tuple[str, str, str, str]] = [
    ("w1", "wf_per_s", "W1 workflows/s", ">= 500 (default), >= 200 (always)"),
    ("w1", "e2e_p50_ms", "W1 e2e p50 ms", ""),
    ("w1", "e2e_p99_ms", "W1 e2e p99 ms", "< 1000"),
    ("w1", "server_cpu_s", "W1 server CPU s", ""),
    ("w1", "worker_cpu_s", "W1 worker CPU s", ""),
    ("w1", "client_cpu_s", "W1 client CPU s", ""),
    ("w1", "nats_cpu_s", "W1 nats-server CPU s", ""),
    ("w1", "postgres_cpu_s", "W1 postgres CPU s", ""),
    ("w1", "app_cpu_s", "W1 app CPU s (DBOS)", ""),
    ("w1", "js_msgs_per_wf", "W1 JetStream msgs/wf", ""),
    ("w2", "p50_ms", "W2 p50 ms", "<= 5"),
    ("w2", "p95_ms", "W2 p95 ms", ""),
    ("w2", "p99_ms", "W2 p99 ms", "<= 15"),
    ("w3", "per_activity_ms", "W3 ms/activity", "<= 5"),
    ("w3", "total_s", "W3 total s", ""),
    ("w3", "history_events", "W3 history events", ""),
    ("w3", "replay_s", "W3 replay s", "<= 0.05"),
    ("w4", "total_s", "W4 fan-out total s", "<= 1"),
    ("w5", "late_e2e_p50_ms", "W5 lateness e2e p50 ms", ""),
    ("w5", "late_e2e_p99_ms", "W5 lateness e2e p99 ms", ""),
    ("w5", "late_inwf_p50_ms", "W5 lateness in-wf p50 ms", ""),
    ("w5", "late_inwf_p99_ms", "W5 lateness in-wf p99 ms", "<= 50"),
    ("w5", "start_call_p99_ms", "W5 start call p99 ms", ""),
    ("w5", "late_fire_p99_ms", "W5 timer fire lateness p99 ms (history)", ""),
    ("w5", "first_task_p99_ms", "W5 start -> timer started p99 ms (history)", ""),
    ("w1", "worker_cache_hit_rate", "W1 worker cache hit rate (metric)", ">= 0.9 (2 workers)"),
    ("w6", "open_peak", "W6 workflows open at once (peak)", ">= 10000 (full)"),
    ("w6", "server_kb_per_open_wf", "W6 df-server KB per open workflow", "<= 10"),
    ("w6", "worker_kb_per_open_wf", "W6 df-worker KB per open workflow", "<= 10"),
    ("w6", "late_inwf_p99_ms", "W6 timer lateness in-wf p99 ms", ""),
    ("w6", "lost", "W6 workflows lost", "0"),
    ("w8", "late_p50_ms", "W8 schedule action lateness p50 ms", ""),
    ("w8", "late_p99_ms", "W8 schedule action lateness p99 ms", ""),
    ("w8", "missed", "W8 actions missed", "0"),
    ("w8", "duplicated", "W8 actions duplicated", "0"),
    ("vis", "runs", "VIS closed runs indexed", ""),
    ("vis", "page_ms_p50", "VIS first page of 50 (type+status+attr) p50 ms", "<= 100"),
    ("vis", "count_ms_p50", "VIS count (type+status+attr) p50 ms", "<= 200"),
    ("vis", "scan_count_ms", "VIS count, no index serves the query, ms", ""),
    ("vis", "index_bytes_per_run", "VIS index bytes per run", ""),
    ("vis", "server_rss_bytes_per_run", "VIS df-server RSS bytes per run", ""),
]


def column_of(rec: dict[str, Any]) -> str:
    eng = str(rec.get("engine", "?"))
    if "fsync" in rec:
        secured = f", secure {rec['secure']}" if rec.get("secure") else ""
        return f"{eng} (fsync {rec['fsync']}{secured})"
    return eng


def load(paths: Iterable[str]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        with open(p) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    out.append(json.loads(line))
    return out


def table(records: list[dict[str, Any]]) -> str:
    vals: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    columns: list[str] = []
    errors: list[str] = []
    for r in records:
        wl = r.get("workload")
        if wl in (None, "meta", "startup", "round_end"):
            continue
        col = column_of(r)
        if "error" in r:
            errors.append(f"{col} {wl}: {r['error']}")
            continue
        if col not in columns:
            columns.append(col)
        for k, v in r.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                vals[(col, str(wl), k)].append(float(v))
    lines = [
        "| metric | " + " | ".join(columns) + " | target (DurableFuture) |",
        "|---|" + "---|" * len(columns) + "---|",
    ]
    for wl, key, label, target in ROWS:
        cells = []
        for col in columns:
            xs = vals.get((col, wl, key))
            cells.append(_fmt(statistics.median(xs)) if xs else "–")
        if all(c == "–" for c in cells):
            continue
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")
    out = "\n".join(lines) + "\n"
    if errors:
        out += "\nerrors:\n" + "\n".join(f"- {e}" for e in errors) + "\n"
    return out


def _fmt(v: float) -> str:
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
    return f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    paths = argv if argv is not None else sys.argv[1:]
    if not paths:
        sys.stderr.write("usage: python -m bench.report RESULTS.jsonl [...]\n")
        return 2
    sys.stdout.write(table(load(paths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
