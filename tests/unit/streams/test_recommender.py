"""Recommender over a numpy index: one user's clear interest beats a stranger's lone click."""

from __future__ import annotations

import numpy as np

from dataclasses import replace

from streams.index.memory import MemoryIndex
from streams.catalog import ItemCatalog, ItemInfo
from streams.recommend import STEPS, Recommender, RecommenderParams, Request
from streams.records import Click

DIM = 8
NOW = 1_700_000_000.0


def _topic_vectors(rng: np.random.Generator, axis: int, n: int) -> np.ndarray:
    v = np.zeros((n, DIM), dtype=np.float32)
    v[:, axis] = 1.0
    v += 0.15 * rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _recommender(params: RecommenderParams = RecommenderParams(), topics: tuple[str, ...] = ("space", "cook"),
                 per_topic: int = 5) -> Recommender:
    rng = np.random.default_rng(7)
    rec = Recommender(index=MemoryIndex(DIM), catalog=ItemCatalog(), params=params)
    for axis, topic in enumerate(topics):
        ids = [f"{topic}-{n}" for n in range(per_topic)]
        vecs = _topic_vectors(rng, axis, per_topic)
        rec.upsert_items(ids, vecs, [ItemInfo(vector=v) for v in vecs])
    return rec


def _click(user: str, item: str, ts: float) -> Click:
    return Click(user_id=user, item_id=item, ts_s=ts, event="click")


def test_a_users_own_interest_outranks_a_strangers_single_click():
    rec = _recommender()
    alice = bob = None
    for n, (user, item) in enumerate([("alice", "space-0"), ("bob", "cook-0"), ("alice", "space-1"),
                                      ("bob", "cook-1"), ("alice", "space-2")]):
        if user == "alice":
            alice = rec.observe(alice, _click(user, item, NOW + n))
        else:
            bob = rec.observe(bob, _click(user, item, NOW + n))
    top = rec.recommend(alice, NOW + 5)
    assert top[0].item_id.startswith("space-")
    assert top[0].because and set(top[0].because) <= {"space-0", "space-1", "space-2"}
    assert not {r.item_id for r in top} & {"space-0", "space-1", "space-2"}


def test_a_new_user_gets_what_the_crowd_clicks():
    rec = _recommender()
    for n in range(3):
        rec.observe(None, _click(f"u{n}", "cook-3", NOW + n))
    top = rec.recommend(None, NOW + 5)
    assert [r.item_id for r in top] == ["cook-3"] and top[0].source == "trending"


def test_people_who_liked_an_item_also_liked_explains_with_the_users_item():
    """Long-term co-occurrence (``colike``) offers what others liked with the user's item."""
    rec = _recommender()
    later = NOW + 3 * 86_400  # beyond the session co-visitation window
    for n in range(3):  # three users like space-0 and, days later, cook-4
        state = rec.observe(None, _click(f"fan{n}", "space-0", NOW + n))
        rec.observe(state, _click(f"fan{n}", "cook-4", later + n))
    carol = rec.observe(None, _click("carol", "space-0", later + 10))
    offered = rec.candidates(carol, later + 11)
    assert [item_id for item_id, _ in offered.by_source("colike")] == ["cook-4"]
    assert offered.reasons["cook-4"] == ["space-0"]
    assert offered.by_source("covisit") == []
    top = rec.recommend(carol, later + 11)
    assert "cook-4" in [r.item_id for r in top]


def _alice_offers(**params):
    """Alice's candidates over four topics (two interests: space, then cook), every item trending."""
    topics = ("space", "cook", "jazz", "art")
    rec = _recommender(replace(RecommenderParams(), candidates_per_source=100, **params), topics=topics, per_topic=6)
    for n, topic in enumerate(topics):  # strangers make every item trending: all are offered
        for m in range(6):
            rec.observe(None, _click(f"fan-{n}-{m}", f"{topic}-{m}", NOW + m))
    alice = None
    for n, item in enumerate(["space-0", "cook-0", "space-1", "space-2"]):
        alice = rec.observe(alice, _click("alice", item, NOW + 10 + n))
    return rec.candidates(alice, NOW + 20)


def test_cross_scoring_gives_an_item_the_score_its_generator_would():
    """An item the ANN did not return is scored by interest and session as their queries
    would score it (cosine x share): never by the session's similarity at the interests' name
    (which once let a stranger's click outrank a user's own topic on a small catalogue)."""
    every, few = _alice_offers(ann_candidates=100), _alice_offers(ann_candidates=1)  # all from the ANN, or nearly all cross-scored
    assert set(every.item_ids) == set(few.item_ids)
    for source in ("interest", "session"):  # cross-scoring keeps positive similarities only
        want = {i: score for i, score in every.by_source(source) if score > 0}
        got = {i: score for i, score in few.by_source(source) if score > 0}
        assert len(want) > 6 and want.keys() == got.keys()
        assert all(np.isclose(got[i], want[i], atol=1e-6) for i in want), source


def test_an_interest_that_does_not_search_scores_as_if_it_had():
    """Interests beyond ``interest_searches`` only score the offers of the other generators;
    their column holds what their own ANN hits would have (when the ANN would return every item)."""
    searched = _alice_offers(ann_candidates=100, interest_searches=2)
    scored = _alice_offers(ann_candidates=100, interest_searches=0)
    want = {i: score for i, score in searched.by_source("interest") if score > 0}
    got = {i: score for i, score in scored.by_source("interest") if score > 0}
    assert any(i.startswith("cook-") for i in want)  # the second interest's items are there
    assert want.keys() == got.keys()
    assert all(np.isclose(got[i], want[i], atol=1e-6) for i in want)


def test_a_restored_crowd_recommends_as_the_original():
    import msgspec

    from streams.recommend import CrowdState

    rec = _recommender()
    states: dict[str, object] = {}
    rng = np.random.default_rng(3)
    items = [f"{t}-{n}" for t in ("space", "cook") for n in range(5)]
    for n in range(60):
        user = f"u{rng.integers(8)}"
        states[user] = rec.observe(states.get(user), _click(user, items[rng.integers(len(items))], NOW + 60 * n))
    restored = _recommender()  # the same catalogue, a fresh crowd
    restored.restore_crowd(msgspec.msgpack.decode(msgspec.msgpack.encode(rec.crowd()), type=CrowdState))
    for user, state in states.items():
        assert restored.recommend(state, NOW + 3_600) == rec.recommend(state, NOW + 3_600), user
    assert restored.recommend(None, NOW + 3_600) == rec.recommend(None, NOW + 3_600)  # trending


def test_a_replayed_click_counts_once_in_the_crowd():
    rec = _recommender()
    state = None
    clicks = [_click("u", item, NOW + n) for n, item in enumerate(["cook-0", "cook-1", "cook-2"])]
    for click in clicks:
        state = rec.observe(state, click)
    before = rec.crowd()
    for click in clicks:  # at-least-once: the same clicks delivered again
        assert rec.observe(state, click) is state
    assert rec.crowd() == before


def test_forget_absent_items_cleans_a_restored_crowd():
    rec = _recommender()
    state = None
    for n, item in enumerate(["cook-0", "cook-1", "cook-2"]):
        state = rec.observe(state, _click("u", item, NOW + n))
    rec.catalog.remove("cook-1")  # as if deleted while the crowd snapshot was on disk
    assert rec.forget_absent_items() >= 2  # co-visitation and popularity both knew it
    assert "cook-1" not in [i for i, _ in rec.trending.top(NOW + 3, 10)]
    assert rec.forget_absent_items() == 0


def test_a_batch_ranks_every_user_as_one_request_would():
    """recommend_batch (one index call for every user's queries, each user's own seen items
    excluded) gives each user the list a request of their own gives."""
    rng = np.random.default_rng(11)
    rec = _recommender(topics=("space", "cook", "jazz", "news"), per_topic=12)
    items = rec.catalog.ids()
    states: dict[str, object] = {}
    for n in range(300):
        user = f"u{int(rng.integers(0, 25))}"
        states[user] = rec.observe(states.get(user), _click(user, items[int(rng.integers(0, len(items)))], NOW + n))
    users = sorted(states)
    requests = [Request(states[u], NOW + 400 + 600 * n, frozenset({items[0]}) if n % 3 == 0 else frozenset())
                for n, u in enumerate(users)]  # each at their own time, as a worker ranks them
    requests.append(Request(None, NOW + 400))  # a user never seen: trending only
    one_by_one = [rec.recommend(r.state, r.now_s, exclude=r.exclude) for r in requests]
    batch = rec.recommend_batch(requests)
    assert batch == one_by_one
    assert all(lists for lists in batch)
    for request, ranked in zip(requests, batch, strict=True):
        if request.state is not None:
            assert not {r.item_id for r in ranked} & ({e.item_id for e in request.state.recent} | request.exclude)



def test_an_item_only_the_index_still_holds_is_offered_to_no_user_of_a_batch():
    """The catalogue is the truth: an item it dropped, still in the index and the crowd's
    counts, is offered to nobody, and the batch still ranks each user as alone."""
    rec = _recommender(topics=("space", "cook"), per_topic=6)
    states = {}
    for n, (user, item) in enumerate([("a", "space-0"), ("b", "space-1"), ("a", "space-2"), ("c", "cook-0"),
                                      ("b", "space-3"), ("c", "cook-1"), ("d", "cook-2")]):
        states[user] = rec.observe(states.get(user), _click(user, item, NOW + n))
    rec.catalog.remove("space-4")  # the index and the counts still know it
    assert "space-4" in {hit.item_id for hit in rec.index.search(rec.catalog.vector("space-5"), 12)}
    requests = [Request(states[u], NOW + 10) for u in sorted(states)]
    batch = rec.recommend_batch(requests, record_exposure=False)
    assert batch == [rec.recommend(r.state, r.now_s, record_exposure=False) for r in requests]
    assert all(batch) and "space-4" not in {item.item_id for ranked in batch for item in ranked}
    assert "space-4" not in rec.candidates(states["a"], NOW + 10).item_ids


def test_a_timed_batch_says_where_its_time_went_and_ranks_as_an_untimed_one():
    rec = _recommender()
    alice = rec.observe(None, _click("alice", "space-0", NOW))
    requests = [Request(alice, NOW + 1), Request(None, NOW + 1)]
    timings: dict[str, float] = {}
    timed = rec.recommend_batch(requests, record_exposure=False, timings=timings)
    assert timed == rec.recommend_batch(requests, record_exposure=False)
    assert list(timings) == list(STEPS) and all(seconds >= 0 for seconds in timings.values())
    first = dict(timings)
    rec.recommend_batch(requests, record_exposure=False, timings=timings)
    assert timings["rank"] > first["rank"] and all(timings[s] >= first[s] for s in STEPS)  # a second batch adds up

def test_a_batch_searches_the_index_once():
    rec = _recommender()
    calls = []
    search_batch = rec.index.search_batch
    rec.index.search_batch = lambda *a, **kw: calls.append(len(a[0])) or search_batch(*a, **kw)
    alice = rec.observe(None, _click("alice", "space-0", NOW))
    bob = rec.observe(None, _click("bob", "cook-0", NOW))
    rec.recommend_batch([Request(alice, NOW + 1), Request(bob, NOW + 1), Request(None, NOW + 1)])
    assert calls == [2]  # both users' queries in one call (one each: a first click's session repeats its interest)
