"""DurableFuture: durable execution for Python on NATS JetStream.

Workflows are plain generator functions that ``yield df.activity(...)``; every outcome is
recorded in a per-run history on JetStream, and a crashed run is rebuilt by replaying that
history through the generator. See README.md for the authoring guide.

Public names are loaded lazily, so ``import durablefuture.core`` pulls in nothing but the pure
core (no asyncio, nats or orjson).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from durablefuture.core import errors as _errors  # pure: no I/O, no third-party import

if TYPE_CHECKING:
    from durablefuture import codecs, testing, workflow
    from durablefuture.activity_context import ActivityInfo, activity_info, heartbeat
    from durablefuture.api import (
        activity,
        all_of,
        any_of,
        cancel,
        cancel_workflow,
        child_workflow,
        continue_as_new,
        local_activity,
        side_effect,
        signal_workflow,
        sleep,
        start,
        wait_condition,
        wait_signal,
    )
    from durablefuture.client import Client, WorkflowDescription, WorkflowHandle, WorkflowPage
    from durablefuture.codec.envelope import Payload, PayloadCodec
    from durablefuture.core.commands import Handle
    from durablefuture.core.definitions import defn
    from durablefuture.core.effects import RunStatus
    from durablefuture.core.errors import *  # noqa: F403 (every name in errors.__all__)
    from durablefuture.core.failure import Failure
    from durablefuture.core.liveness import WorkerRecord
    from durablefuture.core.options import (
        ActivityCancellationType,
        ActivityOptions,
        Backoff,
        IdReusePolicy,
        ParentClosePolicy,
        RetryPolicy,
        WorkflowOptions,
    )
    from durablefuture.core.search_attributes import SearchAttribute, Text
    from durablefuture.schedules import (
        Interval,
        Overlap,
        Schedule,
        ScheduleAction,
        ScheduleDescription,
        ScheduleHandle,
        SchedulePolicy,
        ScheduleSpec,
        ScheduleStartWorkflow,
    )
    from durablefuture.transport.tls import TlsConfig
    from durablefuture.worker import Worker, WorkerOptions

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    # commands
    "activity": "durablefuture.api",
    "all_of": "durablefuture.api",
    "any_of": "durablefuture.api",
    "child_workflow": "durablefuture.api",
    "continue_as_new": "durablefuture.api",
    "side_effect": "durablefuture.api",
    "sleep": "durablefuture.api",
    "wait_condition": "durablefuture.api",
    "wait_signal": "durablefuture.api",
    "defn": "durablefuture.core.definitions",
    # options
    "ActivityOptions": "durablefuture.core.options",
    "Backoff": "durablefuture.core.options",
    "IdReusePolicy": "durablefuture.core.options",
    "ParentClosePolicy": "durablefuture.core.options",
    "ActivityCancellationType": "durablefuture.core.options",
    "Handle": "durablefuture.core.commands",
    "start": "durablefuture.api",
    "cancel": "durablefuture.api",
    "cancel_workflow": "durablefuture.api",
    "local_activity": "durablefuture.api",
    "signal_workflow": "durablefuture.api",
    "RetryPolicy": "durablefuture.core.options",
    "WorkflowOptions": "durablefuture.core.options",
    "Failure": "durablefuture.core.failure",
    "SearchAttribute": "durablefuture.core.search_attributes",
    "Text": "durablefuture.core.search_attributes",
    # activities
    "ActivityInfo": "durablefuture.activity_context",
    "activity_info": "durablefuture.activity_context",
    "heartbeat": "durablefuture.activity_context",
    # runtime
    "Client": "durablefuture.client",
    "WorkflowHandle": "durablefuture.client",
    "WorkflowDescription": "durablefuture.client",
    "WorkflowPage": "durablefuture.client",
    "TlsConfig": "durablefuture.transport.tls",
    "Payload": "durablefuture.codec.envelope",
    "PayloadCodec": "durablefuture.codec.envelope",
    "Worker": "durablefuture.worker",
    "WorkerOptions": "durablefuture.worker",
    "WorkerRecord": "durablefuture.core.liveness",
    "RunStatus": "durablefuture.core.effects",
    # schedules
    "Interval": "durablefuture.schedules",
    "Overlap": "durablefuture.schedules",
    "Schedule": "durablefuture.schedules",
    "ScheduleAction": "durablefuture.schedules",
    "ScheduleDescription": "durablefuture.schedules",
    "ScheduleHandle": "durablefuture.schedules",
    "SchedulePolicy": "durablefuture.schedules",
    "ScheduleSpec": "durablefuture.schedules",
    "ScheduleStartWorkflow": "durablefuture.schedules",
}
_LAZY.update(dict.fromkeys(_errors.__all__, "durablefuture.core.errors"))
_SUBMODULES = ("workflow", "testing", "codecs")

__all__ = [
    "ActivityCancellationType",
    "ActivityInfo",
    "ActivityOptions",
    "Backoff",
    "Client",
    "Failure",
    "Handle",
    "IdReusePolicy",
    "Interval",
    "Overlap",
    "ParentClosePolicy",
    "Payload",
    "PayloadCodec",
    "RetryPolicy",
    "RunStatus",
    "Schedule",
    "ScheduleAction",
    "ScheduleDescription",
    "ScheduleHandle",
    "SchedulePolicy",
    "ScheduleSpec",
    "ScheduleStartWorkflow",
    "SearchAttribute",
    "Text",
    "TlsConfig",
    "Worker",
    "WorkerOptions",
    "WorkerRecord",
    "WorkflowDescription",
    "WorkflowHandle",
    "WorkflowOptions",
    "WorkflowPage",
    "__version__",
    "activity",
    "activity_info",
    "all_of",
    "any_of",
    "cancel",
    "cancel_workflow",
    "child_workflow",
    "codecs",
    "continue_as_new",
    "defn",
    "heartbeat",
    "local_activity",
    "side_effect",
    "signal_workflow",
    "sleep",
    "start",
    "testing",
    "wait_condition",
    "wait_signal",
    "workflow",
]
__all__ += _errors.__all__


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"durablefuture.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'durablefuture' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
