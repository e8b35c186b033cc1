"""The worker's summary line reads its own metrics: the quantile of what a histogram counted
between two reads."""

from __future__ import annotations

import math

from streams.stages.status import quantile_bound


def test_the_quantile_is_read_from_the_buckets_counted_in_between():
    before = {0.001: 10.0, 0.01: 10.0, 0.1: 10.0, math.inf: 10.0}  # 10 fast clicks long ago
    after = {0.001: 10.0, 0.01: 108.0, 0.1: 110.0, math.inf: 110.0}  # then 98 under 10 ms, 2 under 100 ms
    assert quantile_bound(before, after, 0.5) == 0.01
    assert quantile_bound(before, after, 0.99) == 0.1
    assert quantile_bound({}, after, 0.05) == 0.001  # since the start: the old fast ones count


def test_nothing_counted_has_no_quantile():
    same = {0.01: 5.0, math.inf: 5.0}
    assert quantile_bound(same, same, 0.99) is None
    assert quantile_bound({}, {}, 0.99) is None
