"""Reading the daemons' Prometheus endpoints around a workload (the run cache's hit rate and
the routes of workflow tasks)."""

from __future__ import annotations

import re
import urllib.request

__all__ = ["cache_and_routes", "scrape"]

_SAMPLE = re.compile(r"(\S+) (\S+)")


def scrape(port: int) -> dict[str, float]:
    """The samples of ``http://127.0.0.1:<port>/metrics`` ({} if it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.fullmatch(line)
        if m and not line.startswith("#"):
            out[m.group(1)] = float(m.group(2))
    return out


def _sum(samples: list[dict[str, float]], name: str, label: str) -> float:
    return sum(v for s in samples for k, v in s.items() if k.split("{")[0] == name and label in k)


def cache_and_routes(
    before: list[dict[str, float]], after: list[dict[str, float]]
) -> dict[str, object]:
    """What a workload did to the workers' run caches and the workflow task routes:
    ``worker_cache_hit_rate`` = hits / (hits + misses) of workflow tasks (a run's first task
    is not a lookup), from ``df_cache_lookups_total``."""

    def delta(name: str, label: str) -> float:
        return _sum(after, name, label) - _sum(before, name, label)

    hits = delta("df_cache_lookups_total", 'component="worker",result="hit"')
    misses = delta("df_cache_lookups_total", 'component="worker",result="miss"')
    new = delta("df_cache_lookups_total", 'component="worker",result="new"')
    routes = {
        r: int(delta("df_sticky_tasks_total", f'route="{r}"'))
        for r in ("sticky", "shared", "moved")
    }
    return {
        "worker_cache_hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
        "worker_cache": {"hit": int(hits), "miss": int(misses), "new": int(new)},
        "wft_routes": routes,
    }
