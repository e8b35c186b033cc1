"""Which offsets the worker's consumer commits: never past a click a stage still holds.

faust's own rule (commit the first run of consecutive acknowledged offsets) is kept; these
tests pin what :class:`streams.transport.Consumer` adds to it. The consumer is built without
a broker: only the bookkeeping faust keeps per partition is set up.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

from faust.types import TP
from intervaltree import IntervalTree

from streams.transport import Consumer

CLICKS = TP("clicks", 0)


def _consumer(acked: list[int], *, committed: int | None, unanswered: dict[TP, int]) -> Consumer:
    consumer = object.__new__(Consumer)  # no broker, no thread: only the commit bookkeeping
    consumer._acked = defaultdict(list, {CLICKS: sorted(acked)})
    consumer._acked_index = defaultdict(set, {CLICKS: set(acked)})
    consumer._gap = defaultdict(IntervalTree)
    consumer._committed_offset = defaultdict(lambda: None, {CLICKS: committed})
    consumer._handed_back = {}
    consumer.app = SimpleNamespace(recstream_unanswered=lambda: unanswered)
    return consumer


def test_nothing_held_commits_as_faust_does() -> None:
    consumer = _consumer([10, 11, 12, 14], committed=10, unanswered={})
    assert consumer._filter_committable_offsets([CLICKS]) == {CLICKS: 13}
    assert consumer._acked[CLICKS] == [14], "the acknowledgements after the gap wait for the next commit"


def test_a_held_click_one_past_the_commit_is_not_committed() -> None:
    """faust lets a run start one past the committed offset: offset 10, held for its item,
    would be committed with 11..15 and lost to a crash."""
    consumer = _consumer([11, 12, 13, 14, 15], committed=10, unanswered={CLICKS: 10})
    assert consumer._filter_committable_offsets([CLICKS]) == {}
    assert consumer._acked[CLICKS] == [11, 12, 13, 14, 15], "nothing acknowledged is forgotten"
    consumer.app.recstream_unanswered = lambda: {}
    consumer._acked[CLICKS].insert(0, 10)  # the held click is answered
    consumer._acked_index[CLICKS].add(10)
    assert consumer._filter_committable_offsets([CLICKS]) == {CLICKS: 16}


def test_before_the_first_commit_a_held_click_holds_the_commit_back() -> None:
    """With nothing committed faust commits any run; a click held at offset 0 stops it."""
    consumer = _consumer([1, 2, 3], committed=None, unanswered={CLICKS: 0})
    assert consumer._filter_committable_offsets([CLICKS]) == {}
    assert _consumer([1, 2, 3], committed=None, unanswered={})._filter_committable_offsets([CLICKS]) == {CLICKS: 4}


def test_the_commit_stops_below_a_batch_still_in_flight() -> None:
    """Batch 20..22 acknowledged before batch 23..24 is: the commit stops at 23."""
    consumer = _consumer([18, 19, 20, 21, 22, 25, 26], committed=18, unanswered={CLICKS: 23})
    assert consumer._filter_committable_offsets([CLICKS]) == {CLICKS: 23}
    assert consumer._acked[CLICKS] == [25, 26]


def test_clicks_handed_back_at_a_revoke_are_not_committed() -> None:
    consumer = _consumer([31, 32], committed=30, unanswered={})
    consumer._handed_back = {CLICKS: 30}
    assert consumer._filter_committable_offsets([CLICKS]) == {}
