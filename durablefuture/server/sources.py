"""Which inputs each input subject may carry: an input is believed only from a subject that
the role allowed to send it can publish to (``df auth init`` grants those subjects).

=========================  ==========================  =======================================
subject                    written by                  may carry
=========================  ==========================  =======================================
``df.<ns>.in.start``       clients, df-server          start requests
``df.<ns>.in.run``         clients, df-server          signals, updates, cancels, terminations
``df.<ns>.in.report``      workers                     workflow-task and activity outcomes
``df.<ns>.in.server``      df-server only              anything (child-workflow notices, ...)
``df.<ns>.in.timer``       df-server's timers only     anything (timer firings)
=========================  ==========================  =======================================

So a client cannot forge a worker's report (it may not publish on ``in.report``, and a report
on ``in.run`` is refused here), and a worker cannot forge a signal, a start or a child's result.
"""

from __future__ import annotations

from durablefuture.codec.wire import InputEnvelope
from durablefuture.core import inputs as inp

__all__ = ["REPORT", "SERVER", "refusal"]

REPORT = "report"
SERVER = "server"

_REPORTS = (
    inp.CompleteWorkflowTask,
    inp.FailWorkflowTask,
    inp.ReportActivityStarted,
    inp.CompleteActivityTask,
    inp.FailActivityTask,
)
_CLIENT_RUN = (inp.SignalWorkflow, inp.AcceptUpdate, inp.RequestCancel, inp.TerminateWorkflow)


def refusal(kind: str, env: InputEnvelope) -> str | None:
    """Why an input that arrived on ``df.<ns>.in.<kind>`` must not be believed, or None."""
    what = type(env.input).__name__ if env.input is not None else "a start request"
    if kind in (SERVER, "timer"):
        return None
    if kind == "start":
        ok = env.start is not None and env.input is None
    elif kind == "run":
        ok = env.start is None and isinstance(env.input, _CLIENT_RUN)
    elif kind == REPORT:
        ok = env.start is None and isinstance(env.input, _REPORTS)
    else:
        return f"input subject kind {kind[:40]!r} is not one df-server reads"
    if ok:
        return None
    return (
        f"{what} is not accepted on the {kind!r} input subject (only the role allowed to "
        "publish there may send it): refused as forged or misrouted"
    )
