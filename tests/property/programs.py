"""Random workflow shapes: a JSON "program" and one generator workflow that interprets it.

A program is a list of steps::

    {"op": "act", "v": 3}                          one activity
    {"op": "flaky", "fails": 2, "max": 3, "v": 1}  an activity failing its first 2 attempts,
                                                   retried up to 3 attempts in all
    {"op": "sleep", "s": 2.0}                      a durable timer
    {"op": "all" | "any", "items": [...]}          groups of the three above, nested
    {"op": "side"}                                 a side effect returning a fresh counter value
    {"op": "rand"}                                 df.workflow.random(), fed into later arguments
    {"op": "try", "body": [...]}                   try/except ActivityError around steps

Side effects are deliberately non-deterministic (a counter that moves each time the function
runs), so a replay that re-ran one instead of reading history would change the result.

Below the interpreter: what every interleaving test shares. ``run_choosing`` and
``drive_with_inputs`` run a Simulation with hypothesis choosing each step (or take the steps an
earlier run chose again), ``check_without_cache`` runs a workflow with a caching worker and again
with one that never caches, and ``check_every_prefix`` replays every prefix of a history.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from hypothesis import strategies as st

import durablefuture as df
from durablefuture.core import events as ev
from durablefuture.core.commands import CompleteWorkflow, FailWorkflow
from durablefuture.core.definitions import WorkflowDefinition
from durablefuture.core.replay import Activation, WorkflowExecution
from durablefuture.core.vocabulary import matches
from durablefuture.testing import Simulation

Program = list[dict[str, Any]]


def _leaves(safe: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Leaf steps; ``safe`` flaky activities succeed within their attempts."""
    flaky = st.fixed_dictionaries(
        {
            "op": st.just("flaky"),
            "fails": st.integers(0, 3),
            "max": st.integers(1, 3),
            "v": st.integers(0, 9),
        }
    )
    if safe:
        flaky = flaky.map(lambda d: {**d, "max": max(d["max"], d["fails"] + 1)})
    return st.one_of(
        st.fixed_dictionaries({"op": st.just("act"), "v": st.integers(0, 9)}),
        flaky,
        st.fixed_dictionaries({"op": st.just("sleep"), "s": st.sampled_from([0.5, 1.0, 2.0, 5.0])}),
    )


def _steps(safe: bool) -> st.SearchStrategy[dict[str, Any]]:
    groups = st.recursive(
        _leaves(safe),
        lambda inner: st.fixed_dictionaries(
            {
                "op": st.sampled_from(["all", "any"]),
                "items": st.lists(inner, min_size=1, max_size=4),
            }
        ),
        max_leaves=6,
    )
    return st.one_of(groups, st.just({"op": "side"}), st.just({"op": "rand"}))


programs: st.SearchStrategy[Program] = st.lists(
    st.one_of(
        _steps(safe=True),
        st.fixed_dictionaries(
            {"op": st.just("try"), "body": st.lists(_steps(safe=False), min_size=1, max_size=3)}
        ),
        _leaves(safe=False),
    ),
    min_size=2,
    max_size=8,
)
"""Programs whose failing activities sit inside ``try`` (a few still fail the workflow:
an uncaught failure is also a shape worth replaying)."""


def _options(step: dict[str, Any]) -> df.ActivityOptions:
    return df.ActivityOptions(
        start_to_close_timeout=10,
        retry_policy=df.RetryPolicy(initial_interval=1, maximum_attempts=step["max"]),
    )


def make_environment() -> tuple[Callable[..., object], list[Callable[..., object]]]:
    """A fresh workflow and activities (their counters are per simulation)."""
    attempts: dict[str, int] = {}
    side_calls: list[int] = []

    @df.defn(name="echo")
    def echo(key: str, v: int, salt: float) -> list[Any]:
        return [key, v]

    @df.defn(name="flaky")
    def flaky(key: str, fails: int, v: int, salt: float) -> int:
        attempts[key] = attempts.get(key, 0) + 1
        if attempts[key] <= fails:
            raise df.ApplicationError(f"{key} attempt {attempts[key]}", type="Flaky")
        return v

    def next_side() -> int:
        side_calls.append(1)
        return len(side_calls)

    @df.defn(name="program")
    def program(steps: Program) -> Generator[Any, Any, Any]:
        acc: list[Any] = []
        state = {"salt": 0.0}

        def yieldable(step: dict[str, Any], key: str) -> Any:
            op = step["op"]
            if op == "act":
                return df.activity("echo", key, step["v"], state["salt"])
            if op == "flaky":
                return df.activity(
                    "flaky", key, step["fails"], step["v"], state["salt"], options=_options(step)
                )
            if op == "sleep":
                return df.sleep(step["s"])
            items = [yieldable(it, f"{key}.{j}") for j, it in enumerate(step["items"])]
            return df.all_of(*items) if op == "all" else df.any_of(*items)

        def run(steps: Program, path: str) -> Generator[Any, Any, None]:
            for i, step in enumerate(steps):
                key = f"{path}{i}"
                op = step["op"]
                if op == "try":
                    try:
                        yield from run(step["body"], f"{key}.")
                    except df.ActivityError as err:
                        acc.append(["caught", key, err.activity_name, err.attempt])
                elif op == "side":
                    acc.append(["side", (yield df.side_effect(next_side))])
                elif op == "rand":
                    state["salt"] = round(df.workflow.random(), 6)
                    acc.append(["rand", state["salt"]])
                else:
                    result = yield yieldable(step, key)
                    acc.append([op, result, df.workflow.now().timestamp()])

        yield from run(steps, "")
        return acc

    return program, [echo, flaky]


def new_simulation(program: Program, *, cache: bool = True) -> Simulation:
    wf, acts = make_environment()
    sim = Simulation([wf], acts, cache=cache, start_time=1000.0)
    sim.start("program", program, id="p")
    return sim


def outcome(sim: Simulation) -> tuple[str, Any]:
    """The run's status and result (or failure description)."""
    summary = sim.run_of("p").state.summary()
    if summary.failure is not None:
        return summary.status, summary.failure.describe()
    return summary.status, summary.result


def command_events(events: list[ev.Event]) -> list[ev.Event]:
    return [e for e in events if isinstance(e, ev.COMMAND_EVENTS + ev.TERMINAL_EVENTS)]


# ------------------------------------------------------------------ driving a Simulation

Driver = Callable[[Simulation, "list[int] | None", "st.DataObject | None"], list[int]]
"""Runs a simulation to its end and returns the choices it made: drawn from ``data``, or the
``choices`` an earlier run returned, taken again."""


def _chooser(
    choices: list[int] | None, data: st.DataObject | None, made: list[int]
) -> Callable[[int], int]:
    def choose(n: int) -> int:
        if choices is not None:
            i = choices[len(made)]
        else:
            assert data is not None
            i = data.draw(st.integers(0, n - 1))
        made.append(i)
        return i

    return choose


def _run_step(sim: Simulation, option: str) -> None:
    kind, _, idx = option.partition(":")
    if kind == "wft":
        sim.run_workflow_task(int(idx))
    elif kind == "act":
        sim.run_activity_task(int(idx))
    else:
        sim.fire_next_timer()


def run_choosing(
    sim: Simulation, choices: list[int] | None, data: st.DataObject | None, *, max_steps: int
) -> list[int]:
    """Run ``sim`` until nothing is pending, each step chosen among the pending work."""
    made: list[int] = []
    choose = _chooser(choices, data, made)
    sim.run(choose=lambda options: choose(len(options)), max_steps=max_steps)
    return made


def drive_with_inputs(
    sim: Simulation,
    workflow_id: str,
    send: Callable[[int, int], None],
    *,
    kinds: int,
    most: int,
    max_steps: int,
    choices: list[int] | None,
    data: st.DataObject | None,
) -> list[int]:
    """Run to the end; each step runs one piece of pending work or, while the run is open and
    fewer than ``most`` were sent, sends an input of one of ``kinds`` kinds: ``send(kind, n)``
    sends the ``n``-th (from 1)."""
    made: list[int] = []
    choose = _chooser(choices, data, made)
    sent = 0
    for _ in range(max_steps):
        options = sim.pending()
        inputs_left = sent < most and not sim.is_closed(workflow_id)
        if not options and not inputs_left:
            break
        i = choose(len(options) + (kinds if inputs_left else 0))
        if i >= len(options):
            sent += 1
            send(i - len(options), sent)
        else:
            _run_step(sim, options[i])
    return made


def check_without_cache(
    new_sim: Callable[[bool], Simulation], drive: Driver, data: st.DataObject, workflow_id: str
) -> tuple[Simulation, Simulation]:
    """Run with a caching worker (hypothesis choosing the steps), then take the same steps
    with a worker that never caches (every workflow task replays from scratch): both record
    the same history. Returns both simulations, the caching one first."""
    original = new_sim(True)
    choices = drive(original, None, data)
    again = new_sim(False)
    drive(again, choices, None)
    assert again.run_of(workflow_id).events == original.run_of(workflow_id).events
    return original, again


def check_every_prefix(
    sim: Simulation,
    workflow_id: str,
    workflow: Callable[..., object],
    settle: Callable[[WorkflowExecution, Activation], Activation] | None = None,
) -> None:
    """Replay every prefix of the run's history: it re-issues exactly the recorded commands
    and every command decided within the prefix; a completion it decides carries the recorded
    result; a closed run's whole history replays to its end with nothing new. ``settle`` does
    what a worker does after a feed (e.g. runs the local activities it asks for)."""
    history = sim.run_of(workflow_id).events
    by_seq = {e.seq: e for e in history if isinstance(e, ev.COMMAND_EVENTS)}
    last = history[-1]
    definition = WorkflowDefinition.from_fn(workflow)
    for k in range(1, len(history) + 1):
        execution = WorkflowExecution(definition, sim.payloads)
        act = execution.feed(history[:k])
        if settle is not None:
            act = settle(execution, act)
        yielded = set()
        for cmd in act.commands:
            if isinstance(cmd, CompleteWorkflow | FailWorkflow):
                if isinstance(last, ev.WorkflowCompleted) and isinstance(cmd, CompleteWorkflow):
                    assert cmd.result == last.result
                continue
            yielded.add(cmd.seq)
            recorded = by_seq.get(cmd.seq)
            if recorded is not None:
                assert recorded.event_id > k
                assert matches(recorded, cmd), (k, cmd, recorded)
        for event in history[k:]:
            if isinstance(event, ev.COMMAND_EVENTS) and event.based_on <= k:
                assert event.seq in yielded, f"prefix {k}: #{event.seq} decided by then"
    if sim.is_closed(workflow_id):
        full = WorkflowExecution(definition, sim.payloads).feed(history)
        assert full.finished and full.commands == ()
