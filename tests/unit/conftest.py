from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.unit.export.tiny import TINY_TEXTS, build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_export(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    from export import export_model

    out_dir = tmp_path_factory.mktemp("tiny-export")
    report = export_model(tiny_model_dir, out_dir, fp16=True, int8=True, texts=TINY_TEXTS, threads=1)
    return out_dir, report
