"""A test hook: a df-server whose effects fail, or that is killed, between an append and its
effects (``inputs.RunInputs._decide_and_record``)."""

from __future__ import annotations

import os
import signal

from durablefuture.core import inputs as inp
from durablefuture.core.errors import TransportError

__all__ = ["EFFECTS_HOOK", "effects_hook"]

EFFECTS_HOOK = "DF_TEST_EFFECTS_FAIL"
"""Test hook (environment, read when df-server starts): ``once`` makes the effects of the
first batch this df-server appends for a failed activity attempt fail before any is stored,
as a PubAck that never comes would; ``die`` kills df-server (SIGKILL) there instead;
``die:<input class>[:<field>]`` (``die:SignalWorkflow``, ``die:CompleteWorkflowTask:more``)
kills it there for the first input of that class recorded (with that field true)."""
_armed = [os.environ.get(EFFECTS_HOOK, "")]
_parts = _armed[0].split(":")
_HOOKED: type = getattr(inp, _parts[1] if len(_parts) > 1 else "FailActivityTask")


def effects_hook(message: inp.RunInput, run_id: str) -> None:
    """Before the effects of recorded ``message``: fail them, or die, if the hook says so."""
    if not _armed[0] or not isinstance(message, _HOOKED):
        return
    if not all(getattr(message, field) for field in _parts[2:]):
        return
    if _armed[0] != "once":
        os.kill(os.getpid(), signal.SIGKILL)
    _armed[0] = ""
    raise TransportError(f"the effects of run {run_id} failed ({EFFECTS_HOOK})")
