"""A client's start may not set what only df-server decides.

With a run id of its choice a client could make another workflow's open run share its run-keyed
records (durable timers, activity records, payload references): closing its own run then purged
the victim's timers, and removing it deleted the victim's payload objects. Such a start, and one
naming a parent or a run it continues, is refused on the client's start subject and dead-lettered
with the reason; the victim's run goes on untouched.
"""

from __future__ import annotations

import pytest
from attrs import evolve

import durablefuture as df
from durablefuture.codec.wire import InputEnvelope, default_codec
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.events import ParentRef
from durablefuture.testing import LocalEnvironment
from tests.conftest import wait_for

pytestmark = pytest.mark.asyncio


def wait_then_echo(tag: str):  # type: ignore[no-untyped-def]
    extra = yield df.wait_signal("go")
    yield df.sleep(0.2)
    return f"{tag} {extra}"


async def test_a_start_with_server_only_fields_is_refused_and_the_victim_is_untouched() -> None:
    async with LocalEnvironment() as env, env.worker(workflows=[wait_then_echo]):
        victim = await env.client.start_workflow(wait_then_echo, "victim", id="victim")
        history = await victim.fetch_history()
        run_id = history[0].run_id  # type: ignore[union-attr]
        layout = env.client.layout
        js = env.client.pub.js
        codec = default_codec()
        base = inp.StartWorkflowRequest("evil", "wait_then_echo", "default", "forged-0")
        forged = {
            "run_id": evolve(base, request_id="forged-1", run_id=run_id),
            "continued_from": evolve(base, request_id="forged-2", continued_from=run_id),
            "first_run_id": evolve(base, request_id="forged-3", first_run_id=run_id),
            "parent": evolve(
                base, request_id="forged-4", parent=ParentRef("default", "victim", run_id, 1)
            ),
        }
        for request in forged.values():
            await js.publish(
                layout.input("start"), codec.encode_input(InputEnvelope("evil", start=request))
            )

        async def dead_lettered() -> list[str]:
            sub = await js.subscribe(layout.dead_letter("server-input"), ordered_consumer=True)
            found = []
            try:
                while True:
                    msg = await sub.next_msg(timeout=0.5)
                    found.append((msg.headers or {}).get("Df-Reason", ""))
            except Exception:
                pass
            finally:
                await sub.unsubscribe()
            return found if len(found) >= len(forged) else []

        letters = await wait_for(dead_lettered, timeout=20)
        text = "\n".join(letters)
        for field in forged:
            assert f"may not set {field}" in text, (field, text[:2000])
        with pytest.raises(df.WorkflowNotFoundError):
            await env.client.get_workflow_handle("evil").describe()
        # the victim's run goes on: its signal, its timer, its result
        await victim.signal("go", "fine")
        assert await victim.result(timeout=20) == "victim fine"
        after = await victim.fetch_history()
        assert sum(isinstance(e, ev.WorkflowStarted) for e in after) == 1
