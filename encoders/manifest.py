"""The model manifest: what an exported encoder directory holds and how to trust it.

An exported model directory looks like::

    <model_dir>/
        manifest.json        this schema (written by ``export``, read by ``ItemEncoder``)
        tokenizer.json       the Hugging Face fast tokenizer, truncation/padding preset
        model.fp32.onnx      graph-optimised fp32 (always exported; its hash names the version;
                             a GPU box may be given a directory without it, see ``absent``)
        model.int8.onnx      optional, only if it passed parity
        model.fp16.onnx      optional, meant for the CUDA EP
        parity.json          the full parity report, variants refused included

The manifest is the single contract between export time (torch) and serve time
(onnxruntime only). ``version`` (``<name>@<sha8>``) travels with every vector and every
recommendation, so a vector can always be traced back to the exact graph that produced it.

Hash checks read every model file once (tens of MB: ~0.1 s); pass ``verify_hashes=False``
to skip them where start-up time matters more than tamper detection.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from encoders.errors import ModelDirError

MANIFEST_FILE = "manifest.json"
PARITY_FILE = "parity.json"
MANIFEST_SCHEMA_VERSION = 1

# "passed": parity measured on ``provider_checked`` and above the variant's threshold.
# "unverified-no-gpu": a GPU-only variant whose parity could not be measured here; it is
# never selected for the CPU EP.
VariantStatus = Literal["passed", "unverified-no-gpu"]
_STATUSES = ("passed", "unverified-no-gpu")


@dataclass(frozen=True, slots=True)
class VariantEntry:
    """One ONNX file of the exported model."""

    file: str
    sha256: str
    status: VariantStatus
    min_cosine: float | None
    max_abs_diff: float | None
    provider_checked: str | None
    # Free-form description of how the variant was produced (e.g. int8 recipe).
    recipe: str = ""


@dataclass(frozen=True, slots=True)
class Manifest:
    """The parsed ``manifest.json``. Paths inside are relative to ``model_dir``."""

    model_dir: Path
    version: str
    model_name: str
    source: str
    dim: int
    pooling: str
    normalize: bool
    max_length: int
    opset: int
    tokenizer_file: str
    pad_id: int
    pad_token: str
    input_names: tuple[str, ...]
    output_name: str
    variants: dict[str, VariantEntry] = field(default_factory=dict)
    schema_version: int = MANIFEST_SCHEMA_VERSION
    #: Variants listed in the manifest whose file this directory does not hold (a GPU box
    #: may be given only ``model.fp16.onnx``: the fp32 file is ~90 MB it would never run).
    absent: tuple[str, ...] = ()

    def has(self, name: str) -> bool:
        """Whether variant ``name`` is listed and its file is here."""
        return name in self.variants and name not in self.absent

    def variant_path(self, name: str) -> Path:
        """Absolute path of variant ``name``'s ONNX file.

        Raises:
            ModelDirError: no such variant in this manifest.
        """
        if not self.has(name):
            where = "file is not in" if name in self.variants else "is not listed in"
            raise ModelDirError(
                f"variant {name!r} {where} {self.model_dir} "
                f"(available: {sorted(v for v in self.variants if self.has(v))})"
            )
        return self.model_dir / self.variants[name].file

    @property
    def tokenizer_path(self) -> Path:
        return self.model_dir / self.tokenizer_file

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON-ready form written to ``manifest.json`` (``model_dir`` left out)."""
        out = asdict(self)
        out.pop("model_dir")
        out.pop("absent")
        out["input_names"] = list(self.input_names)
        return out


def sha256_file(path: Path, *, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(manifest: Manifest) -> Path:
    """Write ``manifest.json`` into ``manifest.model_dir`` and return its path."""
    path = manifest.model_dir / MANIFEST_FILE
    path.write_text(json.dumps(manifest.to_json_dict(), indent=2, sort_keys=True) + "\n")
    return path


def _require(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    if key not in data:
        raise ModelDirError(f"{where}: missing field {key!r}")
    value = data[key]
    # bool is an int subclass: keep "dim": true from passing as an int.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ModelDirError(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _parse_variant(name: str, raw: Any, where: Path) -> VariantEntry:
    if not isinstance(raw, dict):
        raise ModelDirError(f"{where}: variant {name!r} is not an object")
    status = _require(raw, "status", str, where)
    if status not in _STATUSES:
        raise ModelDirError(f"{where}: variant {name!r} has unknown status {status!r}")
    return VariantEntry(
        file=_require(raw, "file", str, where),
        sha256=_require(raw, "sha256", str, where),
        status=status,
        min_cosine=raw.get("min_cosine"),
        max_abs_diff=raw.get("max_abs_diff"),
        provider_checked=raw.get("provider_checked"),
        recipe=str(raw.get("recipe", "")),
    )


def load_manifest(model_dir: Path | str, *, verify_hashes: bool = True) -> Manifest:
    """Load and validate ``<model_dir>/manifest.json``.

    Args:
        model_dir: an exported model directory.
        verify_hashes: check every variant file's SHA-256 against the manifest.

    Returns:
        The parsed manifest.

    Raises:
        ModelDirError: the directory or manifest is missing, the JSON is malformed or
            incomplete, the tokenizer or a model file is missing, or a hash differs.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirError(
            f"model directory {model_dir} does not exist; export one with "
            f"`recstream export --model PATH --out {model_dir}`"
        )
    path = model_dir / MANIFEST_FILE
    if not path.is_file():
        raise ModelDirError(
            f"{path} is missing: {model_dir} is not an exported model directory "
            f"(export one with `recstream export --model PATH --out {model_dir}`)"
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelDirError(f"{path}: top level is not an object")
    raw_variants = _require(data, "variants", dict, path)
    variants = {name: _parse_variant(name, raw, path) for name, raw in raw_variants.items()}
    if "fp32" not in variants:
        raise ModelDirError(f"{path}: no 'fp32' variant (every export has one)")
    manifest = Manifest(
        model_dir=model_dir,
        version=_require(data, "version", str, path),
        model_name=_require(data, "model_name", str, path),
        source=_require(data, "source", str, path),
        dim=_require(data, "dim", int, path),
        pooling=_require(data, "pooling", str, path),
        normalize=_require(data, "normalize", bool, path),
        max_length=_require(data, "max_length", int, path),
        opset=_require(data, "opset", int, path),
        tokenizer_file=_require(data, "tokenizer_file", str, path),
        pad_id=_require(data, "pad_id", int, path),
        pad_token=_require(data, "pad_token", str, path),
        input_names=tuple(_require(data, "input_names", list, path)),
        output_name=_require(data, "output_name", str, path),
        variants=variants,
        schema_version=int(data.get("schema_version", MANIFEST_SCHEMA_VERSION)),
    )
    if manifest.dim <= 0 or manifest.max_length <= 0:
        raise ModelDirError(f"{path}: dim and max_length must be positive")
    if not manifest.tokenizer_path.is_file():
        raise ModelDirError(f"{path}: tokenizer file {manifest.tokenizer_path} is missing")
    absent = tuple(name for name, entry in variants.items() if not (model_dir / entry.file).is_file())
    if len(absent) == len(variants):
        raise ModelDirError(f"{path}: none of its model files ({', '.join(e.file for e in variants.values())}) "
                            f"is in {model_dir}")
    manifest = replace(manifest, absent=absent)
    for name, entry in variants.items():
        file = model_dir / entry.file
        if name in absent:
            continue
        if verify_hashes and sha256_file(file) != entry.sha256:
            raise ModelDirError(
                f"{file} does not match the sha256 in {path} (variant {name!r}): the file "
                "is corrupt or was replaced; re-export the model"
            )
    return manifest
