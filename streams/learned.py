"""A ranker learned from the click stream: which offered item does a user click next?

Every recommendation is a question the stream answers. When a user is ranked, the features
of their best candidates are kept (:meth:`RankerTrainer.offered`); when the same user clicks
next, the clicked item among them is the positive and the rest are negatives
(:meth:`RankerTrainer.clicked`). Every ``refit_every`` answered questions a logistic
regression (scikit-learn) is refit on the most recent answers, and its weights replace the
hand-tuned blend. Until the first fit, the hand-tuned blend ranks.

The model is linear over features a person can read (:data:`FEATURES`): each generator's
normalised score, the item's popularity, whether the item is cold or the user new, and
their products with the signals that matter most there, so that the weights say, e.g., how
much more text similarity counts for an item nobody has clicked yet. ``weights()`` lists
them. Pure: no clock, no I/O; deterministic for the same stream.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np

#: The generators whose normalised scores are features, in this order. Not trending's own
#: score: popularity (below) carries it, and the two together are collinear (on ml-100k the
#: fit then weighs trending negatively, and ranks a new user's trending-only list upside
#: down: NDCG@10 0.1037 with it, 0.1039 without, new users 0.2063 against 0.2127).
SOURCES = ("interest", "session", "covisit", "colike", "sequence")
#: Every feature, in the order of a feature row.
FEATURES = (*SOURCES, "popularity", "cold_item", "new_user", "cold_item*interest", "cold_item*session",
            "cold_item*sequence", "new_user*covisit", "new_user*trending")
#: An item with fewer decayed clicks than this is cold, a user with fewer recent events new
#: (the eval's segments use the same thresholds on raw counts).
COLD_ITEM_CLICKS = 5.0
NEW_USER_EVENTS = 3
_AT = {name: j for j, name in enumerate(FEATURES)}


def feature_rows(norm: np.ndarray, names: list[str], popularity: np.ndarray, activity: np.ndarray) -> np.ndarray:
    """Feature rows (:data:`FEATURES`) of stacked candidates.

    Args:
        norm: ``(rows, len(names))`` each generator's normalised score, 0 where it gave none.
        names: the generators behind ``norm``'s columns.
        popularity: ``(rows,)`` the item's decayed click count.
        activity: ``(rows,)`` the user's recent events.
    """
    x = np.zeros((norm.shape[0], len(FEATURES)))
    for source in SOURCES:
        if source in names:
            x[:, _AT[source]] = norm[:, names.index(source)]
    trending = norm[:, names.index("trending")] if "trending" in names else np.zeros(norm.shape[0])
    cold = (popularity < COLD_ITEM_CLICKS).astype(np.float64)
    new = (activity < NEW_USER_EVENTS).astype(np.float64)
    x[:, _AT["popularity"]] = np.log1p(np.maximum(popularity, 0.0))
    x[:, _AT["cold_item"]], x[:, _AT["new_user"]] = cold, new
    for source in ("interest", "session", "sequence"):
        x[:, _AT[f"cold_item*{source}"]] = cold * x[:, _AT[source]]
    x[:, _AT["new_user*covisit"]] = new * x[:, _AT["covisit"]]
    x[:, _AT["new_user*trending"]] = new * trending
    return x


@dataclass(frozen=True, slots=True)
class LinearRanker:
    """Relevance = the fitted log-odds of being clicked next, over :data:`FEATURES`."""

    coef: np.ndarray  # (features,)
    intercept: float
    version: str

    def relevance(self, x: np.ndarray) -> np.ndarray:
        # a row-wise sum, not a BLAS product: a row's figure must not depend on the rows
        # stacked with it (a user's list does not depend on their batch)
        return (x * self.coef).sum(axis=1) + self.intercept

    def source_weight(self, source: str) -> float:
        """How much a generator's normalised score adds, for naming the source of an item
        (trending's by the popularity it stands for)."""
        feature = "popularity" if source == "trending" else source
        return float(self.coef[FEATURES.index(feature)]) if feature in FEATURES else 0.0

    def weights(self) -> dict[str, float]:
        return {name: round(float(w), 4) for name, w in zip(FEATURES, self.coef, strict=True)}


class RankerTrainer:
    """Questions asked (a user's candidates' features), answered by their next click; refits."""

    def __init__(self, *, refit_every: int = 2_000, keep_rows: int = 100_000, keep_users: int = 20_000,
                 per_question: int = 30) -> None:
        """Args:
            refit_every: answered questions between refits.
            keep_rows: the most recent answers' rows a fit learns from (~100 KB per 1,000).
            keep_users: open questions kept (the most recent users'; ~1.5 KB each).
            per_question: a question's candidates, the most relevant (the rest are rarely clicked).
        """
        self.refit_every = refit_every
        self.per_question = per_question
        self._keep_users = keep_users
        self._open: OrderedDict[str, tuple[list[str], np.ndarray]] = OrderedDict()  # user -> last question
        self._answers: deque[tuple[np.ndarray, np.ndarray]] = deque()  # (rows, labels)
        self._rows = 0
        self._keep_rows = keep_rows
        self._since_fit = 0

    def offered(self, user_id: str, item_ids: list[str], x: np.ndarray, relevance: np.ndarray) -> None:
        """The user's candidates now (their next click answers this question, the last one asked)."""
        if len(item_ids) > self.per_question:
            top = np.argsort(-relevance, kind="stable")[: self.per_question]
            item_ids, x = [item_ids[j] for j in top.tolist()], x[top]
        self._open[user_id] = (item_ids, x.astype(np.float32))
        self._open.move_to_end(user_id)
        while len(self._open) > self._keep_users:
            self._open.popitem(last=False)

    def clicked(self, user_id: str, item_id: str | None) -> bool:
        """The user clicked ``item_id``: answer their open question; True when a refit is due.
        A click on nothing offered, or a dislike (``None``), closes the question unanswered:
        there is no positive to learn from."""
        question = self._open.pop(user_id, None)
        if question is None or item_id is None:
            return False
        item_ids, x = question
        labels = np.fromiter((i == item_id for i in item_ids), dtype=bool, count=len(item_ids))
        if not labels.any():
            return False
        self._answers.append((x, labels))
        self._rows += len(item_ids)
        while self._rows - len(self._answers[0][1]) >= self._keep_rows:
            self._rows -= len(self._answers.popleft()[1])
        self._since_fit += 1
        return self._since_fit >= self.refit_every

    def answers(self) -> Answers:
        """The kept answers as they are now (a list: appending more does not change it)."""
        self._since_fit = 0
        return list(self._answers)


#: Answered questions: each a user's candidates' feature rows and which one they clicked.
Answers = list[tuple[np.ndarray, np.ndarray]]


def fit_ranker(answers: Answers) -> LinearRanker | None:
    """A logistic regression (scikit-learn) on ``answers``; None when they hold one class only.
    Safe to run in another thread: it reads nothing but ``answers``.

    The weights are what a command prints to explain the ranking, so they must be the fit's
    one optimum. Several features nearly repeat each other (a score and its product with
    cold_item or new_user), and along such a pair the fit barely changes: a solver stopped at
    scikit-learn's default tolerance leaves those weights wherever it happened to be (on
    ml-100k's answers: session 0.35 and cold_item*session 1.16, against 1.54 and -0.43 at the
    optimum, for nearly the same predictions). So the features are standardised (the L2
    penalty then weighs them alike, however their scales differ) and the solver runs to a
    tolerance where the weights stop moving (~35 iterations, ~0.3 s on 100k answers, as long
    as the default tolerance took on the raw features); the weights are turned back to the
    features' own units."""
    from sklearn.linear_model import LogisticRegression

    if not answers:
        return None
    x = np.concatenate([a for a, _ in answers]).astype(np.float64)
    y = np.concatenate([b for _, b in answers])
    if y.all() or not y.any():
        return None
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=1.0, max_iter=500, tol=1e-6)
    model.fit((x - mean) / scale, y)
    coef = model.coef_[0].astype(np.float64) / scale
    intercept = float(model.intercept_[0]) - float(coef @ mean)
    digest = hashlib.sha256(coef.tobytes()).hexdigest()[:8]
    return LinearRanker(coef=coef, intercept=intercept, version=f"linear@{digest}")
