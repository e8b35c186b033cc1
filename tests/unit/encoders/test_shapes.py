"""Shape buckets: the runs a length-sorted batch is cut into, and the shapes a warm-up runs."""

from __future__ import annotations

import pytest

from encoders.shapes import DEFAULT_TOKEN_BUCKETS, Run, ShapeBuckets, plain_runs


def test_buckets_are_clipped_to_the_model_and_end_at_its_limits():
    b = ShapeBuckets.build(DEFAULT_TOKEN_BUCKETS, max_length=128, max_rows=32)
    assert b.tokens == (16, 24, 32, 48, 64, 96, 128) and b.rows == (1, 2, 4, 8, 16, 32)
    b = ShapeBuckets.build((300, 16, 16), max_length=256, max_rows=24)
    assert b.tokens == (16, 256) and b.rows == (1, 2, 4, 8, 16, 24)
    assert ShapeBuckets.build((), max_length=64, max_rows=1) == ShapeBuckets(tokens=(64,), rows=(1,))
    assert len(b.shapes()) == 12 and (24, 256) in b.shapes() and (1, 16) in b.shapes()
    with pytest.raises(ValueError):
        ShapeBuckets.build((0, 8), max_length=64, max_rows=8)
    with pytest.raises(ValueError):
        ShapeBuckets.build((8,), max_length=64, max_rows=0)


def test_a_run_is_padded_to_the_buckets_of_its_size_and_longest_text():
    b = ShapeBuckets.build((8, 16), max_length=64, max_rows=4)
    lengths = [3, 5, 7, 9, 9, 17, 40]  # sorted
    assert list(b.runs(lengths)) == [Run(0, 4, 4, 16), Run(4, 7, 4, 64)]
    assert list(b.runs([3])) == [Run(0, 1, 1, 8)]
    assert list(b.runs([])) == []
    for run in b.runs(lengths):
        assert (run.rows, run.tokens) in b.shapes()
        assert run.rows >= run.stop - run.start and run.tokens >= lengths[run.stop - 1]
    with pytest.raises(ValueError):
        b.tokens_for(65)


def test_plain_runs_are_as_long_as_their_longest_text():
    assert list(plain_runs([3, 5, 7, 9, 12], 2)) == [Run(0, 2, 2, 5), Run(2, 4, 2, 9), Run(4, 5, 1, 12)]
