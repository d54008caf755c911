"""With OpenTelemetry installed, one workflow is one trace, from the client to its activities."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from durablefuture.testing import LocalEnvironment
from workflows_examples.order import charge_credit_card, order_workflow, ship_package

pytestmark = pytest.mark.asyncio

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider() -> None:
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(tp)


async def test_client_workflow_and_activity_spans_share_one_trace() -> None:
    EXPORTER.clear()
    async with LocalEnvironment() as env:
        async with env.worker(
            workflows=[order_workflow], activities=[charge_credit_card, ship_package]
        ):
            await env.client.execute_workflow(order_workflow, "t-1", 3.0, id="traced", timeout=20)
    spans = EXPORTER.get_finished_spans()
    by_name: dict[str, list[object]] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    assert len(by_name["StartWorkflow:order_workflow"]) == 1
    assert len(by_name["RunWorkflow:order_workflow"]) >= 1
    assert len(by_name["RunActivity:charge_credit_card"]) == 1
    assert len(by_name["RunActivity:ship_package"]) == 1
    root = by_name["StartWorkflow:order_workflow"][0]
    trace_id = root.context.trace_id  # type: ignore[attr-defined]
    for name in ("RunWorkflow:order_workflow", "RunActivity:charge_credit_card"):
        for s in by_name[name]:
            assert s.context.trace_id == trace_id, name  # type: ignore[attr-defined]
    activity = by_name["RunActivity:ship_package"][0]
    assert activity.attributes["workflow_id"] == "traced"  # type: ignore[attr-defined]
