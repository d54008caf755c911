"""Search attributes and memos through the real daemons: set at start, upserted from workflow
code (recorded in history, checked on replay), visible in describe() and the status entry."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.testing import LocalEnvironment, Replayer
from tests.conftest import wait_for

WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def tagging_flow(region: str):  # type: ignore[no-untyped-def]
    current = df.workflow.upsert_search_attributes({"Region": region, "Stage": "charged"})
    assert current["Customer"].value == "c-7"  # the start's attributes are still there
    yield df.wait_signal("go")
    df.workflow.upsert_search_attributes({"Stage": None, "Tags": ["a", "b"], "Due": WHEN})
    return region


def tagging_flow_changed(region: str):  # type: ignore[no-untyped-def]
    df.workflow.upsert_search_attributes({"Region": region.upper(), "Stage": "charged"})
    yield df.wait_signal("go")
    df.workflow.upsert_search_attributes({"Stage": None, "Tags": ["a", "b"], "Due": WHEN})
    return region


async def test_start_attributes_upserts_and_memo_are_recorded_and_described() -> None:
    opts = df.WorkflowOptions(
        task_queue="sa",
        search_attributes={"Customer": "c-7", "Priority": 3, "Note": df.Text("rush order")},
        memo={"owner": "ops", "when": WHEN},
    )
    async with LocalEnvironment() as env, env.worker("sa", workflows=[tagging_flow]):
        handle = await env.client.start_workflow(tagging_flow, "eu", id="sa-1", options=opts)

        async def upserted() -> bool:
            d = await handle.describe()
            return d.search_attributes.get("Region") == "eu"

        await wait_for(upserted, timeout=20)
        d = await handle.describe()
        assert d.search_attributes == {
            "Customer": "c-7",
            "Priority": 3,
            "Note": "rush order",
            "Region": "eu",
            "Stage": "charged",
        }
        assert d.memo == {"owner": "ops", "when": WHEN.isoformat()}
        # the status entry (what listing reads) has them too while the run is open
        [listed] = await env.client.list_workflows(workflow_type="tagging_flow")
        assert listed.search_attributes["Stage"] == "charged"

        await handle.signal("go")
        assert await handle.result(timeout=20) == "eu"
        d = await handle.describe()
        assert "Stage" not in d.search_attributes
        assert d.search_attributes["Tags"] == ("a", "b")
        assert d.search_attributes["Due"] == WHEN
        [listed] = await env.client.list_workflows(workflow_type="tagging_flow")
        assert listed.search_attributes == d.search_attributes
        assert listed.memo == d.memo

        history = await handle.fetch_history()
        ups = [e for e in history if isinstance(e, ev.SearchAttributesUpserted)]
        assert [sorted(e.search_attributes) for e in ups] == [
            ["Region", "Stage"],
            ["Due", "Stage", "Tags"],
        ]
        assert ups[1].search_attributes["Due"].type == "datetime"
        started = history[0]
        assert isinstance(started, ev.WorkflowStarted)
        assert started.search_attributes["Note"] == df.SearchAttribute("text", "rush order")

        # replay: the same upserts pass, changed values are non-determinism
        Replayer(workflows=[tagging_flow]).replay(history)
        with pytest.raises(df.NonDeterminismError, match="upsert_search_attributes"):
            Replayer(workflows=[df.defn(name="tagging_flow")(tagging_flow_changed)]).replay(history)


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"WorkflowId": "x"}, "built-in field"),
        ({"bad name": 1}, "not valid"),
        ({"X": object()}, "has no search attribute type"),
        ({"X": "y" * 3000}, "more than 2048"),
        ({"X": float("nan")}, "not finite"),
        ({f"A{i}": i for i in range(65)}, "more than 64"),
        ({"X": [1, 2]}, "expected a string"),
    ],
)
def test_bad_search_attributes_are_refused_at_the_call(
    attrs: dict[str, object], message: str
) -> None:
    with pytest.raises(df.InvalidArgumentError, match=message):
        df.WorkflowOptions(search_attributes=attrs)
