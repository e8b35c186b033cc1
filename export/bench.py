"""Encoder benchmark: torch eager vs onnxruntime (the ``ItemEncoder`` as served).

Both sides get the same texts, device, batch sizes and thread count, and both time the
whole path from strings to vectors (tokenisation included: the same fast tokenizer
feeds both). Each case runs a burn-in pass first (allocations, kernel selection, CUDA
graph warm-up), then ``repeats`` timed passes over ``n_texts`` texts; the best pass is
reported (least disturbed by other processes). Seeds are fixed, so the texts are the
same on every run. ``min_cosine`` compares the two sides' vectors at the headline batch.

The headline is batch 32 (``HEADLINE_BATCH``), the encoder target of docs/architecture.md.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoders.item_encoder import ItemEncoder
from encoders.session import CUDA_PROVIDER
from encoders.shapes import DEFAULT_TOKEN_BUCKETS
from export.bench_shapes import compare_shapes
from export.parity_texts import bench_texts

log = logging.getLogger(__name__)

HEADLINE_BATCH = 32
DEFAULT_BATCH_SIZES = (1, 32, 256)
BENCH_SEED = 1234


def _cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _time_passes(
    encode: Callable[[list[str]], np.ndarray], texts: list[str], batch_size: int, repeats: int, sync: Callable[[], None]
) -> tuple[float, np.ndarray]:
    """Best items/s over ``repeats`` passes (after one burn-in batch pass), and the vectors."""
    burn_in = texts[: max(batch_size, min(len(texts), 2 * batch_size))]
    for i in range(0, len(burn_in), batch_size):
        encode(burn_in[i : i + batch_size])
    sync()
    best_s = float("inf")
    out: list[np.ndarray] = []
    for _ in range(repeats):
        out = []
        start = time.perf_counter()
        for i in range(0, len(texts), batch_size):
            out.append(encode(texts[i : i + batch_size]))
        sync()
        best_s = min(best_s, time.perf_counter() - start)
    return len(texts) / best_s, np.concatenate(out)


def run_encoder_bench(
    model_dir: Path,
    *,
    source: Path | None = None,
    device: str = "cpu",
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    n_texts: int = 512,
    repeats: int = 2,
    threads: int | None = None,
    chart_path: Path | None = None,
    progress: Callable[[str], None] | None = None,
    shapes: bool = True,
    token_buckets: Sequence[int] = DEFAULT_TOKEN_BUCKETS,
    burst: int | None = None,
) -> dict[str, Any]:
    """Items/s of torch eager vs onnxruntime on the same texts, device and batch sizes.

    Args:
        model_dir: an exported model directory (``recstream bench encoder`` passes the
            configured one, exported on first use by ``streams.modelstore.ensure_model``).
        source: the torch model directory; default: the manifest's ``source``.
        device: ``"cpu"`` or ``"cuda"`` (for both sides).
        batch_sizes: batch sizes to run; ``HEADLINE_BATCH`` is added if missing.
        n_texts: texts per timed pass (~15-60 tokens each).
        repeats: timed passes per case; the best is kept.
        threads: CPU threads for both torch and onnxruntime; default all usable cores.
        chart_path: if set, a PNG bar chart of items/s per batch size is written there.
        progress: called with a one-line message per case.
        shapes: also measure first-shape costs with shape buckets off and on, each in a
            fresh process (:mod:`export.bench_shapes`): the ``shapes`` key.
        token_buckets: the token buckets of the ``buckets_on`` side.
        burst: texts in the shapes burst; default 4,096 on CUDA, 512 on the CPU.

    Returns:
        ``{"device","batch","torch_items_s","ort_items_s","speedup","min_cosine",
        "variant","recipe","provider","version","threads","n_texts","by_batch":{bs:{...}}}``;
        ``recipe`` is how the served variant was made (an int8 export's quantisation recipe:
        the parity bar it was exported under decides which one).

    Raises:
        ProviderError: ``device="cuda"`` without a usable CUDA EP.
        ModelDirError, ModelSourceError: missing model directories.
    """
    import torch

    from export.torch_model import PooledEncoder, load_hf_encoder, load_tokenizer, tokenize, torch_encode

    def say(message: str) -> None:
        log.info(message)
        if progress is not None:
            progress(message)

    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r} (--device)")
    threads = threads or _cpu_threads()
    encoder = ItemEncoder.load(model_dir, device=device, threads=threads)
    if device == "cuda" and encoder.provider != CUDA_PROVIDER:  # create_session already raises; belt and braces
        raise RuntimeError(f"onnxruntime is on {encoder.provider}, not CUDA")
    source = Path(source or encoder.manifest.source)
    model = PooledEncoder(load_hf_encoder(source), encoder.manifest.pooling, encoder.manifest.normalize).eval().to(device)
    tokenizer = load_tokenizer(
        encoder.manifest.tokenizer_path, encoder.manifest.max_length, encoder.manifest.pad_id, encoder.manifest.pad_token
    )

    previous_threads = torch.get_num_threads()
    torch.manual_seed(BENCH_SEED)
    if device == "cpu":
        torch.set_num_threads(threads)  # same thread budget as the ORT session

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def torch_side(batch: list[str]) -> np.ndarray:
        return torch_encode(model, tokenize(tokenizer, batch, encoder.manifest.input_names), device)

    texts = bench_texts(n_texts, seed=BENCH_SEED)
    cases = sorted(set(batch_sizes) | {HEADLINE_BATCH})
    by_batch: dict[int, dict[str, float]] = {}
    try:
        for batch_size in cases:
            say(f"batch {batch_size}: torch eager ({device}, {threads} threads)")
            torch_items_s, torch_vectors = _time_passes(torch_side, texts, batch_size, repeats, sync)
            say(f"batch {batch_size}: onnxruntime {encoder.variant} on {encoder.provider}")
            ort_items_s, ort_vectors = _time_passes(encoder.encode, texts, batch_size, repeats, lambda: None)
            cosine = (torch_vectors * ort_vectors).sum(axis=1)  # [n], both unit-norm
            by_batch[batch_size] = {
                "torch_items_s": round(torch_items_s, 1),
                "ort_items_s": round(ort_items_s, 1),
                "speedup": round(ort_items_s / torch_items_s, 2),
                "min_cosine": round(float(cosine.min()), 5),
            }
            say(f"batch {batch_size}: torch {torch_items_s:.0f}/s, ort {ort_items_s:.0f}/s "
                f"({ort_items_s / torch_items_s:.2f}x)")
    finally:
        torch.set_num_threads(previous_threads)
    headline = by_batch[HEADLINE_BATCH]
    result = {
        "device": device,
        "batch": HEADLINE_BATCH,
        "torch_items_s": headline["torch_items_s"],
        "ort_items_s": headline["ort_items_s"],
        "speedup": headline["speedup"],
        "min_cosine": headline["min_cosine"],
        "variant": encoder.variant,
        "recipe": encoder.manifest.variants[encoder.variant].recipe,
        "provider": encoder.provider,
        "version": encoder.version,
        "threads": threads,
        "n_texts": n_texts,
        "by_batch": {str(k): v for k, v in by_batch.items()},
        "shape_buckets": list(encoder.buckets.tokens) if encoder.buckets else None,
    }
    if shapes:
        # The shapes are measured in processes of their own (their GPU memory is read per
        # process); the torch model's cached blocks go back to the GPU first.
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
        result["shapes"] = compare_shapes(model_dir, device=device, threads=threads, token_buckets=token_buckets,
                                          burst=burst or (4096 if device == "cuda" else 512), say=say)
    if chart_path is not None:
        write_bench_chart(result, Path(chart_path))
    return result


def write_bench_chart(result: dict[str, Any], path: Path) -> Path:
    """Bar chart of items/s per batch size, torch vs onnxruntime (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = list(result["by_batch"])
    x = np.arange(len(batches))
    torch_vals = [result["by_batch"][b]["torch_items_s"] for b in batches]
    ort_vals = [result["by_batch"][b]["ort_items_s"] for b in batches]
    shapes = result.get("shapes")
    fig, axes = plt.subplots(1, 2 if shapes else 1, figsize=(11 if shapes else 6, 3.5), squeeze=False)
    ax = axes[0][0]
    ax.bar(x - 0.2, torch_vals, 0.4, label="torch eager")
    ax.bar(x + 0.2, ort_vals, 0.4, label=f"onnxruntime {result['variant']}")
    for i, b in enumerate(batches):
        ax.text(x[i] + 0.2, ort_vals[i], f"{result['by_batch'][b]['speedup']}x", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [f"batch {b}" for b in batches])
    ax.set_ylabel("items/s")
    ax.set_title(f"{result['version']} on {result['device']} ({result['threads']} threads)")
    ax.legend()
    if shapes:
        _shapes_chart(axes[0][1], shapes)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _shapes_chart(ax: Any, shapes: dict[str, dict[str, Any]]) -> None:
    """One item at a length the encoder has not run vs one it has, buckets off and on."""
    names = list(shapes)
    x = np.arange(len(names))
    new = [shapes[n]["new_length_ms"]["p50"] for n in names]
    same = [shapes[n]["same_length_ms"]["p50"] for n in names]
    ax.bar(x - 0.2, new, 0.4, label="new length (p50)")
    ax.bar(x + 0.2, same, 0.4, label="same length again (p50)")
    ax.set_xticks(x, [n.replace("_", " ") for n in names])
    ax.set_ylabel("ms for one item")
    ax.set_title("first-shape cost")
    ax.legend()
