"""Granted (eager) attempts and their leases: an attempt granted to the worker that decided it
has no stored task, so it runs with no lease until ``eager_claim_after``; nothing but its
check may then publish a task for it, and an activity allowed one attempt only is never
granted (it keeps its stored task and its lease)."""

from __future__ import annotations

from typing import Any

import pytest

import durablefuture as df
from durablefuture.codec.wire import InputEnvelope
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.server import ServerOptions
from durablefuture.server.grants import Grants
from durablefuture.server.receipts import ANSWERED_RECEIPT
from durablefuture.testing import LocalEnvironment
from durablefuture.worker import WorkerOptions
from tests.conftest import wait_for
from tests.integration.helpers import watch
from tests.integration.orders import PAUSE, charge, order, ran, ship

pytestmark = pytest.mark.asyncio


def once_only(order_id: str):  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(
        start_to_close_timeout=30, retry_policy=df.RetryPolicy(maximum_attempts=1)
    )
    c = yield df.activity(charge, order_id, options=opts)
    s = yield df.activity(ship, order_id, options=opts)
    return [c, s]


async def test_an_activity_allowed_one_attempt_is_not_granted() -> None:
    """Its first attempt goes through its stored task and claims its lease at once: a crash
    of a worker or df-server cannot time it out, which would fail it for good."""
    async with LocalEnvironment(server_options=ServerOptions(eager_check=1.0)) as env:
        server = env.server
        assert server is not None
        layout = env.client.layout
        tasks = await watch(env.client, f"{layout.prefix}.at.>")
        leases = await watch(env.client, f"$KV.{layout.activity_bucket}.lease.>")
        async with env.worker(workflows=[once_only], activities=[charge, ship]):
            h = await env.client.start_workflow(once_only, "o-1", id="o-1")
            assert await h.result(timeout=15) == ["charged o-1", "shipped o-1"]
        await env.client.pub.nc.flush()
        assert ran == ["charge o-1", "ship o-1"]
        assert server.stats["eager_granted"] == 0
        stored = [env.client.codec.decode_activity_task(m.data) for m in tasks]
        assert [(t.seq, t.attempt) for t in stored] == [(1, 1), (2, 1)]
        assert sorted(m.subject.rsplit(".", 2)[-2] for m in leases) == ["1", "2"]
        history = await h.fetch_history()
        assert not any(isinstance(e, ev.ActivityScheduled) and e.eager for e in history)


async def test_effects_derived_again_list_a_granted_attempt_instead_of_publishing_it() -> None:
    """``ship`` runs on the worker granted it, with no lease yet, when the report that
    scheduled it (``charge``'s result, fused with the decision) arrives again: df-server
    derives that batch's effects again and lists ``ship``'s attempt on a check list instead
    of publishing its task (another worker given the task would find no lease and run it a
    second time). ``ship`` runs once; no task is stored."""
    PAUSE["ship"] = 1.5
    async with LocalEnvironment(server_options=ServerOptions(eager_check=3.0)) as env:
        server = env.server
        assert server is not None
        layout = env.client.layout
        tasks = await watch(env.client, f"{layout.prefix}.at.>")
        options = WorkerOptions(eager_claim_after=0.5)
        async with env.worker(workflows=[order], activities=[charge, ship], options=options):
            h = await env.client.start_workflow(order, "d-1", id="d-1")
            await wait_for(lambda: "ship d-1" in ran, 15)
            history = await h.fetch_history()
            scheduled = [e for e in history if isinstance(e, ev.ActivityScheduled)]
            assert [(e.seq, bool(e.eager)) for e in scheduled] == [(1, True), (2, True)]
            again = inp.CompleteActivityTask(h.run_id or "", 1, 1, "charged d-1")
            body = env.client.codec.encode_input(InputEnvelope("d-1", again))
            await env.client.pub.js.publish(layout.input("report"), body)
            await wait_for(lambda: server.stats["eager_relisted"] >= 1, 15)
            assert await h.result(timeout=15) == ["charged d-1", "shipped d-1"]
            await wait_for(lambda: server.stats["checks_done"] >= 3, 15)
        await env.client.pub.nc.flush()
        assert ran == ["charge d-1", "ship d-1"]
        assert tasks == []
        assert server.stats["checks_timed_out"] == 0
        history = await h.fetch_history()
        assert [type(e) for e in history].count(ev.ActivityCompleted) == 2
        assert ev.ActivityRetryScheduled not in [type(e) for e in history]


async def test_an_attempt_listed_for_an_answer_that_grants_nothing_is_stored_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The attempts are listed (and marked) while the report is appended, and then the answer
    grants nothing (it was made too late, as under load past ``GRANT_WITHIN``): their worker
    never runs them, so their tasks are stored at once, not left to their check (30 s)."""
    real = Grants._grant_early

    async def then_too_late(self: Grants, cache: Any, events: Any) -> Any:
        marked = await real(self, cache, events)
        answered = ANSWERED_RECEIPT.get()
        if answered is not None:
            answered.answered = True  # as if the answer were made: nothing is granted
        return marked

    monkeypatch.setattr(Grants, "_grant_early", then_too_late)
    async with LocalEnvironment() as env:  # eager_check: 30 s
        server = env.server
        assert server is not None
        tasks = await watch(env.client, f"{env.client.layout.prefix}.at.>")
        async with env.worker(workflows=[order], activities=[charge, ship]):
            h = await env.client.start_workflow(order, "g-1", id="g-1")
            assert await h.result(timeout=10) == ["charged g-1", "shipped g-1"]
        await env.client.pub.nc.flush()
        assert ran == ["charge g-1", "ship g-1"]
        assert server.stats["eager_granted"] == 0
        stored = [env.client.codec.decode_activity_task(m.data) for m in tasks]
        assert [(t.seq, t.attempt) for t in stored] == [(1, 1), (2, 1)]
        history = await h.fetch_history()
        scheduled = [e for e in history if isinstance(e, ev.ActivityScheduled)]
        assert [(e.seq, bool(e.eager)) for e in scheduled] == [(1, True), (2, True)]
        assert ev.ActivityRetryScheduled not in [type(e) for e in history]
