"""``recstream train``: the next-item sequence model from a click log, published for workers.

Reads the clicks (ml-100k, your JSONL log, or the cluster's items and clicks topics) up to
a cut-off time, embeds the items with the
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
from streams.datasets import Dataset, check_evaluable, load_dataset
from streams.errors import ConfigError
from streams.progress import progress_bar
from streams.settings import Settings

log = logging.getLogger(__name__)


def read_topics(settings: Settings, *, progress: bool = True) -> tuple[Dataset, dict[str, int]]:
    """The items and clicks topics as they are now, from their first records: what the
    workers were given. Records a worker would have dead-lettered are skipped and counted."""
    import asyncio

    from streams.records import RecordDecodeError, decode_click, decode_item

    now_s = time.time()
    topics = settings.topics
    raw = asyncio.run(_read_all(settings, [topics.items, topics.clicks], progress))
    skipped = {topics.items: 0, topics.clicks: 0}
    items, clicks = [], []
    for topic, decode, out in ((topics.items, decode_item, items), (topics.clicks, decode_click, clicks)):
        for value in raw[topic]:
            try:
                out.append(decode(value, now_s=now_s))
            except RecordDecodeError:
                skipped[topic] += 1
    clicks.sort(key=lambda c: c.ts_s)  # stable: a partition's order where times tie
    return Dataset(name=topics.clicks, items=items, clicks=clicks), skipped


async def _read_all(settings: Settings, names: list[str], progress: bool) -> dict[str, list[bytes]]:
    """Every record value of each topic up to its end offsets as of the start (no group)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient

    from streams.topics import TopicUnavailable, partitions_of

    admin = AIOKafkaAdminClient(**settings.kafka.client_kwargs())
    await admin.start()
    try:
        tps = await partitions_of(admin, names)
    except TopicUnavailable as exc:
        raise ConfigError(f"{exc} on {settings.kafka.bootstrap_servers}") from None
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(**settings.kafka.consumer_kwargs(), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        start, end = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        out: dict[str, list[bytes]] = {name: [] for name in names}
        total = sum(end[tp] - start[tp] for tp in tps)
        done = 0
        with progress_bar(progress, total, "reading topics") as advance:
            while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                for tp, records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).items():
                    kept = [r.value for r in records if r.offset < end[tp] and r.value is not None]
                    out[tp.topic].extend(kept)
                    done += len(records)
                advance(min(done, total), {})
        return out
    finally:
        await consumer.stop()


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
                  from_topics: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train, export and publish a sequence model; the report ``recstream train --json`` prints.

    The clicks come from ml-100k, JSONL files, or (``from_topics``) the configured cluster's
    items and clicks topics."""
    from streams.eval import encode_items
    from streams.modelstore import ensure_model

    started = time.perf_counter()
    skipped = None
    if from_topics:
        if dataset_name or items_path or clicks_path:
            raise ConfigError("--from-topics reads the cluster's topics: give no --dataset, --items or --clicks")
        dataset, skipped = read_topics(settings, progress=progress)
    else:
        dataset = load_dataset(settings.data_dir, dataset_name, items_path, clicks_path)
    check_evaluable(dataset)
    clicks = [c for c in dataset.clicks if until_s is None or c.ts_s < until_s]
    if not clicks:
        raise ConfigError("no clicks to learn from" + (f" before {until_s}" if until_s is not None else ""))
    encoder_dir = ensure_model(settings)
    vectors, encoder = encode_items(dataset, encoder_dir, settings.data_dir / "cache", progress=progress)
    config = TrainConfig() if epochs is None else TrainConfig(epochs=epochs)
    out = Path(out_dir) if out_dir is not None else settings.sequence_dir
    with progress_bar(progress, config.epochs, f"train {dataset.name}") as advance:
        model, manifest, directory, *_ = train_and_export(
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
    if skipped is not None:
        report["unreadable_records"] = skipped
    if plot_path is not None:
        report["plot"] = str(write_loss_plot(Path(plot_path), manifest.losses, f"{model.version} on {dataset.name}"))
    return report
