"""``df.testing.certify``: prove a workflow survives a crash at any point, with hypothesis.

The workflow runs in the in-memory :class:`~durablefuture.testing.Simulation` (the real core:
replayer and server state machine) many times. In each run hypothesis chooses the schedule:
which pending step happens next (so concurrent completions arrive in any order), when the
worker loses its cached generator (a crash: the next task replays from history), which reports
are delivered twice (a redelivery), which activity attempts fail (within their retry policy)
and when each signal arrives. Every run must end like the first, undisturbed one: the same
result (or the same failure), no non-determinism, every activity result used once, never stuck.

A failing schedule is shrunk by hypothesis to a minimal one and reported as a readable list of
steps and the history it produced, with the ``file:line`` of the code that issued each command.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from attrs import frozen

from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.commands import Command
from durablefuture.core.errors import DurableFutureError
from durablefuture.core.failure import Failure
from durablefuture.core.options import WorkflowOptions
from durablefuture.testing.sim import Simulation

__all__ = ["Certificate", "CertificationError", "certify"]

WORKFLOW_ID = "certify"
MAX_STEPS = 20_000


class CertificationError(DurableFutureError, AssertionError):
    """A schedule of crashes, redeliveries and orderings changed how the workflow ends."""


@frozen
class Certificate:
    """What :func:`certify` checked."""

    workflow: str
    examples: int
    outcome: str
    """How every run ended, e.g. ``completed: {'tracking': 'T-1'}``."""
    seconds: float


def _ending(sim: Simulation) -> str:
    try:
        return f"completed: {sim.result(WORKFLOW_ID)!r}"
    except Exception as exc:
        return f"failed: {type(exc).__name__}: {exc}"


def _sites(sim: Simulation) -> dict[int, str]:
    """``seq`` -> ``file:line`` of the command that scheduled it, by replaying the history."""
    run = sim.run_of(WORKFLOW_ID)
    execution = sim._new_execution(run.state.started.workflow_type)
    sites: dict[int, str] = {}
    events = run.events
    for i in range(1, len(events) + 1):
        try:
            activation = execution.feed(events[i - 1 : i])
        except DurableFutureError:
            break
        for command in activation.commands:
            _note_site(command, sites)
    return sites


def _note_site(command: Command, sites: dict[int, str]) -> None:
    seq = getattr(command, "seq", None)
    site = getattr(command, "site", None)
    if isinstance(seq, int) and site is not None:
        sites.setdefault(seq, f"{site[0]}:{site[1]}")


def _describe_history(sim: Simulation) -> str:
    sites = _sites(sim)
    lines = []
    for e in sim.run_of(WORKFLOW_ID).events:
        name = type(e).__name__
        seq = getattr(e, "seq", None)
        detail = ""
        if isinstance(e, ev.ActivityScheduled):
            detail = f" {e.name}"
        attempt = getattr(e, "attempt", None)
        if attempt is not None:
            detail += f" attempt {attempt}"
        where = f"  ({sites[seq]})" if isinstance(seq, int) and seq in sites else ""
        number = f" #{seq}" if seq is not None else ""
        lines.append(f"  {e.event_id:>3} {name}{number}{detail}{where}")
    return "\n".join(lines)


class _Chaos:
    """One run under a hypothesis-chosen schedule; ``steps`` says what happened, in order."""

    def __init__(
        self,
        data: Any,
        st: Any,
        make: Callable[[], Simulation],
        signals: Sequence[tuple[str, tuple[object, ...]]],
        max_attempts: Callable[[str], int],
    ) -> None:
        self.data = data
        self.st = st
        self.sim = make()
        self.signals = list(signals)
        self.max_attempts = max_attempts
        self.steps: list[str] = []
        self.results_applied: dict[tuple[int, int], int] = {}

    def draw_bool(self, label: str, p_true: float = 0.2) -> bool:
        # uniform over the list, and hypothesis shrinks towards its first item: "no chaos"
        falses = max(1, round(1 / p_true) - 1)
        return bool(self.data.draw(self.st.sampled_from([False] * falses + [True]), label=label))

    def deliver(self, report: inp.RunInput, label: str) -> None:
        outcome = self.sim.deliver(report)
        if isinstance(report, inp.CompleteActivityTask) and outcome == "applied":
            key = (report.seq, report.attempt)
            self.results_applied[key] = self.results_applied.get(key, 0) + 1
        if self.draw_bool(f"redeliver {label}"):
            self.steps.append(f"redeliver {label}")
            self.sim.deliver(report)

    def failed_task(self) -> bool:
        batches = self.sim.run_of(WORKFLOW_ID).batches
        return bool(batches) and any(isinstance(e, ev.WorkflowTaskFailed) for e in batches[-1][1])

    def step(self) -> bool:
        sim = self.sim
        if self.failed_task():
            return False  # found: no need to watch the retries of a task that cannot succeed
        if self.signals and self.draw_bool("signal now", 0.3):
            name, args = self.signals.pop(0)
            self.steps.append(f"signal {name}")
            sim.signal(WORKFLOW_ID, name, *args)
            return True
        options = sim.pending()
        if not options:
            if self.signals:  # nothing else can happen before the remaining signals
                name, args = self.signals.pop(0)
                self.steps.append(f"signal {name}")
                sim.signal(WORKFLOW_ID, name, *args)
                return True
            return False
        if self.draw_bool("worker crash", 0.15):
            self.steps.append("worker crash (cached generators lost)")
            sim.forget_caches()
        pick = options[self.data.draw(self.st.integers(0, len(options) - 1), label="next step")]
        kind, _, idx = pick.partition(":")
        if kind == "wft":
            wft = sim.workflow_tasks[int(idx)]
            self.steps.append(f"workflow task (trigger {wft.trigger})")
            sim.run_workflow_task(int(idx))
        elif kind == "act":
            task = sim.activity_tasks.pop(int(idx))
            label = f"activity {task.name} #{task.seq} attempt {task.attempt}"
            limit = self.max_attempts(task.name)
            if (limit == 0 or task.attempt < limit) and self.draw_bool(f"fail {label}", 0.15):
                self.steps.append(f"{label}: injected failure (retried per policy)")
                failure = Failure("injected by certify", type="CertifyInjectedFailure")
                report = inp.FailActivityTask(task.run_id, task.seq, task.attempt, failure)
                self.deliver(report, label)
            else:
                self.steps.append(label)
                self.deliver(sim.execute_activity(task), label)
        else:
            self.steps.append("timer fires")
            sim.fire_next_timer()
        return True


def certify(
    workflow: Callable[..., object],
    *args: object,
    activities: Sequence[Callable[..., object]] = (),
    workflows: Sequence[Callable[..., object]] = (),
    signals: Sequence[tuple[str, Sequence[object]]] = (),
    options: WorkflowOptions | None = None,
    examples: int = 100,
    seed: int | None = None,
) -> Certificate:
    """Check that ``workflow(*args)`` ends the same way under any crash and delivery schedule.

    Args:
        activities: the activity functions it calls (run inline, for real).
        workflows: child workflows it starts.
        signals: ``(name, args)`` to send, each at a point hypothesis chooses.
        examples: how many schedules to try (hypothesis ``max_examples``).
        seed: make the exploration reproducible.

    Returns:
        A :class:`Certificate` with the outcome every schedule produced.

    Raises:
        CertificationError: with the minimal failing schedule and the history it produced.
    """
    try:
        from hypothesis import HealthCheck, Phase, given, settings
        from hypothesis import seed as hseed
        from hypothesis import strategies as st
    except ImportError:  # pragma: no cover - the [testing] extra
        raise DurableFutureError(
            "df.testing.certify needs hypothesis: pip install 'durablefuture[testing]'"
        ) from None
    from durablefuture.core.definitions import name_of

    wf_name = name_of(workflow, "workflow")
    signal_list = [(name, tuple(a)) for name, a in signals]

    def make() -> Simulation:
        sim = Simulation([workflow, *workflows], activities)
        sim.start(workflow, *args, id=WORKFLOW_ID, options=options)
        return sim

    # the undisturbed run: FIFO, signals once nothing else is pending
    reference = make()
    for name, sargs in signal_list:
        reference.run()
        reference.signal(WORKFLOW_ID, name, *sargs)
    reference.run()
    if not reference.is_closed(WORKFLOW_ID):
        raise CertificationError(
            f"workflow {wf_name!r} does not finish even without crashes (status "
            f"{reference.status(WORKFLOW_ID)}):\n{_describe_history(reference)}"
        )
    expected = _ending(reference)

    attempts: dict[str, int] = {}
    for e in reference.run_of(WORKFLOW_ID).events:
        if isinstance(e, ev.ActivityScheduled):
            policy = e.options.retry_policy
            if e.options.schedule_to_close_timeout is not None:
                attempts[e.name] = 1  # retries are bounded by time: inject nothing
            else:
                attempts[e.name] = policy.maximum_attempts if policy is not None else 0

    def max_attempts(name: str) -> int:
        return attempts.get(name, 1)  # unknown: never inject a failure

    failures: list[str] = []

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        report_multiple_bugs=False,
    )
    @given(st.data())
    def check(data: Any) -> None:
        chaos = _Chaos(data, st, make, signal_list, max_attempts)
        for _ in range(MAX_STEPS):
            if not chaos.step():
                break
        problems = _problems(chaos, expected)
        if problems:
            report = (
                f"{'; '.join(problems)}\nschedule:\n"
                + "\n".join(f"  {i + 1:>3}. {s}" for i, s in enumerate(chaos.steps))
                + f"\nhistory:\n{_describe_history(chaos.sim)}"
            )
            failures.append(report)
            raise CertificationError(report)

    if seed is not None:
        check = hseed(seed)(check)
    began = time.perf_counter()
    try:
        check()
    except CertificationError:
        detail = failures[-1] if failures else "(no detail)"
        raise CertificationError(
            f"workflow {wf_name!r} does not always end as it does undisturbed ({expected}).\n"
            f"Minimal failing run: {detail}"
        ) from None
    return Certificate(wf_name, examples, expected, time.perf_counter() - began)


def _problems(chaos: _Chaos, expected: str) -> list[str]:
    sim = chaos.sim
    problems = []
    run = sim.run_of(WORKFLOW_ID)
    if chaos.failed_task():
        pass  # reported below; its retries would fail the same way
    elif not sim.is_closed(WORKFLOW_ID):
        problems.append(f"the run is stuck ({sim.status(WORKFLOW_ID)}, nothing pending)")
    else:
        got = _ending(sim)
        if got != expected:
            problems.append(f"it ended {got} instead of {expected}")
    for e in run.events:
        if isinstance(e, ev.WorkflowTaskFailed):
            problems.append(f"a workflow task failed: {e.failure.type}: {e.failure.message}")
            break
    twice = [k for k, n in chaos.results_applied.items() if n > 1]
    if twice:
        problems.append(f"activity results recorded more than once: {twice}")
    completed: dict[int, int] = {}
    for e in run.events:
        if isinstance(e, ev.ActivityCompleted):
            completed[e.seq] = completed.get(e.seq, 0) + 1
    if any(n > 1 for n in completed.values()):
        problems.append(f"an activity completed more than once in history: {completed}")
    return problems
