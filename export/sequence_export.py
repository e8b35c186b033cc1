"""A trained sequence model -> an ONNX model directory that serving reads without torch.

The graph is exported with the TorchScript exporter (as the text encoder is), then checked:
the same histories through torch and through onnxruntime must give the same user vectors
(:func:`parity`), or nothing is written.
"""

from __future__ import annotations

import hashlib
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from export.errors import ExportError
from export.sequence_model import SASRec
from export.sequence_train import PAD, TrainConfig, embed, histories, network, train
from streams.records import Click
from streams.sequence import SequenceManifest, SequenceModel, save_model

OPSET = 17
#: Smallest cosine between torch's and onnxruntime's user vectors that passes.
MIN_COSINE = 0.9999


def export_graph(model: SASRec, path: Path) -> None:
    """The user-vector graph: ``items (B, L, dim)``, ``mask (B, L)`` -> ``user (B, dim)``."""
    n, dim = model.max_len, model.dim
    example = (torch.zeros(2, n, dim), torch.ones(2, n))
    # The TorchScript exporter, as for the text encoder: the graph is plain matrix algebra and
    # it needs no onnxscript; its deprecation notice says nothing about this graph.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model.eval(), example, str(path), input_names=["items", "mask"], output_names=["user"],
                          dynamic_axes={"items": {0: "batch"}, "mask": {0: "batch"}, "user": {0: "batch"}},
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)


def parity(model: SASRec, served: SequenceModel, histories: np.ndarray) -> dict[str, Any]:
    """torch against onnxruntime on ``histories`` (``(B, L)`` item rows, :data:`PAD` padded)."""
    with torch.no_grad():
        items, mask = embed(model.item_table(), torch.from_numpy(histories))
        reference = model(items, mask).numpy()
    got = served.session.run(None, {"items": items.numpy(), "mask": mask.numpy()})[0]
    cos = (reference * got).sum(1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(got, axis=1) + 1e-12)
    report = {"histories": len(histories), "min_cosine": round(float(cos.min()), 7),
              "max_abs_diff": float(np.abs(reference - got).max()), "min_cosine_required": MIN_COSINE}
    report["passed"] = bool(report["min_cosine"] >= MIN_COSINE)
    return report


def sample_histories(histories: Sequence[Sequence[int]], max_len: int, count: int = 64, seed: int = 0) -> np.ndarray:
    """Up to ``count`` training histories of every length, as padded rows, for the parity check."""
    rng = np.random.default_rng(seed)
    rows = np.full((0, max_len), PAD, dtype=np.int64)
    usable = [h for h in histories if h]
    if usable:
        picks = rng.choice(len(usable), size=min(count, len(usable)), replace=False)
        rows = np.full((len(picks), max_len), PAD, dtype=np.int64)
        for j, p in enumerate(picks.tolist()):
            h = list(usable[p])[-max_len:][: 1 + j % max_len]  # lengths 1 .. max_len
            rows[j, max_len - len(h):] = h
    return rows


def write_model(model: SASRec, out_dir: Path, *, item_ids: Sequence[str], histories: Sequence[Sequence[int]],
                config: TrainConfig, losses: list[float], trained_on: dict[str, Any]) -> tuple[Path, SequenceManifest]:
    """Export ``model`` into ``out_dir/<version>`` and make it the latest there.

    Raises:
        ExportError: the export failed, or onnxruntime disagrees with torch.
    """
    with torch.no_grad():
        table = model.item_table().numpy()
        project = model.project.weight.T.contiguous().numpy()
    digest = hashlib.sha256(table.tobytes() + repr(sorted(trained_on.items())).encode()).hexdigest()[:10]
    version = f"sasrec@{digest}"
    manifest = SequenceManifest(version=version, dim=model.dim, max_len=model.max_len, text_dim=project.shape[0],
                                items=len(item_ids), trained_on=trained_on, config=config.to_dict(), parity={},
                                losses=[round(x, 5) for x in losses])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        graph = Path(tmp) / "sequence.onnx"
        try:
            export_graph(model, graph)
        except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds
            raise ExportError(f"exporting the sequence model to ONNX failed: {exc}") from exc
        import onnxruntime as ort

        served = SequenceModel(ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]), manifest,
                               item_ids, table, project)
        check = parity(model, served, sample_histories(histories, model.max_len))
        if not check["passed"]:
            raise ExportError(f"onnxruntime disagrees with torch: {check}")
        manifest = SequenceManifest(**{**manifest.to_json(), "parity": check})
        directory = save_model(out_dir / version.replace("@", "-"), manifest, item_ids, table, project, graph)
    return directory, manifest


def _text_table(item_vectors: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """The model's items (sorted ids: the rows of its table) and their text vectors."""
    item_ids = sorted(item_vectors)
    return item_ids, np.stack([np.asarray(item_vectors[i], dtype=np.float32) for i in item_ids])


class Trained(NamedTuple):
    """A trained, exported and published sequence model."""

    served: SequenceModel  # loaded back from the published directory, as workers load it
    manifest: SequenceManifest
    directory: Path
    network: SASRec  # the torch model, to warm-start the next fit from
    item_ids: list[str]  # the rows of its item table


def train_and_export(clicks: Sequence[Click], item_vectors: Mapping[str, np.ndarray], out_dir: Path, *,
                     config: TrainConfig = TrainConfig(), device: str = "cpu", encoder: str = "",
                     progress: Callable[[int, int, float], None] | None = None,
                     warm_from: Trained | None = None) -> Trained:
    """Train on ``clicks`` (time order) over the items with a text vector, export, load back.

    The one way a sequence model is made: ``recstream train`` and the eval's retraining both
    call it, and both serve what it returns through onnxruntime. With ``warm_from``, training
    starts from that earlier fit (items new since start from their text), for
    ``config.epochs`` epochs.
    """
    item_ids, text = _text_table(item_vectors)
    row = {item_id: r for r, item_id in enumerate(item_ids)}
    users = histories(clicks, row)
    warm = None
    if warm_from is not None:
        before = {item_id: r for r, item_id in enumerate(warm_from.item_ids)}
        warm = (warm_from.network, np.array([before.get(i, -1) for i in item_ids], dtype=np.int64))
    model, losses = train(users, text, config, device=device, progress=progress, warm=warm)
    trained_on = {"clicks": len(clicks), "users": len(users), "items": len(item_ids), "encoder": encoder,
                  "until_s": max((c.ts_s for c in clicks), default=None),
                  "warm_from": warm_from.served.version if warm_from is not None else None}
    directory, manifest = write_model(model, out_dir, item_ids=item_ids, histories=users, config=config,
                                      losses=losses, trained_on=trained_on)
    return Trained(SequenceModel.load(directory), manifest, directory, model, item_ids)


def export_untrained(item_vectors: Mapping[str, np.ndarray], out_dir: Path, *,
                     config: TrainConfig = TrainConfig()) -> SequenceModel:
    """A sequence model over ``item_vectors`` as :func:`train_and_export` makes one, without
    the training: its weights are the initial ones. It costs what a trained model of the same
    size costs to serve, so benchmarks serve it where they have no clicks to train on."""
    item_ids, text = _text_table(item_vectors)
    model = network(text, config).eval()
    rng = np.random.default_rng(config.seed)
    some = [rng.integers(0, len(item_ids), size=config.max_len).tolist() for _ in range(16)]  # for the parity check
    directory, _ = write_model(model, out_dir, item_ids=item_ids, histories=some, config=config, losses=[],
                               trained_on={"clicks": 0, "items": len(item_ids), "untrained": True})
    return SequenceModel.load(directory)
