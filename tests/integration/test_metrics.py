"""The Prometheus endpoints of df-server and df-worker move when workflows run."""

from __future__ import annotations

import asyncio
import re
import urllib.request

import pytest

import durablefuture as df
from durablefuture.natsserver import free_port
from tests.conftest import Daemons, wait_for, wait_namespace
from tests.integration.flows import add_workflow, expected_add

pytestmark = pytest.mark.asyncio


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.fullmatch(r"(\S+) (\S+)", line)
        assert m, line
        out[m.group(1)] = float(m.group(2))
    return out


def total(samples: dict[str, float], prefix: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        v for k, v in samples.items() if k.split("{")[0] == prefix and all(w in k for w in want)
    )


async def test_metrics_endpoints_count_what_happens(daemons: Daemons) -> None:
    daemons.env["DF_TEST_ACTIVITY_SECONDS"] = "0"
    sport, wport = free_port(), free_port()
    daemons.server("--metrics-port", str(sport))
    daemons.worker(
        "--workflows",
        "tests.integration.flows:WORKFLOWS",
        "--activities",
        "tests.integration.flows:ACTIVITIES",
        "--metrics-port",
        str(wport),
    )
    await wait_namespace(daemons.url)

    def up() -> bool:
        try:
            scrape(sport)
            scrape(wport)
            return True
        except OSError:
            return False

    await wait_for(up, 15)
    before_s = scrape(sport)
    assert total(before_s, "df_workflows_started_total") == 0
    client = await df.Client.connect(daemons.url)
    try:
        results = await asyncio.gather(
            *(
                client.execute_workflow(
                    add_workflow, i, id=f"m-{i}", task_queue="tests", timeout=30
                )
                for i in range(5)
            )
        )
    finally:
        await client.close()
    assert results == [expected_add(i) for i in range(5)]

    def applied() -> float:
        return total(scrape(sport), "df_server_inputs_total", outcome="applied")

    # a client has its result once the close is stored, before df-server has counted the
    # input that closed the run: at least 5 starts, 15 activity results, and the first
    # decision of each run
    await wait_for(lambda: applied() >= 5 + 15 + 5, 15)
    s, w = scrape(sport), scrape(wport)
    assert total(s, "df_workflows_started_total", namespace="default") == 5
    assert total(s, "df_workflows_closed_total", status="completed") == 5
    assert total(s, "df_activity_attempt_outcomes_total", outcome="completed") == 15
    assert total(s, "df_server_input_seconds_count") > total(
        before_s, "df_server_input_seconds_count"
    )
    # the first decision of each run comes from a workflow task; later ones may ride along
    # with the activity results (fused reports)
    assert total(w, "df_workflow_tasks_total", outcome="commands") >= 5
    assert total(w, "df_worker_activity_attempts_total", outcome="completed") == 15
    assert total(w, "df_activity_schedule_to_start_seconds_count") == 15
    assert total(w, "df_cache_lookups_total") > 0
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"http://127.0.0.1:{sport}/other", timeout=5)
