"""``recstream bench clickpath``: what one click costs a worker's CPU, without Kafka.

The latency benchmark shows what a user sees through a broker; this one isolates the part
recstream itself controls: ``Recommender.observe`` + ``recommend`` (state update, ANN
queries, co-visitation, trending, ranking, reasons) for a Zipf stream of clicks over N
synthetic items in the configured index (Qdrant Edge by default, HNSW built as the worker
builds it). The baseline, timed in the same run on the same clicks, is the numpy index doing
exact search, so the report's ``speedup`` is the configured index against brute force.
Each run also says where a click's time goes, step by step (``steps_ms_per_click``: the
click applied, the batch's plans, index search, sequence model, offers, ranking, and the
crowd's learning), so the next speed-up starts from a measurement, not a guess.

Last, the same clicks one at a time, each after ``idle_gap_ms`` of sleep (``after_idle``): a
worker at a low click rate serves every click from cold caches (while it sleeps, the click
path's code and data leave them; on the development machine that alone costs a lone click
~1.8-2x, docs/architecture.md). It is the in-process proxy of the 50 clicks/s figure of
``bench latency``, without a broker's noise.

With ``--sequence`` the recommender also serves a next-item sequence model over the
catalogue (untrained: it costs what a trained one of the same size costs), as a worker does
once ``recstream train`` has published one.

Single-threaded BLAS, as in workers (``run_worker``), so the figure is one core's.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from streams.bench.load import ITEM_ZIPF_S, USER_ZIPF_S, item_key, synthetic_vectors, user_key, zipf_draw
from streams.bench.stats import percentiles_ms
from streams.index.base import VectorIndex
from streams.index.factory import open_index
from streams.index.memory import MemoryIndex
from streams.interest import UserState
from streams.catalog import ItemCatalog, ItemInfo
from streams.clickbatch import learn_batch
from streams.recommend import STEPS as RECOMMEND_STEPS
from streams.recommend import CrowdState, Recommender, RecommenderParams, Request
from streams.records import Click
from streams.settings import Settings

CLICK_SEED = 20240503
USERS = 10_000
LOAD_BATCH = 5_000
#: Clicks replayed before timing starts: users gain history, co-visitation fills.
WARM_UP = 500
NOW_S = 1_700_000_000.0
#: The sleep before each click of the ``after_idle`` figure: a click every 20 ms is 50 clicks/s.
IDLE_GAP_MS = 20.0
#: Where a click's time goes, in the order it is spent: the click applied to its user's state,
#: the steps of ``Recommender.recommend_batch``, and the crowd learning from the batch.
STEPS = ("apply", *RECOMMEND_STEPS, "learn")


def _percentiles(ms: np.ndarray) -> dict[str, float | None]:
    summary = percentiles_ms(ms)
    return {"mean": round(float(ms.mean()), 3), "p50": summary["p50"], "p99": summary["p99"]}


def _per_click(seconds: dict[str, float], clicks: int) -> dict[str, float]:
    """Each step's milliseconds per click, in :data:`STEPS` order."""
    return {step: round(seconds.get(step, 0.0) * 1000.0 / max(clicks, 1), 3) for step in STEPS}


class _Run:
    """One index, loaded with the catalogue, and the click stream replayed through it."""

    def __init__(self, index: VectorIndex, vectors: np.ndarray, ids: list[str], params: RecommenderParams,
                 optimize: bool) -> None:
        self.recommender = Recommender(index=index, catalog=ItemCatalog(), params=params)
        for start in range(0, len(ids), LOAD_BATCH):
            rows = vectors[start:start + LOAD_BATCH]
            self.recommender.upsert_items(ids[start:start + LOAD_BATCH], rows, [ItemInfo(vector=v) for v in rows])
        if optimize:
            index.optimize()
        self.states: dict[str, UserState] = {}

    def reset(self, states: dict[str, UserState], crowd: CrowdState) -> None:
        """Back to ``states`` and ``crowd`` (taken after the warm-up), so that every timed run
        serves the same clicks from the same point: none of them is a replay, which a state
        would take as a no-op."""
        self.states = dict(states)
        self.recommender.restore_crowd(crowd)

    def replay_after_idle(self, clicks: list[Click], gap_s: float) -> np.ndarray:
        """Milliseconds per click, one at a time, each after ``gap_s`` of sleep."""
        out = np.empty(len(clicks))
        for n, click in enumerate(clicks):
            time.sleep(gap_s)
            out[n] = self.replay([click])[0]
        return out

    def replay(self, clicks: list[Click], batch: int = 1, steps: dict[str, float] | None = None) -> np.ndarray:
        """Milliseconds per click (apply + recommend + learn), served ``batch`` clicks at a
        time as the recommend stage serves them: every click applied in order, one
        ``recommend_batch`` for the batch's users (each ranked once, on their latest state),
        then the batch's lessons learned by the crowd. Each click of a batch is charged the
        batch's time over its size. ``steps`` gains the seconds of each step (:data:`STEPS`)."""
        out = np.empty(len(clicks))
        rec, states = self.recommender, self.states
        for start in range(0, len(clicks), batch):
            chunk = clicks[start:start + batch]
            started = time.perf_counter()
            lessons = []
            for click in chunk:
                states[click.user_id], lesson = rec.apply(states.get(click.user_id), click)
                if lesson is not None:
                    lessons.append(lesson)
            users = list(dict.fromkeys(click.user_id for click in chunk))
            applied = time.perf_counter()
            rec.recommend_batch([Request(states[u], states[u].last_ts_s) for u in users], timings=steps)
            ranked = time.perf_counter()
            learn_batch(rec, lessons)
            done = time.perf_counter()
            if steps is not None:
                steps["apply"] = steps.get("apply", 0.0) + applied - started
                steps["learn"] = steps.get("learn", 0.0) + done - ranked
            out[start:start + len(chunk)] = (done - started) * 1000.0 / len(chunk)
        return out


def run_clickpath_bench(settings: Settings, *, items: int = 100_000, clicks: int = 3_000,
                        baseline_clicks: int = 500, batch: int = 64, sequence: bool = False,
                        idle_clicks: int = 300, idle_gap_ms: float = IDLE_GAP_MS,
                        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Per-click CPU time of the click path on the configured index and on exact numpy search.

    Args:
        settings: index kind and recommender knobs (``index``, ``state``, ``recommend``).
        items: synthetic items (384-d clustered vectors, as ``bench latency`` uses).
        clicks: timed clicks on the configured index (after ``WARM_UP`` untimed ones).
        baseline_clicks: timed clicks on the exact-search baseline (it is slow at 100k).
        batch: clicks per batch for the batched figure (``batched``), timed on the same clicks
            right after the one-at-a-time run, from the same states (a copy).
        sequence: serve a sequence model too, in both runs (needs the export extra: torch).
        idle_clicks: the first this many timed clicks are served once more, one at a time,
            each after ``idle_gap_ms`` of sleep, from the same states (0: not run).
        idle_gap_ms: the sleep before each of those clicks (20 ms: a click rate of 50/s).
        progress: called with a line per step.

    Returns:
        ``{"items","clicks","index","sequence","ms_per_click":{"mean","p50","p99"},
        "steps_ms_per_click","clicks_s","batched":{"batch","ms_per_click","steps_ms_per_click",
        "clicks_s","speedup"},"baseline":{"index","clicks","ms_per_click"},"after_idle":{"gap_ms",
        "clicks","ms_per_click","ratio"},"speedup"}``; ``steps_ms_per_click`` says where a
        click's time goes (:data:`STEPS`: the mean milliseconds per click of each);
        ``sequence`` is the served model's version (None without one); ``after_idle`` is None
        when ``idle_clicks`` is 0, and its ``ratio`` is its mean over the mean of the same
        clicks served back to back; ``speedup`` is the baseline's mean over the index's mean,
        on the same first ``baseline_clicks`` clicks.
    """
    from threadpoolctl import threadpool_limits

    say = progress or (lambda _message: None)
    baseline_clicks = min(baseline_clicks, clicks)
    vectors = synthetic_vectors(items)
    ids = [item_key(i) for i in range(items)]
    rng = np.random.default_rng(CLICK_SEED)
    total = WARM_UP + clicks
    users = zipf_draw(rng, USERS, total, USER_ZIPF_S)
    picks = zipf_draw(rng, items, total, ITEM_ZIPF_S)
    stream = [Click(user_id=user_key(int(u)), item_id=ids[int(i)], ts_s=NOW_S + n * 0.01)
              for n, (u, i) in enumerate(zip(users, picks, strict=True))]
    warm, timed = stream[:WARM_UP], stream[WARM_UP:]
    params = RecommenderParams.from_settings(settings)
    optimize = items >= settings.index.optimize_min_items

    with threadpool_limits(1, user_api="blas"), tempfile.TemporaryDirectory(prefix="recstream-clickpath-") as tmp:
        model = None
        if sequence:
            from export.sequence_export import export_untrained

            say(f"exporting a sequence model over {items:,} items")
            model = export_untrained(dict(zip(ids, vectors, strict=True)), Path(tmp) / "sequence")
        index = open_index(settings.index, dim=vectors.shape[1], path=Path(tmp) / "index")
        try:
            say(f"loading {items:,} items into {index.name}" + (" and building HNSW" if optimize else ""))
            run = _Run(index, vectors, ids, params, optimize)
            run.recommender.use_sequence(model)
            run.replay(warm)
            states, crowd = dict(run.states), run.recommender.crowd()
            say(f"{clicks:,} clicks on {index.name}, one at a time")
            steps: dict[str, float] = {}
            ms = run.replay(timed, steps=steps)
            run.reset(states, crowd)
            say(f"{clicks:,} clicks on {index.name}, {batch} at a time")
            batched_steps: dict[str, float] = {}
            batched_ms = run.replay(timed, batch=batch, steps=batched_steps)
            idle_ms = None
            if idle_clicks > 0:
                run.reset(states, crowd)
                idle_clicks = min(idle_clicks, clicks)
                say(f"{idle_clicks:,} clicks on {index.name}, one at a time, each after {idle_gap_ms:g} ms idle")
                idle_ms = run.replay_after_idle(timed[:idle_clicks], idle_gap_ms / 1000.0)
        finally:
            index.close()
        say(f"{baseline_clicks:,} clicks on numpy exact search (baseline)")
        exact = _Run(MemoryIndex(vectors.shape[1]), vectors, ids, params, optimize=False)
        exact.recommender.use_sequence(model)
        exact.replay(warm)
        baseline_ms = exact.replay(timed[:baseline_clicks])

    same = ms[:baseline_clicks]
    return {
        "items": items,
        "clicks": len(ms),
        "index": index.name,
        "sequence": model.version if model is not None else None,
        "ms_per_click": _percentiles(ms),
        "steps_ms_per_click": _per_click(steps, len(ms)),
        "clicks_s": round(1000.0 / float(ms.mean()), 1),
        "batched": {"batch": batch, "ms_per_click": _percentiles(batched_ms),
                    "steps_ms_per_click": _per_click(batched_steps, len(batched_ms)),
                    "clicks_s": round(1000.0 / float(batched_ms.mean()), 1),
                    "speedup": round(float(ms.mean()) / float(batched_ms.mean()), 2)},
        "baseline": {"index": "numpy-exact", "clicks": len(baseline_ms), "ms_per_click": _percentiles(baseline_ms)},
        "after_idle": None if idle_ms is None else {
            "gap_ms": idle_gap_ms, "clicks": len(idle_ms), "ms_per_click": _percentiles(idle_ms),
            "ratio": round(float(idle_ms.mean()) / float(ms[:len(idle_ms)].mean()), 2)},
        "speedup": round(float(baseline_ms.mean()) / float(same.mean()), 2),
    }
