"""Per-user temporal multi-interest state (in the manner of PinnerSage).

What a user is interested in is not one point in embedding space but a few: someone who
reads about both cycling and tax law is served badly by the mean of the two. So each user
keeps a handful of *interests*, each a unit-length centroid of the item vectors that formed
it plus a weight, and one fast-moving *session* vector for what they are doing right now.

Decay
    Every weight decays exponentially with the time since it was last reinforced::

        w(t) = w0 * 2 ** (-(t - t_last) / half_life_s)

    ``w0`` is the weight stored at ``t_last`` (the interest's ``updated_s``). Decay is lazy:
    nothing is rewritten while a user is idle; a query or the next update evaluates the
    formula. Interests use ``interest_half_life_s`` (days), the session ``session_half_life_s``
    (minutes). Time never goes backwards: an event older than the newest one seen is applied
    at ``max(ts_s, last_ts_s)``, so a late event never "un-decays" anything.

Update (one event, :func:`update_interest`)
    * positive weight (view/click/like/purchase, see :data:`EVENT_WEIGHTS`): the item's unit
      vector ``u`` reinforces the nearest interest when their cosine is at least
      ``merge_threshold``: ``c <- normalise(w_decayed * c + weight * u)``,
      ``w <- w_decayed + weight``. Otherwise ``u`` starts a new interest. With more than
      ``max_interests`` interests, the two closest are merged (weighted by decayed weight) when
      their cosine is at least ``min_merge_cosine``; when every pair is far apart the interest
      with the lowest decayed weight is evicted instead (never the one just created, so the
      state follows drift). Interests whose decayed weight fell below ``min_weight`` are dropped.
      The session vector is a decayed running mean with the short half-life.
    * negative weight (dislike): the item joins the bounded disliked list and weakens the
      nearest interest by ``|weight| * max(cosine, 0)``; it never creates an interest.
    * an item without a vector yet (not encoded) is still recorded in ``recent``, so it is seen.
    * idempotent: an event whose ``(item_id, ts_s, weight)`` is already in ``recent`` returns
      the state unchanged, because at-least-once delivery replays clicks. Only the last
      ``recent_items`` events are remembered, so only recent replays are recognised.

The state is an immutable value; :func:`encode_state` / :func:`decode_state` turn it into
compact msgpack for a faust table changelog. The vectors are most of it, so they are stored as
little-endian float16: 4 centroids and a session vector of 384 dimensions are 3.8 KB instead
of 7.7 KB in float32, and every click writes its user's state to RocksDB and to the
changelog. float16 keeps 11 significant bits, so a stored unit vector is within ~5e-4 of the
float64 one it came from, far below what separates one item's cosine from another's; the
arithmetic of an update still runs in float64. States written in float32 (before) are read
as they are, and an interest moves to float16 when it is next rewritten. A state
round-trips exactly, and replaying the same events gives byte-identical encodings.

Pure: no clock reads, no I/O, no faust/Kafka/Qdrant imports.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Final

import msgspec
import numpy as np

from streams.errors import ConfigError, RecstreamError

__all__ = [
    "EVENT_WEIGHTS",
    "Interest",
    "InterestParams",
    "RecentEvent",
    "StateDecodeError",
    "StateError",
    "UserState",
    "active_interests",
    "decay",
    "decode_state",
    "encode_state",
    "new_state",
    "recent_positive",
    "seen_items",
    "session_vector",
    "update_interest",
]

#: Default event strengths (caller maps a click's ``event`` to a weight; an explicit
#: ``weight`` on the record wins). Ordered by how much intent each event shows.
EVENT_WEIGHTS: Final[dict[str, float]] = {
    "view": 0.5,
    "click": 1.0,
    "like": 2.0,
    "purchase": 3.0,
    "dislike": -1.0,
}

_F32 = np.dtype("<f4")
#: How vectors are stored in a state (see the module docstring).
_F16 = np.dtype("<f2")


class StateError(RecstreamError, ValueError):
    """An update got an input the state cannot absorb (non-finite time or weight)."""


class StateDecodeError(StateError):
    """Bytes from the state store are not a valid encoded :class:`UserState`."""


@dataclass(frozen=True, slots=True)
class InterestParams:
    """Knobs of the interest model; mirrors ``StateSettings`` (callers map the fields).

    Attributes:
        max_interests: interest centroids kept per user.
        recent_items: recent events kept per user (seen set, replay detection, reasons).
        interest_half_life_s: half-life of an interest's weight.
        session_half_life_s: half-life of the session vector's weight.
        merge_threshold: cosine at or above which an item reinforces an existing interest.
        min_merge_cosine: over ``max_interests``, the closest pair is merged only when at
            least this similar; otherwise the weakest interest is evicted.
        min_weight: decayed weight below which an interest or session counts as gone.
        max_disliked: disliked item ids kept per user.
    """

    max_interests: int = 4
    recent_items: int = 50
    interest_half_life_s: float = 14 * 86_400.0
    session_half_life_s: float = 1_800.0
    merge_threshold: float = 0.6
    min_merge_cosine: float = 0.3
    min_weight: float = 0.01
    max_disliked: int = 50

    def __post_init__(self) -> None:
        if self.max_interests < 1:
            raise ConfigError(f"max_interests must be >= 1, got {self.max_interests}")
        if self.recent_items < 1:
            raise ConfigError(f"recent_items must be >= 1, got {self.recent_items}")
        if not (self.interest_half_life_s > 0 and self.session_half_life_s > 0):
            raise ConfigError("interest_half_life_s and session_half_life_s must be > 0")
        if not -1.0 <= self.merge_threshold <= 1.0:
            raise ConfigError(f"merge_threshold must lie in [-1, 1], got {self.merge_threshold}")
        if self.min_weight < 0 or self.max_disliked < 0:
            raise ConfigError("min_weight and max_disliked must be >= 0")


class Interest(msgspec.Struct, frozen=True, array_like=True):
    """One interest: a unit centroid and its weight as of ``updated_s``."""

    centroid: bytes  # float16 bytes, or float32 where ``half`` is False
    weight: float
    updated_s: float
    count: int
    half: bool = False  # last: interests written in float32 before decode unchanged

    @property
    def vector(self) -> np.ndarray:
        """The centroid as a float32 array, shape ``(dim,)``."""
        return _from_bytes(self.centroid, self.half)


class RecentEvent(msgspec.Struct, frozen=True, array_like=True):
    """One remembered event: item, its own timestamp, its weight (< 0 for a dislike)."""

    item_id: str
    ts_s: float
    weight: float


class UserState(msgspec.Struct, frozen=True, array_like=True):
    """Everything recstream keeps about one user. Immutable; build new ones with updates.

    Attributes:
        user_id: the user.
        interests: at most ``max_interests`` interests, in creation order.
        session: unit session vector as float32 bytes (``b""`` before any vector).
        session_weight: session weight as of ``session_updated_s``.
        session_updated_s: when the session was last reinforced.
        recent: the last ``recent_items`` events, newest last.
        disliked: the last ``max_disliked`` disliked item ids, newest last, unique.
        clicks: events applied (replays excluded), dislikes included.
        last_ts_s: newest event time seen; the state's clock.
        forgotten_at_s: when the user was last forgotten (see :func:`forgotten`): events
            dated at or before it change nothing.
    """

    user_id: str
    interests: tuple[Interest, ...] = ()
    session: bytes = b""
    session_weight: float = 0.0
    session_updated_s: float = 0.0
    recent: tuple[RecentEvent, ...] = ()
    disliked: tuple[str, ...] = ()
    clicks: int = 0
    last_ts_s: float = -math.inf
    forgotten_at_s: float = -math.inf  # states written before it existed decode unchanged
    session_half: bool = False  # last: ``session`` holds float16 (False: float32, as before)

    @property
    def session_array(self) -> np.ndarray | None:
        """The session vector as a float32 array, or None before any vector."""
        return _from_bytes(self.session, self.session_half) if self.session else None


def new_state(user_id: str) -> UserState:
    """An empty state for a user never seen before."""
    return UserState(user_id=user_id)


def forgotten(user_id: str, at_s: float) -> UserState:
    """What a forget leaves of a user: no history, no interests, only when it happened.

    Clicks and forgets travel on different topics, so a click made before the forget can be
    processed after it (and a replay reads the old clicks again): :func:`update_interest`
    ignores every event dated at or before ``at_s``, so none of them brings the user back.
    The cache of decoded vectors may still hold the user's: it is emptied too (it refills
    within a batch).
    """
    _from_bytes.cache_clear()
    return UserState(user_id=user_id, forgotten_at_s=at_s)


# --------------------------------------------------------------------------- encoding

_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(UserState)


def encode_state(state: UserState) -> bytes:
    """Encode a state as compact msgpack (array-like structs, float32 vector bytes).

    Args:
        state: the state.

    Returns:
        The bytes to store; :func:`decode_state` gives back an equal state.
    """
    return _ENCODER.encode(state)


def decode_state(raw: bytes) -> UserState:
    """Decode bytes written by :func:`encode_state`.

    Args:
        raw: the stored bytes.

    Returns:
        The state, equal to the one encoded.

    Raises:
        StateDecodeError: the bytes are not a valid state (corrupt, or vectors whose byte
            length is not a whole number of float32s or whose dimensions disagree).
    """
    try:
        state = _DECODER.decode(raw)
    except msgspec.DecodeError as exc:  # ValidationError subclasses DecodeError
        raise StateDecodeError(f"bad user state: {exc}") from exc
    vectors = [(i.centroid, i.half) for i in state.interests]
    if state.session:
        vectors.append((state.session, state.session_half))
    widths = [(len(raw), 2 if half else 4) for raw, half in vectors]
    dims = {n // width for n, width in widths}
    if len(dims) > 1 or any(n == 0 or n % width for n, width in widths):
        raise StateDecodeError(f"bad user state: inconsistent vector byte lengths {[n for n, _ in widths]}")
    return state


# --------------------------------------------------------------------------- math


def decay(weight: float, since_s: float, now_s: float, half_life_s: float) -> float:
    """``weight * 2 ** (-(now_s - since_s) / half_life_s)``; never grows (now before since = 0 s)."""
    dt = now_s - since_s
    if dt <= 0.0:
        return weight
    return weight * 2.0 ** (-dt / half_life_s)


def _unit(vector: np.ndarray | None) -> np.ndarray | None:
    """float64 unit vector, or None for a missing, empty, zero or non-finite vector."""
    if vector is None:
        return None
    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    if v.size == 0 or not np.all(np.isfinite(v)):
        return None
    norm = float(np.linalg.norm(v))
    if not norm > 0.0 or not math.isfinite(norm):
        return None
    return v / norm


def _to_bytes(v: np.ndarray) -> bytes:
    """A vector as stored: float16 bytes (the module docstring says why)."""
    return v.astype(_F16).tobytes()


@functools.lru_cache(maxsize=4_096)
def _from_bytes(raw: bytes, half: bool) -> np.ndarray:
    """A stored unit vector as float32, scaled back to unit length (float16 rounding moves
    the norm by up to ~5e-4, and a query's cosines would move with it). Read-only, and
    cached: a click decodes its user's vectors when it is applied and again when the user
    is ranked, and a batch's users' vectors (~6 each) fit the cache many times over."""
    v = np.frombuffer(raw, dtype=_F16 if half else _F32).astype(np.float32)
    norm = float(np.sqrt(v @ v))
    out = v / norm if norm > 0.0 else v
    out.flags.writeable = False
    return out


def _dim(raw: bytes, half: bool) -> int:
    return len(raw) // (2 if half else 4)


def _blend(a: np.ndarray, wa: float, b: np.ndarray, wb: float) -> np.ndarray:
    """Unit vector of the weighted mean of two unit vectors (falls back to ``b`` if they cancel)."""
    m = wa * a + wb * b
    norm = float(np.linalg.norm(m))
    if not norm > 1e-12:
        return b
    return m / norm


# --------------------------------------------------------------------------- update


def update_interest(
    state: UserState | None,
    *,
    user_id: str,
    item_id: str,
    vector: np.ndarray | None,
    ts_s: float,
    weight: float,
    params: InterestParams,
) -> UserState:
    """Apply one event to a user's state; pure and deterministic.

    Args:
        state: the current state, or None for a new user.
        user_id: the user (used when ``state`` is None).
        item_id: the item the event is about.
        vector: the item's embedding, or None when it is not encoded yet (the event is then
            only remembered in ``recent``). Not modified.
        ts_s: event time, float seconds.
        weight: event strength: > 0 positive feedback (see :data:`EVENT_WEIGHTS`), < 0 a
            dislike, 0 recorded as seen only.
        params: model knobs.

    Returns:
        The new state, or ``state`` itself when the event is a replay of one in ``recent`` or
        is dated at or before the user's last forget.

    Raises:
        StateError: ``ts_s`` or ``weight`` is not finite.
    """
    if not (math.isfinite(ts_s) and math.isfinite(weight)):
        raise StateError(f"event for item {item_id!r} has non-finite ts_s={ts_s} or weight={weight}")
    if state is None:
        state = new_state(user_id)
    ts_s = float(ts_s)
    weight = float(weight)
    if ts_s <= state.forgotten_at_s:
        return state  # from before the user was forgotten
    for ev in state.recent:
        if ev.item_id == item_id and ev.ts_s == ts_s and ev.weight == weight:
            return state  # at-least-once redelivery: already applied

    t = max(ts_s, state.last_ts_s)
    recent = (*state.recent, RecentEvent(item_id, ts_s, weight))[-params.recent_items :]
    disliked = state.disliked
    interests = state.interests
    session, session_weight, session_updated_s = (
        state.session,
        state.session_weight,
        state.session_updated_s,
    )

    u = _unit(vector)
    session_half = state.session_half
    if u is not None and interests and _dim(interests[0].centroid, interests[0].half) != u.size:
        # The encoder changed dimension (model swap): old centroids live in another space.
        interests, session, session_weight, session_updated_s = (), b"", 0.0, 0.0
    if u is not None and session and _dim(session, session_half) != u.size:
        session, session_weight, session_updated_s = b"", 0.0, 0.0

    if weight < 0:
        disliked = (*(d for d in disliked if d != item_id), item_id)
        disliked = disliked[-params.max_disliked :] if params.max_disliked else ()
        if u is not None and interests:
            interests = _weaken(interests, u, -weight, t, params)
    elif weight > 0 and u is not None:
        interests = _reinforce(interests, u, weight, t, params)
        s_prev = _from_bytes(session, session_half).astype(np.float64) if session else None
        s_w = decay(session_weight, session_updated_s, t, params.session_half_life_s)
        if s_prev is None or s_w < params.min_weight:
            s_new, s_w_new = u, weight
        else:
            s_new, s_w_new = _blend(s_prev, s_w, u, weight), s_w + weight
        session, session_weight, session_updated_s, session_half = _to_bytes(s_new), s_w_new, t, True

    return UserState(
        user_id=state.user_id,
        interests=interests,
        session=session,
        session_weight=session_weight,
        session_updated_s=session_updated_s,
        recent=recent,
        disliked=disliked,
        clicks=state.clicks + 1,
        last_ts_s=t,
        forgotten_at_s=state.forgotten_at_s,
        session_half=session_half and bool(session),
    )


def _matrix(interests: tuple[Interest, ...]) -> np.ndarray:
    """Centroids as a float64 ``(n, dim)`` matrix."""
    return np.stack([i.vector for i in interests]).astype(np.float64)


def _decayed(interests: tuple[Interest, ...], t: float, params: InterestParams) -> list[float]:
    return [decay(i.weight, i.updated_s, t, params.interest_half_life_s) for i in interests]


def _reinforce(
    interests: tuple[Interest, ...], u: np.ndarray, weight: float, t: float, params: InterestParams
) -> tuple[Interest, ...]:
    dw = _decayed(interests, t, params)
    # Interests that decayed to nothing are dropped first, so they neither attract the item
    # nor take a slot from a new interest.
    alive = [(i, w) for i, w in zip(interests, dw) if w >= params.min_weight]
    items = [i for i, _ in alive]
    weights = [w for _, w in alive]
    if items:
        centroids = _matrix(tuple(items))  # each stored vector decoded once per click
        cos = centroids @ u
        best = int(np.argmax(cos))  # first maximum: deterministic
        if cos[best] >= params.merge_threshold:
            old = items[best]
            c = _blend(centroids[best], weights[best], u, weight)
            items[best] = Interest(_to_bytes(c), weights[best] + weight, t, old.count + 1, half=True)
            weights[best] += weight
            return tuple(items)
    items.append(Interest(_to_bytes(u), weight, t, 1, half=True))
    weights.append(weight)
    while len(items) > params.max_interests:
        items, weights = _consolidate(items, weights, t, params)
    return tuple(items)


def _consolidate(
    items: list[Interest], weights: list[float], t: float, params: InterestParams
) -> tuple[list[Interest], list[float]]:
    """One step towards ``max_interests``: merge the closest pair, or evict the weakest."""
    m = _matrix(tuple(items))
    sim = m @ m.T
    n = len(items)
    best_pair, best_cos = (0, 1), -math.inf
    for a in range(n):
        for b in range(a + 1, n):
            if sim[a, b] > best_cos:
                best_pair, best_cos = (a, b), float(sim[a, b])
    if best_cos >= params.min_merge_cosine:
        a, b = best_pair
        c = _blend(m[a], weights[a], m[b], weights[b])
        merged = Interest(_to_bytes(c), weights[a] + weights[b], t, items[a].count + items[b].count, half=True)
        items = [*items[:a], merged, *items[a + 1 : b], *items[b + 1 :]]
        weights = [*weights[:a], weights[a] + weights[b], *weights[a + 1 : b], *weights[b + 1 :]]
        return items, weights
    # Every pair is far apart: evict the weakest, never the newest (last) one.
    victim = min(range(n - 1), key=lambda i: (weights[i], items[i].updated_s, i))
    return items[:victim] + items[victim + 1 :], weights[:victim] + weights[victim + 1 :]


def _weaken(
    interests: tuple[Interest, ...], u: np.ndarray, strength: float, t: float, params: InterestParams
) -> tuple[Interest, ...]:
    cos = _matrix(interests) @ u
    best = int(np.argmax(cos))
    if cos[best] <= 0.0:
        return interests  # nothing similar to weaken
    old = interests[best]
    w = decay(old.weight, old.updated_s, t, params.interest_half_life_s)
    w = max(w - strength * float(cos[best]), 0.0)
    if w < params.min_weight:
        return interests[:best] + interests[best + 1 :]
    return (*interests[:best], Interest(old.centroid, w, t, old.count, old.half), *interests[best + 1 :])


# --------------------------------------------------------------------------- queries


def active_interests(
    state: UserState, now_s: float, params: InterestParams, max_n: int | None = None
) -> list[tuple[np.ndarray, float]]:
    """The user's interests with decayed weights, strongest first.

    Args:
        state: the user's state.
        now_s: query time; a time before an interest's ``updated_s`` counts as no decay.
        params: model knobs (half-life, ``min_weight``).
        max_n: keep at most this many (None: all).

    Returns:
        ``[(unit float32 centroid (dim,), decayed weight), ...]`` with weights >=
        ``min_weight``, descending; ties keep creation order.
    """
    weighted = [(i, decay(i.weight, i.updated_s, now_s, params.interest_half_life_s)) for i in state.interests]
    weighted = [(i, w) for i, w in weighted if w >= params.min_weight]
    weighted.sort(key=lambda iw: -iw[1])  # stable: creation order breaks ties
    return [(i.vector, w) for i, w in (weighted if max_n is None else weighted[:max_n])]


def session_vector(
    state: UserState, now_s: float, params: InterestParams
) -> tuple[np.ndarray, float] | None:
    """The session vector and its decayed weight, or None when absent or negligible.

    Args:
        state: the user's state.
        now_s: query time.
        params: model knobs (``session_half_life_s``, ``min_weight``).

    Returns:
        ``(unit float32 vector (dim,), weight)`` or None.
    """
    v = state.session_array
    if v is None:
        return None
    w = decay(state.session_weight, state.session_updated_s, now_s, params.session_half_life_s)
    return (v, w) if w >= params.min_weight else None


def seen_items(state: UserState) -> frozenset[str]:
    """Item ids never to recommend again: every recent event's item plus the disliked ones."""
    return frozenset(ev.item_id for ev in state.recent).union(state.disliked)


def recent_positive(state: UserState) -> list[tuple[str, float]]:
    """The user's recent positively-weighted items as ``(item_id, ts_s)``, newest last.

    Disliked items are left out (they explain nothing and must not seed co-visitation);
    an item repeated keeps only its newest occurrence.
    """
    disliked = set(state.disliked)
    out: list[tuple[str, float]] = []
    seen: set[str] = set()
    for ev in reversed(state.recent):
        if ev.weight > 0 and ev.item_id not in disliked and ev.item_id not in seen:
            seen.add(ev.item_id)
            out.append((ev.item_id, ev.ts_s))
    out.reverse()
    return out
