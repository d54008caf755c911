"""Which acknowledged work messages the janitor may purge: subject overlap and ack floors."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st
from nats.js.api import ConsumerConfig, ConsumerInfo, SequenceInfo

from durablefuture.transport.compaction import (
    acknowledged,
    confirmed,
    floors,
    is_work_subject,
    overlaps,
)
from durablefuture.transport.subjects import Layout, sticky_token

TOKENS = ["a", "b", "*", ">"]
LITERALS = ["a", "b", "c"]


def _matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(s) == len(p)


patterns = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=4).filter(
    lambda ts: ">" not in ts[:-1]
)


@given(patterns, patterns)
def test_overlap_agrees_with_brute_force(a: list[str], b: list[str]) -> None:
    pa, pb = ".".join(a), ".".join(b)
    subjects = (".".join(ts) for n in range(1, 6) for ts in itertools.product(LITERALS, repeat=n))
    expected = any(_matches(pa, s) and _matches(pb, s) for s in subjects)
    assert overlaps(pa, pb) == expected
    assert overlaps(pb, pa) == expected


def test_only_work_subjects_are_ever_purged() -> None:
    lay = Layout("ns")
    for ok in ("df.ns.in.>", "df.ns.in.report", "df.ns.wt.q", "df.ns.at.q", "df.ns.sci.>"):
        assert is_work_subject(lay, ok), ok
    for never in ("df.ns.h.>", "df.ns.>", ">", "df.*.in.>", "df.ns.*.q", "df.ns.dlq.>",
                  "df.ns.tm.>", "df.ns.sch.x", "df.other.in.>", "df.ns.in"):  # fmt: skip
        assert not is_work_subject(lay, never), never


def _consumer(name: str, floor: int, *filters: str, delivered: int | None = None) -> ConsumerInfo:
    config = ConsumerConfig(durable_name=name)
    if len(filters) == 1:
        config.filter_subject = filters[0]
    elif filters:
        config.filter_subjects = list(filters)
    return ConsumerInfo(
        name=name,
        stream_name="DF_ns",
        config=config,
        created=datetime.now(UTC),
        ack_floor=SequenceInfo(floor, floor),
        delivered=SequenceInfo(floor, floor)
        if delivered is None
        else SequenceInfo(delivered, delivered),
    )


def test_the_floor_is_the_lowest_of_every_overlapping_consumer() -> None:
    lay = Layout("ns")
    consumers = [
        _consumer("server", 50, "df.ns.in.>"),
        _consumer("wt_q", 40, "df.ns.wt.q"),
        _consumer("at_q", 45, "df.ns.at.q"),
        _consumer("spy", 7, "df.ns.in.start"),  # someone else's, behind
        _consumer("hist", 3, "df.ns.h.>"),  # reads histories: never purged, holds back nothing
    ]
    assert floors(lay, consumers) == {
        "df.ns.in.>": 7,
        "df.ns.wt.q": 40,
        "df.ns.at.q": 45,
        "df.ns.in.start": 7,
    }
    # a consumer of the whole stream holds everything back; one that acked nothing stops it
    assert floors(lay, [*consumers, _consumer("all", 2)]) == {
        "df.ns.in.>": 2,
        "df.ns.wt.q": 2,
        "df.ns.at.q": 2,
        "df.ns.in.start": 2,
    }
    assert floors(lay, [*consumers, _consumer("new", 0, "df.ns.>")]) == {}


def test_sticky_subjects_are_purged_up_to_their_own_consumer_only() -> None:
    lay = Layout("ns")
    token = sticky_token("host:1:abc")
    sticky = lay.sticky_tasks("q", token)
    assert sticky == f"df.ns.wt.q.{token}" and is_work_subject(lay, sticky)
    assert lay.parse_sticky(sticky) == ("q", token)
    assert lay.parse_sticky(lay.workflow_tasks("q")) is None
    consumers = [
        _consumer("wt_q", 40, lay.workflow_tasks("q")),
        _consumer(lay.sticky_consumer("q", token), 12, sticky),
    ]
    # the queue's consumer and a worker's sticky consumer read disjoint subjects: neither
    # holds the other back, and each subject is purged only as far as its own reader acked
    assert floors(lay, consumers) == {"df.ns.wt.q": 40, sticky: 12}
    # a consumer over every task queue's subject (df.ns.wt.*) does not cover sticky subjects
    assert floors(lay, [*consumers, _consumer("spy", 3, "df.ns.wt.*")]) == {
        "df.ns.wt.q": 3,
        "df.ns.wt.*": 3,
        sticky: 12,
    }
    # a gone worker's subject without a consumer is never purged by the janitor (the
    # sticky fallback moves its tasks first)
    assert floors(lay, consumers[:1]) == {"df.ns.wt.q": 40}


def test_a_floor_counts_only_as_far_as_the_consumer_reports_delivered() -> None:
    """An acknowledgement floor above the delivered sequence is inconsistent (a consumer
    leader's report after a leader change): only what was delivered can have been acked."""
    lay = Layout("ns")
    ahead = _consumer("at_q", 50, "df.ns.at.q", delivered=40)
    assert acknowledged(ahead) == 40
    assert floors(lay, [ahead]) == {"df.ns.at.q": 40}
    # a report without a delivered sequence says nothing was
    bare = _consumer("wt_q", 30, "df.ns.wt.q")
    bare.delivered = None
    assert acknowledged(bare) == 0 and floors(lay, [bare]) == {}


def test_a_floor_is_purged_up_to_only_once_two_rounds_read_it() -> None:
    """A floor seen in one round only is not acted on; a floor read in two rounds is, up to
    the lower of the two; one that dropped (a consumer made again) stops the purge."""
    first = {"df.ns.at.q": 40, "df.ns.wt.q": 10}
    assert confirmed({}, first) == {}
    # the activity floor jumped ahead for a round, then fell back: never past 40
    assert confirmed(first, {"df.ns.at.q": 90, "df.ns.wt.q": 12}) == {
        "df.ns.at.q": 40,
        "df.ns.wt.q": 10,
    }
    assert confirmed({"df.ns.at.q": 90}, {"df.ns.at.q": 41}) == {"df.ns.at.q": 41}
    # a subject missing from either round (no consumer, nothing acked) is not purged
    assert confirmed({"df.ns.at.q": 40}, {"df.ns.wt.q": 5}) == {}
