"""The task messages that effects dispatch to workers."""

from __future__ import annotations

from durablefuture.core.effects import (
    ActivityTask,
    WorkflowTask,
)
from durablefuture.core.state import ActivityState, RunState


def _workflow_task(state: RunState, trigger: int, attempt: int = 1) -> WorkflowTask:
    s = state.started
    return WorkflowTask(
        namespace=s.namespace,
        workflow_id=s.workflow_id,
        run_id=s.run_id,
        workflow_type=s.workflow_type,
        task_queue=s.task_queue,
        trigger=trigger,
        attempt=attempt,
    )


def activity_task(state: RunState, act: ActivityState) -> ActivityTask:
    s = state.started
    opts = act.options
    return ActivityTask(
        namespace=s.namespace,
        workflow_id=s.workflow_id,
        run_id=s.run_id,
        workflow_type=s.workflow_type,
        seq=act.seq,
        attempt=act.attempt,
        name=act.name,
        task_queue=opts.task_queue or s.task_queue,
        options=opts,
        scheduled_at=act.scheduled_at,
        attempt_scheduled_at=act.attempt_scheduled_at,
        args=act.args,
        heartbeat_details=act.heartbeat_details,
        headers=s.headers,
    )
