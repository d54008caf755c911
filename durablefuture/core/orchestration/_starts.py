"""Starting runs: arbitrating a start request, and the first events of a new run."""

from __future__ import annotations

from attrs import frozen

from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.effects import RunStatus
from durablefuture.core.options import IdReusePolicy


@frozen
class LatestRun:
    """The most recent run under a workflow id, as far as arbitration needs to know."""

    run_id: str
    status: str
    request_id: str = ""
    chain_request_id: str = ""
    """The request id that started the run's chain (continue-as-new keeps it)."""

    @staticmethod
    def of(started: ev.WorkflowStarted, status: str) -> LatestRun:
        return LatestRun(started.run_id, status, started.request_id, started.chain_request_id)


@frozen
class StartDecision:
    """``start`` a new run, return an ``existing`` one, ``signal`` it, or ``reject``."""

    action: str
    run_id: str = ""
    message: str = ""


def decide_start(request: inp.StartWorkflowRequest, latest: LatestRun | None) -> StartDecision:
    if latest is None:
        return StartDecision("start")
    if request.request_id and request.request_id in (latest.request_id, latest.chain_request_id):
        # the same request again (a redelivery, a client's retry), also after the run it
        # started has continued as new: the chain's latest run answers it
        return StartDecision("existing", latest.run_id)
    if request.continued_from is not None:
        if latest.run_id == request.continued_from and latest.status == RunStatus.CONTINUED_AS_NEW:
            return StartDecision("start")
        return StartDecision(
            "reject",
            latest.run_id,
            f"run {request.continued_from} is not the latest closed run of "
            f"{request.workflow_id!r}; not continuing it",
        )
    if latest.status == RunStatus.RUNNING:
        if request.signal_name is not None:
            return StartDecision("signal", latest.run_id)
        return StartDecision(
            "reject",
            latest.run_id,
            f"workflow {request.workflow_id!r} is already running (run {latest.run_id}); "
            "wait for it with client.get_workflow_handle(id).result(), or start with another id",
        )
    policy = request.id_reuse_policy
    if policy is IdReusePolicy.REJECT_DUPLICATE:
        return StartDecision(
            "reject",
            latest.run_id,
            f"workflow id {request.workflow_id!r} was already used (run {latest.run_id}, "
            f"{latest.status}) and the id reuse policy is REJECT_DUPLICATE",
        )
    if (
        policy is IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY
        and latest.status not in RunStatus.FAILED_LIKE
    ):
        return StartDecision(
            "reject",
            latest.run_id,
            f"workflow id {request.workflow_id!r} last run {latest.run_id} {latest.status}; "
            "the id reuse policy ALLOW_DUPLICATE_FAILED_ONLY allows a new run only after a "
            "failure",
        )
    return StartDecision("start")


def start_events(
    request: inp.StartWorkflowRequest, *, namespace: str, run_id: str, now: float
) -> list[ev.Event]:
    """The first events of a new run: WorkflowStarted (and the signal of signal-with-start)."""
    deadline = request.execution_deadline
    if deadline is None and request.execution_timeout is not None:
        deadline = now + request.execution_timeout
    out: list[ev.Event] = [
        ev.WorkflowStarted(
            event_id=1,
            at=now,
            workflow_type=request.workflow_type,
            workflow_id=request.workflow_id,
            run_id=run_id,
            namespace=namespace,
            task_queue=request.task_queue,
            args=request.args,
            execution_timeout=request.execution_timeout,
            id_reuse_policy=request.id_reuse_policy,
            parent=request.parent,
            parent_close_policy=request.parent_close_policy,
            continued_from=request.continued_from,
            first_run_id=request.first_run_id or run_id,
            request_id=request.request_id,
            chain_request_id=request.chain_request_id,
            execution_deadline=deadline,
            headers=dict(request.headers),
            search_attributes=dict(request.search_attributes),
            memo=dict(request.memo),
            flags=ev.RUN_FLAGS,
        )
    ]
    for i, pending in enumerate(request.signals):
        out.append(
            ev.SignalReceived(
                event_id=len(out) + 1,
                at=now,
                name=pending.name,
                args=pending.args,
                request_id=f"{request.request_id}:carried:{i}",
            )
        )
    if request.signal_name is not None:
        out.append(
            ev.SignalReceived(
                event_id=len(out) + 1,
                at=now,
                name=request.signal_name,
                args=request.signal_args,
                request_id=f"{request.request_id}:signal",
            )
        )
    return out
