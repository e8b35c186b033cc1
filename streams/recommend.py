"""From clicks to ranked, explained lists: the one code path workers and eval share.

A :class:`Recommender` reads the worker's knowledge of items (the :class:`ItemCatalog` and
the vector index, kept by the index replica) and owns what it learns from the crowd
(co-visitation, co-likes, trending, exposure); per-user state is passed in and returned,
never held, so the caller decides where it lives (a faust table in workers, a dict in eval).

A batch of users (:meth:`Recommender.recommend_batch`) costs O(states + candidates), never
O(catalogue):
1. candidates: the vector queries of every user (the strongest interests plus the session
   vector) in one index call, co-visitation and co-like neighbours of each user's recent
   items, and trending items;
2. seen items dropped (the index over-fetches instead of filtering: docs/architecture.md);
3. :func:`streams.ranking.rank_batch` blends, diversifies (MMR) and explains, every user at once.

Prequential use (eval): ``recommend(state, now)`` first, then ``observe(state, click)``.
Streaming use (workers): ``apply`` each click of a batch in order, ``recommend_batch`` on the
batch's users, then ``learn`` what the batch taught the crowd once its answers are on their way.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import NamedTuple

import msgspec
import numpy as np

from streams.catalog import ItemCatalog, ItemInfo
from streams.covisit import CoScores, CovisitCounts, CovisitParams, CovisitState, lookup_batch
from streams.index.base import Hit, VectorIndex
from streams.learned import Answers, LinearRanker, RankerTrainer, fit_ranker
from streams.interest import (
    EVENT_WEIGHTS,
    InterestParams,
    UserState,
    active_interests,
    recent_positive,
    seen_items,
    session_vector,
    update_interest,
)
from streams.ranking import OfferBatch, Offers, RankedItem, RankParams, RankRequest, rank_batch
from streams.records import Click
from streams.sequence import SequenceModel, top_n
from streams.settings import Settings
from streams.trending import Trending, TrendingParams, TrendingState


#: Ranking as tuned on ml-100k with ``recstream eval`` (prequential NDCG@10). Co-visitation
#: is the strongest next-click signal there, co-likes and popularity add to it, title/genre
#: similarity is a weak one, so every candidate is scored by all of them (``cross_score``)
#: and the scores are summed (``fusion="sum"``) rather than maxed. First 30k clicks, one
#: change at a time: co-likes at weight 1.0 0.0888, at 0.5 0.0896; trending 0.4 -> 0.2
#: 0.0901 (then the co-likes' own knobs, see ``COLIKE``). All 100k clicks, as shipped: 0.1031
#: against covisit 0.1006 and popularity 0.0384.
#: Popularity counts at full weight only from 5 (decayed) clicks up: on a cold catalogue a
#: stranger's single click must not outrank a user's own interest (ml-100k NDCG is the
#: same with a floor of 3, 0.0631 with 5, 0.0620 with 10, first 10k clicks).
TUNED_RANK = RankParams(
    diversity=0.1,
    source_weights=MappingProxyType({"interest": 0.1, "session": 0.1, "covisit": 1.0, "colike": 0.5,
                                     "trending": 0.2}),
    multi_source_bonus=0.0,
    exposure_penalty=0.0,
    fusion="sum",
    score_floors=MappingProxyType({"trending": 5.0}),
)


#: Long-term co-occurrence ("liked by the same people"): every pair among a user's last 50
#: positive items, whenever they happened, counted alike and cosine-normalised. Session
#: co-visitation sees what is clicked together; this sees taste shared over months.
#: ml-100k, first 30k clicks, recstream NDCG@10: 0.0870 without it, 0.0901 with it (50
#: neighbours per item), 0.0922 with 200 (rows pruned to the largest co-counts drop the
#: specific neighbours that cosine ranks first; pruning by cosine instead keeps noisy rare
#: pairs: 0.0840). 100 neighbours read from the 10 newest items: 0.0916, at half the memory
#: (at most 200 neighbours per engaged item) and about a quarter of the reading cost.
COLIKE = CovisitParams(window_items=50, window_s=math.inf, pair_weight="uniform", normalise="cosine",
                       max_neighbours=100, query_items=10)


@dataclass(frozen=True, slots=True)
class RecommenderParams:
    interest: InterestParams = field(default_factory=InterestParams)
    rank: RankParams = TUNED_RANK
    covisit: CovisitParams = field(default_factory=CovisitParams)
    colike: CovisitParams | None = COLIKE
    trending: TrendingParams = field(default_factory=TrendingParams)
    k: int = 10
    candidates_per_source: int = 20
    # Hits per ANN query (plus one per excluded seen item). 10, not 20: ml-100k first 30k
    # clicks NDCG@10 0.0916 either way (items the ANN leaves out are cross-scored), and half
    # the hits to fetch and map (bench clickpath at 20k items: 2.68 -> 2.37 ms per click).
    ann_candidates: int = 10
    # The user's strongest interests score every offered item (a dense product, cheap); only
    # the strongest ``interest_searches`` of them, and the session, also search the index (an
    # HNSW query and its hits to map are a click's largest single cost). ml-100k, first 30k
    # clicks, NDCG@10: 0.0966 with two searches and with one (cold items 0.0199 / 0.0198).
    max_interest_queries: int = 2
    interest_searches: int = 1  # + the session: 2 HNSW queries per click
    # A query this close (cosine) to a searching one of the same user does not search: it
    # would find the same items, and it still scores every offer. A user's first click makes
    # the session vector the interest's (and so do clicks that all land in one interest).
    repeat_query_cosine: float = 0.999
    exposure_half_life_s: float = 3_600.0
    cross_score: bool = True
    # Learn the blend from the stream (streams.learned): refit every this many answered
    # recommendations (a user's next click on an item offered to them); 0: hand-tuned only.
    ranker_refit_every: int = 2_000

    def version(self) -> str:
        """The ranker's version in recommendations: hand-tuned fusion, named by a digest of
        every knob, so a list can be traced to the settings that ranked it."""
        return "fusion@" + hashlib.sha256(repr(self).encode()).hexdigest()[:8]

    @classmethod
    def from_settings(cls, settings: Settings) -> RecommenderParams:
        s, r = settings.state, settings.recommend
        return cls(
            interest=InterestParams(
                max_interests=s.max_interests,
                recent_items=s.recent_items,
                interest_half_life_s=s.interest_half_life_s,
                session_half_life_s=s.session_half_life_s,
                merge_threshold=s.merge_threshold,
            ),
            rank=replace(TUNED_RANK, diversity=r.diversity),
            k=r.k,
            candidates_per_source=r.candidates_per_source,
            ranker_refit_every=r.ranker_refit_every,
        )


def event_weight(click: Click) -> float:
    """The click's strength: its explicit ``weight`` if given, else by event kind."""
    return click.weight if click.weight is not None else EVENT_WEIGHTS[click.event]


class CrowdEvent(msgspec.Struct, frozen=True, array_like=True):
    """What one click teaches the crowd, without the user: the clicked item, its time and
    strength, and the user's recent positive items before it (``(item_id, ts_s)``, newest
    last). Workers share these (:mod:`streams.stages.crowd`), so each ranks with the counts
    of every worker's clicks; :meth:`Recommender.learn` applies one."""

    item_id: str
    ts_s: float
    weight: float
    previous: list[tuple[str, float]] | None  # None: the user's first click (no co-visits counted)


class CrowdState(msgspec.Struct, frozen=True):
    """What a recommender learned from everyone's clicks (no user ids in it): the co-visitation
    and co-like counts, popularity and exposure, as plain data for a worker's snapshot."""

    covisit: CovisitState
    colike: CovisitState | None
    trending: TrendingState
    exposure: TrendingState


class Recommender:
    """Candidates -> ranking for one user at a time, over worker-local item knowledge."""

    def __init__(self, *, index: VectorIndex, catalog: ItemCatalog,
                 params: RecommenderParams = RecommenderParams()) -> None:
        self.index = index
        self.catalog = catalog
        self.params = params
        self.covisit = CovisitCounts(params.covisit)
        self.colike = CovisitCounts(params.colike) if params.colike is not None else None
        self.trending = Trending(params.trending)
        self.exposure = Trending(TrendingParams(half_life_s=params.exposure_half_life_s))
        self._ranker_version = params.version()  # the params are frozen: once
        self.trainer = RankerTrainer(refit_every=params.ranker_refit_every) if params.ranker_refit_every else None
        self.ranker: LinearRanker | None = None
        self.refit_due = False
        self.sequence: SequenceModel | None = None

    def model_versions(self) -> dict[str, str]:
        """Every model a list of this recommender depends on, by role."""
        versions = {"encoder": self.catalog.model_version, "ranker": self._ranker_version}
        if self.sequence is not None:
            versions["sequence"] = self.sequence.version
        return versions

    def use_sequence(self, model: SequenceModel | None) -> None:
        """Score with this next-item model from the next batch on (None: without one)."""
        self.sequence = model

    # ------------------------------------------------------------------ items

    def upsert_items(self, item_ids: Sequence[str], vectors: np.ndarray,
                     infos: Sequence[ItemInfo]) -> None:
        """Make items recommendable at once (index + catalog)."""
        self.index.upsert(item_ids, vectors)
        for item_id, info in zip(item_ids, infos, strict=True):
            self.catalog.put(item_id, info)

    def delete_items(self, item_ids: Sequence[str]) -> None:
        """Withdraw items: never recommended again, forgotten by every generator."""
        self.index.delete(item_ids)
        for item_id in item_ids:
            self.catalog.remove(item_id)
        self.forget_items(item_ids)

    def forget_items(self, item_ids: Sequence[str]) -> None:
        """Drop items from the crowd's counts (they left the catalogue and the index)."""
        for item_id in item_ids:
            self.covisit.remove(item_id)
            if self.colike is not None:
                self.colike.remove(item_id)
            self.trending.remove(item_id)
            self.exposure.remove(item_id)

    # ------------------------------------------------------------------ crowd

    def crowd(self) -> CrowdState:
        return CrowdState(covisit=self.covisit.state(),
                          colike=self.colike.state() if self.colike is not None else None,
                          trending=self.trending.state(), exposure=self.exposure.state())

    def restore_crowd(self, state: CrowdState) -> None:
        """Take over ``state`` (from :meth:`crowd`); ``ValueError`` when it is inconsistent."""
        p = self.params
        covisit = CovisitCounts.from_state(state.covisit, p.covisit)
        colike = (CovisitCounts.from_state(state.colike, p.colike)
                  if p.colike is not None and state.colike is not None else self.colike)
        self.covisit, self.colike = covisit, colike
        self.trending = Trending.from_state(state.trending, p.trending)
        self.exposure = Trending.from_state(state.exposure, self.exposure.params)

    def forget_absent_items(self) -> int:
        """Drop from the crowd counts every item the catalogue no longer holds (a restored
        crowd may name items deleted meanwhile); return how many counters dropped one."""
        counters = [self.covisit, self.trending, self.exposure, *([self.colike] if self.colike else [])]
        return sum(counter.keep_only(self.catalog) for counter in counters)

    # ------------------------------------------------------------------ users

    def observe(self, state: UserState | None, click: Click,
                learned: list[CrowdEvent] | None = None) -> UserState:
        """Apply a click to the user's state and to the crowd's aggregates; what the crowd
        learned from it is also appended to ``learned`` (for other workers), when given."""
        new, event = self.apply(state, click)
        if event is not None:
            self.learn(event)
            if learned is not None:
                learned.append(event)
        return new

    def apply(self, state: UserState | None, click: Click) -> tuple[UserState, CrowdEvent | None]:
        """The user's part of a click: their new state (the learned ranker hears the answer to
        their last list too), and what the click teaches the crowd, not learned yet (None for
        a replayed click, which counts once, and for a dislike). A worker learns a batch's
        lessons after its answers have left (:func:`streams.clickbatch.learn_batch`)."""
        weight = event_weight(click)
        new = update_interest(
            state, user_id=click.user_id, item_id=click.item_id,
            vector=self.catalog.vector(click.item_id), ts_s=click.ts_s, weight=weight,
            params=self.params.interest,
        )
        if new is state:  # a replayed click (at-least-once) counts once
            return new, None
        if self.trainer is not None and self.trainer.clicked(click.user_id, click.item_id if weight > 0 else None):
            self.refit_due = True  # the caller refits: eval at once, a worker off its event loop
        if weight <= 0:
            return new, None
        # the items before this click
        return new, CrowdEvent(click.item_id, click.ts_s, weight,
                               recent_positive(state) if state is not None else None)

    def refit_ranker(self) -> None:
        """Refit the learned ranker on the answered recommendations kept so far, now."""
        self.use_ranker(fit_ranker(self.ranker_answers()))

    def ranker_answers(self) -> Answers:
        """What a refit learns from (cheap: a worker takes it on its event loop and fits
        elsewhere with :func:`~streams.learned.fit_ranker`)."""
        self.refit_due = False
        return self.trainer.answers() if self.trainer is not None else []

    def use_ranker(self, ranker: LinearRanker | None) -> None:
        """Rank with ``ranker`` from now on (None: keep the current one)."""
        if ranker is not None:
            self.ranker, self._ranker_version = ranker, ranker.version

    def learn(self, event: CrowdEvent) -> None:
        """Count one click in the crowd's aggregates (this worker's or another's)."""
        self.trending.observe(event.item_id, event.ts_s, event.weight)
        if event.previous is not None:
            self.covisit.observe(event.previous, event.item_id, event.ts_s)
            if self.colike is not None:
                self.colike.observe(event.previous, event.item_id, event.ts_s)

    def candidates(self, state: UserState | None, now_s: float, *,
                   exclude: AbstractSet[str] = frozenset()) -> Offers:
        """Every generator's offers for this user, seen (and ``exclude``d) items already dropped."""
        [plan] = self._plans([Request(state, now_s, exclude)])
        self._search([plan])
        self._sequence([plan])
        batch, _ = self._offer_batch([plan], self._co_scores([plan]))
        return batch.offers(0) if batch is not None else _NO_OFFERS

    def recommend(self, state: UserState | None, now_s: float, *, record_exposure: bool = True,
                  exclude: AbstractSet[str] = frozenset()) -> list[RankedItem]:
        """The ranked, explained list for one user now: :meth:`recommend_batch` of one.

        Args:
            state: the user's state (None: a user never seen).
            now_s: query time.
            record_exposure: count the returned items as shown (exposure penalty).
            exclude: item ids never to return besides the state's seen set (eval passes
                every item the user ever clicked; the state remembers only the recent ones).
        """
        return self.recommend_batch([Request(state, now_s, exclude)], record_exposure=record_exposure)[0]

    def recommend_batch(self, requests: Sequence[Request], *, record_exposure: bool = True,
                        timings: dict[str, float] | None = None) -> list[list[RankedItem]]:
        """The ranked, explained list for each request, in order: the click path of a batch.

        The vector queries of every request go to the index in one call (one engine pass,
        one crossing into the engine), and their offers are ranked together (one stacked
        matrix); each list reads only its user's state and the shared counts, so it is the
        same whoever else is in the batch.

        ``timings``, when given, gains the seconds each step took (:data:`STEPS`), so a
        benchmark can say where a click's time goes (``recstream bench clickpath``).
        """
        lap = _Laps(timings)
        plans = self._plans(requests)
        lap("plan")
        self._search(plans)
        lap("search")
        self._sequence(plans)
        lap("sequence")
        batch, live = self._offer_batch(plans, self._co_scores(plans))
        lap("offers")
        ranked = self._rank(plans, batch, live, record_exposure)
        lap("rank")
        return ranked

    # ------------------------------------------------------------------ one batch

    def _plans(self, requests: Sequence[Request]) -> list[_Plan]:
        p = self.params
        plans = []
        for req in requests:
            state = req.state
            seen = seen_items(state) if state is not None else frozenset()
            if req.exclude:
                seen = seen | req.exclude
            queries = _vector_queries(state, req.now_s, p) if state is not None else []
            # The index over-fetches one hit per excluded id, so hand it only the newest
            # seen items (the likeliest neighbours of the queries) and drop the rest here:
            # the query cost stays bounded however long the user's history is.
            newest = frozenset(ev.item_id for ev in state.recent[-p.ann_candidates:]) if state else frozenset()
            plans.append(_Plan(state=state, now_s=req.now_s, seen=seen, newest=newest, queries=queries,
                               positive=recent_positive(state) if state is not None else []))
        return plans

    def _search(self, plans: Sequence[_Plan]) -> None:
        """Every plan's vector queries in one index call; each plan gets its rows of hits."""
        rows = [(plan, query) for plan in plans for query in plan.queries if query.search]
        if not rows or not len(self.catalog):  # the catalog mirrors the index; an exact count costs ~15 ms at 100k
            return
        hits = self.index.search_batch(np.stack([q.vector for _, q in rows]), self.params.ann_candidates,
                                       exclude=[plan.newest for plan, _ in rows])
        for (plan, _), row in zip(rows, hits, strict=True):
            plan.hits.append(row)

    def _text_vectors(self, item_ids: list[str]) -> np.ndarray:
        """The catalogue's vectors of ``item_ids`` (zeros for an item it no longer holds)."""
        rows = self.catalog.rows(item_ids, len(item_ids))
        out = self.catalog.vectors(np.maximum(rows, 0)).copy()
        out[rows < 0] = 0.0
        return out

    def _sequence(self, plans: Sequence[_Plan]) -> None:
        """The sequence model's view of every plan with a history: one onnxruntime run and
        one product with the item table for the batch; each plan gets its user vector, its
        best score over items it has not seen, and its top items (seen ones dropped), each
        with the past item closest to it in the model's space as the reason.

        An item's score is its probability relative to the user's best item's,
        ``exp(logit - best)``: the ranking reads a source's scores only relative to the user's
        best one, so the softmax's normaliser (a sum over the whole catalogue) would cancel.
        """
        model = self.sequence
        live = [plan for plan in plans if plan.positive]
        if model is None or not live or not model.item_ids:
            return
        histories = [[item_id for item_id, _ in plan.positive] for plan in live]
        users, pasts = model.users(histories, self._text_vectors)
        logits = model.logits(users)
        n = min(self.params.candidates_per_source, len(model.item_ids))
        row_of = model.row
        for b, (plan, history) in enumerate(zip(live, histories, strict=True)):
            scores = logits[b]
            plan.user = users[b]
            seen = [r for r in (row_of.get(i) for i in plan.seen) if r is not None]
            if seen:
                scores[seen] = -np.inf
            top = top_n(scores, n)
            if not top.size:
                continue
            plan.best = float(scores[top[0]])
            support = np.argmax(model.table[top] @ pasts[b].T, axis=1) + len(history) - len(pasts[b])
            relative = np.exp(scores[top].astype(np.float64) - plan.best)
            plan.sequence = [(model.item_ids[r], float(p), history[s])
                             for r, p, s in zip(top.tolist(), relative.tolist(), support.tolist(), strict=True)]

    def _co_scores(self, plans: Sequence[_Plan]) -> list[dict[str, CoScores]]:
        """Every plan's co-visitation and co-like scores, each counter read once for the batch."""
        out: list[dict[str, CoScores]] = [{} for _ in plans]
        live = [(b, plan) for b, plan in enumerate(plans) if plan.state is not None]
        for source, counts in (("covisit", self.covisit), ("colike", self.colike)):
            if counts is None or not live:
                continue
            scored = counts.scores_batch([(plan.positive, plan.now_s, plan.seen) for _, plan in live])
            for (b, _), scores in zip(live, scored, strict=True):
                out[b][source] = scores
        return out

    def _offer_batch(self, plans: Sequence[_Plan],
                     co_scores: Sequence[dict[str, CoScores]]) -> tuple[OfferBatch | None, list[int]]:
        """Every plan's offers, once its ANN hits (:meth:`_search`) and co-visitation scores
        (:meth:`_co_scores`) are in, stacked for the batch (None when no plan has any), and
        the plans they belong to (one user of the batch each, in order).

        Built as columns (one score per item and generator), never as per-offer objects, and
        cross-scored for the whole batch at once: this runs on every click, and offers number
        in the hundreds per user.
        """
        tables = [self._offer_table(plan, co) for plan, co in zip(plans, co_scores, strict=True)]
        batch, opened, live = _OfferTable.stack(tables, self.catalog)
        if batch is not None and self.params.cross_score:
            self._cross_score(batch, opened, [plans[b] for b in live], [co_scores[b] for b in live])
        return batch, live

    def _offer_table(self, plan: _Plan, co_scores: dict[str, CoScores]) -> _OfferTable:
        """The plan's offers by generator: each generator's own top items, seen ones dropped."""
        n = self.params.candidates_per_source
        seen, now_s = plan.seen, plan.now_s
        table = _OfferTable()
        if plan.state is not None:
            hits = iter(plan.hits)  # one row per searching query, in order
            for query in plan.queries:  # a query that does not search still opens its column
                row = next(hits, []) if query.search else []
                table.offer(query.source, ((h.item_id, h.score * query.share) for h in row
                                           if h.item_id not in seen))
            for source, scores in co_scores.items():
                table.offer_because(source, scores.top(n))
            if plan.sequence:
                table.offer_because("sequence", plan.sequence)
        table.offer("trending", self.trending.top(now_s, n, seen))
        return table

    def _rank(self, plans: Sequence[_Plan], batch: OfferBatch | None, live: Sequence[int],
              record_exposure: bool) -> list[list[RankedItem]]:
        """The batch's offers (:meth:`_offer_batch`: ``live`` are the plans that have any)
        ranked in one :func:`~streams.ranking.rank_batch`."""
        p = self.params
        offers_of = [_NO_OFFERS] * len(plans)
        for user, b in enumerate(live):
            offers_of[b] = batch.offers(user)
        requests = []
        for plan, offers in zip(plans, offers_of, strict=True):
            recent = [(item_id, self.catalog.vector(item_id)) for item_id, _ in plan.positive]
            requests.append(RankRequest(offers, recent, self._exposure(offers.item_ids, plan.now_s),
                                        len(plan.state.recent) if plan.state is not None else 0))
        trainer = self.trainer if record_exposure else None  # a look (pull API) asks nothing

        def ask(b: int, item_ids: list[str], x: np.ndarray, relevance: np.ndarray) -> None:
            state = plans[b].state
            if trainer is not None and state is not None:
                trainer.offered(state.user_id, item_ids, x, relevance)

        lists = rank_batch(requests, k=p.k, params=p.rank, ranker=self.ranker,
                           questions=ask if trainer is not None else None, stacked=batch)
        if record_exposure and p.rank.exposure_penalty > 0:  # counted only where it is read
            for plan, ranked in zip(plans, lists, strict=True):
                for item in ranked:
                    self.exposure.observe(item.item_id, plan.now_s, 1.0)
        return lists

    def _exposure(self, item_ids: list[str], now_s: float) -> dict[str, float] | None:
        """Each item's exposure over the most exposed item's, when the penalty is on."""
        if not item_ids or self.params.rank.exposure_penalty <= 0 or not len(self.exposure):
            return None
        top = self.exposure.top(now_s, 1)
        peak = top[0][1] if top else 0.0
        if peak <= 0:
            return None
        return {i: self.exposure.score(i, now_s) / peak for i in item_ids}

    def _cross_score(self, batch: OfferBatch, opened: np.ndarray, plans: Sequence[_Plan],
                     co_scores: Sequence[dict[str, CoScores]]) -> None:
        """Score every offered item by the signals of the generators that did not offer it.

        A generator returns only its own top list, so an item co-visited with the user's
        recent items is blind to its popularity and to the user's interests unless those
        generators offered it too. Scoring the union under every signal turns the blend into
        a linear model over all of them (with ``fusion="sum"``). Filled in place, a column at
        a time and for every user of the batch at once (``plans[u]`` and ``co_scores[u]`` are
        user ``u``'s): only the cells a generator left empty (NaN) in a column the user's
        generators opened (``opened``: users x columns), popularity and interest only where
        positive. Each cell gets the figure it would get were its user scored alone.
        """
        ids, scores, seg, reasons = batch.ids, batch.scores, batch.seg, batch.reasons
        column = {source: col for col, source in enumerate(batch.names)}
        unscored = np.isnan(scores)  # each step below reads and fills only its own column

        def empty(source: str) -> np.ndarray:
            col = column[source]
            return np.flatnonzero(unscored[:, col] & opened[seg, col])

        if "trending" in column:
            rows = empty("trending")
            if rows.size:
                nows = [plans[u].now_s for u in seg[rows].tolist()]
                popular = self.trending.scores([ids[j] for j in rows.tolist()], nows)
                keep = popular > 0
                scores[rows[keep], column["trending"]] = popular[keep]
        for source in dict.fromkeys(source for co in co_scores for source in co):  # covisit, colike
            rows = empty(source)
            owners = seg[rows]
            found, supports = lookup_batch([co.get(source) for co in co_scores], owners,
                                           [ids[j] for j in rows.tolist()])
            hit = np.flatnonzero(np.isfinite(found))
            scores[rows[hit], column[source]] = found[hit]
            for j, user, at in zip(rows[hit].tolist(), owners[hit].tolist(), hit.tolist(), strict=True):
                because = reasons[user].setdefault(ids[j], [])
                if supports[at] not in because:
                    because.append(supports[at])
        self._cross_score_queries(batch, opened, plans, unscored, column)
        model = self.sequence
        if model is not None and "sequence" in column:
            col = column["sequence"]
            for u, plan in enumerate(plans):
                if plan.user is None or not opened[u, col]:
                    continue
                lo, hi = batch.span(u)
                rows = lo + np.flatnonzero(unscored[lo:hi, col])
                if rows.size:
                    at = {ids[j]: j for j in rows.tolist()}  # the offers carry the text vectors already
                    embedded = model.embed(list(at), lambda unknown: batch.vectors[[at[i] for i in unknown]])
                    scores[rows, col] = np.exp((embedded @ plan.user).astype(np.float64) - plan.best)

    @staticmethod
    def _cross_score_queries(batch: OfferBatch, opened: np.ndarray, plans: Sequence[_Plan], unscored: np.ndarray,
                             column: dict[str, int]) -> None:
        """The interest and session columns of :meth:`_cross_score`: each item's cosine with
        the user's queries of that source times their shares (a product per user, the rest
        for the batch). A query that did not search scores every item: the ones its column
        already holds keep the larger figure."""
        width = max((len(plan.queries) for plan in plans), default=0)
        if not width or not ({"interest", "session"} & column.keys()):
            return
        scores, seg = batch.scores, batch.seg
        sims = np.full((seg.size, width), -np.inf, dtype=np.float32)  # cosine x share; -inf: no such query
        kind = np.zeros((len(plans), width), dtype=np.int8)  # 1 interest, 2 session, 0 none
        searched = np.zeros((len(plans), width), dtype=bool)
        for u, plan in enumerate(plans):
            queries = plan.queries
            if not queries:
                continue
            lo, hi = batch.span(u)
            shares = np.array([q.share for q in queries], dtype=np.float32)
            sims[lo:hi, :len(queries)] = (batch.vectors[lo:hi] @ np.stack([q.vector for q in queries]).T) * shares
            kind[u, :len(queries)] = [1 if q.source == "interest" else 2 for q in queries]
            searched[u, :len(queries)] = [q.search for q in queries]
        for code, source in ((1, "interest"), (2, "session")):
            if source not in column:
                continue
            col = column[source]
            mine = kind == code
            users = opened[:, col] & mine.any(axis=1)
            unsearched = mine & ~searched  # they offered nothing: they score every item
            hit = np.flatnonzero(~unscored[:, col] & (users & unsearched.any(axis=1))[seg])
            if hit.size:
                other = np.where(unsearched[seg[hit]], sims[hit], -np.inf).max(axis=1).astype(np.float64)
                scores[hit, col] = np.maximum(scores[hit, col], other)
            rows = np.flatnonzero(unscored[:, col] & users[seg])
            best = np.where(mine[seg[rows]], sims[rows], -np.inf).max(axis=1).astype(np.float64)
            keep = best > 0
            scores[rows[keep], col] = best[keep]


#: The steps of :meth:`Recommender.recommend_batch`, as its ``timings`` name them.
STEPS = ("plan", "search", "sequence", "offers", "rank")


class _Laps:
    """Adds the seconds since the last lap to ``timings[step]``; does nothing without ``timings``."""

    __slots__ = ("_since", "_timings")

    def __init__(self, timings: dict[str, float] | None) -> None:
        self._timings = timings
        self._since = time.perf_counter() if timings is not None else 0.0

    def __call__(self, step: str) -> None:
        if self._timings is not None:
            now = time.perf_counter()
            self._timings[step] = self._timings.get(step, 0.0) + now - self._since
            self._since = now


class Request(NamedTuple):
    """One user's recommendation request in a batch."""

    state: UserState | None
    now_s: float
    exclude: AbstractSet[str] = frozenset()


@dataclass(slots=True)
class _Plan:
    """A request as the batch works on it: what the user has seen, their vector queries, and
    (after the one index call) each query's hits."""

    state: UserState | None
    now_s: float
    seen: AbstractSet[str]
    newest: frozenset[str]
    queries: list[_Query]
    positive: list[tuple[str, float]]
    hits: list[list[Hit]] = field(default_factory=list)
    # the sequence model's, once it ran (Recommender._sequence)
    user: np.ndarray | None = None
    best: float = 0.0  # the user's best logit over unseen items
    sequence: list[tuple[str, float, str]] = field(default_factory=list)  # (item, relative probability, because)


@dataclass(frozen=True, slots=True)
class _Query:
    """One ANN query: a vector, the generator it speaks for, and its weight among the queries."""

    vector: np.ndarray
    source: str  # "interest" or "session"
    share: float  # an interest's weight over the strongest query's; the session counts in full
    search: bool = True  # also an index query (else it only scores the offers of the others)


def _vector_queries(state: UserState, now_s: float, p: RecommenderParams) -> list[_Query]:
    """The strongest interests and the session vector, as queries: every one scores the
    offers (:meth:`Recommender._cross_score`), the searching ones also offer their ANN hits
    (the strongest ``interest_searches`` interests, and the session unless it repeats one)."""
    interests = active_interests(state, now_s, p.interest, max_n=p.max_interest_queries)
    session = session_vector(state, now_s, p.interest)
    weights = [w for _, w in interests] + ([session[1]] if session is not None else [])
    if not weights:
        return []
    top_w = max(weights)
    queries = [_Query(v, "interest", w / top_w, n < p.interest_searches) for n, (v, w) in enumerate(interests)]
    if session is not None:
        vector = session[0]
        repeat = any(float(vector @ q.vector) >= p.repeat_query_cosine for q in queries if q.search)
        queries.append(_Query(vector, "session", 1.0, search=not repeat))
    return queries


class _OfferTable:
    """Offers collected column by column: per generator, its best score per item."""

    __slots__ = ("_columns", "_order", "_reasons")

    def __init__(self) -> None:
        self._columns: dict[str, dict[str, float]] = {}
        self._order: dict[str, None] = {}  # items in first-offer order
        self._reasons: dict[str, list[str]] = {}

    def offer(self, source: str, scored: Iterable[tuple[str, float]]) -> None:
        column = self._columns.setdefault(source, {})
        order = self._order
        for item_id, score in scored:
            if not math.isfinite(score):
                continue
            best = column.get(item_id)
            if best is None:
                column[item_id] = score
                order.setdefault(item_id)
            elif score > best:
                column[item_id] = score

    def offer_because(self, source: str, scored: Iterable[tuple[str, float, str]]) -> None:
        """Offers with the generator's own reason (the user's item that supports each)."""
        triples = list(scored)
        self.offer(source, ((i, score) for i, score, _ in triples))
        offered = self._columns[source]
        for item_id, _, because in triples:
            if item_id in offered:
                reasons = self._reasons.setdefault(item_id, [])
                if because not in reasons:
                    reasons.append(because)

    @staticmethod
    def stack(tables: Sequence[_OfferTable],
              catalog: ItemCatalog) -> tuple[OfferBatch | None, np.ndarray, list[int]]:
        """The tables' offers of items the catalog knows (it is the truth; the index only mirrors
        it: the others are dropped), stacked with their vectors (one gather for the batch); which
        columns each user's generators opened (users x columns); and the tables with any offer
        left, in order: the batch's users. None and no users when no table has one."""
        ids: list[str] = []
        sizes: list[int] = []
        for table in tables:
            ids.extend(table._order)
            sizes.append(len(table._order))
        rows = catalog.rows(ids, len(ids))
        if (rows < 0).any():
            known = rows >= 0
            ids = [i for i, ok in zip(ids, known.tolist(), strict=True) if ok]
            sizes = np.bincount(np.repeat(np.arange(len(tables)), sizes)[known], minlength=len(tables)).tolist()
            rows = rows[known]
        if not ids:
            return None, np.zeros((0, 0), dtype=bool), []
        live = [t for t, n in enumerate(sizes) if n]
        counts = [sizes[t] for t in live]
        seg, starts = OfferBatch.segments(counts)
        users = [tables[t] for t in live]
        names = sorted({source for table in users for source in table._columns})
        column = {source: c for c, source in enumerate(names)}
        opened = np.zeros((len(users), len(names)), dtype=bool)
        at: list[int] = []  # every offer's row, column and score, scattered at once
        cols: list[int] = []
        values: list[float] = []
        for u, (table, lo, n) in enumerate(zip(users, starts.tolist(), counts, strict=True)):
            row = {item_id: lo + j for j, item_id in enumerate(ids[lo:lo + n])}
            for source, offered in table._columns.items():
                opened[u, column[source]] = True
                at.extend([row.get(i, -1) for i in offered])  # -1: an item the catalog dropped
                cols.extend([column[source]] * len(offered))
                values.extend(offered.values())
        scores = np.full((len(ids), len(names)), np.nan)
        kept = np.asarray(at, dtype=np.intp)
        keep = kept >= 0
        scores[kept[keep], np.asarray(cols, dtype=np.intp)[keep]] = np.asarray(values, dtype=np.float64)[keep]
        batch = OfferBatch(ids=ids, vectors=catalog.vectors(rows), dim=catalog.dim, names=names, scores=scores,
                           seg=seg, starts=starts, reasons=[table._reasons for table in users])
        return batch, opened, live


#: What a user with no offer is offered.
_NO_OFFERS = Offers(item_ids=[], vectors=np.zeros((0, 0), dtype=np.float32), sources=[],
                    scores=np.zeros((0, 0)), reasons=MappingProxyType({}))
