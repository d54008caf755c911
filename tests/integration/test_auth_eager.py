"""Eager start offers across the accounts of `df auth init`.

df-server (the server role, in the stream's account) offers a new run's first workflow task
on ``dfev.<ns>.ws.<queue>``, which the users' account exports to it; a worker answers through
``allow_responses`` and gets its receipt on its own inbox. Clients can neither offer nor
answer (nats-server refuses both), and workers cannot offer.
"""

from __future__ import annotations

import logging

import pytest

import durablefuture as df
from durablefuture.server import ServerOptions
from durablefuture.testing import LocalEnvironment
from tests.integration.test_auth import _probe

pytestmark = pytest.mark.asyncio

OPTS = df.ActivityOptions(start_to_close_timeout=10)


def charge(order_id: str) -> str:
    return f"charged {order_id}"


def order(order_id: str):  # type: ignore[no-untyped-def]
    c = yield df.activity(charge, order_id, options=OPTS)
    return c


async def test_eager_starts_cross_the_accounts_and_only_the_roles_may_take_part(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    options = ServerOptions(namespace="default", status_delay=0, eager_start_wait=0.5)
    async with LocalEnvironment(auth=True, server_options=options) as env:
        server = env.server
        assert server is not None
        offers = env.client.layout.eager_starts("default")
        async with env.worker(workflows=[order], activities=[charge]) as worker:
            h = await env.client.start_workflow(order, "o-1", id="o-1")
            assert await h.result(timeout=15) == "charged o-1"
            # offered, answered and stored eagerly; the worker's cached run got its receipt
            assert server.stats.get("eager_starts", 0) == 1
            assert worker.stats.get("eager_starts", 0) == 1
            for role in ("client", "admin", "worker"):
                probe = await _probe(env, role, caplog)
                try:
                    await probe.publish_refused(offers)  # nobody but df-server offers
                    if role != "worker":
                        await probe.subscribe_refused(offers)  # nor answers
                finally:
                    await probe.nc.close()
        events = [type(e).__name__ for e in await h.fetch_history()]
        assert events.count("WorkflowCompleted") == 1
