"""Counters and histograms keep each label set's series at hand: counts stay per label set."""

from __future__ import annotations

import pytest

from durablefuture import metrics


def test_each_label_set_counts_apart_and_a_wrong_label_count_is_refused_every_time() -> None:
    registry = metrics.Registry()
    counter = registry.counter("t_series_total", "test", ["namespace", "kind"])
    histogram = registry.histogram("t_series_seconds", "test", ["namespace"])
    was = metrics._State.recording
    metrics.record(True)
    try:
        for _ in range(3):
            counter.inc("a", "x")
        counter.inc("a", "y", amount=2)
        histogram.observe(0.001, "a")
        histogram.observe(0.002, "b")
        for _ in range(2):  # refused again once the good label sets are cached
            with pytest.raises(ValueError, match="takes labels"):
                counter.inc("a")
    finally:
        metrics.record(was)
    text = registry.render()
    assert 't_series_total{kind="x",namespace="a"} 3.0' in text
    assert 't_series_total{kind="y",namespace="a"} 2.0' in text
    assert 't_series_seconds_count{namespace="a"} 1.0' in text
    assert 't_series_seconds_count{namespace="b"} 1.0' in text
