"""The next-item sequence model at serving time: ONNX on onnxruntime, never torch.

``recstream train`` (``export/sequence_train.py``) fits a SASRec on the click log and writes
a model directory (:func:`save_model`). A :class:`SequenceModel` reads it back and serves a
batch of users in two matrix steps: one onnxruntime run turns every user's recent positive
items into a user vector, and one product with the item table scores the whole catalogue
for all of them (:meth:`SequenceModel.logits`). A softmax of a user's scores over the model's
items is their next-click probability (:meth:`SequenceModel.probabilities`).

Items the model never saw (they arrived after training) are embedded as the model embeds
every item before its clicks refine it: the item's text vector times the model's projection
(:meth:`SequenceModel.embed`), so a new item can be scored, and can stand in a history.

Model directories live side by side under one root, and ``<root>/latest`` names the newest;
:class:`SequenceWatch` lets a running worker pick a newer one up between batches.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streams import products
from streams.errors import RecstreamError

log = logging.getLogger(__name__)

MANIFEST_FILE = "sequence.json"
LATEST_FILE = "latest"
GRAPH_FILE = "sequence.onnx"
TABLE_FILE = "items.npy"
PROJECT_FILE = "project.npy"
IDS_FILE = "items.json"
#: :func:`top_n` looks for a user's best items among the best of blocks of this many.
_TOP_BLOCK = 256


class SequenceModelError(RecstreamError, ValueError):
    """A sequence model directory that cannot be served (missing file, wrong shapes)."""


@dataclass(frozen=True, slots=True)
class SequenceManifest:
    """What a model directory holds and how it was made (``sequence.json``)."""

    version: str
    dim: int
    max_len: int
    text_dim: int
    items: int
    trained_on: dict[str, Any]  # clicks, users, cut-off time, text encoder version
    config: dict[str, Any]
    parity: dict[str, Any]
    losses: list[float]

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "dim": self.dim, "max_len": self.max_len, "text_dim": self.text_dim,
                "items": self.items, "trained_on": self.trained_on, "config": self.config,
                "parity": self.parity, "losses": self.losses}


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


class SequenceModel:
    """A trained SASRec: user vectors from histories (onnxruntime), item scores from its table."""

    def __init__(self, session: Any, manifest: SequenceManifest, item_ids: Sequence[str], table: np.ndarray,
                 project: np.ndarray) -> None:
        if table.shape != (len(item_ids), manifest.dim) or project.shape != (manifest.text_dim, manifest.dim):
            raise SequenceModelError(f"model {manifest.version}: item table {table.shape} or projection "
                                     f"{project.shape} does not match its manifest")
        self.session = session
        self.manifest = manifest
        self.version = manifest.version
        self.item_ids = list(item_ids)
        self.row = {item_id: r for r, item_id in enumerate(self.item_ids)}
        self.table = np.ascontiguousarray(table, dtype=np.float32)
        self.project = np.ascontiguousarray(project, dtype=np.float32)
        self._project_columns = np.ascontiguousarray(self.project.T)  # embed's text -> model space

    @classmethod
    def load(cls, directory: Path) -> SequenceModel:
        """Read a model directory written by :func:`save_model`; :class:`SequenceModelError` if broken."""
        import onnxruntime as ort

        directory = Path(directory)
        try:
            raw = json.loads((directory / MANIFEST_FILE).read_text())
            manifest = SequenceManifest(**raw)
            item_ids = json.loads((directory / IDS_FILE).read_text())
            table, project = np.load(directory / TABLE_FILE), np.load(directory / PROJECT_FILE)
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1  # one batch at a time, on the event loop's core
            session = ort.InferenceSession(str(directory / GRAPH_FILE), options, providers=["CPUExecutionProvider"])
        except (OSError, ValueError, TypeError) as exc:
            raise SequenceModelError(f"cannot read the sequence model in {directory}: {exc}") from exc
        except Exception as exc:  # onnxruntime's own errors are not OSErrors
            raise SequenceModelError(f"cannot load {directory / GRAPH_FILE}: {exc}") from exc
        return cls(session, manifest, item_ids, table, project)

    def embed(self, item_ids: Sequence[str], text_vectors: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """``(n, dim)`` embeddings: the trained row where the model knows the item, the
        projected text vector (``text_vectors(ids)``) where it does not, the same whichever
        other items come with it."""
        out = np.empty((len(item_ids), self.manifest.dim), dtype=np.float32)
        rows = np.fromiter((self.row.get(i, -1) for i in item_ids), dtype=np.int64, count=len(item_ids))
        known = rows >= 0
        out[known] = self.table[rows[known]]
        if not known.all():
            unknown = [i for i, r in zip(item_ids, rows.tolist(), strict=True) if r < 0]
            out[~known] = products.scores(self._project_columns, text_vectors(unknown))  # batch-invariant
        return out

    def users(self, histories: Sequence[Sequence[str]],
              text_vectors: Callable[[list[str]], np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """``(B, dim)`` user vectors, one onnxruntime run for the batch, and each history's
        item embeddings (newest ``max_len``). A history is the user's positive items, oldest
        first; only the newest ``max_len`` count."""
        n, dim = self.manifest.max_len, self.manifest.dim
        items = np.zeros((len(histories), n, dim), dtype=np.float32)
        mask = np.zeros((len(histories), n), dtype=np.float32)
        flat = [list(h[-n:]) for h in histories]
        vectors = self.embed([i for h in flat for i in h], text_vectors)
        embedded = []
        at = 0
        for b, history in enumerate(flat):
            embedded.append(vectors[at:at + len(history)])
            if history:
                items[b, n - len(history):] = embedded[-1]
                mask[b, n - len(history):] = 1.0
                at += len(history)
        return self.session.run(None, {"items": items, "mask": mask})[0], embedded

    def logits(self, users: np.ndarray) -> np.ndarray:
        """``(B, items)``: each user's score of every item of the model, the same for a user
        whatever other users come with it (a worker's batches hold any number of users, and a
        list must not depend on its batch).

        The product reads the whole table (25.6 MB at 100k items x 64) once per batch, and
        gives a user the same scores in any batch (:mod:`streams.products`).
        """
        return products.scores(self.table, users)

    def probabilities(self, users: np.ndarray) -> np.ndarray:
        """``(B, items)``: each user's next-click probability over the model's items."""
        return _softmax_rows(self.logits(users))


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """The indices of the ``n`` largest finite ``scores``, largest first, ties by index.

    A partition of a whole row costs ~0.45 ms at 100k items, more than the row's share of
    the product, so it runs on a shortlist: the ``n``-th largest of the maxima of blocks of
    :data:`_TOP_BLOCK` is a floor that at least ``n`` items reach, so every item of the top
    ``n`` reaches it too (~0.1 ms a row).
    """
    blocks = len(scores) // _TOP_BLOCK
    if blocks > n:
        maxima = scores[:blocks * _TOP_BLOCK].reshape(blocks, _TOP_BLOCK).max(axis=1)
        shortlist = np.flatnonzero(scores >= np.partition(maxima, blocks - n)[blocks - n])
    else:
        shortlist = np.arange(len(scores))
    shortlist = shortlist[np.isfinite(scores[shortlist])]
    if len(shortlist) > n:  # keep every item as good as the n-th, so that ties go by index
        values = scores[shortlist]
        shortlist = shortlist[values >= np.partition(values, len(values) - n)[len(values) - n]]
    return shortlist[np.lexsort((shortlist, -scores[shortlist]))][:n]


def save_model(directory: Path, manifest: SequenceManifest, item_ids: Sequence[str], table: np.ndarray,
               project: np.ndarray, graph: Path) -> Path:
    """Write a model directory (the ONNX graph is moved in) and make it ``<root>/latest``,
    atomically: a worker watching the root never sees half a model."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    os.replace(graph, directory / GRAPH_FILE)
    np.save(directory / TABLE_FILE, np.ascontiguousarray(table, dtype=np.float32))
    np.save(directory / PROJECT_FILE, np.ascontiguousarray(project, dtype=np.float32))
    (directory / IDS_FILE).write_text(json.dumps(list(item_ids)))
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest.to_json(), indent=1))
    pointer = directory.parent / LATEST_FILE
    tmp = pointer.with_suffix(".tmp")
    tmp.write_text(directory.name + "\n")
    os.replace(tmp, pointer)
    return directory


def latest_dir(root: Path) -> Path | None:
    """The model directory ``<root>/latest`` names, or None when there is none yet."""
    try:
        name = (Path(root) / LATEST_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return Path(root) / name if name else None


class SequenceWatch:
    """Loads the newest model under a root when ``latest`` changes (checked by :meth:`poll`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.loaded: str | None = None

    def poll(self) -> SequenceModel | None:
        """A newly published model, or None (nothing new, or the new one is broken: logged,
        and the model in use stays)."""
        directory = latest_dir(self.root)
        if directory is None or directory.name == self.loaded:
            return None
        self.loaded = directory.name
        try:
            model = SequenceModel.load(directory)
        except SequenceModelError as exc:
            log.error("%s; ranking on without it", exc)
            return None
        log.info("sequence model %s loaded (%d items)", model.version, len(model.item_ids))
        return model
