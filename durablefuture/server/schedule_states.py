"""The schedule states df-server wrote last, kept in memory to spare a read per step.

A cached record is only ever a guess: every write carries the sequence the record was read at
(``Nats-Expected-Last-Subject-Sequence``), so a record that another process (or a delete) has
moved on fails the write, the entry is dropped and the step runs again from a fresh read. A step
that would write nothing confirms its cached record with a read first (its effects and timer
must come from the latest record).

It also remembers which wake-up this process armed last for each schedule after writing which
record, so a step that is not the timer's own firing (a closed-run notice) and arrives at the
same wake-up leaves the armed timer alone instead of publishing it again; and which actions'
starts this process has under way or done, so a step that does not see their runs yet (a poll
while df-server is busy) does not start them again (a start that fails is forgotten, and the
input that asked for it comes back; another process derives it again from the record).
"""

from __future__ import annotations

from collections import OrderedDict

from durablefuture.core.schedules import ScheduleState

__all__ = ["StateCache"]

MAX_CACHED = 10_000
MAX_STARTED = 100_000
MAX_ACTIONS = 20_000


class StateCache:
    def __init__(self, size: int = MAX_CACHED) -> None:
        self.size = size
        self._states: OrderedDict[str, tuple[ScheduleState, int]] = OrderedDict()
        self._armed: dict[str, tuple[int, float]] = {}
        self._started: OrderedDict[str, None] = OrderedDict()
        self._actions: OrderedDict[str, None] = OrderedDict()

    def begin_start(self, request_id: str, workflow_id: str) -> bool:
        """False if this process has the start with ``request_id`` under way or done."""
        if request_id in self._started:
            return False
        self._started[request_id] = None
        self._actions[workflow_id] = None
        while len(self._started) > MAX_STARTED:
            self._started.popitem(last=False)
        while len(self._actions) > MAX_ACTIONS:
            self._actions.popitem(last=False)
        return True

    def is_action(self, workflow_id: str) -> bool:
        """``workflow_id`` is one of the latest actions this process started."""
        return workflow_id in self._actions

    def start_failed(self, request_id: str) -> None:
        self._started.pop(request_id, None)

    def get(self, schedule_id: str) -> tuple[ScheduleState, int] | None:
        entry = self._states.get(schedule_id)
        if entry is not None:
            self._states.move_to_end(schedule_id)
        return entry

    def put(self, schedule_id: str, state: ScheduleState, seq: int) -> None:
        self._states[schedule_id] = (state, seq)
        self._states.move_to_end(schedule_id)
        while len(self._states) > self.size:
            old, _ = self._states.popitem(last=False)
            self._armed.pop(old, None)

    def drop(self, schedule_id: str) -> None:
        self._states.pop(schedule_id, None)
        self._armed.pop(schedule_id, None)

    def armed(self, schedule_id: str, seq: int, wake_at: float) -> bool:
        """This process armed ``wake_at`` after the record at ``seq`` (the one a step began
        from), and nothing was written since."""
        return self._armed.get(schedule_id) == (seq, wake_at)

    def mark_armed(self, schedule_id: str, seq: int, wake_at: float) -> None:
        if schedule_id in self._states:
            self._armed[schedule_id] = (seq, wake_at)
