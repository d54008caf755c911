"""Calls that refuse what they are given raise the project's errors, not bare built-ins."""

from __future__ import annotations

import pytest

from durablefuture.codec.schedules import ScheduleInput
from durablefuture.core.errors import InvalidArgumentError, WorkflowNotFoundError
from durablefuture.transport.history import fold


def test_folding_no_history_is_a_workflow_not_found_error() -> None:
    with pytest.raises(WorkflowNotFoundError, match="no history for workflow 'w' run r"):
        fold("w", "r", [])


def test_an_unknown_schedule_input_kind_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown schedule input kind 'explode'"):
        ScheduleInput("s", "explode")
