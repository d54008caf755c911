"""The command vocabulary covers every command, and every event that records one, once."""

from __future__ import annotations

from typing import get_args

from durablefuture.core import events as ev
from durablefuture.core.commands import Command, TerminalCommand
from durablefuture.core.vocabulary import DECIDED_TERMINAL_EVENTS, KINDS, TERMINAL_COMMANDS


def test_every_command_has_exactly_one_entry() -> None:
    assert sorted(k.command.__name__ for k in KINDS) == sorted(
        c.__name__ for c in get_args(Command)
    )


def test_every_event_that_records_a_command_belongs_to_exactly_one_entry() -> None:
    recorded = [k.event for k in KINDS]
    assert len(set(recorded)) == len(recorded)
    assert set(recorded) == {*ev.COMMAND_EVENTS, *DECIDED_TERMINAL_EVENTS}


def test_terminal_entries_are_the_terminal_commands() -> None:
    assert set(TERMINAL_COMMANDS) == set(get_args(TerminalCommand))
    assert set(DECIDED_TERMINAL_EVENTS) <= set(ev.TERMINAL_EVENTS)
    assert not any(k.terminal for k in KINDS if k.event in ev.COMMAND_EVENTS)
