"""Golden histories: the committed histories of every example still decode, re-encode to the
same JSON and replay on the current code to the recorded outcome.

A change that breaks them would break runs that are in flight in production: if it is meant,
handle the old format (or version the workflow) and record again with
`python -m tests.golden.record`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from durablefuture.codec.wire import default_codec
from durablefuture.core import commands as cmd
from durablefuture.core import events as ev
from durablefuture.testing import Replayer
from workflows_examples import EXAMPLES, WORKFLOWS

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
CODEC = default_codec()


def test_every_example_has_a_golden_history() -> None:
    assert {p.stem for p in GOLDEN.glob("*.json")} == set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_the_wire_format_is_unchanged(name: str) -> None:
    rows = json.loads((GOLDEN / f"{name}.json").read_text())
    events = [CODEC.decode_event(row) for row in rows]
    assert [CODEC.encode_event(e) for e in events] == rows


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_the_history_replays_to_its_recorded_outcome(name: str) -> None:
    rows = json.loads((GOLDEN / f"{name}.json").read_text())
    closed = CODEC.decode_event(rows[-1])
    assert isinstance(closed, ev.WorkflowCompleted)
    activation = Replayer(workflows=WORKFLOWS).replay(rows[:-1])
    (complete,) = [c for c in activation.commands if isinstance(c, cmd.CompleteWorkflow)]
    assert complete.result == closed.result
    # the whole history replays too, without a mismatch
    Replayer(workflows=WORKFLOWS).replay(rows)
