"""A new run's first history batch, appended right behind its guarded effects.

Both ways of creating a run store its first effects before its first batch, each guarded by
the same expected last sequence over the workflow's history subjects as the append: a new
run's first workflow task and timers (``starts.py``), an eager start's activity tasks and
timers (``eager_starts.py``). Whatever stops the append (the id taken meanwhile, anything
else) leaves those effects to be waited out, their outcome no longer mattering, and the run's
local timers cancelled: nothing of the run goes on in this process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Sequence

from durablefuture.core import events as ev
from durablefuture.server.effects import Guard
from durablefuture.server.inputs import RunInputs
from durablefuture.transport.publisher import (
    EXPECTED_LAST_SUBJECT_SEQ,
    EXPECTED_LAST_SUBJECT_SEQ_SUBJECT,
    SequenceInFlight,
    WrongLastSequence,
    settled,
)

__all__ = ["FirstAppends"]


class FirstAppends(RunInputs):
    """Appends a new run's first batch behind its guarded effects (``Starts``, ``EagerStarts``)."""

    def _first_guard(self, workflow_id: str, latest_seq: int) -> Guard:
        """What a new run's first effects and its append expect: the workflow's history
        still ends at ``latest_seq`` (0: it has none)."""
        return {
            EXPECTED_LAST_SUBJECT_SEQ: str(latest_seq),
            EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: self.layout.history_of_workflow(workflow_id),
        }

    async def _append_first(
        self,
        workflow_id: str,
        run_id: str,
        events: Sequence[ev.Event],
        latest_seq: int,
        batch: bytes,
        pending: list[Awaitable[object]],
        *,
        in_flight_again: bool = False,
    ) -> int | None:
        """Append a new run's first batch (``batch``: ``events`` as encoded for it) behind
        its guarded effects ``pending``: its stream sequence, or None if the workflow's
        history moved past ``latest_seq`` (nothing of the run is stored). With
        ``in_flight_again``, an append refused while ``pending`` is still being replicated
        waits for them (``pending`` is emptied: waited for) and is sent again. Whatever stops
        the append, ``pending`` is waited out and the run's local timers are cancelled."""
        try:
            try:
                return await self._append_start(workflow_id, run_id, events, latest_seq, batch)
            except SequenceInFlight:
                if not in_flight_again:
                    raise
                if not await self._guard_held(pending, run_id):
                    return None
                pending.clear()
                return await self._append_start(workflow_id, run_id, events, latest_seq, batch)
        except WrongLastSequence:
            await self._abandon(run_id, pending)
            return None
        except BaseException:
            await self._abandon(run_id, pending)
            raise

    async def _append_start(
        self,
        workflow_id: str,
        run_id: str,
        events: Sequence[ev.Event],
        latest_seq: int,
        batch: bytes,
    ) -> int:
        """Append a new run's start batch (``batch``: its events as encoded for it)."""
        seq, _ = await self.history.append_sized(
            workflow_id,
            run_id,
            "start",
            events,
            latest_seq,
            whole_workflow=True,
            refs_marked=True,
            data=batch,
        )
        return seq

    async def _guard_held(self, pending: Sequence[Awaitable[object]], run_id: str) -> bool:
        """Wait for a new run's guarded messages: False if their guard failed (the id is
        taken: nothing of the run was stored); raises what else failed."""
        results = await settled(pending)
        if any(isinstance(r, WrongLastSequence) for r in results):
            self._cancel_local_timers(run_id)
            return False
        for r in results:
            if isinstance(r, BaseException):
                self._cancel_local_timers(run_id)
                raise r
        return True

    async def _abandon(self, run_id: str, pending: Sequence[Awaitable[object]]) -> None:
        """A new run is not created here: wait for its guarded messages (their outcome no
        longer matters, but none is left unretrieved) and cancel its local timers."""
        with contextlib.suppress(Exception):
            await settled(pending)
        self._cancel_local_timers(run_id)
