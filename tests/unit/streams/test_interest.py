"""Per-user temporal interest state: decay, idempotence, determinism, bounds, encoding."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.interest import (
    _from_bytes,
    EVENT_WEIGHTS,
    InterestParams,
    StateDecodeError,
    StateError,
    UserState,
    active_interests,
    decay,
    decode_state,
    encode_state,
    forgotten,
    recent_positive,
    seen_items,
    session_vector,
    update_interest,
)

DIM = 8
T0 = 1_700_000_000.0
PARAMS = InterestParams()
SMALL = InterestParams(max_interests=2, recent_items=5, max_disliked=3)

# Four orthogonal "topics"; items are noisy copies, so same-topic cosine is ~0.95.
_rng = np.random.default_rng(7)
TOPICS = np.eye(DIM, dtype=np.float32)[:4]
ITEM_VECTORS = {
    f"i{t}{j}": (TOPICS[t] + 0.15 * _rng.standard_normal(DIM)).astype(np.float32)
    for t in range(4)
    for j in range(5)
}
ITEM_IDS = sorted(ITEM_VECTORS)


def vec(item_id: str) -> np.ndarray:
    return ITEM_VECTORS[item_id]


def apply(state: UserState | None, events, params: InterestParams = PARAMS) -> UserState | None:
    for item_id, ts_s, weight, has_vector in events:
        state = update_interest(
            state,
            user_id="u1",
            item_id=item_id,
            vector=vec(item_id) if has_vector else None,
            ts_s=ts_s,
            weight=weight,
            params=params,
        )
    return state


# A random event: item, absolute time (may go backwards), event weight, vector known?
events_st = st.lists(
    st.tuples(
        st.sampled_from(ITEM_IDS),
        st.floats(T0, T0 + 60 * 86_400, allow_nan=False),
        st.sampled_from(sorted(EVENT_WEIGHTS.values())),
        st.booleans(),
    ),
    min_size=1,
    max_size=40,
)
fast = settings(max_examples=60, deadline=None)


# ----------------------------------------------------------------------- decay


@fast
@given(
    st.floats(0.0, 1e6),
    st.floats(0.0, 1e9),
    st.floats(0.0, 1e9),
    st.floats(0.0, 1e9),
    st.floats(1.0, 1e7),
)
def test_decay_is_monotone_in_time(w0, since, a, b, half_life):
    t1, t2 = sorted((a, b))
    assert decay(w0, since, t2, half_life) <= decay(w0, since, t1, half_life) <= w0


def test_decay_formula_halves_each_half_life():
    assert decay(8.0, 0.0, 3 * 100.0, 100.0) == pytest.approx(1.0)
    assert decay(8.0, 50.0, 10.0, 100.0) == 8.0  # a query before the update never grows


@fast
@given(events_st, st.floats(0, 30 * 86_400), st.floats(0, 30 * 86_400))
def test_active_weights_and_session_never_grow_with_time(events, d1, d2):
    state = apply(None, events)
    t1 = state.last_ts_s + min(d1, d2)
    t2 = state.last_ts_s + max(d1, d2)
    w1 = sorted(w for _, w in active_interests(state, t1, PARAMS))
    w2 = sorted(w for _, w in active_interests(state, t2, PARAMS))
    assert sum(w2) <= sum(w1) + 1e-12
    assert len(w2) <= len(w1)
    s1, s2 = session_vector(state, t1, PARAMS), session_vector(state, t2, PARAMS)
    if s2 is not None:
        assert s1 is not None and s2[1] <= s1[1]


# ----------------------------------------------------------------------- idempotence, determinism


@fast
@given(events_st, st.data())
def test_replaying_a_recent_event_leaves_the_state_unchanged(events, data):
    state = apply(None, events, SMALL)
    # A redelivery of any event still remembered (the newest ones), vector or not.
    ev = data.draw(st.sampled_from(state.recent))
    again = apply(state, [(ev.item_id, ev.ts_s, ev.weight, data.draw(st.booleans()))], SMALL)
    assert again == state
    assert encode_state(again) == encode_state(state)


def test_duplicate_click_is_idempotent_but_a_new_click_is_not():
    s1 = apply(None, [("i00", T0, 1.0, True)])
    s2 = apply(s1, [("i00", T0, 1.0, True)])
    assert s2 is s1
    s3 = apply(s1, [("i00", T0 + 1, 1.0, True)])
    assert s3 != s1 and s3.clicks == 2


@fast
@given(events_st)
def test_same_events_give_byte_identical_states(events):
    a = encode_state(apply(None, events))
    b = encode_state(apply(None, [(i, t, w, v) for i, t, w, v in events]))
    assert a == b


# ----------------------------------------------------------------------- bounds, encoding


@fast
@given(events_st)
def test_sizes_stay_bounded(events):
    state = apply(None, events, SMALL)
    assert len(state.interests) <= SMALL.max_interests
    assert len(state.recent) <= SMALL.recent_items
    assert len(state.disliked) <= SMALL.max_disliked
    assert len(set(state.disliked)) == len(state.disliked)
    for interest in state.interests:
        assert interest.weight > 0
        assert np.linalg.norm(interest.vector) == pytest.approx(1.0, abs=1e-5)


@fast
@given(events_st)
def test_encode_decode_round_trip_is_exact(events):
    state = apply(None, events)
    raw = encode_state(state)
    back = decode_state(raw)
    assert back == state
    assert encode_state(back) == raw


def test_state_with_real_dimensions_is_small():
    rng = np.random.default_rng(0)
    state = None
    for n in range(200):
        state = update_interest(
            state,
            user_id="u1",
            item_id=f"item-{n:06d}",
            vector=rng.standard_normal(384).astype(np.float32),
            ts_s=T0 + n,
            weight=1.0,
            params=PARAMS,
        )
    assert len(state.interests) == 4 and len(state.recent) == 50
    assert len(encode_state(state)) < 10_000


@pytest.mark.parametrize("raw", [b"", b"\x00garbage", b"\x91\xa2u1\x91\x94\xc4\x03abc\x01\x00\x01"])
def test_decode_rejects_bad_bytes(raw):
    with pytest.raises(StateDecodeError):
        decode_state(raw)


def test_non_finite_event_is_rejected():
    with pytest.raises(StateError):
        update_interest(
            None, user_id="u", item_id="i", vector=None, ts_s=float("nan"), weight=1.0, params=PARAMS
        )


# ----------------------------------------------------------------------- model behaviour


def test_one_cluster_makes_one_interest_two_clusters_make_two():
    same = apply(None, [(f"i0{j}", T0 + j, 1.0, True) for j in range(5)])
    assert len(same.interests) == 1
    assert same.interests[0].count == 5
    both = apply(None, [(f"i{t}{j}", T0 + 10 * j + t, 1.0, True) for j in range(5) for t in (0, 1)])
    assert len(both.interests) == 2
    assert sorted(i.count for i in both.interests) == [5, 5]
    # Each centroid points at its own topic.
    centroids = np.stack([i.vector for i in both.interests])
    assert sorted(np.argmax(centroids @ TOPICS.T, axis=1).tolist()) == [0, 1]


def test_over_max_interests_far_apart_evicts_the_weakest_keeps_the_newest():
    params = InterestParams(max_interests=2)
    events = [("i00", T0, 3.0, True), ("i10", T0 + 1, 0.5, True), ("i20", T0 + 2, 1.0, True)]
    state = apply(None, events, params)
    topics = sorted(int(np.argmax(TOPICS @ i.vector)) for i in state.interests)
    assert topics == [0, 2]  # topic 1 was weakest; topic 2 is newest and kept


def test_over_max_interests_close_pair_is_merged():
    params = InterestParams(max_interests=2, merge_threshold=0.99, min_merge_cosine=0.3)
    # Two near copies of topic 0 (cosine < 0.99, so they split) and one topic-1 item.
    events = [("i00", T0, 1.0, True), ("i10", T0 + 1, 1.0, True), ("i01", T0 + 2, 1.0, True)]
    state = apply(None, events, params)
    assert len(state.interests) == 2
    assert sorted(i.count for i in state.interests) == [1, 2]


def test_interests_are_ordered_by_decayed_weight_and_old_ones_fade():
    state = apply(None, [("i00", T0, 1.0, True), ("i10", T0 + 28 * 86_400, 1.0, True)])
    act = active_interests(state, T0 + 28 * 86_400, PARAMS)
    assert len(act) == 2 and act[0][1] > act[1][1]
    assert int(np.argmax(TOPICS @ act[0][0])) == 1
    assert act[1][1] == pytest.approx(0.25)  # two half-lives
    assert active_interests(state, T0 + 3650 * 86_400, PARAMS) == []
    assert len(active_interests(state, T0 + 28 * 86_400, PARAMS, max_n=1)) == 1


def test_dislike_never_creates_an_interest_and_is_seen():
    state = apply(None, [("i00", T0, EVENT_WEIGHTS["dislike"], True)])
    assert state.interests == () and state.session == b""
    assert "i00" in seen_items(state) and state.disliked == ("i00",)
    assert recent_positive(state) == []


def test_dislike_weakens_the_nearest_interest():
    liked = apply(None, [("i00", T0, 2.0, True), ("i10", T0, 2.0, True)])
    after = apply(liked, [("i01", T0, -1.0, True)])
    w_before = {int(np.argmax(TOPICS @ i.vector)): i.weight for i in liked.interests}
    w_after = {int(np.argmax(TOPICS @ i.vector)): i.weight for i in after.interests}
    assert w_after[0] < w_before[0]
    assert w_after[1] == w_before[1]


def test_item_without_vector_is_recorded_as_seen_only():
    state = apply(None, [("i00", T0, 1.0, False)])
    assert state.interests == () and "i00" in seen_items(state)
    assert recent_positive(state) == [("i00", T0)]


def test_time_never_goes_backwards():
    state = apply(None, [("i00", T0 + 100, 1.0, True), ("i01", T0, 1.0, True)])
    assert state.last_ts_s == T0 + 100
    assert state.interests[0].updated_s == T0 + 100
    assert [e.ts_s for e in state.recent] == [T0 + 100, T0]  # own times kept for replay checks


def test_session_follows_the_latest_items():
    state = apply(None, [(f"i0{j}", T0 + j, 1.0, True) for j in range(3)])
    state = apply(state, [(f"i1{j}", T0 + 7200 + j, 1.0, True) for j in range(3)])
    v, w = session_vector(state, T0 + 7203, PARAMS)
    assert int(np.argmax(TOPICS @ v)) == 1
    assert session_vector(state, T0 + 7200 + 30 * 1800, PARAMS) is None


def test_dimension_change_resets_vectors_but_keeps_history():
    state = apply(None, [("i00", T0, 1.0, True)])
    state = update_interest(
        state,
        user_id="u1",
        item_id="x",
        vector=np.ones(4, np.float32),
        ts_s=T0 + 1,
        weight=1.0,
        params=PARAMS,
    )
    assert len(state.interests) == 1 and state.interests[0].vector.shape == (4,)
    assert decode_state(encode_state(state)) == state
    assert seen_items(state) == {"i00", "x"}


def test_caller_vector_is_not_modified():
    v = np.array([3.0, 4.0] + [0.0] * (DIM - 2), dtype=np.float32)
    before = v.copy()
    update_interest(None, user_id="u", item_id="i", vector=v, ts_s=T0, weight=1.0, params=PARAMS)
    np.testing.assert_array_equal(v, before)


def test_a_forgotten_user_is_not_brought_back_by_clicks_from_before_the_forget():
    """Clicks and forgets travel on different topics: a click made before the forget may be
    processed after it, and a replay reads the old clicks again. Neither changes the state."""
    before = apply(None, [("i00", T0, 1.0, True), ("i01", T0 + 1, 1.0, True)])
    assert before is not None and before.clicks == 2
    gone = forgotten("u1", T0 + 10)
    assert gone.clicks == 0 and not gone.interests and not gone.recent
    assert apply(gone, [("i00", T0, 1.0, True), ("i02", T0 + 10, 1.0, True)]) is gone
    after = apply(gone, [("i30", T0 + 11, 1.0, True)])
    assert after.clicks == 1 and [e.item_id for e in after.recent] == ["i30"]
    assert after.forgotten_at_s == T0 + 10, "the fence outlives the next click"
    assert apply(after, [("i01", T0 + 5, 1.0, True)]) is after
    assert decode_state(encode_state(after)) == after


def test_a_forget_leaves_no_decoded_vector_of_the_user_in_memory():
    state = apply(None, [("i00", T0, 1.0, True), ("i01", T0 + 1, 1.0, True)])
    active_interests(state, T0 + 2, PARAMS)  # decodes (and caches) the user's vectors
    assert _from_bytes.cache_info().currsize > 0
    forgotten("u1", T0 + 10)
    assert _from_bytes.cache_info().currsize == 0


def _f32(raw: bytes) -> bytes:
    return np.frombuffer(raw, dtype="<f2").astype("<f4").tobytes()


def _float32_layout(state, fields: int):
    """``state`` as a worker wrote it before vectors were stored in float16: float32 vectors,
    no ``half`` flags, and only the first ``fields`` fields of the state."""
    import msgspec

    fields_of = msgspec.msgpack.decode(encode_state(state))
    fields_of[1] = [[_f32(c), w, t, n] for c, w, t, n, _half in fields_of[1]]
    fields_of[2] = _f32(fields_of[2]) if fields_of[2] else b""
    return msgspec.msgpack.encode(fields_of[:fields])


def test_a_state_written_before_the_forget_fence_existed_still_decodes():
    from msgspec.structs import replace

    state = apply(None, [("i00", T0, 1.0, True)])
    as_written = replace(state, interests=tuple(replace(i, centroid=_f32(i.centroid), half=False)
                                               for i in state.interests),
                         session=_f32(state.session), session_half=False)
    old = decode_state(_float32_layout(state, 9))  # no forgotten_at_s
    assert old == as_written and old.forgotten_at_s == -math.inf


def test_vectors_are_stored_in_float16_and_float32_states_still_read():
    state = apply(None, [("i00", T0, 1.0, True), ("i10", T0 + 1, 1.0, True)])
    assert all(i.half for i in state.interests) and state.session_half
    assert len(state.interests[0].centroid) == 2 * DIM  # half of float32's bytes
    old = decode_state(_float32_layout(state, 10))
    assert not old.session_half and not any(i.half for i in old.interests)
    assert len(old.interests[0].centroid) == 4 * DIM
    for before, now in zip(old.interests, state.interests, strict=True):
        assert np.allclose(before.vector, now.vector, atol=1e-6)  # the same float16 values, widened
    assert np.allclose(old.session_array, state.session_array, atol=1e-6)
    # the next click rewrites what it touches in float16; the rest is read as it was
    later = apply(old, [("i01", T0 + 2, 1.0, True)])
    assert later.session_half and len(later.session) == 2 * DIM
    assert decode_state(encode_state(later)) == later
    assert np.allclose(active_interests(later, T0 + 2, PARAMS)[0][0], active_interests(
        apply(state, [("i01", T0 + 2, 1.0, True)]), T0 + 2, PARAMS)[0][0], atol=1e-3)
