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
* :class:`EaseModel` — EASE (Steck, 2019), the closed-form item-item model, refit every
  few thousand clicks on the clicks so far: the strongest of the three, and published.
* :class:`TextModel` — content only: every item by the cosine of its text vector with the
  user's recent items' mean. No crowd at all, so it is blind to popularity and equally at
  home with an item nobody clicked: what the encoder alone knows about a catalogue. Compare
  it across encoders (``RECSTREAM_MODEL__NAME``) to choose one for your items.

All are deterministic: no randomness, ties broken by item id by the counters.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from typing import Protocol

import numpy as np

from streams.covisit import CovisitCounts, CovisitParams
from streams.recommend import event_weight
from streams.records import Click
from streams.trending import Trending, TrendingParams

__all__ = ["BlockedItems", "CovisitModel", "EaseModel", "EvalModel", "PopularityModel", "TextModel"]

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

    def fill(self, out: list[str], now_s: float, k: int, exclude: Container[str]) -> list[str]:
        """``out`` topped up to ``k`` with the most popular items not in it or ``exclude``."""
        if len(out) < k:
            taken = set(out)
            top = self.trending.top(now_s, k, BlockedItems(_Union(exclude, taken), self.known))
            out.extend(i for i, _ in top[: k - len(out)])
        return out


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
        return self.popularity.fill(out, now_s, k, exclude)

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


#: EASE's L2 weight and refit interval, chosen on the first half of ml-100k's clicks only
#: (prequential NDCG@10): refit every 5,000 clicks, lambda 50 0.0596, 200 0.0617, 500
#: 0.0619, 1000 0.0613; lambda 300 / 500 refit every 1,000 clicks 0.0640 / 0.0637, every
#: 2,500 0.0630 / 0.0628 (covisit on the same clicks: 0.0926).
EASE_LAMBDA = 300.0
#: Clicks between EASE refits during a replay.
EASE_REFIT_EVERY = 1_000
#: EASE inverts an (items x items) matrix: beyond this many clicked items only the most
#: clicked ones are modelled (a dense 20k x 20k float64 matrix is 3.2 GB).
EASE_MAX_ITEMS = 10_000


class EaseModel:
    """EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019), refit
    during the replay: the strongest simple published baseline for next-item lists over a
    catalogue of this size.

    Closed form: with ``X`` the (users x items) 0/1 matrix of clicks so far,
    ``P = (X^T X + lambda I)^-1`` and ``B = -P / diag(P)`` with a zero diagonal; a user's
    scores are ``x_u B``. The model is refit on every click seen so far each
    ``refit_every`` clicks (so it is never fit on a click it is scored on), and between refits
    a user's score row follows their own new clicks (``+= B[item]``): their history is input,
    not training. Items first clicked after the last fit have no column yet (EASE has no cold
    start: that is the point of comparing with it), and a user with no score (no clicked item
    in the model) gets the popularity list, as the covisit baseline does.

    numpy's dense inverse, not a sparse or iterative solver: at the catalogue sizes eval
    runs (ml-100k: 1,682 items) one refit is a fraction of a second.
    """

    def __init__(self, lam: float = EASE_LAMBDA, refit_every: int = EASE_REFIT_EVERY,
                 max_items: int = EASE_MAX_ITEMS, name: str = "ease") -> None:
        self.name = name
        self.lam, self.refit_every, self.max_items = lam, refit_every, max_items
        self.popularity = PopularityModel()
        self.history: dict[str, dict[str, None]] = {}  # user -> clicked items, in order
        self._since_fit = 0
        self._columns: dict[str, int] = {}  # item -> column of B
        self._column_ids: list[str] = []
        self._b: np.ndarray | None = None  # (items, items) float32
        self._scores: dict[str, np.ndarray] = {}  # user -> x_u B

    def add_items(self, item_ids: Iterable[str]) -> None:
        self.popularity.add_items(item_ids)

    def remove_items(self, item_ids: Iterable[str]) -> None:
        self.popularity.remove_items(item_ids)

    def recommend(self, user_id: str, now_s: float, k: int, exclude: Container[str]) -> list[str]:
        blocked = BlockedItems(exclude, self.popularity.known)
        out: list[str] = []
        scores = self._scores.get(user_id)
        if scores is not None:
            ids = self._column_ids
            # the best few first; read on only when blocked items leave fewer than k there
            window = min(scores.size, 4 * k + len(self.history.get(user_id, ())))
            for width in (window, scores.size):
                best = np.argpartition(-scores, width - 1)[:width] if width < scores.size else np.arange(scores.size)
                ranked = sorted(zip(scores[best].tolist(), best.tolist(), strict=True), key=lambda t: (-t[0], ids[t[1]]))
                out = [ids[j] for score, j in ranked if score > 0 and ids[j] not in blocked][:k]
                if len(out) == k or width == scores.size:
                    break
        return self.popularity.fill(out, now_s, k, exclude)

    def observe(self, click: Click) -> None:
        self.popularity.observe(click)
        if event_weight(click) <= 0:
            return
        items = self.history.setdefault(click.user_id, {})
        if click.item_id not in items:
            items[click.item_id] = None
            column = self._columns.get(click.item_id)
            if column is not None and self._b is not None:
                row = self._scores.get(click.user_id)
                if row is None:
                    row = self._scores[click.user_id] = np.zeros(len(self._column_ids), dtype=np.float32)
                row += self._b[column]
        self._since_fit += 1
        if self._since_fit >= self.refit_every:
            self.fit()

    def fit(self) -> None:
        """Refit B on every click so far and recompute every user's scores."""
        self._since_fit = 0
        counts: dict[str, int] = {}
        for items in self.history.values():
            for item_id in items:
                counts[item_id] = counts.get(item_id, 0) + 1
        if not counts:
            return
        ids = sorted(counts, key=lambda i: (-counts[i], i))[: self.max_items]
        columns = {item_id: j for j, item_id in enumerate(ids)}
        users = list(self.history)
        x = np.zeros((len(users), len(ids)), dtype=np.float32)
        for u, user_id in enumerate(users):
            cols = [columns[i] for i in self.history[user_id] if i in columns]
            x[u, cols] = 1.0
        gram = (x.T @ x).astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.lam
        p = np.linalg.inv(gram)
        b = p / -np.diag(p)
        b[np.diag_indices_from(b)] = 0.0
        self._b = b.astype(np.float32)
        self._columns, self._column_ids = columns, ids
        scores = x @ self._b
        self._scores = {user_id: scores[u] for u, user_id in enumerate(users) if x[u].any()}


#: The user's most recent distinct positive items whose vectors make the text profile.
#: Chosen on the first half of ml-100k's clicks (text NDCG@10, all-MiniLM-L6-v2 vectors): 1
#: item 0.0155, 2 0.0159, 3 0.0156, 5 0.0145, 10 0.0118, 20 0.0094, 50 0.0078 (cold items:
#: 0.0135, 0.0168, 0.0176, 0.0162, 0.0143, 0.0126, 0.0095): a title says most about the next
#: title when it is the last one or two.
TEXT_WINDOW = 2


class TextModel:
    """Content-based: known items ranked by the cosine of their text vector with the mean of
    the user's last ``window`` distinct positive items' vectors (ties by item id).

    Exact (one product with every known item's vector per list), as the eval's catalogues
    are small. A user with no positive click yet gets no list: this model has nothing but
    the user's own items to go on, and no popularity filler to hide that.
    """

    def __init__(self, item_vectors: Mapping[str, np.ndarray], window: int = TEXT_WINDOW,
                 name: str = "text") -> None:
        self.name = name
        self.vectors = item_vectors
        self.window = window
        self._ids: list[str] = []  # rows of _matrix, in the order items became known
        self._row: dict[str, int] = {}
        self._matrix = np.zeros((0, 0), dtype=np.float32)  # (known items, dim), unit rows
        self.recent: dict[str, list[str]] = {}  # user -> distinct positive items, newest last

    def add_items(self, item_ids: Iterable[str]) -> None:
        new = [i for i in dict.fromkeys(item_ids) if i not in self._row and i in self.vectors]
        if not new:
            return
        rows = np.stack([np.asarray(self.vectors[i], dtype=np.float32) for i in new])
        rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        self._matrix = rows if not self._ids else np.concatenate([self._matrix, rows])
        for i in new:
            self._row[i] = len(self._ids)
            self._ids.append(i)

    def remove_items(self, item_ids: Iterable[str]) -> None:
        gone = {i for i in item_ids if i in self._row}
        if not gone:
            return
        keep = [r for r, i in enumerate(self._ids) if i not in gone]
        self._ids = [self._ids[r] for r in keep]
        self._matrix = self._matrix[keep]
        self._row = {i: r for r, i in enumerate(self._ids)}

    def recommend(self, user_id: str, now_s: float, k: int, exclude: Container[str]) -> list[str]:
        rows = [self._row[i] for i in self.recent.get(user_id, ()) if i in self._row]
        if not rows or k <= 0:
            return []
        ids, n = self._ids, len(self._ids)
        scores = self._matrix @ self._matrix[rows].mean(axis=0)
        width = min(n, 4 * k + len(rows))
        while True:  # the best few first; read on only when excluded items leave fewer than k
            best = np.argpartition(-scores, width - 1)[:width] if width < n else np.arange(n)
            ranked = sorted(best.tolist(), key=lambda r: (-scores[r], ids[r]))
            out = [ids[r] for r in ranked if ids[r] not in exclude][:k]
            if len(out) == k or width == n:
                return out
            width = min(n, 4 * width)

    def observe(self, click: Click) -> None:
        if event_weight(click) <= 0:
            return
        recent = self.recent.setdefault(click.user_id, [])
        if click.item_id in recent:
            recent.remove(click.item_id)
        recent.append(click.item_id)
        del recent[: -self.window]
