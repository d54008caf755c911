"""``python -m bench --quick --check``: the benchmark's own smoke check, run by CI.

It checks the shape of what a quick run printed (every workload's record, its cost columns,
ordered percentiles, workflows that really went through JetStream); it never judges speed.
"""

from __future__ import annotations

from typing import Any

COST_KEYS = [
    f"{proc}_{what}"
    for proc in ("server", "worker", "client", "nats")
    for what in ("cpu_s", "rss_mb")
] + ["js_msgs_per_wf", "js_deliveries_per_wf", "workload_wall_s", "fsync", "round"]
KEYS = {
    "w1": ["n", "max_in_flight", "wall_s", "wf_per_s"]
    + [f"e2e_{p}_ms" for p in ("p50", "p95", "p99", "max")],
    "w2": ["n", "wall_s"] + [f"{p}_ms" for p in ("p50", "p95", "p99", "max")],
    "w6": ["n", "open_peak", "lost", "server_kb_per_open_wf", "worker_kb_per_open_wf"]
    + [f"late_inwf_{p}_ms" for p in ("p50", "p95", "p99", "max")],
    "storage": ["n", "retained_bytes_per_wf", "expired_total_bytes", "expired_within_1mb"],
    "w8": ["schedules", "seconds", "expected_actions", "started_actions", "missed", "duplicated"]
    + [f"late_{p}_ms" for p in ("p50", "p95", "p99", "max")],
    "vis": ["runs", "count", "page_rows", "index_bytes_per_run", "server_rss_bytes_per_run"]
    + [f"{w}_ms_{p}" for w in ("page", "count") for p in ("p50", "p95", "max")],
}
PERCENTILES = {
    "w1": ("e2e_p50_ms", "e2e_p99_ms", "e2e_max_ms"),
    "w2": ("p50_ms", "p99_ms", "max_ms"),
    "w6": ("late_inwf_p50_ms", "late_inwf_p99_ms", "late_inwf_max_ms"),
    "w8": ("late_p50_ms", "late_p99_ms", "late_max_ms"),
    "vis": ("page_ms_p50", "page_ms_p95", "page_ms_max"),
}


def problems(records: list[dict[str, Any]], workloads: list[str]) -> list[str]:
    """What is wrong with a run's records (empty when the run is sound)."""
    found: list[str] = []
    by_workload = {r.get("workload"): r for r in records if r.get("engine") == "durablefuture"}
    expected = {"meta", "startup", "round_end", *workloads}
    if missing := sorted(expected - set(by_workload)):
        found.append(f"no record for {missing}")
    for name in workloads:
        rec = by_workload.get(name)
        if rec is None:
            continue
        if "error" in rec:
            found.append(f"{name}: {rec['error']}")
            continue
        absent = [k for k in COST_KEYS + KEYS.get(name, []) if k not in rec]
        if absent:
            found.append(f"{name}: missing {absent}")
            continue
        if not rec["js_msgs_per_wf"] > 0:
            found.append(f"{name}: no JetStream messages per workflow (nothing went through NATS)")
        if rec["server_cpu_s"] < 0 or rec["worker_cpu_s"] < 0:
            found.append(f"{name}: negative CPU time")
        if name == "w6" and rec["lost"]:
            found.append(f"w6: {rec['lost']} workflow(s) without their result")
        if name == "w8" and rec["duplicated"]:
            found.append(f"w8: {rec['duplicated']} action(s) started twice")
        if name == "w8" and rec.get("drained") and rec["missed"]:
            found.append(f"w8: {rec['missed']} action(s) never started after a full drain")
        if name == "vis" and rec["page_rows"] != min(50, rec["count"]):
            found.append(f"vis: a first page of {rec['page_rows']} for {rec['count']} matches")
        keys = PERCENTILES.get(name)
        if keys and not rec[keys[0]] <= rec[keys[1]] <= rec[keys[2]]:
            found.append(f"{name}: percentiles out of order {[rec[k] for k in keys]}")
    return found
