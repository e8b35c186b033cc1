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


def test_a_batch_is_ranked_on_the_crowd_from_before_it_and_learned_after() -> None:
    """apply_clicks moves the users' states and leaves the crowd alone; learn_batch then counts
    the batch exactly as observing each click would have."""
    from streams.clickbatch import apply_clicks, learn_batch

    class _Event:
        def __init__(self, user: str, n: int) -> None:
            self.message = type("M", (), {"key": user.encode(), "partition": 0, "topic": "clicks", "offset": n})()

    served, observed = _recommender(), _recommender()
    clicks = _clicks(40)
    states: dict[bytes, object] = {}
    for user, item, ts in clicks:
        states[user.encode()] = observed.observe(states.get(user.encode()), _click(user, item, ts))
    before = served.crowd()
    learned: list[CrowdEvent] = []
    letters: list = []
    users = apply_clicks(served, [(_Event(u, n), _click(u, i, ts)) for n, (u, i, ts) in enumerate(clicks)],
                         lambda keys: dict.fromkeys(k for k, _ in keys), letters, learned)
    assert not letters and served.crowd() == before, "nothing counted while the batch is being served"
    assert {u.key: u.state for u in users} == states, "each user's state is as observing would leave it"
    learn_batch(served, learned)
    later = NOW + 100
    for item in observed.catalog.ids():
        assert served.covisit.neighbours(item, later, 5) == observed.covisit.neighbours(item, later, 5), item
        assert served.colike.neighbours(item, later, 5) == observed.colike.neighbours(item, later, 5), item
    assert served.trending.top(later, 5) == observed.trending.top(later, 5)


def test_apply_reports_the_lesson_of_a_click_once() -> None:
    rec = _recommender()
    state, lesson = rec.apply(None, _click("u", "space-0", NOW))
    assert lesson == CrowdEvent("space-0", NOW, 1.0, None) and len(rec.trending) == 0
    again, replayed = rec.apply(state, _click("u", "space-0", NOW))  # at-least-once: the same click again
    assert again is state and replayed is None
