"""Decayed popularity ("trending"): what many users engaged with recently.

Every event adds its weight to its item's score, and scores decay with a half-life::

    score(t) = sum_e weight_e * 2 ** (-(t - t_e) / half_life_s)

Decaying every item on every event would cost O(items). Instead each item keeps the
time-independent log-score ``L = log2(sum_e weight_e * 2 ** (t_e / half_life_s))``, so

    score(t) = 2 ** (L - t / half_life_s)

An event is one log-add (``L <- log2(2**L + weight * 2**(t_e / h))``, computed stably), and the
order of items by score is the order by ``L`` at every ``t``: the ranking never has to be
recomputed because time passed. ``L`` stays small (``t / h`` is ~2,800 for epoch seconds and a
one-week half-life), so there is no overflow and no periodic rebase.

Memory is bounded: past ``max_items`` (plus 25% slack, so pruning is amortised) the items
with the lowest ``L`` are forgotten. A small exact top list (``cache_top``) is maintained
incrementally so :meth:`Trending.top` is O(n) per click instead of O(items): scores only
grow, so an item outside the list enters only by passing its current minimum.

Used for new users (no interests yet) and as the popularity baseline. Worker-local and
mutable for speed; every method takes time as an argument and reads no clock.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Container, Sequence
from dataclasses import dataclass

import msgspec
import numpy as np

from streams.errors import ConfigError

__all__ = ["Trending", "TrendingParams", "log2_add", "score_at"]

_NO_EXCLUDE: frozenset[str] = frozenset()


def log2_add(a: float, b: float) -> float:
    """``log2(2**a + 2**b)`` without overflow (either may be ``-inf``)."""
    if a < b:
        a, b = b, a
    if b == -math.inf:
        return a
    return a + math.log1p(2.0 ** (b - a)) / math.log(2.0)


def score_at(log2_score: float, now_s: float, half_life_s: float) -> float:
    """The decayed score ``2 ** (L - now_s / half_life_s)`` (capped, never overflows)."""
    return 2.0 ** min(log2_score - now_s / half_life_s, 1000.0)


@dataclass(frozen=True, slots=True)
class TrendingParams:
    """Knobs of the trending counter.

    Attributes:
        half_life_s: half-life of an event's contribution (default one day).
        max_items: items remembered (bounded memory; the weakest are forgotten).
        cache_top: length of the incrementally maintained exact top list.
    """

    half_life_s: float = 86_400.0
    max_items: int = 10_000
    cache_top: int = 256

    def __post_init__(self) -> None:
        if not self.half_life_s > 0:
            raise ConfigError(f"trending half_life_s must be > 0, got {self.half_life_s}")
        if self.max_items < 1 or self.cache_top < 1:
            raise ConfigError("trending max_items and cache_top must be >= 1")


class TrendingState(msgspec.Struct, frozen=True):
    """A :class:`Trending` as plain data: item ids and their log-scores at a half-life."""

    half_life_s: float
    items: list[tuple[str, float]]


class Trending:
    """Decayed item popularity with bounded memory. Mutable, worker-local, clock-free."""

    def __init__(self, params: TrendingParams | None = None) -> None:
        self.params = params or TrendingParams()
        self._cache_n = min(self.params.cache_top, self.params.max_items)
        self._log: dict[str, float] = {}
        # Exact best-first prefix of all items by key (-L, item_id).
        self._top: list[tuple[float, str]] = []
        self._top_ids: set[str] = set()

    def __len__(self) -> int:
        return len(self._log)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._log

    def observe(self, item_id: str, ts_s: float, weight: float = 1.0) -> None:
        """Count one event.

        Args:
            item_id: the item engaged with.
            ts_s: event time, float seconds (any order; late events simply count less).
            weight: event strength; events with weight <= 0 (dislikes) or non-finite
                values are ignored.
        """
        if not (weight > 0 and math.isfinite(weight) and math.isfinite(ts_s)):
            return
        old = self._log.get(item_id, -math.inf)
        new = log2_add(old, math.log2(weight) + ts_s / self.params.half_life_s)
        self._log[item_id] = new
        self._update_top(item_id, old, new)
        if len(self._log) > self.params.max_items + self.params.max_items // 4 + 1:
            self._prune()

    def score(self, item_id: str, now_s: float) -> float:
        """The item's decayed score at ``now_s`` (0.0 when unknown)."""
        log = self._log.get(item_id)
        return 0.0 if log is None else score_at(log, now_s, self.params.half_life_s)

    def scores(self, item_ids: Sequence[str], now_s: float | Sequence[float]) -> np.ndarray:
        """:meth:`score` of each item (0.0 when unknown), as one float64 array; ``now_s`` is
        one time for all, or each item's own (a batch of users, each at their own time).

        Python's power, as :func:`score_at` (numpy's ``exp2`` differs in the last bit for
        one value in twenty, and ranking must not depend on which of the two asked)."""
        h, log = self.params.half_life_s, self._log.get
        if isinstance(now_s, (int, float)):
            shift = now_s / h
            return np.array([2.0 ** min(log(i, -math.inf) - shift, 1000.0) for i in item_ids], dtype=np.float64)
        return np.array([2.0 ** min(log(i, -math.inf) - now / h, 1000.0)
                         for i, now in zip(item_ids, now_s, strict=True)], dtype=np.float64)

    def top(
        self, now_s: float, n: int, exclude: Container[str] = _NO_EXCLUDE
    ) -> list[tuple[str, float]]:
        """The ``n`` most popular items at ``now_s``, skipping ``exclude``.

        Args:
            now_s: query time.
            n: how many.
            exclude: item ids to skip (e.g. the user's seen set).

        Returns:
            ``[(item_id, decayed score), ...]``, score descending, ties by item_id.
        """
        if n <= 0:
            return []
        h = self.params.half_life_s
        out: list[tuple[str, float]] = []
        for neg_log, item_id in self._top:
            if item_id not in exclude:
                out.append((item_id, score_at(-neg_log, now_s, h)))
                if len(out) == n:
                    return out
        if len(self._top) == len(self._log):
            return out
        # The cached prefix was exhausted by exclusions: scan everything else.
        rest = heapq.nsmallest(
            n - len(out),
            ((-log, i) for i, log in self._log.items() if i not in self._top_ids and i not in exclude),
        )
        out.extend((i, score_at(-neg_log, now_s, h)) for neg_log, i in rest)
        return out

    def remove(self, item_id: str) -> None:
        """Forget an item (deleted from the catalogue)."""
        if self._log.pop(item_id, None) is not None and item_id in self._top_ids:
            self._rebuild_top()

    def state(self) -> TrendingState:
        """Every item's log-score, as plain data (:meth:`from_state` inverts it)."""
        return TrendingState(half_life_s=self.params.half_life_s, items=list(self._log.items()))

    @classmethod
    def from_state(cls, state: TrendingState, params: TrendingParams | None = None) -> Trending:
        """``ValueError`` when ``state`` was counted with another half-life (its log-scores
        would read as other counts)."""
        trending = cls(params)
        if state.half_life_s != trending.params.half_life_s:
            raise ValueError(f"popularity counted with half-life {state.half_life_s} s, "
                             f"configured {trending.params.half_life_s} s")
        trending._log = dict(state.items)
        trending._rebuild_top()
        return trending

    def keep_only(self, known: Container[str]) -> int:
        """Forget every item not in ``known``; return how many there were."""
        absent = [item_id for item_id in self._log if item_id not in known]
        for item_id in absent:
            del self._log[item_id]
        if absent:
            self._rebuild_top()
        return len(absent)

    # ----------------------------------------------------------------- internals

    def _update_top(self, item_id: str, old: float, new: float) -> None:
        key = (-new, item_id)
        if item_id in self._top_ids:
            idx = bisect.bisect_left(self._top, (-old, item_id))
            del self._top[idx]
            bisect.insort(self._top, key)
        elif len(self._top) < self._cache_n:
            # A cache that is not full holds every item: this one is new, it joins.
            bisect.insort(self._top, key)
            self._top_ids.add(item_id)
        elif key < self._top[-1]:
            bisect.insort(self._top, key)
            self._top_ids.add(item_id)
            _, dropped = self._top.pop()
            self._top_ids.discard(dropped)

    def _rebuild_top(self) -> None:
        self._top = heapq.nsmallest(self._cache_n, ((-log, i) for i, log in self._log.items()))
        self._top_ids = {i for _, i in self._top}

    def _prune(self) -> None:
        keep = heapq.nsmallest(self.params.max_items, ((-log, i) for i, log in self._log.items()))
        self._log = {i: -neg for neg, i in keep}
        # The cached top is a prefix of ``keep``; nothing in it was dropped.
