"""A timer fired from memory whose effects fail is finished by its durable copy.

df-server fires a due timer from memory (``ServerOptions.local_timers``) and keeps the
JetStream schedule as the durable copy. When the firing's events are appended and its effects
then fail (no PubAck while the stream leader changes), nothing stored is redelivered for it:
the durable copy, arriving as a duplicate, is what derives the effects again. The timers the
events leave with nothing to guard (here the activity's own schedule_to_close timer) are
purged only once the effects are done, or the copy would be gone with them; so are the timers
of a run closed by a timer fired from memory (its execution timeout).
"""

from __future__ import annotations

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.effects import DispatchWorkflowTask
from durablefuture.core.errors import TransportError
from durablefuture.core.interpretation import RunMessage
from durablefuture.server import effects as effects_mod
from durablefuture.testing import LocalEnvironment

pytestmark = pytest.mark.asyncio


async def never_taken(order_id: str) -> str:
    return order_id  # no worker of the test registers it: its task stays queued


def waits_forever(order_id: str):  # type: ignore[no-untyped-def]
    return (yield df.wait_signal("never"))


def parent_of_a_late_child(order_id: str):  # type: ignore[no-untyped-def]
    try:
        return (
            yield df.child_workflow(
                waits_forever, order_id, id=f"{order_id}-child", execution_timeout=1.0
            )
        )
    except df.ChildWorkflowError:
        return f"{order_id}: child timed out"


def guarded(order_id: str):  # type: ignore[no-untyped-def]
    opts = df.ActivityOptions(schedule_to_close_timeout=1.0)
    try:
        return (yield df.activity(never_taken, order_id, options=opts))
    except df.ActivityError:
        return f"{order_id} timed out"


async def test_a_timeout_fired_from_memory_whose_workflow_task_failed_is_finished(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The schedule_to_close timeout of an activity nobody takes fires from memory; its
    ActivityTimedOut is appended, and the workflow task that would let the code see it gets
    no PubAck (injected). The durable timer, not purged before the effects are done, fires
    as a duplicate and the workflow task is sent: the run ends with its ActivityError
    handled, once."""
    failed: list[int] = []
    real = effects_mod._Sender.dispatch_workflow_task

    async def fail_after_the_timeout(self: effects_mod._Sender, e: DispatchWorkflowTask) -> None:
        act = self.cache.state.activities.get(1)
        if not failed and act is not None and act.closed:
            failed.append(e.task.trigger)
            raise TransportError("no PubAck for the workflow task (injected)")
        await real(self, e)

    monkeypatch.setattr(effects_mod._Sender, "dispatch_workflow_task", fail_after_the_timeout)
    # the durable copy fires 2 s after the timer is due, as a loaded nats-server's scheduler
    # may (it ticks every 0.25 s; later under load), so the firing from memory comes first
    real_at = effects_mod._at
    monkeypatch.setattr(effects_mod, "_at", lambda ts: real_at(ts + 2.0))
    async with LocalEnvironment() as env:
        server = env.server
        assert server is not None
        async with env.worker(workflows=[guarded]):
            h = await env.client.start_workflow(guarded, "g-1", id="g-1")
            assert await h.result(timeout=20) == "g-1 timed out"
        assert len(failed) == 1
        assert server.stats["duplicates"] >= 1  # the durable copy of the timer
        history = [type(e) for e in await h.fetch_history()]
        assert history.count(ev.ActivityTimedOut) == 1
        assert history.count(ev.WorkflowCompleted) == 1


async def test_a_close_fired_from_memory_whose_parent_notice_failed_is_finished(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A child's execution timeout fires from memory and closes it; the notice to its parent
    gets no PubAck (injected). The close's purge of the child's timers waits for its effects,
    so the durable execution timer fires as a duplicate and the notice is sent: the parent
    handles the child's timeout and completes, once."""
    failed: list[str] = []
    real = effects_mod._Sender.send_to_run

    async def fail_the_notice(self: effects_mod._Sender, message: RunMessage) -> None:
        if not failed and isinstance(message[1], inp.RecordChildClosed):
            failed.append(message[0])
            raise TransportError("no PubAck for the parent's notice (injected)")
        await real(self, message)

    monkeypatch.setattr(effects_mod._Sender, "send_to_run", fail_the_notice)
    real_at = effects_mod._at  # the durable copies fire 2 s late (see above)
    monkeypatch.setattr(effects_mod, "_at", lambda ts: real_at(ts + 2.0))
    async with LocalEnvironment() as env:
        server = env.server
        assert server is not None
        async with env.worker(workflows=[parent_of_a_late_child, waits_forever]):
            h = await env.client.start_workflow(parent_of_a_late_child, "p-1", id="p-1")
            assert await h.result(timeout=20) == "p-1: child timed out"
        assert failed == ["p-1"]
        child = [type(e) for e in await env.client.get_workflow_handle("p-1-child").fetch_history()]
        assert child.count(ev.WorkflowTimedOut) == 1
        history = [type(e) for e in await h.fetch_history()]
        assert history.count(ev.ChildWorkflowFailed) == 1
        assert history.count(ev.WorkflowCompleted) == 1
