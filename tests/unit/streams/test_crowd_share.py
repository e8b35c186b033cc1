"""Crowd sharing as pure logic: two recommenders that exchange their clicks' lessons count
what one recommender counts from all the clicks."""

from __future__ import annotations

import numpy as np
import pytest

from streams.recommend import CrowdEvent
from streams.records import DecodeReason, RecordDecodeError
from streams.stages.crowd import EVENTS_PER_RECORD, decode_events, encode_events

from .test_recommender import NOW, _click, _recommender


def _clicks(n: int, seed: int = 3) -> list[tuple[str, str, float]]:
    rng = np.random.default_rng(seed)
    items = [f"{t}-{k}" for t in ("space", "cook") for k in range(5)]
    return [(f"u{int(rng.integers(8))}", items[int(rng.integers(len(items)))], NOW + i) for i in range(n)]


def test_two_workers_exchanging_lessons_count_what_one_counts() -> None:
    one, left, right = _recommender(), _recommender(), _recommender()
    states: dict[str, object] = {}
    halves: dict[str, object] = {}
    for user, item, ts in _clicks(300):
        states[user] = one.observe(states.get(user), _click(user, item, ts))
        mine, other = (left, right) if int(user[1:]) % 2 else (right, left)
        learned: list[CrowdEvent] = []
        halves[user] = mine.observe(halves.get(user), _click(user, item, ts), learned)
        for event in decode_events(encode_events(learned)[0]) if learned else []:  # through the wire format
            other.learn(event)
    def same(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> bool:
        return [i for i, _ in a] == [i for i, _ in b] and np.allclose([s for _, s in a], [s for _, s in b])

    later = NOW + 400
    for rec in (left, right):
        for item in one.catalog.ids():
            assert same(rec.covisit.neighbours(item, later, 5), one.covisit.neighbours(item, later, 5)), item
            assert same(rec.colike.neighbours(item, later, 5), one.colike.neighbours(item, later, 5)), item
        assert same(rec.trending.top(later, 5), one.trending.top(later, 5))


def test_a_replayed_click_teaches_nothing() -> None:
    rec = _recommender()
    learned: list[CrowdEvent] = []
    state = rec.observe(None, _click("u", "space-0", NOW), learned)
    rec.observe(state, _click("u", "space-0", NOW), learned)  # at-least-once: the same click again
    assert len(learned) == 1 and learned[0].previous is None, "a first click pairs with nothing"


def test_records_split_and_bad_ones_say_why() -> None:
    events = [CrowdEvent(f"i{n}", NOW + n, 1.0, [("a", NOW)]) for n in range(EVENTS_PER_RECORD + 5)]
    records = encode_events(events)
    assert len(records) == 2 and [e for r in records for e in decode_events(r)] == events
    with pytest.raises(RecordDecodeError) as err:
        decode_events(b"\xc1")
    assert err.value.reason == DecodeReason.NOT_MSGPACK
    with pytest.raises(RecordDecodeError) as err:
        decode_events(encode_events([events[0]])[0].replace(b"\xa2i0", b"\xcc\x07"))  # an int for the item id
    assert err.value.reason == DecodeReason.WRONG_TYPE
