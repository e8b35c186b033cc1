"""The export contract, declared once: graph I/O, dynamic axes, opset, tolerances.

In the manner of optimum's ``OnnxConfig``: everything the exporter, the parity check and
the run-time encoder must agree on lives here as data, and is derived from the source
model directory by :func:`spec_from_model_dir`:

* inputs ``input_ids``, ``attention_mask`` (+ ``token_type_ids`` when the model's
  ``forward`` takes them), int64 ``[batch, sequence]``;
* one output ``embedding`` float32 ``[batch, dim]``: pooled (mean under the attention
  mask for MiniLM, from ``1_Pooling/config.json``) and L2-normalised inside the graph;
* ``batch`` and ``sequence`` are dynamic;
* per-variant tolerances: minimum cosine similarity to torch for every text at every
  batch size, and for fp32/fp16 a max absolute difference per element.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export.errors import ExportError, ModelSourceError

OUTPUT_NAME = "embedding"
DEFAULT_OPSET = 17  # LayerNormalization is a standard op from 17; ORT's BERT fusion handles it
DEFAULT_MAX_LENGTH = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
# Shapes of the tracing input; also the smallest shape the parity check runs.
DEFAULT_DUMMY_SHAPES = {"batch_size": 2, "sequence_length": 16}
# Batch sizes the parity check runs at (padding differs with the batch, and dynamic int8
# quantisation picks its activation scale per batch, so one size is not enough).
PARITY_BATCH_SIZES = (1, 7, 32)
POOLING_MODES = ("mean", "cls", "max")


@dataclass(frozen=True, slots=True)
class Tolerance:
    """Acceptance thresholds of one variant against the torch reference."""

    min_cosine: float
    # Max |onnx - torch| over all elements of the unit-norm embeddings; None: not checked.
    atol: float | None = None


# fp32: numerically the same graph, only fused. fp16: 10-bit mantissa. int8: dynamic
# quantisation moves vectors by a few degrees at best; 0.99 keeps ANN neighbours stable.
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(min_cosine=0.999, atol=1e-4),
    "fp16": Tolerance(min_cosine=0.99, atol=2e-2),
    "int8": Tolerance(min_cosine=0.99),
}


@dataclass(frozen=True, slots=True)
class ExportSpec:
    """What to export, and how to judge it."""

    model_dir: Path
    model_name: str
    model_type: str
    dim: int
    num_heads: int
    num_layers: int
    pooling: str
    normalize: bool
    max_length: int
    input_names: tuple[str, ...]
    output_name: str = OUTPUT_NAME
    opset: int = DEFAULT_OPSET
    tolerances: dict[str, Tolerance] = field(default_factory=lambda: dict(DEFAULT_TOLERANCES))
    dummy_shapes: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_DUMMY_SHAPES))
    parity_batch_sizes: tuple[int, ...] = PARITY_BATCH_SIZES

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``torch.onnx.export`` dynamic axes: every input ``[batch, sequence]``."""
        axes = {name: {0: "batch", 1: "sequence"} for name in self.input_names}
        axes[self.output_name] = {0: "batch"}
        return axes


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelSourceError(f"{path} is not valid JSON: {exc}") from exc
    return data if isinstance(data, dict) else None


def read_pooling(model_dir: Path) -> str:
    """Pooling mode from the sentence-transformers ``Pooling`` module config; mean if absent."""
    pooling_dir = "1_Pooling"
    modules = model_dir / "modules.json"
    if modules.is_file():
        for module in json.loads(modules.read_text()):
            if str(module.get("type", "")).endswith(".Pooling"):
                pooling_dir = module.get("path") or pooling_dir
    config = _read_json(model_dir / pooling_dir / "config.json")
    if config is None:
        return "mean"
    modes = [m for m in POOLING_MODES if config.get(f"pooling_mode_{m}_tokens" if m != "cls" else "pooling_mode_cls_token")]
    if config.get("pooling_mode_mean_sqrt_len_tokens") or len(modes) != 1:
        raise ExportError(
            f"{model_dir / pooling_dir / 'config.json'}: only one of {POOLING_MODES} pooling "
            f"is supported, got {config}"
        )
    return modes[0]


def read_max_length(model_dir: Path, max_position_embeddings: int | None) -> int:
    """sentence_bert_config's ``max_seq_length``, else the tokenizer's, else 256; capped by positions."""
    max_length = None
    sbert = _read_json(model_dir / "sentence_bert_config.json")
    if sbert and isinstance(sbert.get("max_seq_length"), int):
        max_length = sbert["max_seq_length"]
    if max_length is None:
        tok_config = _read_json(model_dir / "tokenizer_config.json")
        value = (tok_config or {}).get("model_max_length")
        # HF uses int(1e30) for "no limit".
        if isinstance(value, int) and 0 < value < 100_000:
            max_length = value
    max_length = max_length or DEFAULT_MAX_LENGTH
    if max_position_embeddings:
        max_length = min(max_length, max_position_embeddings)
    return max_length


# Generic directory names that say nothing about the model.
_GENERIC_DIR_NAMES = {"model", "models", "weights", "checkpoint", "hf", "onnx", "default", "snapshot"}


def model_name_for(model_dir: Path, config: dict[str, Any]) -> str:
    """A readable model name: the directory name unless generic, else config's ``_name_or_path``."""
    name = model_dir.resolve().name
    if name.lower() in _GENERIC_DIR_NAMES or name.startswith("snapshot"):
        from_config = str(config.get("_name_or_path") or "").rstrip("/").split("/")[-1]
        name = from_config or name
    return name


def spec_from_model_dir(
    model_dir: Path, *, model_name: str | None = None, uses_token_type_ids: bool = True
) -> ExportSpec:
    """Build the export spec of a local Hugging Face encoder directory.

    Args:
        model_dir: holds ``config.json``, the weights and ``tokenizer.json``.
        model_name: overrides the name derived from the directory / config.
        uses_token_type_ids: whether the model's ``forward`` takes ``token_type_ids``.

    Raises:
        ModelSourceError: the directory, ``config.json`` or ``tokenizer.json`` is missing.
        ExportError: an unsupported pooling configuration.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelSourceError(f"model directory {model_dir} does not exist (--model)")
    config = _read_json(model_dir / "config.json")
    if config is None:
        raise ModelSourceError(f"{model_dir} has no config.json: not a Hugging Face model directory (--model)")
    if not (model_dir / "tokenizer.json").is_file():
        raise ModelSourceError(
            f"{model_dir} has no tokenizer.json (a fast tokenizer is required at serve time); "
            "save one with `AutoTokenizer.from_pretrained(...).save_pretrained(dir)`"
        )
    dim = int(config.get("hidden_size") or config.get("dim") or 0)
    num_heads = int(config.get("num_attention_heads") or config.get("n_heads") or 0)
    if dim <= 0 or num_heads <= 0:
        raise ExportError(f"{model_dir / 'config.json'}: cannot read hidden_size / num_attention_heads")
    inputs = ["input_ids", "attention_mask"]
    if uses_token_type_ids:
        inputs.append("token_type_ids")
    return ExportSpec(
        model_dir=model_dir,
        model_name=model_name or model_name_for(model_dir, config),
        model_type=str(config.get("model_type", "bert")),
        dim=dim,
        num_heads=num_heads,
        num_layers=int(config.get("num_hidden_layers") or config.get("n_layers") or 0),
        pooling=read_pooling(model_dir),
        normalize=True,  # the serving contract: unit vectors, whatever the source model did
        max_length=read_max_length(model_dir, config.get("max_position_embeddings")),
        input_names=tuple(inputs),
    )
