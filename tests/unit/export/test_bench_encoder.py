"""``recstream bench encoder`` on a tiny model (CPU): the torch/onnxruntime table, and the
first-shape figures with shape buckets off and on, each side in a fresh process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from encoders.manifest import load_manifest
from export.bench import run_encoder_bench


def test_the_encoder_bench_reports_items_s_and_first_shape_costs(
        tiny_export: tuple[Path, dict[str, Any]], tiny_model_dir: Path, tmp_path: Path) -> None:
    chart = tmp_path / "encoder.png"
    result = run_encoder_bench(tiny_export[0], source=tiny_model_dir, device="cpu", batch_sizes=(1, 32),
                               n_texts=64, repeats=1, threads=1, chart_path=chart, token_buckets=(8, 16, 32),
                               burst=96)
    assert {"device", "batch", "torch_items_s", "ort_items_s", "speedup", "min_cosine"} <= result.keys()
    assert result["batch"] == 32 and result["min_cosine"] > 0.99 and result["shape_buckets"] is None
    served = load_manifest(tiny_export[0]).variants[result["variant"]]
    assert result["recipe"] == served.recipe and result["recipe"]
    off, on = result["shapes"]["buckets_off"], result["shapes"]["buckets_on"]
    assert off["shapes_warmed"] == 0 and off["warm_up_s"] == 0 and off["new_shape_runs"] > 0
    assert on["token_buckets"][:3] == [8, 16, 32] and on["row_buckets"] == [1, 2, 4, 8]
    assert on["shapes_warmed"] == len(on["token_buckets"]) * 4 and on["new_shape_runs"] == 0
    for side in (off, on):
        assert side["new_length_ms"]["n"] >= 20 and side["burst"] == 96
        assert side["burst_first_items_s"] > 0 and set(side["items_s_by_batch"]) == {"1", "32", "256"}
        assert side["gpu_memory_mb"] is None or side["gpu_memory_mb"] > 0
    assert chart.stat().st_size > 0
