"""Random workflow shapes run in the Simulation under hypothesis-chosen interleavings.

(i)  Replaying any prefix of the recorded history raises nothing, re-issues exactly the
     recorded commands, and issues every recorded command that was decided within the prefix.
(ii) A run whose worker "crashes" (drops its cached generator) at arbitrary points, or never
     caches at all, records the same history and ends the same way as an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durablefuture.core import events as ev
from durablefuture.core.commands import (
    CancelWorkflow,
    CompleteWorkflow,
    ContinueAsNewWorkflow,
    FailWorkflow,
    PrimitiveCommand,
    RecordMarker,
    RecordSideEffect,
    RequestCancellation,
    ScheduleActivity,
    StartTimer,
)
from durablefuture.core.definitions import WorkflowDefinition
from durablefuture.core.replay import WorkflowExecution
from durablefuture.testing import Simulation
from tests.property.programs import (
    Program,
    command_events,
    make_environment,
    new_simulation,
    outcome,
    programs,
    run_choosing,
)

SETTINGS = settings(
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_TERMINAL_EVENT = {
    CompleteWorkflow: ev.WorkflowCompleted,
    FailWorkflow: ev.WorkflowFailed,
    CancelWorkflow: ev.WorkflowCancelled,
    ContinueAsNewWorkflow: ev.WorkflowContinuedAsNew,
}


def run_recorded(sim: Simulation, data: st.DataObject) -> list[int]:
    """Run to the end with hypothesis choosing every step; return the choices made."""
    return run_choosing(sim, None, data, max_steps=5_000)


def replay_choices(
    sim: Simulation, choices: list[int], before_step: Callable[[int], None] = lambda _: None
) -> None:
    """Run ``sim`` taking the same steps; fails if the pending work ever differs."""
    step = 0

    def pick(options: list[str]) -> int:
        nonlocal step
        assert step < len(choices), "the run needed more steps than the original"
        i = choices[step]
        assert i < len(options), f"step {step}: pending work differs from the original run"
        before_step(step)
        step += 1
        return i

    sim.run(choose=pick, max_steps=5_000)
    assert step == len(choices), "the run settled earlier than the original"


def matches(cmd: PrimitiveCommand, event: ev.Event) -> bool:
    if isinstance(cmd, ScheduleActivity):
        return isinstance(event, ev.ActivityScheduled) and (
            event.seq,
            event.name,
            event.args,
            event.options,
        ) == (cmd.seq, cmd.name, cmd.args, cmd.options)
    if isinstance(cmd, StartTimer):
        return isinstance(event, ev.TimerStarted) and event.duration == cmd.duration
    if isinstance(cmd, RecordSideEffect):
        # a side effect at the frontier runs again: its value is new by design
        return isinstance(event, ev.SideEffectRecorded)
    if isinstance(cmd, RecordMarker):
        return isinstance(event, ev.MarkerRecorded) and event.change_id == cmd.change_id
    if isinstance(cmd, RequestCancellation):  # an any_of cancelling its losers
        return isinstance(event, ev.CancellationRequested) and event.target == cmd.target
    return False  # the programs yield nothing else


@SETTINGS
@given(program=programs, data=st.data())
def test_replaying_any_prefix_reproduces_the_recorded_commands(
    program: Program, data: st.DataObject
) -> None:
    sim = new_simulation(program)
    run_recorded(sim, data)
    assert sim.is_closed("p")
    history = sim.run_of("p").events
    by_seq = {e.seq: e for e in history if isinstance(e, ev.COMMAND_EVENTS)}
    terminal = history[-1]
    assert isinstance(terminal, ev.TERMINAL_EVENTS)
    definition = WorkflowDefinition.from_fn(make_environment()[0])

    for k in range(1, len(history) + 1):
        act = WorkflowExecution(definition, sim.payloads).feed(history[:k])
        yielded = {}
        for cmd in act.commands:
            if isinstance(cmd, tuple(_TERMINAL_EVENT)):
                continue
            yielded[cmd.seq] = cmd
            if cmd.seq in by_seq:
                recorded = by_seq[cmd.seq]
                assert recorded.event_id > k
                assert matches(cmd, recorded), (k, cmd, recorded)
        for event in history[k:]:
            if isinstance(event, ev.COMMAND_EVENTS) and event.based_on <= k:
                assert event.seq in yielded, f"prefix {k}: #{event.seq} decided by then is missing"
        end = act.terminal
        if k < len(history) and isinstance(terminal, tuple(_TERMINAL_EVENT.values())):
            if terminal.based_on <= k:  # type: ignore[union-attr]
                assert end is not None, f"prefix {k}: the recorded end was decided by then"
            if end is not None:
                assert _TERMINAL_EVENT[type(end)] is type(terminal)
                fresh_side_effect = any(isinstance(c, RecordSideEffect) for c in act.commands)
                if isinstance(end, CompleteWorkflow) and not fresh_side_effect:
                    assert end.result == terminal.result  # type: ignore[union-attr]
    full = WorkflowExecution(definition, sim.payloads).feed(history)
    assert full.finished and full.commands == ()


@SETTINGS
@given(program=programs, data=st.data())
def test_crashing_the_worker_at_any_point_changes_nothing(
    program: Program, data: st.DataObject
) -> None:
    original = new_simulation(program)
    choices = run_recorded(original, data)
    history = original.run_of("p").events
    expected = outcome(original)

    no_cache = new_simulation(program, cache=False)
    replay_choices(no_cache, choices)
    assert no_cache.run_of("p").events == history
    assert outcome(no_cache) == expected

    crashes = data.draw(st.sets(st.integers(0, max(0, len(choices) - 1)), max_size=8))
    crashy = new_simulation(program)

    def crash(step: int) -> None:
        if step in crashes:
            crashy.forget_caches()

    replay_choices(crashy, choices, crash)
    assert command_events(crashy.run_of("p").events) == command_events(history)
    assert crashy.run_of("p").events == history
    assert outcome(crashy) == expected


@settings(deadline=None, max_examples=30)
@given(program=programs)
def test_side_effects_run_once_per_recorded_value(program: Program) -> None:
    sim = new_simulation(program, cache=False)  # every workflow task replays from scratch
    sim.run()
    recorded = [e for e in sim.run_of("p").events if isinstance(e, ev.SideEffectRecorded)]
    assert [e.value for e in recorded] == list(range(1, len(recorded) + 1))


def test_the_interpreter_covers_every_op() -> None:
    program: Program = [
        {"op": "act", "v": 1},
        {"op": "rand"},
        {"op": "side"},
        {"op": "try", "body": [{"op": "flaky", "fails": 3, "max": 2, "v": 5}]},
        {"op": "flaky", "fails": 1, "max": 2, "v": 6},
        {
            "op": "all",
            "items": [
                {"op": "sleep", "s": 1.0},
                {"op": "any", "items": [{"op": "act", "v": 2}, {"op": "sleep", "s": 5.0}]},
            ],
        },
    ]
    sim = new_simulation(program)
    sim.run()
    status, result = outcome(sim)
    assert status == "completed"
    assert isinstance(result, list)
    ops = [r[0] for r in result]
    assert ops == ["act", "rand", "side", "caught", "flaky", "all"]
    assert result[0][1] == ["0", 1]
    assert result[2] == ["side", 1]
    assert result[3] == ["caught", "3", "flaky", 2]
    assert result[4][1] == 6
    assert result[5][1] == [None, [0, ["5.1.0", 2]]]
    uncaught = new_simulation([{"op": "flaky", "fails": 2, "max": 2, "v": 0}])
    uncaught.run()
    assert outcome(uncaught)[0] == "failed"
