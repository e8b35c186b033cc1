"""The learned ranker: questions asked at ranking, answered by the next click, refit, used."""

from __future__ import annotations

import numpy as np

from streams.learned import FEATURES, SOURCES, LinearRanker, RankerTrainer, feature_rows, fit_ranker
from streams.ranking import Offers, RankParams, RankRequest, rank_batch


def test_feature_rows_name_every_column():
    norm = np.array([[0.5, 1.0], [0.0, 0.2]])
    x = feature_rows(norm, ["covisit", "trending"], popularity=np.array([10.0, 1.0]), activity=np.array([1, 9]))
    assert x.shape == (2, len(FEATURES))
    row = dict(zip(FEATURES, x[0], strict=True))
    assert row["covisit"] == 0.5 and row["new_user*trending"] == 1.0 and row["interest"] == 0.0
    assert row["popularity"] == np.log1p(10.0)
    assert row["cold_item"] == 0.0 and row["new_user"] == 1.0 and row["new_user*covisit"] == 0.5
    assert dict(zip(FEATURES, x[1], strict=True))["cold_item"] == 1.0


def test_a_question_is_answered_by_the_users_next_click_only_when_it_offered_the_item():
    trainer = RankerTrainer(refit_every=2)
    x = np.eye(3, len(FEATURES))
    trainer.offered("u", ["a", "b", "c"], x, np.array([3.0, 2.0, 1.0]))
    assert trainer.clicked("u", "z") is False  # not offered: nothing learned, question closed
    assert trainer.clicked("u", "a") is False  # no open question any more
    trainer.offered("u", ["a", "b", "c"], x, np.array([3.0, 2.0, 1.0]))
    assert trainer.clicked("u", "b") is False  # answered: one of two before a refit
    trainer.offered("w", ["a", "b"], x[:2], np.array([1.0, 2.0]))
    assert trainer.clicked("w", None) is False  # a dislike: closed, not answered
    trainer.offered("v", ["a", "b"], x[:2], np.array([1.0, 2.0]))
    assert trainer.clicked("v", "b") is True  # the second answer: a refit is due
    ranker = fit_ranker(trainer.answers())
    assert ranker is not None and ranker.version.startswith("linear@")
    # "b" (feature 1) was the answer both times: it weighs more than "a" (feature 0)
    assert ranker.weights()[FEATURES[1]] > ranker.weights()[FEATURES[0]]


def test_only_the_best_candidates_are_kept_per_question():
    trainer = RankerTrainer(per_question=2)
    x = np.arange(4 * len(FEATURES), dtype=float).reshape(4, -1)
    trainer.offered("u", ["a", "b", "c", "d"], x, np.array([1.0, 4.0, 3.0, 2.0]))
    trainer.clicked("u", "a")  # "a" was not among the two best: nothing to learn
    assert fit_ranker(trainer.answers()) is None


def _offers(rng: np.random.Generator, n: int) -> Offers:
    sources = [*SOURCES, "trending"]
    scores = rng.random((n, len(sources))) * 10
    scores[rng.random(scores.shape) < 0.4] = np.nan
    scores[:, 0] = rng.random(n)  # every item scored by someone
    return Offers(item_ids=[f"i{j}" for j in range(n)], vectors=rng.standard_normal((n, 4)).astype(np.float32),
                  sources=sources, scores=scores, reasons={})


def test_a_learned_ranker_ranks_by_its_weights_and_names_the_source_it_weighs_most():
    rng = np.random.default_rng(4)
    offers = _offers(rng, 30)
    coef = np.zeros(len(FEATURES))
    coef[SOURCES.index("covisit")] = 5.0  # only co-visitation counts
    ranker = LinearRanker(coef=coef, intercept=-2.0, version="linear@test")
    params = RankParams(diversity=0.0, multi_source_bonus=0.0)
    [ranked] = rank_batch([RankRequest(offers)], k=5, params=params, ranker=ranker)
    covisit = np.nan_to_num(offers.scores[:, SOURCES.index("covisit")], nan=-1.0)
    best = sorted(range(30), key=lambda j: (-covisit[j], f"i{j}"))[:5]
    assert [r.item_id for r in ranked] == [f"i{j}" for j in best]
    assert {r.source for r in ranked} == {"covisit"}


def test_with_a_ranker_a_users_list_still_does_not_depend_on_the_batch():
    rng = np.random.default_rng(5)
    ranker = LinearRanker(coef=rng.standard_normal(len(FEATURES)), intercept=0.0, version="linear@test")
    requests = [RankRequest(_offers(rng, int(n)), activity=int(a)) for n, a in zip([5, 40, 12], [0, 7, 2])]
    asked: list[tuple[int, list[str]]] = []
    together = rank_batch(requests, k=4, params=RankParams(diversity=0.2), ranker=ranker,
                          questions=lambda b, ids, x, rel: asked.append((b, ids)))
    assert together == [rank_batch([r], k=4, params=RankParams(diversity=0.2), ranker=ranker)[0] for r in requests]
    assert [b for b, _ in asked] == [0, 1, 2] and [len(ids) for _, ids in asked] == [5, 40, 12]


def test_the_printed_weights_are_the_fits_optimum_not_where_the_solver_stopped():
    """Some features nearly repeat each other (a cold item's score and its product with
    cold_item, say): the weights along such a pair barely change the fit, and a solver that
    stops early leaves them wherever it was. The weights a command prints must be the one
    optimum of the regularised fit, whatever the features' scales."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    n, f = 20_000, len(FEATURES)
    x = rng.random((n, f)) * rng.choice([0.01, 1.0, 30.0], size=f)  # scales as different as popularity's
    cold = rng.random(n) < 0.1
    x[:, 1] = x[:, 0] * cold + 0.001 * rng.random(n)  # nearly a copy of feature 0's cold part
    logits = 3.0 * x[:, 0] / x[:, 0].max() - 2.0
    y = rng.random(n) < 1.0 / (1.0 + np.exp(-logits))
    answers = [(x[i:i + 20].astype(np.float32), y[i:i + 20]) for i in range(0, n, 20)]
    ranker = fit_ranker(answers)
    assert ranker is not None
    z = np.concatenate([a for a, _ in answers]).astype(np.float64)
    mean, scale = z.mean(axis=0), z.std(axis=0)
    exact = LogisticRegression(C=1.0, max_iter=10_000, tol=1e-12).fit((z - mean) / scale, y)
    assert np.allclose(ranker.coef, exact.coef_[0] / scale, atol=1e-3)
