"""The ANN memo: a repeated query answered as the index would answer it now."""

from __future__ import annotations

import gc

import numpy as np

from streams.ann_memo import AnnMemo, Answer, query_key
from streams.catalog import ItemCatalog, ItemInfo
from streams.index.base import Hit
from streams.index.memory import MemoryIndex

K = 5


def _unit(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class _Items:
    """An index and the catalogue that mirrors it, written together as the replica writes them."""

    def __init__(self) -> None:
        self.index, self.catalog = MemoryIndex(16), ItemCatalog()

    def put(self, ids: list[str], vectors: np.ndarray) -> None:
        self.index.upsert(ids, vectors)
        for item_id, v in zip(ids, vectors, strict=True):
            self.catalog.put(item_id, ItemInfo(vector=v))

    def remove(self, ids: list[str]) -> None:
        self.index.delete(ids)
        for item_id in ids:
            self.catalog.remove(item_id)


def _ask(items: _Items, vector: np.ndarray, newest: frozenset[str]) -> Answer:
    """What the recommender asks the index for a query it does not remember (k + 1 hits)."""
    [row] = items.index.search_batch(vector[None, :], K + 1, exclude=[newest])
    return Answer.of(row, K + 1, newest, items.catalog.generation)


def test_a_remembered_answer_follows_the_exclusions_and_the_catalogues_writes():
    """Queries repeat while the user's newest items change and items arrive, change and go:
    every answer from the memo is the index's own answer at that moment."""
    rng = np.random.default_rng(7)
    items = _Items()
    items.put([f"i{j}" for j in range(300)], _unit(rng, 300))
    queries = _unit(rng, 4)
    answers: dict[int, Answer] = {}
    recalled = 0
    history: list[str] = []
    for step in range(400):
        q = int(rng.integers(len(queries)))
        newest = frozenset(history[-K:])
        answer = answers.get(q)
        known = answer.top(K, newest, queries[q], items.catalog) if answer is not None else None
        if known is None:
            answers[q] = _ask(items, queries[q], newest)
            hits = answers[q].top(K, newest, queries[q], items.catalog)[0]
        else:
            hits, answers[q] = known
            recalled += 1
        truth = items.index.search(queries[q], K, exclude=newest)
        assert [h.item_id for h in hits] == [h.item_id for h in truth], step
        assert np.allclose([h.score for h in hits], [h.score for h in truth], atol=1e-5)
        # the user clicks one of the hits (it becomes one of their newest); the catalogue changes
        history.append(hits[int(rng.integers(len(hits)))].item_id)
        change = rng.random()
        if change < 0.15:  # a new item, sometimes right beside a query
            v = queries[int(rng.integers(len(queries)))] + 0.3 * _unit(rng, 1)[0]
            items.put([f"new{step}"], (v / np.linalg.norm(v))[None, :])
        elif change < 0.25:
            items.remove([f"i{int(rng.integers(300))}"])
        elif change < 0.3:  # an item re-encoded
            items.put([f"i{int(rng.integers(300))}"], _unit(rng, 1))
    assert recalled > 200  # most queries were answered by the memo


def _fifty_items_and_an_answer(rng: np.random.Generator) -> tuple[_Items, np.ndarray, Answer]:
    items = _Items()
    items.put([f"i{j}" for j in range(50)], _unit(rng, 50))
    q = _unit(rng, 1)[0]
    return items, q, _ask(items, q, frozenset())


def test_an_answer_older_than_the_catalogues_log_is_asked_again():
    rng = np.random.default_rng(1)
    items, q, answer = _fifty_items_and_an_answer(rng)
    items.put([f"n{j}" for j in range(ItemCatalog.LOG_WRITES + 1)], _unit(rng, ItemCatalog.LOG_WRITES + 1))
    assert answer.top(K, frozenset(), q, items.catalog) is None


def test_an_answer_that_runs_short_of_k_asks_again_unless_it_held_everything():
    rng = np.random.default_rng(2)
    items, q, answer = _fifty_items_and_an_answer(rng)
    too_many = frozenset(answer.ids[:2])  # two of its k + 1 excluded now
    assert answer.top(K, too_many, q, items.catalog) is None
    small = _Items()
    small.put(["a", "b", "c"], _unit(rng, 3))
    everything = _ask(small, q, frozenset())  # fewer than asked: all there is
    assert [h.item_id for h in everything.top(K, frozenset({"a"}), q, small.catalog)[0]] == \
        [h.item_id for h in small.index.search(q, K, exclude=frozenset({"a"}))]


def test_the_memo_keeps_the_last_click_of_its_most_recent_users_and_forgets_on_demand():
    memo = AnnMemo(users=2)
    answer = Answer((), (), (), -np.inf, 0)
    key = query_key(np.ones(4, dtype=np.float32))
    memo.keep("u1", {key: answer})
    memo.keep("u2", {key: answer})
    memo.keep("u1", {key: answer})  # u1 seen again: u2 is now the least recent
    memo.keep("u3", {key: answer})
    assert memo.recall("u2", key) is None and memo.recall("u1", key) == answer and len(memo) == 2
    memo.keep("u1", {})  # the next click's queries replace the last click's
    assert memo.recall("u1", key) is None
    memo.forget("u3")
    assert memo.recall("u3", key) is None
    assert query_key(np.ones(4, dtype=np.float32)) != query_key(np.full(4, 1.0000001, dtype=np.float32))
    off = AnnMemo(users=0)
    off.keep("u1", {key: answer})
    assert off.recall("u1", key) is None


def test_the_memo_holds_nothing_the_collector_must_walk():
    """A worker's full collections walk every tracked object: ~10k users' answers must not add
    hundreds of thousands of them (the memo keeps plain tuples, which CPython untracks)."""
    memo = AnnMemo(users=1_000)
    hits = [Hit(f"i{j}", 1.0 - j / 100) for j in range(K + 1)]
    gc.collect()
    before = len(gc.get_objects())
    for u in range(1_000):
        memo.keep(f"u{u}", {q: Answer.of(hits, K + 1, frozenset({"x", f"y{u}"}), 0) for q in range(3)})
    gc.collect()
    assert len(gc.get_objects()) - before < 1_000  # tracked, they would be 4,000: a dict and 3 answers a user
    assert memo.recall("u7", 2) == Answer.of(hits, K + 1, frozenset({"x", "y7"}), 0)
