"""Replay: drive a workflow generator over its recorded history.

The replay itself is :class:`WorkflowExecution` in ``_execution.py``; start reading there.

How it works
------------
A :class:`WorkflowExecution` owns one run's generator. ``feed(events)`` walks new history events
in order (the first call starts with ``WorkflowStarted``; later calls continue where the last one
stopped, which is how workers keep runs cached):

* Result events (an activity finished, a timer fired, a signal arrived, cancellation was
  requested, ...) are queued and delivered to the generator **in history order**: the value is
  sent in, a failure is thrown in at the ``yield`` as ``ActivityError`` / ``ChildWorkflowError``
  / ``TimeoutError`` / ``CancelledError``.
* Every primitive command the generator yields gets the next ``seq`` (1, 2, 3, ...). If history
  already holds the event for that ``seq`` it must match (kind, name, arguments), otherwise
  :class:`NonDeterminismError` names the event, both sides and the ``file:line`` of the yield.
  Commands history does not hold yet are *new*: they are returned to be recorded.
* A command event recorded with ``based_on = b`` means "the code had seen events up to ``b`` when
  it issued this". Before checking it, every queued result up to ``b`` is delivered; by then the
  generator must have yielded that ``seq``.
* A signal with a handler (``df.workflow.set_signal_handler``) and no ``wait_signal`` waiting
  for it calls the handler. After every delivered event the open ``df.wait_condition`` waits
  are checked, oldest first; a met one resumes the code (a replay delivers the same events at
  the same points, so it resumes the same waits).
* When the events run out, the remaining results are delivered (that is the "frontier": code
  runs for the first time there) and the new commands, plus the run's outcome if the generator
  finished, form the :class:`Activation` a workflow task sends back.
* A run that continues as new hands the next run every signal its code did not take: those it
  had buffered, and every signal delivered after the code finished, whether it was still queued
  then or fed later to a cached execution whose decision is not recorded yet. The activation is
  based on the last event fed and the server adds only signals recorded after that, so the
  outcome must not depend on how history was split into ``feed`` calls.

What it must never do: read the clock, randomness or any I/O (time comes from event timestamps,
randomness is seeded from the run id); re-issue a command history already has; deliver results
in an order other than history's. Because results are delivered strictly in history order and
the generator is deterministic, replaying any prefix of a history reproduces exactly the
commands that were recorded.
"""

from durablefuture.core.replay._context import (
    Activation,
    SourceFrame,
    WaitingFor,
    WorkflowContext,
    WorkflowInfo,
    current_context,
)
from durablefuture.core.replay._execution import WorkflowExecution
from durablefuture.core.vocabulary import describe_command, describe_event

__all__ = [
    "Activation",
    "SourceFrame",
    "WaitingFor",
    "WorkflowContext",
    "WorkflowExecution",
    "WorkflowInfo",
    "current_context",
    "describe_command",
    "describe_event",
]
