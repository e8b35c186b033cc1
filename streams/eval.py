"""Offline quality: prequential replay of a click log through recstream and the baselines.

Protocol (``recstream eval``, docs/architecture.md), identical for every model:

* Clicks are replayed in time order, ties in file order (the :class:`Dataset` order).
* Items become known when their item record does: at ``created_at_s`` when it is set (an
  item is known from the first click at or after that time), else from the start. A
  ``delete`` record withdraws its item at the same point. Cold start counts: a click on an
  item that was not known, or that has no vector, is still an event (a miss when no model
  could recommend it).
* For each click, every model first recommends ``k`` items to the clicking user from what it
  has seen so far, over every item known at that time, with every item that user clicked
  before excluded; the clicked item is the target. Only then does each model observe the
  click. A model therefore never sees the click it is asked to predict.

recstream is evaluated through its own :class:`streams.recommend.Recommender` (the class the
workers run, over a :class:`streams.index.memory.MemoryIndex`, user states in a dict) with
``record_exposure`` on, as in the worker: one recommendation recorded per click.

Metrics per model, averaged over events (one relevant item per event, rank r from 1):

* ``hr@k``: 1 if the target is in the top-k list, else 0.
* ``ndcg@k``: ``1 / log2(r + 1)`` within the top-k, else 0 (the ideal DCG is 1).
* ``mrr``: ``1 / r`` within the top-k list, 0 beyond it (a truncated MRR: the models
  return k items, never a full ranking).
* ``coverage``: the fraction of catalogue items (every item known at any time) recommended
  at least once.
* ``gini``: the Gini coefficient of how often each catalogue item was recommended (0: every
  item shown equally often, towards 1: a few items get all the exposure).
* ``segments``: ``events``, ``hr@k`` and ``ndcg@k`` over three kinds of events: ``cold_items``
  (the target had fewer than :data:`COLD_ITEM_CLICKS` earlier clicks), ``new_users`` (the
  user fewer than :data:`NEW_USER_CLICKS`; the two overlap) and ``rest`` (neither), since an
  average over all clicks hides the cold start that text vectors are there for.
* ``halves``: ``ndcg@k`` over the first and the second half of the events. Knobs are tuned
  on the first half only (their docstrings say so), so the second half is the figure no
  choice was fitted to.

With ``sequence_every`` (``recstream eval --sequence-every N``), recstream's next-item
sequence model is retrained every N clicks on the clicks before (the same
``train_and_export`` as ``recstream train``) and served through onnxruntime, as in a worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from streams.baselines import CovisitModel, EaseModel, EvalModel, PopularityModel, TextModel
from streams.datasets import Dataset, check_evaluable, load_dataset
from streams.index.memory import MemoryIndex
from streams.interest import UserState
from streams.progress import progress_bar
from streams.catalog import ItemCatalog, ItemInfo
from streams.recommend import Recommender, RecommenderParams
from streams.records import Click, ItemEvent
from streams.settings import Settings

__all__ = [
    "RecstreamModel",
    "ItemArrival",
    "eval_command",
    "gini",
    "item_timeline",
    "rank_metrics",
    "run_eval",
    "segment_metrics",
    "summarise",
]

log = logging.getLogger(__name__)

#: Segments: a click on an item with fewer earlier clicks than this is a cold-item event...
COLD_ITEM_CLICKS = 5
#: ... and a click by a user with fewer earlier clicks than this a new-user event (the two
#: overlap; ``rest`` is neither).
NEW_USER_CLICKS = 3
#: Events in the rolling mean of the NDCG-over-time plot.
PLOT_WINDOW_EVENTS = 2_000
#: Texts per encoder call when vectors are not cached yet: large, so that the encoder's
#: length-sorted sub-batches pad little; small enough for a moving progress bar.
ENCODE_BATCH = 512


# --------------------------------------------------------------------------- metrics


def rank_metrics(recommended: Sequence[str], target: str, k: int) -> tuple[float, float, float]:
    """``(hit, ndcg, reciprocal rank)`` of one event with a single relevant item.

    Args:
        recommended: the model's list, best first (only the first ``k`` count).
        target: the item actually clicked.
        k: cut-off.

    Returns:
        ``(1, 1/log2(r+1), 1/r)`` when the target is at rank ``r <= k``, else ``(0, 0, 0)``.
    """
    for r, item_id in enumerate(recommended[:k], 1):
        if item_id == target:
            return 1.0, 1.0 / math.log2(r + 1), 1.0 / r
    return 0.0, 0.0, 0.0


def gini(counts: Iterable[float]) -> float:
    """Gini coefficient of non-negative counts (0 = perfectly equal; all-zero or empty = 0).

    ``G = sum_i (2i - n - 1) x_(i) / (n sum x)`` over the counts sorted ascending, i from 1.

    Args:
        counts: one count per catalogue item, zeros included.

    Returns:
        G in ``[0, 1 - 1/n]``.
    """
    x = np.sort(np.asarray(list(counts), dtype=np.float64))
    n = x.size
    total = float(x.sum())
    if n == 0 or total <= 0:
        return 0.0
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(((2 * i - n - 1) * x).sum() / (n * total))


def summarise(hits: np.ndarray, ndcgs: np.ndarray, rrs: np.ndarray, exposure: Mapping[str, int],
              catalogue: Iterable[str], k: int) -> dict[str, float]:
    """One model's metrics from its per-event values and recommendation counts.

    Args:
        hits, ndcgs, rrs: per-event hit, NDCG and reciprocal rank (same length).
        exposure: ``item_id -> times recommended``.
        catalogue: every item known at any time in the replay.
        k: cut-off (names the keys).

    Returns:
        ``{"hr@k", "ndcg@k", "mrr", "coverage", "gini"}``.
    """
    cat = set(catalogue)
    n = len(hits)
    counts = [exposure.get(i, 0) for i in sorted(cat)]
    return {
        f"hr@{k}": float(hits.mean()) if n else 0.0,
        f"ndcg@{k}": float(ndcgs.mean()) if n else 0.0,
        "mrr": float(rrs.mean()) if n else 0.0,
        "coverage": (sum(1 for c in counts if c > 0) / len(cat)) if cat else 0.0,
        "gini": gini(counts),
    }


def segment_metrics(hits: np.ndarray, ndcgs: np.ndarray, segments: Mapping[str, np.ndarray],
                    k: int) -> dict[str, dict[str, float]]:
    """A model's ``{"events", "ndcg@k", "hr@k"}`` over each segment's events (boolean masks)."""
    return {
        name: {"events": int(mask.sum()),
               f"ndcg@{k}": float(ndcgs[mask].mean()) if mask.any() else 0.0,
               f"hr@{k}": float(hits[mask].mean()) if mask.any() else 0.0}
        for name, mask in segments.items()
    }


# --------------------------------------------------------------------------- items over time


@dataclass(frozen=True, slots=True)
class ItemArrival:
    """An item record taking effect at ``at_s`` (``-inf``: known from the start)."""

    at_s: float
    item: ItemEvent


def item_timeline(items: Sequence[ItemEvent]) -> list[ItemArrival]:
    """Item records in the order they take effect: by ``created_at_s`` (missing = start), stable."""
    arrivals = [ItemArrival(-math.inf if it.created_at_s is None else float(it.created_at_s), it)
                for it in items]
    arrivals.sort(key=lambda a: a.at_s)
    return arrivals


# --------------------------------------------------------------------------- recstream as a model


class RecstreamModel:
    """recstream's own :class:`Recommender` behind the eval's :class:`EvalModel` interface.

    User states live in a dict; items are upserted into a :class:`MemoryIndex` when they
    become known (items without a vector stay unindexed: recstream cannot recommend them).
    """

    name = "recstream"

    def __init__(self, item_vectors: Mapping[str, np.ndarray], dim: int,
                 params: RecommenderParams, items: Mapping[str, ItemEvent] | None = None, *,
                 sequence_every: int = 0, sequence_dir: Path | None = None) -> None:
        self.vectors = item_vectors
        self.items = items or {}
        self.recommender = Recommender(index=MemoryIndex(dim), catalog=ItemCatalog(), params=params)
        self.states: dict[str, UserState] = {}
        # The sequence model, retrained every ``sequence_every`` clicks on the clicks so far
        # (never on the one it is asked about next) and served through onnxruntime, as in a worker.
        self.sequence_every = sequence_every
        self.sequence_dir = sequence_dir
        self.clicks: list[Click] = []
        self.trained_on = 0  # clicks the sequence model in use was trained on
        self.last_fit: Any = None  # export.sequence_export.Trained: the next fit starts from it
        self.known: dict[str, None] = {}
        self.sequence_fits: list[dict[str, Any]] = []

    def add_items(self, item_ids: Iterable[str]) -> None:
        ids = [i for i in item_ids if i in self.vectors]
        if not ids:
            return
        self.known.update(dict.fromkeys(ids))
        infos = []
        for i in ids:
            it = self.items.get(i)
            infos.append(ItemInfo(vector=self.vectors[i], title=it.title if it else "",
                                  tags=tuple(it.tags) if it else (),
                                  created_at_s=it.created_at_s if it else None))
        self.recommender.upsert_items(ids, np.stack([self.vectors[i] for i in ids]), infos)

    def remove_items(self, item_ids: Iterable[str]) -> None:
        item_ids = list(item_ids)
        for item_id in item_ids:
            self.known.pop(item_id, None)
        self.recommender.delete_items(item_ids)

    def recommend(self, user_id: str, now_s: float, k: int, exclude: Container[str]) -> list[str]:
        # The index over-fetches by len(exclude), so it needs a sized set (eval passes one).
        ex = exclude if isinstance(exclude, AbstractSet) else frozenset(exclude)  # type: ignore[arg-type]
        if self.sequence_every and len(self.clicks) >= self.trained_on + self.sequence_every:
            self.retrain_sequence()  # here, not after a click: no fit after the last one
        ranked = self.recommender.recommend(self.states.get(user_id), now_s, exclude=ex)
        return [r.item_id for r in ranked[:k]]

    def observe(self, click: Click) -> None:
        self.states[click.user_id] = self.recommender.observe(self.states.get(click.user_id), click)
        if self.recommender.refit_due:  # before the next click is predicted, as a worker would soon after
            self.recommender.refit_ranker()
        if self.sequence_every:
            self.clicks.append(click)

    def retrain_sequence(self) -> None:
        """Train the sequence model on every click so far and rank with it from the next one:
        from scratch the first time, then from the previous fit for
        :data:`SEQUENCE_WARM_EPOCHS` epochs."""
        from export.sequence_export import train_and_export
        from export.sequence_train import TrainConfig

        assert self.sequence_dir is not None
        started = time.perf_counter()
        warm = self.last_fit
        config = TrainConfig() if warm is None else TrainConfig(epochs=SEQUENCE_WARM_EPOCHS)
        fit = self.last_fit = train_and_export(self.clicks, {i: self.vectors[i] for i in self.known},
                                               self.sequence_dir, config=config, warm_from=warm)
        model, manifest = fit.served, fit.manifest
        self.recommender.use_sequence(model)
        self.trained_on = len(self.clicks)
        self.sequence_fits.append({"clicks": len(self.clicks), "version": model.version,
                                   "loss": manifest.losses[-1] if manifest.losses else None,
                                   "seconds": round(time.perf_counter() - started, 1)})


# --------------------------------------------------------------------------- the replay


def run_eval(
    dataset: Dataset,
    item_vectors: Mapping[str, np.ndarray],
    *,
    k: int = 10,
    limit: int | None = None,
    params: RecommenderParams | None = None,
    progress: bool = True,
    plot_path: Path | None = None,
    extra_models: Sequence[Callable[[], EvalModel]] = (),
    sequence_every: int = 0,
    sequence_dir: Path | None = None,
) -> dict[str, Any]:
    """Prequential replay of ``dataset`` through recstream, ``popularity``, ``covisit``, ``ease`` and ``text``.

    See the module docstring for the protocol and the metrics.

    Args:
        dataset: items and clicks (clicks in time order, ties in file order).
        item_vectors: ``item_id -> unit float32 vector``; items without one are known but
            unrecommendable by recstream (the baselines need no vectors).
        k: list length and metric cut-off.
        limit: replay only the first ``limit`` clicks (None: all).
        params: recstream's parameters (default: :class:`RecommenderParams` defaults);
            ``k`` is overridden by ``k``.
        progress: show a rich progress bar on stderr.
        plot_path: write a PNG of rolling NDCG@k over events for every model here.
        extra_models: factories of further models to compare (tests, experiments).
        sequence_every: retrain recstream's sequence model every this many clicks on the
            clicks so far (needs the ``export`` extra); 0: without one.
        sequence_dir: where the retrained models are written (required with ``sequence_every``).

    Returns:
        ``{"dataset", "events", "k", "models": {name: {"hr@k","ndcg@k","mrr","coverage","gini",
        "segments": {"cold_items"|"new_users"|"rest": {"events","ndcg@k","hr@k"}},
        "halves": {"first","second"}}}, "seconds", "catalogue", "unrecommendable", "plot",
        "ranker", "sequence"}`` where ``unrecommendable`` counts events whose target was not
        known or had no vector at the time, ``ranker`` is the learned ranker's weights (once
        fit) and ``sequence`` the sequence model's fits (with ``sequence_every``).

    Raises:
        ValueError: ``k < 1`` or vectors of different dimensions.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    started = time.perf_counter()
    clicks = dataset.clicks if limit is None else dataset.clicks[: max(0, limit)]
    dims = {int(np.size(v)) for v in item_vectors.values()}
    if len(dims) > 1:
        raise ValueError(f"item vectors have different dimensions: {sorted(dims)}")
    dim = dims.pop() if dims else 1
    params = replace(params or RecommenderParams(), k=k)
    latest = {it.item_id: it for it in dataset.items if it.op == "upsert"}

    if sequence_every and sequence_dir is None:
        raise ValueError("sequence_every needs a sequence_dir")
    ours = RecstreamModel(item_vectors, dim, params, latest, sequence_every=sequence_every, sequence_dir=sequence_dir)
    models: list[EvalModel] = [ours, PopularityModel(), CovisitModel(), EaseModel(), TextModel(item_vectors)]
    models.extend(factory() for factory in extra_models)
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be distinct: {names}")

    n = len(clicks)
    hits = np.zeros((len(models), n), dtype=np.float64)
    ndcgs = np.zeros((len(models), n), dtype=np.float64)
    rrs = np.zeros((len(models), n), dtype=np.float64)
    exposure: list[dict[str, int]] = [{} for _ in models]
    clicked: dict[str, set[str]] = {}
    item_clicks: dict[str, int] = {}  # earlier clicks per item and per user: the segments
    user_clicks: dict[str, int] = {}
    cold_item = np.zeros(n, dtype=bool)
    new_user = np.zeros(n, dtype=bool)
    known: set[str] = set()
    catalogue: set[str] = set()
    unrecommendable = 0

    timeline = item_timeline(dataset.items)
    next_item = 0

    def apply_items_until(t: float) -> None:
        nonlocal next_item
        add: list[str] = []
        while next_item < len(timeline) and timeline[next_item].at_s <= t:
            it = timeline[next_item].item
            next_item += 1
            if it.op == "delete":
                if add:
                    _add(add)
                    add = []
                known.discard(it.item_id)
                for m in models:
                    m.remove_items([it.item_id])
            else:
                add.append(it.item_id)
        if add:
            _add(add)

    def _add(ids: list[str]) -> None:
        ids = list(dict.fromkeys(ids))
        known.update(ids)
        catalogue.update(ids)
        for m in models:
            m.add_items(ids)

    with _single_threaded_blas(), progress_bar(progress, n, f"eval {dataset.name}", "ndcg") as advance:
        for e, click in enumerate(clicks):
            apply_items_until(click.ts_s)
            user_clicked = clicked.setdefault(click.user_id, set())
            target = click.item_id
            if target not in known or target not in item_vectors:
                unrecommendable += 1
            cold_item[e] = item_clicks.get(target, 0) < COLD_ITEM_CLICKS
            new_user[e] = user_clicks.get(click.user_id, 0) < NEW_USER_CLICKS
            item_clicks[target] = item_clicks.get(target, 0) + 1
            user_clicks[click.user_id] = user_clicks.get(click.user_id, 0) + 1
            for m_idx, model in enumerate(models):
                recs = model.recommend(click.user_id, click.ts_s, k, user_clicked)
                counts = exposure[m_idx]
                for item_id in recs[:k]:
                    counts[item_id] = counts.get(item_id, 0) + 1
                hits[m_idx, e], ndcgs[m_idx, e], rrs[m_idx, e] = rank_metrics(recs, target, k)
            for model in models:
                model.observe(click)
            user_clicked.add(target)
            if (e + 1) % 500 == 0 or e + 1 == n:
                advance(e + 1, {name: float(ndcgs[i, : e + 1].mean()) for i, name in enumerate(names)})

    segments = {"cold_items": cold_item, "new_users": new_user, "rest": ~(cold_item | new_user)}
    half = n // 2
    result: dict[str, Any] = {
        "dataset": dataset.name,
        "events": n,
        "k": k,
        "models": {name: {**summarise(hits[i], ndcgs[i], rrs[i], exposure[i], catalogue, k),
                          "segments": segment_metrics(hits[i], ndcgs[i], segments, k),
                          "halves": {"first": float(ndcgs[i, :half].mean()) if half else 0.0,
                                     "second": float(ndcgs[i, half:].mean()) if n > half else 0.0}}
                   for i, name in enumerate(names)},
        "seconds": round(time.perf_counter() - started, 3),
        "catalogue": len(catalogue),
        "unrecommendable": unrecommendable,
    }
    if ours.sequence_fits:
        result["sequence"] = ours.sequence_fits
    ranker = ours.recommender.ranker
    if ranker is not None:  # what the stream taught recstream's ranker, by feature
        result["ranker"] = {"version": ranker.version, "weights": ranker.weights()}
    if plot_path is not None:
        result["plot"] = str(write_plot(plot_path, names, ndcgs, k, dataset.name))
    return result


def _single_threaded_blas() -> contextlib.AbstractContextManager[object]:
    """BLAS on one thread for the replay's tiny per-click mat-vecs (when threadpoolctl exists).

    Measured here on 2 busy cores: a [1682, 384] x [384, 4] product took 7 ms with
    OpenBLAS's thread pool and 0.35 ms on one thread (its threads spin-wait for cores).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: only a speed-up
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def write_plot(path: Path, names: Sequence[str], ndcgs: np.ndarray, k: int, title: str) -> Path:
    """PNG of each model's NDCG@k over events, rolling mean over :data:`PLOT_WINDOW_EVENTS`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = ndcgs.shape[1]
    window = max(1, min(PLOT_WINDOW_EVENTS, n))
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    for i, name in enumerate(names):
        c = np.concatenate([[0.0], np.cumsum(ndcgs[i], dtype=np.float64)])
        rolling = (c[window:] - c[:-window]) / window  # mean of events [j - window, j)
        ax.plot(np.arange(window, n + 1), rolling, label=f"{name} ({ndcgs[i].mean():.4f})", lw=1.2)
    ax.set_xlabel("event (click) number")
    ax.set_ylabel(f"NDCG@{k}, rolling mean of {window} events")
    ax.set_title(f"prequential NDCG@{k} on {title}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- CLI helper


def _texts_digest(ids: Sequence[str], texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for i, t in zip(ids, texts, strict=True):
        h.update(i.encode() + b"\x00" + t.encode() + b"\x01")
    return h.hexdigest()


def encode_items(dataset: Dataset, model_dir: Path, cache_dir: Path, *, progress: bool = True
                 ) -> tuple[dict[str, np.ndarray], str]:
    """Vectors for the dataset's items (latest upsert text per id), cached on disk.

    The cache is ``<cache_dir>/<dataset>-<model version>.npy`` (rows in item order) with a
    ``.json`` sidecar naming the ids and a digest of the texts; a mismatch re-encodes.

    Returns:
        ``(item_id -> unit float32 vector, model version)``.
    """
    from encoders.item_encoder import ItemEncoder
    from encoders.manifest import load_manifest

    latest = {it.item_id: it for it in dataset.items if it.op == "upsert"}
    ids = list(latest)
    texts = [latest[i].encoder_text() for i in ids]
    digest = _texts_digest(ids, texts)
    version = load_manifest(model_dir, verify_hashes=False).version
    stem = f"{dataset.name}-{version}".replace("/", "_")
    npy, meta = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"
    if npy.exists() and meta.exists():
        try:
            info = json.loads(meta.read_text())
            if info.get("digest") == digest and info.get("ids") == ids:
                matrix = np.load(npy)
                log.info("item vectors from cache %s", npy)
                return {i: matrix[r] for r, i in enumerate(ids)}, version
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable vector cache %s: %s", npy, exc)
    encoder = ItemEncoder.load(model_dir)
    rows: list[np.ndarray] = []
    with progress_bar(progress, len(texts), f"{dataset.name}: encoding items") as advance:
        for start in range(0, len(texts), ENCODE_BATCH):
            rows.append(encoder.encode(texts[start : start + ENCODE_BATCH]))  # float32 already
            advance(min(start + ENCODE_BATCH, len(texts)), {})
    matrix = np.concatenate(rows) if rows else np.zeros((0, encoder.dim), np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(npy, matrix)
    meta.write_text(json.dumps({"model": version, "digest": digest, "ids": ids}))
    return {i: matrix[r] for r, i in enumerate(ids)}, version


#: Epochs of a refit that starts from the previous fit (the first fit runs the full
#: schedule). First half of ml-100k, retrained every 12.5k clicks: recstream NDCG@10 over
#: clicks 25k-50k 0.1055 warm (8 epochs, 5-7 s a fit) against 0.1053 from scratch (30
#: epochs, 18-28 s).
SEQUENCE_WARM_EPOCHS = 8

#: ``recstream eval`` retrains the sequence model every this many clicks by default. Chosen
#: on the first half of ml-100k (recstream NDCG@10 over clicks 25k-50k): no sequence model
#: 0.1032; from scratch every 25k 0.1044, every 12.5k 0.1053; warm-started every 12.5k
#: 0.1055, every 6.25k 0.1065, every 3.125k (4 epochs) 0.1062.
SEQUENCE_EVERY = 6_250


def eval_command(settings: Settings, dataset_name: str | None, items_path: Path | None,
                 clicks_path: Path | None, limit: int | None, k: int, plot_path: Path | None,
                 *, progress: bool = True, sequence_every: int = SEQUENCE_EVERY) -> dict[str, Any]:
    """``recstream eval``: load the data, encode (or read cached) item vectors, replay.

    Args:
        settings: data dir, model dir and recommender knobs.
        dataset_name: ``"ml-100k"`` (the default when no files are given).
        items_path, clicks_path: your own JSONL records instead (both or neither).
        limit: replay only the first ``limit`` clicks.
        k: list length and cut-off.
        plot_path: where to write the NDCG-over-time PNG (None: no plot).
        progress: show progress on stderr.
        sequence_every: retrain the sequence model every this many clicks (0: none; without
            torch installed, none, and the report says why).

    Returns:
        :func:`run_eval`'s report plus ``"model"`` (the encoder version).

    Raises:
        ConfigError: an unknown dataset name, or only one of the two files.
    """
    from streams.modelstore import ensure_model

    dataset = load_dataset(settings.data_dir, dataset_name, items_path, clicks_path)
    check_evaluable(dataset)
    model_dir = ensure_model(settings)
    vectors, version = encode_items(dataset, model_dir, settings.data_dir / "cache", progress=progress)
    params = RecommenderParams.from_settings(settings)
    skipped = None
    if sequence_every and importlib.util.find_spec("torch") is None:
        skipped = "no sequence model: training it needs torch (pip install 'recstream[export]')"
        log.warning("%s", skipped)
        sequence_every = 0
    with tempfile.TemporaryDirectory(prefix="recstream-eval-sequence-") as sequence_dir:
        result = run_eval(dataset, vectors, k=k, limit=limit, params=params, progress=progress,
                          plot_path=plot_path, sequence_every=sequence_every, sequence_dir=Path(sequence_dir))
    if skipped:
        result["sequence"] = skipped
    result["model"] = version
    return result
