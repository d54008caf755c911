"""Which inputs each input subject may carry: an input is believed only from a subject that
the role allowed to send it can publish to (``df auth init`` grants those subjects).

=========================  ==========================  =======================================
subject                    written by                  may carry
=========================  ==========================  =======================================
``df.<ns>.in.start``       clients                     start requests of clients
``df.<ns>.in.run``         clients, df-server          signals, updates, cancels, terminations
``df.<ns>.in.report``      workers                     workflow-task and activity outcomes
``dfev.<ns>.report``       workers (core requests)     the same, asked instead of stored
``df.<ns>.in.server``      df-server only              anything (child starts and notices,
                                                       continue-as-new starts, ...)
``df.<ns>.in.timer``       df-server's timers only     anything (timer firings)
``df.<ns>.ck.<list>``      df-server only              check lists (``@at`` schedules)
``df.<ns>.rm.check-list``  df-server's schedules only  fired check lists: the activity
                                                       attempts to check (nothing else)
=========================  ==========================  =======================================

A fired check list names activity attempts granted to workers (eager activity dispatch,
``server/grants.py``); it is decoded by ``codec/checks.py`` (bounded, every name and number
checked; anything else is dead-lettered with the reason) and believed only as "look at this
attempt": df-server checks each one against the run's history and the attempt's lease, and at
most publishes the task a dispatch would have, which a lease makes safe. A worker's offer to
run attempts (``Df-Eager`` on ``dfev.<ns>.report``) is a number of 1 to 3 digits, capped
(``receipts.eager_offer``), and grants only the attempts the worker's own report schedules.

So a client cannot forge a worker's report (it may not publish on ``in.report``, and a report
on ``in.run`` is refused here), and a worker cannot forge a signal, a start or a child's result.
A client's start may not set what only df-server decides (the run id, the run it continues, its
parent, the signals handed on): with a run id of its choice a client could make another
workflow's run share its run-keyed records (timers, activity records, payload references).
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


def _server_only(start: inp.StartWorkflowRequest) -> str:
    """The first field of a start that only df-server may set, or ""."""
    fields = (
        ("run_id", start.run_id),
        ("continued_from", start.continued_from),
        ("first_run_id", start.first_run_id),
        ("parent", start.parent),
        ("signals", start.signals),
        ("chain_request_id", start.chain_request_id),
    )
    return next((name for name, value in fields if value), "")


def refusal(kind: str, env: InputEnvelope) -> str | None:
    """Why an input that arrived on ``df.<ns>.in.<kind>`` must not be believed, or None."""
    what = type(env.input).__name__ if env.input is not None else "a start request"
    if kind in (SERVER, "timer"):
        return None
    if kind == "start":
        ok = env.start is not None and env.input is None
        if ok and env.start is not None and (taken := _server_only(env.start)):
            return (
                f"a start request on the 'start' input subject may not set {taken} (df-server "
                "sets it): refused as forged"
            )
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
