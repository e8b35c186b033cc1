"""A benched worker gets the bench's whole configuration, the encoder's device and the index's
settings included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streams.bench.latency import BenchRun, Display
from streams.settings import Settings


def test_the_benched_worker_gets_the_model_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSTREAM_MODEL__DEVICE", "cuda")
    monkeypatch.setenv("RECSTREAM_MODEL__TOKEN_BUCKETS", "[16, 64]")
    monkeypatch.setenv("RECSTREAM_DATA_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("RECSTREAM_INDEX__OPTIMIZE_MIN_ITEMS", "5")
    monkeypatch.setenv("RECSTREAM_INDEX__QUANTIZATION", "false")
    settings = Settings()
    env = BenchRun(settings, partitions=1, users=10, items=10, display=Display(False), work_dir=tmp_path).worker_env()
    for key in [k for k in os.environ if k.startswith("RECSTREAM_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("RECSTREAM_"):
            monkeypatch.setenv(key, value)
    worker = Settings()
    assert worker.model.device == "cuda" and worker.model.token_buckets == (16, 64)
    assert worker.model_dir == settings.model_dir and worker.data_dir == tmp_path / "data"
    assert worker.index.optimize_min_items == 5 and worker.index.quantization is False  # the index section too
    assert worker.index_path == tmp_path / "data" / "index"  # in the worker's own data dir
