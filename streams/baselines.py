"""Baseline recommenders for the prequential eval, and the one model interface eval drives.

Every model the eval compares (recstream itself and the baselines here) is driven through
:class:`EvalModel`: items appear (:meth:`~EvalModel.add_items`) and disappear
(:meth:`~EvalModel.remove_items`) when their item records do; for each click the model is
first asked for ``k`` items for that user (:meth:`~EvalModel.recommend`, with the user's
clicked items in ``exclude``) and only then shown the click (:meth:`~EvalModel.observe`).

The baselines reuse recstream's own aggregate counters, so they differ from recstream only
in how they turn the same evidence into a list:

* :class:`PopularityModel` — the most popular items by decayed count
  (:class:`streams.trending.Trending`), the same list for every user.
* :class:`CovisitModel` — item-to-item co-occurrence (:class:`streams.covisit.CovisitCounts`)
  over the user's recent items, filled with the popularity list when it offers fewer than
  ``k`` items.

Both are deterministic: no randomness, ties broken by item id by the counters.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Protocol

from streams.covisit import CovisitCounts, CovisitParams
from streams.recommend import event_weight
from streams.records import Click
from streams.trending import Trending, TrendingParams

__all__ = ["BlockedItems", "CovisitModel", "EvalModel", "PopularityModel"]

#: Decayed-popularity half-life of the baselines: one week. Measured on the first 10k
#: ml-100k clicks (popularity NDCG@10): 1 day 0.0307, 1 week 0.0363, 30 days 0.0368,
#: 1 year 0.0367, so the baselines are within ~1% of their best half-life, not handicapped.
BASELINE_POPULARITY_HALF_LIFE_S = 7 * 86_400.0


class EvalModel(Protocol):
    """What the eval loop needs from a model; one loop drives every model alike."""

    name: str

    def add_items(self, item_ids: Iterable[str]) -> None:
        """Items became known (their item record arrived): they may be recommended."""
        ...

    def remove_items(self, item_ids: Iterable[str]) -> None:
        """Items were withdrawn: never recommend them again."""
        ...

    def recommend(self, user_id: str, now_s: float, k: int, exclude: Container[str]) -> list[str]:
        """Up to ``k`` distinct known item ids for the user, best first, none in ``exclude``."""
        ...

    def observe(self, click: Click) -> None:
        """Reveal a click (after it was predicted)."""
        ...


class BlockedItems:
    """A container that holds the excluded ids and every id not known (yet or any more)."""

    __slots__ = ("_exclude", "_known")

    def __init__(self, exclude: Container[str], known: Container[str]) -> None:
        self._exclude = exclude
        self._known = known

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._exclude or item_id not in self._known


class PopularityModel:
    """Decayed popularity: the same top list for everyone, seen items skipped."""

    def __init__(self, params: TrendingParams | None = None, name: str = "popularity") -> None:
        self.name = name
        # Remember every item: the baseline must not forget the long tail to save memory.
        self.trending = Trending(params or TrendingParams(half_life_s=BASELINE_POPULARITY_HALF_LIFE_S,
                                                          max_items=1_000_000))
        self.known: set[str] = set()

    def add_items(self, item_ids: Iterable[str]) -> None:
        self.known.update(item_ids)

    def remove_items(self, item_ids: Iterable[str]) -> None:
        for item_id in item_ids:
            self.known.discard(item_id)
            self.trending.remove(item_id)

    def recommend(self, user_id: str, now_s: float, k: int, exclude: Container[str]) -> list[str]:
        return [i for i, _ in self.trending.top(now_s, k, BlockedItems(exclude, self.known))]

    def observe(self, click: Click) -> None:
        self.trending.observe(click.item_id, click.ts_s, event_weight(click))


class CovisitModel:
    """Item-to-item co-visitation over the user's recent items, popularity as the filler."""

    def __init__(self, params: CovisitParams | None = None, popularity: TrendingParams | None = None,
                 name: str = "covisit") -> None:
        self.name = name
        self.covisit = CovisitCounts(params)
        self.popularity = PopularityModel(popularity)
        self.recent: dict[str, list[tuple[str, float]]] = {}  # user -> [(item, ts)], newest last
        self._keep = max(self.covisit.params.window_items, self.covisit.params.query_items)

    def add_items(self, item_ids: Iterable[str]) -> None:
        self.popularity.add_items(item_ids)

    def remove_items(self, item_ids: Iterable[str]) -> None:
        item_ids = list(item_ids)
        self.popularity.remove_items(item_ids)
        for item_id in item_ids:
            self.covisit.remove(item_id)

    def recommend(self, user_id: str, now_s: float, k: int, exclude: Container[str]) -> list[str]:
        blocked = BlockedItems(exclude, self.popularity.known)
        out = [c for c, _score, _because in
               self.covisit.candidates(self.recent.get(user_id, ()), now_s, k, blocked)]
        if len(out) < k:
            taken = set(out)
            fill = self.popularity.trending.top(now_s, k, BlockedItems(_Union(exclude, taken),
                                                                        self.popularity.known))
            out.extend(i for i, _ in fill[: k - len(out)])
        return out

    def observe(self, click: Click) -> None:
        self.popularity.observe(click)
        if event_weight(click) <= 0:
            return
        recent = self.recent.setdefault(click.user_id, [])
        self.covisit.observe(recent, click.item_id, click.ts_s)
        recent[:] = [(i, t) for i, t in recent if i != click.item_id]
        recent.append((click.item_id, click.ts_s))
        del recent[: -self._keep]


class _Union:
    __slots__ = ("_a", "_b")

    def __init__(self, a: Container[str], b: Container[str]) -> None:
        self._a, self._b = a, b

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._a or item_id in self._b
