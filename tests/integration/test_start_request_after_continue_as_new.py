"""A start request handled again after its run continued as new must not start a second chain.

Found by the long cluster chaos run (tests/integration/test_cluster_chaos.py, slow): a workflow
that continues as new had one run too many, which never ended, and its first child ran twice.
A start request is recognised as already handled only by the request id of the workflow id's
*latest* run (``decide_start``); a run made by continue-as-new has request id
``can:<previous run>``, so once the chain has closed, the same start request (a redelivery of
its input after a df-server died before acknowledging it, or a client's retry after a lost
reply) started a new run under the default id reuse policy. Each run now carries the request
id that started its chain, and ``decide_start`` answers a known request with the latest run.
"""

from __future__ import annotations

import pytest

import durablefuture as df
from durablefuture.testing import LocalEnvironment

pytestmark = pytest.mark.asyncio


def hop(n: int):  # type: ignore[no-untyped-def]
    if n > 0:
        yield df.continue_as_new(n - 1)
    return "done"


async def test_a_start_request_seen_again_after_continue_as_new_starts_nothing() -> None:
    async with LocalEnvironment() as env:
        async with env.worker(workflows=[hop]):
            opts = df.WorkflowOptions(request_id="start-once")
            handle = await env.client.start_workflow(hop, 1, id="chain", options=opts)
            assert await handle.result(timeout=15) == "done"
            runs = {r for r, _ in await env.client.history.read_workflow("chain")}
            assert len(runs) == 2
            # the same request again, as a redelivery of its input would bring it
            again = await env.client.start_workflow(hop, 1, id="chain", options=opts)
            assert again.run_id in runs
            assert {r for r, _ in await env.client.history.read_workflow("chain")} == runs
