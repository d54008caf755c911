"""Smoke test of the benchmark suite: ``python -m bench --quick --workloads w1,w2`` works.

It runs the real daemons as subprocesses, so it also catches an engine that hangs or fails on
the benchmark's workflows. It never asserts on speed: CI machines vary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

COST_KEYS = [
    f"{proc}_{what}"
    for proc in ("server", "worker", "client", "nats")
    for what in ("cpu_s", "rss_mb")
] + ["js_msgs_per_wf", "js_deliveries_per_wf", "workload_wall_s", "fsync", "round"]
W1_KEYS = ["n", "max_in_flight", "wall_s", "wf_per_s"] + [
    f"e2e_{p}_ms" for p in ("p50", "p95", "p99", "max")
]
W2_KEYS = ["n", "wall_s"] + [f"{p}_ms" for p in ("p50", "p95", "p99", "max")]


def test_bench_quick_w1_w2(tmp_path: Path) -> None:
    out = tmp_path / "bench.jsonl"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    args = [sys.executable, "-m", "bench", "--quick", "--workloads", "w1,w2", "--timeout", "15"]
    args += ["--out", str(out)]
    proc = subprocess.run(
        args,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert records, proc.stderr[-3000:]
    # everything printed is also in the results file, one JSON object per line
    assert [json.loads(line) for line in out.read_text().splitlines()] == records
    assert all(r["engine"] == "durablefuture" for r in records)
    by_workload = {r["workload"]: r for r in records}
    assert set(by_workload) == {"meta", "startup", "w1", "w2", "round_end"}, by_workload.keys()
    assert by_workload["meta"]["fsync"] == "default"

    w1, w2 = by_workload["w1"], by_workload["w2"]
    for rec in (w1, w2):
        assert "error" not in rec, rec["error"]
        missing = [k for k in COST_KEYS if k not in rec]
        assert not missing, (rec["workload"], missing)
        assert rec["fsync"] == "default"
        assert rec["js_msgs_per_wf"] > 0  # the workflows really went through JetStream
        assert rec["server_cpu_s"] >= 0 and rec["worker_cpu_s"] >= 0
    assert not [k for k in W1_KEYS if k not in w1]
    assert not [k for k in W2_KEYS if k not in w2]
    assert w1["n"] == 100 and w1["max_in_flight"] == 20
    assert w2["n"] == 20
    assert w1["e2e_p50_ms"] <= w1["e2e_p99_ms"] <= w1["e2e_max_ms"]
    assert w2["p50_ms"] <= w2["p99_ms"] <= w2["max_ms"]
