"""The sequence model learns a next-item pattern, survives the trip to ONNX, and is served
without torch: user vectors, items it never saw, the ``latest`` pointer workers watch."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from export.sequence_export import train_and_export  # noqa: E402
from export.sequence_train import TrainConfig, windows  # noqa: E402
from streams.records import Click  # noqa: E402
from streams.sequence import LATEST_FILE, SequenceModel, SequenceWatch, latest_dir  # noqa: E402

ITEMS = [f"i{n:02d}" for n in range(20)]
TINY = TrainConfig(dim=16, max_len=8, layers=1, heads=2, dropout=0.0, epochs=40, batch_size=64, learning_rate=1e-2)


def _vectors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(len(ITEMS), 12)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return dict(zip(ITEMS, v, strict=True))


def _cycles(users: int = 150, length: int = 12) -> list[Click]:
    """Every user walks the items in order from a random start: the next item is always +1."""
    rng = np.random.default_rng(1)
    clicks = []
    for u in range(users):
        start = int(rng.integers(len(ITEMS)))
        clicks += [Click(user_id=f"u{u}", item_id=ITEMS[(start + n) % len(ITEMS)], ts_s=1000.0 * n + u)
                   for n in range(length)]
    return sorted(clicks, key=lambda c: c.ts_s)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("sequence")
    model, manifest, directory, *_ = train_and_export(_cycles(), _vectors(), root, config=TINY, encoder="test@1")
    return root, model, manifest, directory


def test_windows_cover_long_histories_from_their_newest_end():
    rows = windows([list(range(12)), [7]], max_len=4)
    assert rows.tolist() == [[7, 8, 9, 10, 11], [3, 4, 5, 6, 7], [-1, 0, 1, 2, 3]]


def test_the_served_model_predicts_the_next_item(trained):
    _, model, manifest, _ = trained
    text = _vectors()
    users, pasts = model.users([["i03", "i04", "i05"], ["i17", "i18"]], lambda ids: np.stack([text[i] for i in ids]))
    assert [p.shape for p in pasts] == [(3, 16), (2, 16)]
    probabilities = model.probabilities(users)
    assert [model.item_ids[r] for r in probabilities.argmax(axis=1)] == ["i06", "i19"]
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert manifest.parity["passed"] and manifest.parity["min_cosine"] >= 0.9999
    assert manifest.losses[-1] < manifest.losses[0]
    assert manifest.trained_on["clicks"] == 150 * 12 and manifest.trained_on["encoder"] == "test@1"


def test_an_item_the_model_never_saw_is_its_projected_text(trained):
    _, model, _, _ = trained
    new = np.ones((1, 12), dtype=np.float32) / np.sqrt(12)
    got = model.embed(["i01", "brand-new"], lambda ids: new)
    assert np.allclose(got[1], new[0] @ model.project)
    assert np.allclose(got[0], model.table[model.row["i01"]])


def test_workers_pick_up_what_train_publishes(trained, tmp_path):
    root, model, _, directory = trained
    assert latest_dir(root) == directory
    watch = SequenceWatch(root)
    first = watch.poll()
    assert first is not None and first.version == model.version
    assert watch.poll() is None, "nothing new: nothing loaded again"
    broken = root / "sasrec-broken"
    broken.mkdir()
    (root / LATEST_FILE).write_text(broken.name)
    assert watch.poll() is None, "a broken model is logged and skipped, the one in use stays"
    (root / LATEST_FILE).write_text(directory.name)


def test_the_manifest_says_how_the_model_was_made(trained):
    _, _, _, directory = trained
    manifest = json.loads((directory / "sequence.json").read_text())
    assert manifest["version"].startswith("sasrec@") and manifest["dim"] == 16 and manifest["items"] == 20
    assert manifest["config"]["epochs"] == 40 and len(manifest["losses"]) == 40
    assert SequenceModel.load(directory).version == manifest["version"]


def test_the_recommender_offers_the_models_next_item_with_a_reason_from_the_users_past(trained):
    from streams.catalog import ItemCatalog, ItemInfo
    from streams.index.memory import MemoryIndex
    from streams.recommend import Recommender, RecommenderParams

    _, model, _, _ = trained
    text = _vectors()
    rec = Recommender(index=MemoryIndex(12), catalog=ItemCatalog(), params=RecommenderParams(ranker_refit_every=0))
    rec.upsert_items(ITEMS, np.stack([text[i] for i in ITEMS]), [ItemInfo(vector=text[i]) for i in ITEMS])
    state = None
    for n, item in enumerate(["i03", "i04", "i05"]):
        state = rec.observe(state, Click(user_id="ann", item_id=item, ts_s=100.0 + n))
    assert "sequence" not in rec.model_versions()
    rec.use_sequence(model)
    offers = rec.candidates(state, 103.0)
    column = offers.sources.index("sequence")
    best = offers.item_ids[int(np.nanargmax(offers.scores[:, column]))]
    assert best == "i06"
    assert set(offers.reasons[best]) & {"i03", "i04", "i05"}, "the reason is one of ann's own items"
    assert not np.isnan(offers.scores[:, column]).any(), "every offered item is scored by the model"
    assert not {"i03", "i04", "i05"} & set(offers.item_ids)
    assert rec.model_versions()["sequence"] == model.version
    assert [r.item_id for r in rec.recommend(state, 103.0)][:1] == ["i06"]


def test_a_users_vector_does_not_depend_on_the_batch(trained):
    """Workers serve users in batches of any size; a user's list must be the same alone."""
    _, model, _, _ = trained
    text = _vectors()
    lookup = lambda ids: np.stack([text[i] for i in ids])  # noqa: E731
    histories = [["i03", "i04", "i05"], ["i17"], ["i01", "i02", "i03", "i04", "i05", "i06", "i07", "i08", "i09"]]
    together, _ = model.users(histories, lookup)
    for b, history in enumerate(histories):
        alone, _ = model.users([history], lookup)
        assert np.array_equal(alone[0], together[b])


def test_a_list_with_the_sequence_model_does_not_depend_on_the_batch(trained):
    from streams.catalog import ItemCatalog, ItemInfo
    from streams.index.memory import MemoryIndex
    from streams.recommend import Recommender, RecommenderParams, Request

    _, model, _, _ = trained
    text = _vectors()
    rec = Recommender(index=MemoryIndex(12), catalog=ItemCatalog(), params=RecommenderParams(ranker_refit_every=0))
    rec.upsert_items(ITEMS, np.stack([text[i] for i in ITEMS]), [ItemInfo(vector=text[i]) for i in ITEMS])
    rec.use_sequence(model)
    states = []
    for u, walk in enumerate((["i03", "i04"], ["i10"], ["i15", "i16", "i17", "i18"], ["i00", "i07"])):
        state = None
        for n, item in enumerate(walk):
            state = rec.observe(state, Click(user_id=f"u{u}", item_id=item, ts_s=100.0 + n))
        states.append(state)
    requests = [Request(state, 110.0) for state in states]
    together = rec.recommend_batch(requests, record_exposure=False)
    for request, listed in zip(requests, together, strict=True):
        [alone] = rec.recommend_batch([request], record_exposure=False)
        assert [(r.item_id, r.score, r.because) for r in alone] == [(r.item_id, r.score, r.because) for r in listed]


def test_a_refit_starts_from_the_previous_fit(tmp_path):
    """Warm-started, one epoch already fits the pattern far better than one epoch from
    scratch; an item new since the previous fit gets a row of its own."""
    first = train_and_export(_cycles(), _vectors(), tmp_path / "first", config=TINY)
    vectors = {**_vectors(), "i20": np.ones(12, dtype=np.float32) / np.sqrt(12)}
    one = TrainConfig(**{**TINY.to_dict(), "epochs": 1})
    warm = train_and_export(_cycles(), vectors, tmp_path / "warm", config=one, warm_from=first)
    cold = train_and_export(_cycles(), vectors, tmp_path / "cold", config=one)
    assert warm.manifest.trained_on["warm_from"] == first.served.version
    assert warm.manifest.losses[0] < 0.8 * cold.manifest.losses[0], (warm.manifest.losses, cold.manifest.losses)
    assert warm.item_ids == ITEMS + ["i20"] and warm.served.table.shape == (21, 16)
