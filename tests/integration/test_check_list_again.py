"""A check list whose first attempt's outcome is its run's newest batch (its effects derived
again, outcome ``again``) still checks the attempts after it in the same list."""

from __future__ import annotations

import pytest

import durablefuture as df
from durablefuture.codec.checks import CheckedAttempt, encode_check_list
from durablefuture.core import events as ev
from durablefuture.server import ServerOptions
from durablefuture.testing import LocalEnvironment
from durablefuture.worker import WorkerOptions
from durablefuture.worker.eager import AFTER_GRANT_HOOK
from tests.conftest import wait_for
from tests.integration.orders import OPTS, charge, one_charge, ran

pytestmark = pytest.mark.asyncio


def charge_then_wait(order_id: str):  # type: ignore[no-untyped-def]
    charged = yield df.activity(charge, order_id, options=OPTS)
    go = yield df.wait_signal("go")
    return f"{charged} {go}"


async def test_an_attempt_whose_effects_are_derived_again_does_not_stop_its_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run ``a``'s attempt is closed by its run's newest batch (its result, with the wait
    for a signal decided beside it): its check derives that batch's effects again. Run
    ``b``'s attempt was granted to a worker that never ran it (as one killed right after the
    answer). Listed after ``a`` on the same list, it must still be checked: recorded timed
    out, and attempt 2 runs from its stored task."""
    options = ServerOptions(eager_check=3600.0)  # only our list fires
    async with LocalEnvironment(server_options=options) as env:
        server = env.server
        assert server is not None
        client, layout = env.client, env.client.layout
        stored_tasks = WorkerOptions(eager_activities=False)  # nothing granted, nothing known
        async with env.worker(
            workflows=[charge_then_wait], activities=[charge], options=stored_tasks
        ):
            a = await client.start_workflow(charge_then_wait, "a", id="a")

            async def waiting() -> bool:
                history = await a.fetch_history()
                return any(isinstance(e, ev.SignalWaitStarted) for e in history)

            await wait_for(waiting, 15)
        monkeypatch.setenv(AFTER_GRANT_HOOK, "skip")
        async with env.worker(workflows=[one_charge, charge_then_wait], activities=[charge]):
            b = await client.start_workflow(one_charge, "b", id="b")
            await wait_for(lambda: server.stats["eager_granted"] == 1, 15)
            listed = [
                CheckedAttempt("a", a.run_id or "", 1, 1),
                CheckedAttempt("b", b.run_id or "", 1, 1),
            ]
            await client.pub.publish(layout.removal("check-list"), encode_check_list(listed))
            assert await b.result(timeout=15) == "charged b"
            await a.signal("go", "went")
            assert await a.result(timeout=15) == "charged a went"
        assert server.stats["checks_again"] == 1
        assert server.stats["checks_timed_out"] == 1
        assert ran == ["charge a", "charge b"]  # b's attempt 1 never ran; attempt 2 did
        history = await b.fetch_history()
        retried = [e for e in history if isinstance(e, ev.ActivityRetryScheduled)]
        assert [(e.seq, e.attempt, e.failure.timeout_type) for e in retried] == [
            (1, 1, "start_to_close")
        ]
        assert [type(e) for e in history].count(ev.ActivityCompleted) == 1
