"""Run-time encoder: manifest validation, provider fallback, variant choice, encode()."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from encoders.errors import ModelDirError, ProviderError
from encoders.item_encoder import SUB_BATCH, ItemEncoder, choose_variant
from encoders.manifest import load_manifest
from encoders.session import CPU_PROVIDER, CUDA_PROVIDER, create_session


def _cuda_usable(model_file: Path) -> bool:
    if CUDA_PROVIDER not in ort.get_available_providers():
        return False
    return create_session(model_file, "auto")[1] == CUDA_PROVIDER


@pytest.fixture()
def model_copy(tiny_export: tuple[Path, dict[str, Any]], tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(tiny_export[0], dst)
    return dst


def test_auto_falls_back_to_cpu_and_picks_fastest_passed_variant(tiny_export: tuple[Path, dict[str, Any]]) -> None:
    out_dir, _ = tiny_export
    if _cuda_usable(out_dir / "model.fp32.onnx"):
        pytest.skip("a usable GPU is present")
    encoder = ItemEncoder.load(out_dir, device="auto", threads=1)
    assert encoder.provider == CPU_PROVIDER
    expected = "int8" if "int8" in encoder.manifest.variants else "fp32"
    assert encoder.variant == expected != "fp16"
    assert encoder.dim == 32 and encoder.version.startswith("tiny-bert@")


def test_cuda_without_gpu_raises(tiny_export: tuple[Path, dict[str, Any]]) -> None:
    out_dir, _ = tiny_export
    if _cuda_usable(out_dir / "model.fp32.onnx"):
        pytest.skip("a usable GPU is present")
    with pytest.raises(ProviderError, match="--device cpu"):
        ItemEncoder.load(out_dir, device="cuda")
    with pytest.raises(ValueError):
        create_session(out_dir / "model.fp32.onnx", "tpu")  # type: ignore[arg-type]


def test_encode_shapes_and_norms(tiny_export: tuple[Path, dict[str, Any]]) -> None:
    encoder = ItemEncoder.load(tiny_export[0], device="cpu", threads=1, variant="fp32")
    assert encoder.encode([]).shape == (0, 32)
    vectors = encoder.encode(["the red book", "", "长" * 500, "jazz " * 200])
    assert vectors.shape == (4, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Same text, different batch partner and padding: same vector (fp32).
    alone = encoder.encode(["the red book"])
    np.testing.assert_allclose(alone[0], vectors[0], atol=1e-5)
    with pytest.raises(TypeError):
        encoder.encode("a single string")  # type: ignore[arg-type]


def test_length_sorted_sub_batches_keep_the_callers_order(tiny_export: tuple[Path, dict[str, Any]]) -> None:
    encoder = ItemEncoder.load(tiny_export[0], device="cpu", threads=1, variant="fp32")
    # Longer than a sub-batch, lengths shuffled: every row must be its own text's vector.
    texts = [("word " * ((7 * n) % 40)) + f"item {n}" for n in range(SUB_BATCH[CPU_PROVIDER] * 2 + 5)]
    batched = encoder.encode(texts)
    one_by_one = np.concatenate([encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    feeds = encoder.tokenize(texts[:3])  # one batch, padded to its longest text
    assert feeds["input_ids"].shape == feeds["attention_mask"].shape == (3, feeds["attention_mask"].sum(1).max())


def test_unverified_fp16_is_never_chosen_on_cpu(tiny_export: tuple[Path, dict[str, Any]]) -> None:
    manifest = load_manifest(tiny_export[0])
    variants = dict(manifest.variants)
    variants["fp16"] = dataclasses.replace(variants["fp16"], status="unverified-no-gpu")
    variants.pop("int8", None)
    m = dataclasses.replace(manifest, variants=variants)
    assert choose_variant(m, CPU_PROVIDER) == "fp32"
    assert choose_variant(m, CUDA_PROVIDER) == "fp16"


def test_missing_dir_and_manifest(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="does not exist"):
        ItemEncoder.load(tmp_path / "nope")
    with pytest.raises(ModelDirError, match="manifest.json is missing"):
        ItemEncoder.load(tmp_path)
    assert issubclass(ModelDirError, FileNotFoundError)


def test_bad_json_and_missing_fields(model_copy: Path) -> None:
    manifest = model_copy / "manifest.json"
    good = json.loads(manifest.read_text())
    manifest.write_text("{not json")
    with pytest.raises(ModelDirError, match="not valid JSON"):
        load_manifest(model_copy)
    manifest.write_text(json.dumps({k: v for k, v in good.items() if k != "dim"}))
    with pytest.raises(ModelDirError, match="'dim'"):
        load_manifest(model_copy)


def test_a_manifest_whose_dim_disagrees_with_the_model_is_refused(model_copy: Path) -> None:
    manifest = model_copy / "manifest.json"
    data = json.loads(manifest.read_text())
    data["dim"] += 1
    manifest.write_text(json.dumps(data))
    with pytest.raises(ModelDirError, match="manifest says dim"):
        ItemEncoder.load(model_copy, device="cpu", threads=1)


def test_missing_model_file_and_hash_mismatch(model_copy: Path) -> None:
    fp32 = model_copy / "model.fp32.onnx"
    data = bytearray(fp32.read_bytes())
    data[-1] ^= 0xFF
    fp32.write_bytes(bytes(data))
    with pytest.raises(ModelDirError, match="sha256"):
        load_manifest(model_copy)
    load_manifest(model_copy, verify_hashes=False)  # the cheap path skips the check
    for file in model_copy.glob("model.*.onnx"):
        file.unlink()
    with pytest.raises(ModelDirError, match="none of its model files"):
        load_manifest(model_copy, verify_hashes=False)


def test_a_directory_with_only_the_fp16_file_is_a_gpu_model(model_copy: Path) -> None:
    """A GPU box may be given manifest, tokenizer and model.fp16.onnx alone: it loads (the
    version still names the fp32 graph), and a CPU worker is told what it lacks."""
    full = load_manifest(model_copy)
    for name in ("fp32", "int8"):
        (model_copy / f"model.{name}.onnx").unlink(missing_ok=True)
    slim = load_manifest(model_copy)
    assert slim.version == full.version and set(slim.absent) == {"fp32", "int8"} & set(full.variants)
    assert slim.has("fp16") and not slim.has("fp32")
    assert choose_variant(slim, CUDA_PROVIDER) == "fp16"
    with pytest.raises(ModelDirError, match="holds only fp16.*model.fp32.onnx"):
        choose_variant(slim, CPU_PROVIDER)
    with pytest.raises(ModelDirError, match="file is not in"):
        slim.variant_path("fp32")
    with pytest.raises(ModelDirError, match="holds only fp16"):
        ItemEncoder.load(model_copy, device="cpu")
    assert "absent" not in slim.to_json_dict() and "fp32" in slim.to_json_dict()["variants"]


def test_shape_buckets_pad_every_run_to_a_warmed_shape(tiny_export: tuple[Path, dict[str, Any]]) -> None:
    """With buckets on, every run has a shape the load warmed (no first-shape cost while
    serving) and the vectors are those of the unpadded runs."""
    plain = ItemEncoder.load(tiny_export[0], device="cpu", threads=1, variant="fp32")
    assert plain.buckets is None and plain.warm_up_s == 0.0  # off on the CPU EP by default
    bucketed = ItemEncoder.load(tiny_export[0], device="cpu", threads=1, variant="fp32", shape_buckets="on",
                                token_buckets=(4, 8, 16), max_rows=6)
    buckets = bucketed.buckets
    assert buckets is not None and buckets.rows == (1, 2, 4, 6)
    assert buckets.tokens == (4, 8, 16, bucketed.max_length) and bucketed.warm_up_s > 0
    texts = [("word " * ((5 * n) % 23)) + f"item {n}" for n in range(17)] + ["长" * 500]
    for batch in (texts[:1], texts[:5], texts, texts[3:9]):
        np.testing.assert_allclose(bucketed.encode(batch), plain.encode(batch), atol=1e-5)
    assert bucketed.new_shape_runs == 0
    assert plain.new_shape_runs > 0  # each new length (and row count) was a new shape


_BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import encoders, encoders.item_encoder, encoders.manifest, encoders.session
from encoders.item_encoder import ItemEncoder
enc = ItemEncoder.load(sys.argv[1], device='cpu', threads=1)
assert enc.encode(['hello world']).shape == (1, enc.dim)
import export.bench_shapes  # the shape bench runs on GPU boxes without torch
assert not any(m.split('.')[0] in ('torch', 'transformers') for m in sys.modules)
print('ok')
"""


def test_serving_never_imports_torch(tiny_export: tuple[Path, dict[str, Any]]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _BLOCK_TORCH, str(tiny_export[0])], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
