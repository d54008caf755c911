"""df-server's start admission (``server/admission.py``): how many new starts are handled at
once, in which order, and for how long one may wait. Pure asyncio, no NATS."""

from __future__ import annotations

import asyncio

from durablefuture.server.admission import StartGate


class _Starts:
    """Starts that enter the gate and stay inside until released; counts who is inside."""

    def __init__(self, gate: StartGate) -> None:
        self.gate = gate
        self.inside = 0
        self.most = 0
        self.entered = 0
        self.release = asyncio.Event()
        self.changed = asyncio.Event()

    async def one(self) -> None:
        async with self.gate.start():
            self.inside += 1
            self.entered += 1
            self.most = max(self.most, self.inside)
            self.changed.set()
            await self.release.wait()
            self.inside -= 1

    async def until(self, entered: int) -> None:
        for _ in range(1000):  # bounded: each round waits for someone to enter
            if self.entered >= entered:
                return
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 5)
        raise AssertionError(f"only {self.entered} of {entered} starts entered")


async def _settle() -> None:
    for _ in range(20):  # let every runnable task run until it blocks
        await asyncio.sleep(0)


def test_at_most_limit_starts_at_once_and_all_get_through() -> None:
    async def go() -> None:
        starts = _Starts(StartGate(3))
        tasks = [asyncio.create_task(starts.one()) for _ in range(10)]
        await starts.until(3)
        await _settle()
        assert starts.inside == 3 and starts.gate.waited == 7
        starts.release.set()
        await asyncio.gather(*tasks)
        assert starts.entered == 10 and starts.most == 3

    asyncio.run(go())


def test_no_limit() -> None:
    async def go() -> None:
        starts = _Starts(StartGate(0))
        tasks = [asyncio.create_task(starts.one()) for _ in range(50)]
        await starts.until(50)
        assert starts.inside == 50 and starts.gate.waited == 0
        starts.release.set()
        await asyncio.gather(*tasks)

    asyncio.run(go())


def test_a_start_that_waits_keeps_its_input_alive() -> None:
    async def go() -> None:
        gate = StartGate(1, keepalive=0.01)
        starts = _Starts(gate)
        holder = asyncio.create_task(starts.one())
        await starts.until(1)
        beats = 0
        beat = asyncio.Event()

        async def keep_alive() -> None:
            nonlocal beats
            beats += 1
            beat.set()

        async def waiting() -> None:
            async with gate.start(keep_alive):
                pass

        waiter = asyncio.create_task(waiting())
        await asyncio.wait_for(beat.wait(), 5)
        assert beats >= 1 and not waiter.done()
        starts.release.set()
        await asyncio.wait_for(asyncio.gather(holder, waiter), 5)

    asyncio.run(go())


def test_a_start_cancelled_while_waiting_leaves_no_place_taken() -> None:
    async def go() -> None:
        gate = StartGate(1)
        starts = _Starts(gate)
        holder = asyncio.create_task(starts.one())
        await starts.until(1)
        waiter = asyncio.create_task(starts.one())
        await _settle()
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        starts.release.set()
        await holder
        starts.release.clear()
        later = asyncio.create_task(starts.one())
        await starts.until(2)  # the cancelled start did not keep the one place
        starts.release.set()
        await later

    asyncio.run(go())


def test_waiting_starts_are_let_in_first_come_first_served() -> None:
    async def go() -> None:
        gate = StartGate(2)
        order: list[int] = []
        release = asyncio.Event()

        async def one(i: int) -> None:
            async with gate.start():
                order.append(i)
                await release.wait()

        tasks = []
        for i in range(30):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(0)  # each reaches the gate before the next is made
        await _settle()
        assert order == [0, 1]
        release.set()
        await asyncio.gather(*tasks)
        assert order == list(range(30))

    asyncio.run(go())


def test_a_start_goes_ahead_after_waiting_max_wait() -> None:
    async def go() -> None:
        gate = StartGate(1, max_wait=0.05)
        starts = _Starts(gate)
        tasks = [asyncio.create_task(starts.one()) for _ in range(3)]
        await starts.until(3)  # the two that waited went ahead over the limit
        assert starts.inside == 3 and gate.overdue == 2
        starts.release.set()
        await asyncio.gather(*tasks)
        starts.release.clear()
        later = asyncio.create_task(starts.one())
        await starts.until(4)
        assert starts.inside == 1 and gate.waited == 2  # all places were given back
        starts.release.set()
        await later

    asyncio.run(go())


def test_a_start_may_wait_less_than_the_gate_says() -> None:
    """A start asked as a request waits in line with the others, for a shorter while (its
    client waits for the answer), then goes ahead over the limit."""

    async def main() -> None:
        gate = StartGate(1, keepalive=0.01, max_wait=60)
        starts = _Starts(gate)
        one = asyncio.create_task(starts.one())
        await starts.until(1)
        async with gate.start(max_wait=0.05):
            assert starts.inside == 1 and gate.overdue == 1  # went ahead over the limit
        starts.release.set()
        await one

    asyncio.run(main())


def test_a_start_that_created_a_run_keeps_its_place_until_the_run_is_going() -> None:
    """A run's start waits on after it is answered, until its first workflow task is
    reported: at most ``limit`` starts are handled at once, and no more start goes in while
    twice ``limit`` new runs (with those starts) wait for their first report."""

    async def go() -> None:
        gate = StartGate(1, hold=60)
        gate.min_hold = 60  # only a report gives the place back here
        gate.going("earlier", "q")  # queue q has workers
        order: list[str] = []

        async def one(run_id: str) -> None:
            async with gate.start():
                order.append(run_id)
                gate.created(run_id, "q")

        await one("run-1")
        await one("run-2")  # answered: out of the gate, both runs wait for their report
        assert gate.held == 2 and gate.waited == 0
        third = asyncio.create_task(one("run-3"))
        await _settle()
        assert order == ["run-1", "run-2"] and not third.done() and gate.waited == 1
        gate.going("run-3", "q")  # a run not held here, or unknown: nothing is given back
        gate.going("unknown", "q")
        await _settle()
        assert not third.done()
        gate.going("run-1", "q")  # run-1's first workflow task was reported
        await asyncio.wait_for(third, 5)
        assert order == ["run-1", "run-2", "run-3"] and gate.held == 2
        gate.going("run-1", "q")  # a second report of the same run gives nothing more back
        gate.going("run-2", "q")
        gate.going("run-3", "q")
        assert gate.held == 0
        await one("run-4")
        await one("run-5")
        assert gate.waited == 1  # every place was given back once

    asyncio.run(go())


def test_a_held_place_is_given_back_after_the_hold() -> None:
    """A run whose first task nobody reports here (no worker for its queue, or its report
    went to another df-server) is waited for ``hold`` seconds at most."""

    async def go() -> None:
        gate = StartGate(1, hold=0.05)
        gate.going("earlier", "q")
        for run_id in ("run-1", "run-2"):
            async with gate.start():
                gate.created(run_id, "q")
        assert gate.held == 2
        async with asyncio.timeout(5):  # let in once the hold is over
            async with gate.start():
                assert gate.held < 2 and gate.overdue == 0 and gate.waited == 1
        gate.going("run-1", "q")  # its report, late: nothing more is given back
        gate.going("run-2", "q")
        assert gate.held == 0

    asyncio.run(go())


def test_a_start_that_created_no_run_gives_its_place_back_at_once() -> None:
    """A start that found its run (the same request id) or was refused created nothing to wait
    for; without a limit nothing is held either."""

    async def go() -> None:
        gate = StartGate(1, hold=60)
        async with gate.start():
            pass
        async with gate.start():
            assert gate.waited == 0
        free = StartGate(0, hold=60)
        async with free.start():
            free.created("run-1", "q")
        assert free.held == 0
        gate.created("outside", "q")  # outside a start: nothing happens
        assert gate.held == 0

    asyncio.run(go())


def test_a_place_is_held_a_few_times_as_long_as_first_reports_take() -> None:
    """Reports that come at once shorten the hold (a run whose report goes to another
    df-server idles its place only that long); runs never reported do not lengthen it."""

    async def go() -> None:
        gate = StartGate(1, hold=60)
        first = gate.hold_now
        gate.going("earlier", "q")
        assert gate.min_hold <= first < 60
        for i in range(40):
            async with gate.start():
                gate.created(f"run-{i}", "q")
            gate.going(f"run-{i}", "q")
        quick = gate.hold_now
        assert quick < first and quick >= gate.min_hold
        for run_id in ("never-1", "never-2"):
            async with gate.start():
                gate.created(run_id, "q")
        async with asyncio.timeout(5):
            async with gate.start():  # let in after the short hold
                assert gate.waited == 1
        assert gate.hold_now == quick

    asyncio.run(go())


def test_only_the_runs_of_a_queue_with_workers_are_held() -> None:
    """A queue whose reports this gate has not seen lately has no worker to pace its starts
    by: its runs give their places back at once, and the starts of every queue go on at the
    pace of the starts. Once its reports come, its runs are held until theirs."""

    async def go() -> None:
        gate = StartGate(1, hold=60)
        gate.min_hold = 60
        for i in range(5):  # more than twice the limit: none waits
            async with gate.start():
                gate.created(f"idle-{i}", "nobody")
        assert gate.held == 0 and gate.waited == 0
        gate.going("idle-0", "nobody")  # its first worker reports
        async with gate.start():
            gate.created("busy-1", "nobody")
        assert gate.held == 1
        gate.live_for = 0  # no report since: its workers count as gone
        async with gate.start():
            gate.created("idle-5", "nobody")
        assert gate.held == 1 and gate.waited == 0
        gate.going("busy-1", "nobody")
        assert gate.held == 0

    asyncio.run(go())


def test_the_queues_remembered_stay_few() -> None:
    """A flood of reports from distinct task queues keeps a bounded record of them."""

    async def go() -> None:
        gate = StartGate(1)
        for i in range(5000):
            gate.going(f"run-{i}", f"queue-{i}")
        assert len(gate._live) <= 1024 and "queue-4999" in gate._live

    asyncio.run(go())


def test_a_run_reported_before_its_start_is_done_holds_no_place() -> None:
    """A run's first workflow task may be reported while its start is still being answered
    and acknowledged: its place is then not held on after the start."""

    async def go() -> None:
        gate = StartGate(1, hold=60)
        gate.min_hold = 60
        gate.going("earlier", "q")
        async with gate.start():
            gate.created("run-1", "q")
            gate.going("run-1", "q")  # reported before the start is done
        assert gate.held == 0
        async with gate.start():
            gate.created("run-2", "q")
        assert gate.held == 1  # reported after: held until then
        gate.going("run-2", "q")
        assert gate.held == 0 and not gate._inside

    asyncio.run(go())


def test_reports_later_than_the_hold_lengthen_it() -> None:
    """First reports that come after the place was given back (they take more than a few
    times as long as before: the disk got busy) still count: the hold grows towards them,
    bounded by ``hold``."""

    async def go() -> None:
        gate = StartGate(1, hold=60)
        gate.going("earlier", "q")
        gate.min_hold = 0.01
        gate._usual = 0.01
        before = gate.hold_now
        async with gate.start():
            gate.created("run-1", "q")

        async def given_back() -> None:
            while gate.held:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(given_back(), 5)
        await asyncio.sleep(before)  # its report comes a while after it was given back
        gate.going("run-1", "q")
        assert gate.hold_now > before
        gate.going("run-1", "q")  # counted once
        for i in range(70):  # runs never reported do not grow it: few are kept
            async with gate.start():
                gate.created(f"never-{i}", "q")
            await asyncio.wait_for(given_back(), 5)
        assert len(gate._late) <= 64

    asyncio.run(go())
