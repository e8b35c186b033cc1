"""What a fresh encoder pays for input shapes it has not run: with and without shape buckets.

onnxruntime's CUDA provider pays a one-off cost per new input shape (rows x tokens), so a
worker's first items and first bursts are slow unless the shapes were warmed
(:mod:`encoders.shapes`). For each setting (buckets off, buckets on) this loads a fresh
encoder and times, in order:

1. ``load_s`` (with the warm-up, ``warm_up_s``, when buckets are on) and the first item;
2. one item at each of ~64 token lengths the encoder has not run (``new_length_ms``), then
   the same lengths again (``same_length_ms``): the gap is the first-shape cost;
3. on another fresh encoder, a burst of ``burst`` texts of mixed lengths in one call, the
   first time (``burst_first_items_s``) and again (``burst_steady_items_s``);
4. steady items/s at the batch sizes given (``items_s_by_batch``): what padding costs;
5. the process's GPU memory (``gpu_memory_mb``, from ``nvidia-smi``; None without a GPU).

``new_shape_runs`` counts the runs, after load, whose shape the session had not run: 0 with
buckets on. Torch-free: it runs wherever the encoder serves.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoders.item_encoder import BucketMode, ItemEncoder
from encoders.shapes import DEFAULT_TOKEN_BUCKETS
from export.parity_texts import bench_texts

#: Token lengths probed for ``new_length_ms`` (spread over 3 .. max_length).
NEW_LENGTHS = 64
SHAPES_SEED = 4321


def length_texts(encoder: ItemEncoder, count: int) -> list[str]:
    """Texts of ``count`` distinct token lengths spread from 3 to the model's max length
    (checked with the encoder's own tokenizer), in a fixed shuffled order."""
    words = ["word", "music", "jazz", "book", "red", "river", "night", "city"]
    rng = random.Random(SHAPES_SEED)
    wanted = sorted({round(x) for x in np.linspace(3, encoder.max_length, count)})
    out: dict[int, str] = {}
    for n_words in range(1, encoder.max_length):
        text = " ".join(rng.choice(words) for _ in range(n_words))
        length = int(encoder.tokenize([text])["attention_mask"].sum())
        if length in wanted and length not in out:
            out[length] = text
        if length >= encoder.max_length:
            break
    texts = list(out.values())
    rng.shuffle(texts)
    return texts


def gpu_memory_mb(pid: int | None = None) -> float | None:
    """GPU memory held by process ``pid`` (default this one), per ``nvidia-smi``; None
    without a GPU or the tool."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        lines = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    pid = os.getpid() if pid is None else pid
    used = [float(m) for p, m in (line.split(",") for line in lines if "," in line) if int(p) == pid]
    return sum(used) if used else None


def _ms(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 2), "p99": round(float(np.percentile(a, 99)), 2),
            "max": round(float(a.max()), 2), "n": int(a.size)}


def _encode_s(encoder: ItemEncoder, texts: list[str]) -> float:
    began = time.perf_counter()
    encoder.encode(texts)
    return time.perf_counter() - began


def measure_shapes(
    model_dir: Path,
    *,
    device: str,
    threads: int,
    shape_buckets: BucketMode,
    token_buckets: Sequence[int] = DEFAULT_TOKEN_BUCKETS,
    burst: int = 4096,
    batch_sizes: Sequence[int] = (1, 32, 256),
    cuda_options: Mapping[str, str] | None = None,
    say: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """One setting's first-shape figures (see the module docstring)."""

    def load() -> ItemEncoder:
        return ItemEncoder.load(model_dir, device=device, threads=threads, verify_hashes=False,
                                shape_buckets=shape_buckets, token_buckets=token_buckets, cuda_options=cuda_options)

    began = time.perf_counter()
    encoder = load()
    load_s = time.perf_counter() - began
    first_item_ms = _encode_s(encoder, ["A first item: jazz records from the city."]) * 1000.0
    texts = length_texts(encoder, NEW_LENGTHS)
    say(f"shapes ({shape_buckets}): {len(texts)} new lengths")
    new = [_encode_s(encoder, [t]) * 1000.0 for t in texts]
    same = [_encode_s(encoder, [t]) * 1000.0 for t in texts]
    buckets, new_shape_runs, warm_up_s = encoder.buckets, encoder.new_shape_runs, encoder.warm_up_s
    del encoder  # one session at a time, so gpu_memory_mb is one encoder's
    burst_texts = bench_texts(burst, seed=SHAPES_SEED)  # mixed lengths, ~15-60 tokens
    fresh = load()
    say(f"shapes ({shape_buckets}): a burst of {burst}")
    first_s = _encode_s(fresh, burst_texts)
    steady_s = _encode_s(fresh, burst_texts)
    by_batch = {}
    for batch in batch_sizes:
        chunks = [burst_texts[i:i + batch] for i in range(0, min(len(burst_texts), max(batch * 8, 256)), batch)]
        for chunk in chunks:  # warm: only the steady cost is wanted here
            fresh.encode(chunk)
        spent = sum(_encode_s(fresh, chunk) for chunk in chunks)
        by_batch[str(batch)] = round(sum(len(c) for c in chunks) / spent, 1)
    return {
        "shape_buckets": shape_buckets,
        "token_buckets": list(buckets.tokens) if buckets else None,
        "row_buckets": list(buckets.rows) if buckets else None,
        "shapes_warmed": len(buckets.shapes()) if buckets else 0,
        "load_s": round(load_s, 3),
        "warm_up_s": round(warm_up_s, 3),
        "first_item_ms": round(first_item_ms, 2),
        "new_length_ms": _ms(new),
        "same_length_ms": _ms(same),
        "burst": burst,
        "burst_first_items_s": round(burst / first_s, 1),
        "burst_steady_items_s": round(burst / steady_s, 1),
        "items_s_by_batch": by_batch,
        "new_shape_runs": new_shape_runs + fresh.new_shape_runs,
        "gpu_memory_mb": gpu_memory_mb(),
        "cuda_options": dict(cuda_options or {}),
        "provider": fresh.provider,
        "variant": fresh.variant,
    }


def compare_shapes(model_dir: Path, *, device: str, threads: int,
                   token_buckets: Sequence[int] = DEFAULT_TOKEN_BUCKETS, burst: int = 4096,
                   say: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """:func:`measure_shapes` with buckets off, then on, each in a fresh process (a cold
    worker: its first item pays the provider's start-up, and its GPU memory is its own)."""
    return sweep_shapes(model_dir, device=device, threads=threads, bucket_sets={"buckets_on": token_buckets},
                        burst=burst, say=say)


def sweep_shapes(model_dir: Path, *, device: str, threads: int, bucket_sets: dict[str, Sequence[int]],
                 burst: int = 4096, cuda_options: Mapping[str, str] | None = None,
                 say: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Buckets off (``buckets_off``), then each named token-bucket set, each in a fresh
    process (with ``cuda_options`` on every side): the figures a bucket set for a GPU is
    chosen from."""
    settings = {"buckets_off": ("off", DEFAULT_TOKEN_BUCKETS)} | {n: ("on", b) for n, b in bucket_sets.items()}
    out = {}
    for name, (mode, buckets) in settings.items():
        say(f"shapes: {name} in a fresh process")
        command = [sys.executable, "-m", "export.bench_shapes", "--model-dir", str(model_dir), "--device", device,
                   "--threads", str(threads), "--shape-buckets", mode, "--burst", str(burst),
                   "--token-buckets", ",".join(map(str, buckets)),
                   *(f"--cuda-option={k}={v}" for k, v in (cuda_options or {}).items())]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-2000:]}")
        out[name] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m export.bench_shapes``: one setting (or, with ``--sweep``, buckets off and
    several sets), its figures as one JSON line. Needs only onnxruntime, tokenizers and
    numpy, so it runs on a GPU box that has no recstream environment."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m export.bench_shapes")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--shape-buckets", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--token-buckets", default=",".join(map(str, DEFAULT_TOKEN_BUCKETS)))
    parser.add_argument("--burst", type=int, default=4096)
    parser.add_argument("--sweep", nargs="+", metavar="BUCKETS",
                        help="compare buckets off and each comma-separated token-bucket set, each in a fresh "
                             "process (e.g. --sweep 16,32,64,128,256 16,24,32,48,64,96,128,192,256)")
    parser.add_argument("--cuda-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a CUDA provider option, repeatable (e.g. arena_extend_strategy=kSameAsRequested)")
    args = parser.parse_args(argv)
    cuda_options = dict(option.split("=", 1) for option in args.cuda_option)
    if args.sweep:
        sets = {f"buckets {s}": [int(b) for b in s.split(",") if b.strip()] for s in args.sweep}
        print(json.dumps(sweep_shapes(args.model_dir, device=args.device, threads=args.threads, bucket_sets=sets,
                                      burst=args.burst, cuda_options=cuda_options, say=lambda message: print(message, file=sys.stderr))))
        return 0
    result = measure_shapes(args.model_dir, device=args.device, threads=args.threads,
                            shape_buckets=args.shape_buckets,
                            token_buckets=[int(b) for b in args.token_buckets.split(",") if b.strip()],
                            burst=args.burst, cuda_options=cuda_options)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
