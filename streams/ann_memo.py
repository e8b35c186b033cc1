"""A user's vector queries answered again without the engine, when they repeat.

A click moves one of the user's interests (and the session vector); the interests it did not
move keep their vectors, so their queries repeat the user's last click's bit for bit: a
quarter of the index queries of ``recstream bench clickpath``'s stream (a third where every
user has two interests). :class:`AnnMemo` keeps, for the most recently active users, each
query of their last click with the engine's answer, and answers a repeat from it.

A repeat is answered as the engine would answer it now, not as it answered then. An answer
is the engine's ``k + 1`` best items for the query with the click's excluded items left out
(the user's newest, which change with every click), and it knows the lowest score it kept
(``floor``): every item it left out, other than the excluded ones, scored at most that. At the
next click:

* items excluded then but not now, and items written to the catalogue since (the catalogue
  mirrors the index and names what it changed, :meth:`~streams.catalog.ItemCatalog.changed_since`),
  are scored against the query and put in where they rank (the ones no longer there are taken
  out);
* the click's own exclusions are applied, and when ``k`` items remain they are the ``k`` best
  (each scores above ``floor``, nothing left out does); otherwise, or when the answer is older
  than the catalogue's log of writes, the engine is asked again.

So a new item is offered from its first moment as before, an exact index gives the same
lists with the memo or without it (the same items; a score the memo computed itself may
differ in its last float bits), and an HNSW index answers a repeat with what its graph found,
plus the items that changed scored exactly.

Pure: no I/O, no clock; bounded by the number of users it keeps (least recently seen dropped).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Set as AbstractSet
from typing import Any, NamedTuple

import numpy as np

from streams.catalog import ItemCatalog
from streams.index.base import Hit

__all__ = ["AnnMemo", "Answer", "query_key"]


def query_key(vector: np.ndarray) -> int:
    """The memo's key of a query vector: a hash of its float32 bytes, so that only the same
    vector, bit for bit, finds a remembered answer."""
    return hash(np.ascontiguousarray(vector, dtype=np.float32).tobytes())


class Answer(NamedTuple):
    """The engine's best items for one query with ``excluded`` left out, as of the catalogue's
    ``generation``: ``ids`` and their ``scores`` by score descending (ties by item id), and the
    ``floor`` no item left out (other than the excluded) can beat: ``-inf`` when the engine
    returned fewer than it was asked for, i.e. every item there was.

    The memo keeps it as a plain tuple of tuples, strings and numbers, not hit objects:
    CPython's collector stops tracking such tuples (not a named tuple's class, though) and the
    dicts that hold only them, so a memo of ~10k users adds nothing to the worker's full
    collections, which otherwise walk every object it keeps.
    """

    ids: tuple[str, ...]
    scores: tuple[float, ...]
    excluded: tuple[str, ...]
    floor: float
    generation: int

    @classmethod
    def of(cls, hits: list[Hit], asked: int, excluded: AbstractSet[str], generation: int) -> Answer:
        """The engine's answer to a request for ``asked`` hits with ``excluded`` left out."""
        return cls(tuple(h.item_id for h in hits), tuple(h.score for h in hits), tuple(excluded),
                   hits[-1].score if len(hits) >= asked else -math.inf, generation)

    def top(self, k: int, exclude: AbstractSet[str], vector: np.ndarray,
            catalog: ItemCatalog) -> tuple[list[Hit], Answer] | None:
        """The ``k`` best items for ``vector`` (the query's) with ``exclude`` left out, and the
        answer brought up to date (to keep for the next click); None when they cannot be known
        without the engine."""
        answer = self
        if answer.generation != catalog.generation:
            changed = catalog.changed_since(answer.generation)
            if changed is None:
                return None
            answer = answer._rescore(changed, vector, catalog)._replace(generation=catalog.generation)
        excluded = frozenset(answer.excluded)
        if excluded != exclude:
            answer = answer._rescore(excluded - exclude, vector, catalog)._replace(excluded=tuple(exclude))
        hits = [Hit(i, s) for i, s in zip(answer.ids, answer.scores, strict=True) if i not in exclude]
        if len(hits) < k and answer.floor > -math.inf:
            return None
        return hits[:k], answer

    def _rescore(self, item_ids: AbstractSet[str], vector: np.ndarray, catalog: ItemCatalog) -> Answer:
        """``item_ids`` taken out, and those the catalogue holds put back, scored against
        ``vector``, where they rank (those at or under ``floor`` rank below what is unknown)."""
        if not item_ids:
            return self
        pairs = [(i, s) for i, s in zip(self.ids, self.scores, strict=True) if i not in item_ids]
        present = [item_id for item_id in item_ids if item_id in catalog]
        if present:
            unit = vector / max(float(np.linalg.norm(vector)), 1e-12)
            scores = catalog.vectors(catalog.rows(present, len(present))) @ unit
            pairs.extend((i, s) for i, s in zip(present, scores.tolist(), strict=True) if s > self.floor)
            pairs.sort(key=lambda pair: (-pair[1], pair[0]))
        return self._replace(ids=tuple(i for i, _ in pairs), scores=tuple(s for _, s in pairs))


class AnnMemo:
    """The queries of each recently active user's last click, with the engine's answers."""

    def __init__(self, users: int) -> None:
        """Args:
            users: how many users' answers are kept (the least recently seen go first); 0: none.
        """
        self._users = users
        self._answers: OrderedDict[str, dict[int, tuple[Any, ...]]] = OrderedDict()  # Answers as plain tuples

    def __len__(self) -> int:
        return len(self._answers)

    def copy(self) -> AnnMemo:
        """An independent memo holding the same answers (a benchmark's starting point)."""
        memo = AnnMemo(self._users)
        for user_id, mine in self._answers.items():
            memo._answers[user_id] = dict(mine)  # answers are immutable
        return memo

    def recall(self, user_id: str, key: int) -> Answer | None:
        """The answer to the user's query ``key`` at their last click, if it was asked then."""
        mine = self._answers.get(user_id)
        kept = mine.get(key) if mine is not None else None
        return Answer._make(kept) if kept is not None else None

    def keep(self, user_id: str, answers: dict[int, Answer]) -> None:
        """Remember the answers to the user's queries of this click (and forget their last click's)."""
        if self._users <= 0:
            return
        self._answers[user_id] = {key: tuple(answer) for key, answer in answers.items()}
        self._answers.move_to_end(user_id)
        while len(self._answers) > self._users:
            self._answers.popitem(last=False)

    def forget(self, user_id: str) -> None:
        """Drop the user's answers (the user was forgotten)."""
        self._answers.pop(user_id, None)
