"""``recstream train``: the next-item sequence model from a click log, published for workers.

Reads the clicks (ml-100k or your JSONL log) up to a cut-off time, embeds the items with the
text encoder (cached, as eval does), trains a SASRec (:mod:`export.sequence_train`) with a
progress bar, exports it to ONNX with a parity check (:mod:`export.sequence_export`) into
``<sequence dir>/<version>``, makes it ``latest`` (running workers pick it up), and draws
the loss per epoch as a PNG.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from export.sequence_export import train_and_export
from export.sequence_train import TrainConfig
from streams.datasets import Dataset, check_evaluable, load_jsonl, load_movielens_100k
from streams.errors import ConfigError
from streams.progress import progress_bar
from streams.settings import Settings

log = logging.getLogger(__name__)


def load_clicks(settings: Settings, dataset_name: str | None, items_path: Path | None,
                clicks_path: Path | None) -> Dataset:
    """The data set to learn from: ml-100k (the default) or the given JSONL files."""
    if (items_path is None) != (clicks_path is None):
        raise ConfigError("--items and --clicks go together (or use --dataset ml-100k)")
    if items_path is not None and clicks_path is not None:
        for path in (items_path, clicks_path):
            if not Path(path).is_file():
                raise ConfigError(f"no such file: {path}")
        return load_jsonl(Path(items_path), Path(clicks_path), now_s=time.time())
    if dataset_name in (None, "ml-100k"):
        return load_movielens_100k(settings.data_dir)
    raise ConfigError(f"unknown dataset {dataset_name!r}: use ml-100k, or --items and --clicks")


def write_loss_plot(path: Path, losses: list[float], title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(1, len(losses) + 1), losses, marker="o", markersize=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy over the catalogue (mean per position)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def train_command(settings: Settings, *, dataset_name: str | None = None, items_path: Path | None = None,
                  clicks_path: Path | None = None, until_s: float | None = None, out_dir: Path | None = None,
                  epochs: int | None = None, device: str = "cpu", plot_path: Path | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Train, export and publish a sequence model; the report ``recstream train --json`` prints."""
    from streams.eval import encode_items
    from streams.modelstore import ensure_model

    started = time.perf_counter()
    dataset = load_clicks(settings, dataset_name, items_path, clicks_path)
    check_evaluable(dataset)
    clicks = [c for c in dataset.clicks if until_s is None or c.ts_s < until_s]
    if not clicks:
        raise ConfigError("no clicks to learn from" + (f" before {until_s}" if until_s is not None else ""))
    encoder_dir = ensure_model(settings)
    vectors, encoder = encode_items(dataset, encoder_dir, settings.data_dir / "cache", progress=progress)
    config = TrainConfig() if epochs is None else TrainConfig(epochs=epochs)
    out = Path(out_dir) if out_dir is not None else settings.sequence_dir
    with progress_bar(progress, config.epochs, f"train {dataset.name}") as advance:
        model, manifest, directory = train_and_export(
            clicks, vectors, out, config=config, device=device, encoder=encoder,
            progress=lambda epoch, _epochs, loss: advance(epoch, {"loss": loss}))
    log.info("published %s in %s", model.version, directory)
    report: dict[str, Any] = {
        "version": model.version, "dir": str(directory), "dataset": dataset.name,
        **{k: manifest.trained_on[k] for k in ("clicks", "users", "items", "until_s")},
        "encoder": encoder, "config": manifest.config, "epochs_run": len(manifest.losses),
        "loss_first": manifest.losses[0] if manifest.losses else None,
        "loss_last": manifest.losses[-1] if manifest.losses else None,
        "parity": manifest.parity, "device": device, "seconds": round(time.perf_counter() - started, 1),
    }
    if plot_path is not None:
        report["plot"] = str(write_loss_plot(Path(plot_path), manifest.losses, f"{model.version} on {dataset.name}"))
    return report
