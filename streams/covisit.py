"""Streaming item-to-item co-visitation ("people who engaged with a also engaged with b").

When a user engages with item ``b`` at ``t``, each of their previous few items ``a`` (at most
``window_items`` back and within ``window_s`` of ``t``) co-occurs with ``b``; closer ones count
more: the ``p``-th most recent previous item adds ``1 / p``. Counts are symmetric
(``co(a, b)`` and ``co(b, a)`` grow together) and decay with a half-life::

    co_ab(t) = sum_e w_e * 2 ** (-(t - t_e) / half_life_s)

stored, as in :mod:`streams.trending`, as the time-independent log-count
``L_ab = log2(sum_e w_e * 2 ** (t_e / half_life_s))`` so an update is one log-add and no
count is ever rewritten because time passed: ``co_ab(t) = 2 ** (L_ab - t / half_life_s)``.

Memory is bounded per item: each row keeps its ``max_neighbours`` strongest neighbours
(pruned when it doubles, so pruning is amortised O(log M) per update). Rows are pruned
independently, so after pruning the symmetry is approximate for weak pairs.

Candidates for a user aggregate the rows of their recent items::

    score(c) = sum_r recency(r) * co_rc / (sum_x co_rx + smoothing)

(an estimate of P(c | r), shrunk for items with little or stale evidence), with
``recency = 1 / (1 + p)`` for the ``p``-th most recent item; ``because`` is the recent item that
contributed most.

Worker-local and mutable for speed (it is aggregate state, not per-user state), but every
method takes time as an argument and reads no clock, so a replay gives the same counts.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Container, Sequence
from dataclasses import dataclass

from streams.errors import ConfigError
from streams.trending import log2_add, score_at

__all__ = ["CovisitCounts", "CovisitParams"]

_NO_EXCLUDE: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class CovisitParams:
    """Knobs of the co-visitation counter.

    Attributes:
        half_life_s: half-life of a co-visit (default one week).
        window_items: how many of the user's previous items pair with a new one.
        window_s: previous items older than this (relative to the new one) do not pair.
        max_neighbours: neighbours kept per item (bounded memory: items x 2 x this).
        query_items: how many of the user's recent items seed candidates.
        smoothing: added to a row's total before normalising (in decayed co-visit units).
    """

    half_life_s: float = 7 * 86_400.0
    window_items: int = 5
    window_s: float = 3_600.0
    max_neighbours: int = 50
    query_items: int = 10
    smoothing: float = 1.0

    def __post_init__(self) -> None:
        if not self.half_life_s > 0:
            raise ConfigError(f"covisit half_life_s must be > 0, got {self.half_life_s}")
        if self.window_items < 1 or self.max_neighbours < 1 or self.query_items < 1:
            raise ConfigError("covisit window_items, max_neighbours and query_items must be >= 1")
        if self.window_s < 0 or self.smoothing < 0:
            raise ConfigError("covisit window_s and smoothing must be >= 0")


class CovisitCounts:
    """Decayed, bounded co-visitation counts. Mutable, worker-local, clock-free."""

    def __init__(self, params: CovisitParams | None = None) -> None:
        self.params = params or CovisitParams()
        self._rows: dict[str, dict[str, float]] = {}

    def __len__(self) -> int:
        """Items with at least one neighbour."""
        return len(self._rows)

    def observe(self, prev_items: Sequence[tuple[str, float]], item_id: str, ts_s: float) -> None:
        """Count the co-visits of a new item with the same user's previous items.

        Args:
            prev_items: the user's items before this one as ``(item_id, ts_s)``, newest last
                (e.g. :func:`streams.interest.recent_positive` before the update).
            item_id: the new item.
            ts_s: its time, float seconds.
        """
        if not math.isfinite(ts_s):
            return
        p = self.params
        base = ts_s / p.half_life_s
        rank = 0
        paired: set[str] = {item_id}
        for prev_id, prev_ts in reversed(prev_items):
            if rank >= p.window_items:
                break
            if prev_id in paired:
                continue  # self-pairs and repeats count once, at their closest position
            paired.add(prev_id)
            rank += 1
            if not abs(ts_s - prev_ts) <= p.window_s:
                continue
            log_w = base - math.log2(rank)  # weight 1 / rank
            self._add(prev_id, item_id, log_w)
            self._add(item_id, prev_id, log_w)

    def neighbours(self, item_id: str, now_s: float, n: int) -> list[tuple[str, float]]:
        """The item's strongest co-visited items.

        Args:
            item_id: the item.
            now_s: query time.
            n: how many.

        Returns:
            ``[(item_id, decayed co-visit count), ...]``, descending, ties by item_id.
        """
        row = self._rows.get(item_id)
        if not row or n <= 0:
            return []
        h = self.params.half_life_s
        best = heapq.nsmallest(n, ((-log, i) for i, log in row.items()))
        return [(i, score_at(-neg, now_s, h)) for neg, i in best]

    def candidates(
        self,
        recent_items: Sequence[tuple[str, float]],
        now_s: float,
        n: int,
        exclude: Container[str] = _NO_EXCLUDE,
    ) -> list[tuple[str, float, str]]:
        """Items co-visited with the user's recent items.

        Args:
            recent_items: the user's recent items as ``(item_id, ts_s)``, newest last; the
                last ``query_items`` distinct ones are used.
            now_s: query time.
            n: how many candidates.
            exclude: item ids never to return (the user's seen set).

        Returns:
            ``[(item_id, score, because_item_id), ...]``, score descending, ties by item_id;
            ``because_item_id`` is the recent item that contributed most.
        """
        if n <= 0:
            return []
        p = self.params
        h = p.half_life_s
        scores: dict[str, float] = {}
        best_because: dict[str, tuple[float, str]] = {}
        used: set[str] = set()
        for rid, _ts in reversed(recent_items):
            if len(used) >= p.query_items:
                break
            if rid in used:
                continue
            recency = 1.0 / (1.0 + len(used))
            used.add(rid)
            row = self._rows.get(rid)
            if not row:
                continue
            # Shift by the row's max before exponentiating: exact ratios, no underflow.
            top = max(row.values())
            rel = {c: 2.0 ** (log - top) for c, log in row.items()}
            total_now = score_at(top, now_s, h)  # decayed count of the strongest neighbour
            denom = sum(rel.values()) + (p.smoothing / total_now if total_now > 0 else math.inf)
            for c, r in rel.items():
                if c in exclude:
                    continue
                contrib = recency * r / denom
                if contrib <= 0.0:
                    continue
                scores[c] = scores.get(c, 0.0) + contrib
                prev = best_because.get(c)
                if prev is None or contrib > prev[0]:
                    best_because[c] = (contrib, rid)
        best = heapq.nsmallest(n, ((-s, c) for c, s in scores.items()))
        return [(c, -neg, best_because[c][1]) for neg, c in best]

    def remove(self, item_id: str) -> None:
        """Forget an item (deleted from the catalogue): its row and its place in its neighbours' rows."""
        row = self._rows.pop(item_id, None)
        for other in row or ():
            other_row = self._rows.get(other)
            if other_row is not None:
                other_row.pop(item_id, None)
                if not other_row:
                    del self._rows[other]

    # ----------------------------------------------------------------- internals

    def _add(self, a: str, b: str, log_w: float) -> None:
        row = self._rows.get(a)
        if row is None:
            row = self._rows[a] = {}
        row[b] = log2_add(row.get(b, -math.inf), log_w)
        m = self.params.max_neighbours
        if len(row) > 2 * m:
            keep = heapq.nsmallest(m, ((-log, i) for i, log in row.items()))
            self._rows[a] = {i: -neg for neg, i in keep}
