"""Parity: does the ONNX graph compute what the torch model computes, on real-looking text?

For each variant and each batch size of the spec, the same token ids go to the torch
reference (``PooledEncoder``) and to an onnxruntime session (built by the run-time
``encoders.session.create_session``, so the provider is the one that will serve). Checks,
in optimum's order: the output name, the output shape ``[n, dim]``, finiteness, then the
values: the minimum cosine similarity over every text, and the max absolute difference
per element. Every failure of every variant is collected first; only then
``ParityReport.raise_for_failures`` raises one :class:`ParityError` carrying the report.

The corpus (``export.parity_texts``) deliberately contains degenerate texts ("?", "",
a lone CJK run of ``[UNK]``): with two or three tokens there is no averaging to hide
quantisation noise, and they are where int8 fails first.

Runs in-process: the sessions are small and dropped after each variant.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from encoders.session import create_session
from export.errors import ParityError
from export.spec import ExportSpec, Tolerance
from export.torch_model import PooledEncoder, tokenize, torch_encode


@dataclass(slots=True)
class BatchParity:
    """Figures of one variant at one batch size."""

    batch_size: int
    min_cosine: float
    max_abs_diff: float
    worst_text_index: int
    items_s: float


@dataclass(slots=True)
class VariantParity:
    """Parity of one ONNX variant against torch, over all batch sizes."""

    variant: str
    file: str
    tolerance: Tolerance
    provider: str | None
    by_batch: dict[int, BatchParity] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    # Set when the variant could not run at all on the checking provider.
    unverified_reason: str | None = None
    recipe: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures and self.unverified_reason is None

    @property
    def min_cosine(self) -> float | None:
        return min((b.min_cosine for b in self.by_batch.values()), default=None)

    @property
    def max_abs_diff(self) -> float | None:
        return max((b.max_abs_diff for b in self.by_batch.values()), default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "file": self.file,
            "recipe": self.recipe,
            "provider_checked": self.provider,
            "passed": self.passed,
            "min_cosine": round_figure(self.min_cosine),
            "max_abs_diff": round_figure(self.max_abs_diff),
            "tolerance": {"min_cosine": self.tolerance.min_cosine, "atol": self.tolerance.atol},
            "by_batch": {
                str(b.batch_size): {
                    "min_cosine": round_figure(b.min_cosine),
                    "max_abs_diff": round_figure(b.max_abs_diff),
                    "worst_text_index": b.worst_text_index,
                    "items_s": round(b.items_s, 1),
                }
                for b in self.by_batch.values()
            },
            "failures": list(self.failures),
            "unverified_reason": self.unverified_reason,
        }


def round_figure(value: float | None) -> float | None:
    """6 significant digits for reports: fp32's max_abs_diff (~1e-7) must not round to 0."""
    return None if value is None else float(f"{value:.6g}")


@dataclass(slots=True)
class ParityReport:
    """Parity of every variant checked; ``to_dict()`` is what ``parity.json`` holds."""

    n_texts: int
    batch_sizes: tuple[int, ...]
    variants: dict[str, VariantParity] = field(default_factory=dict)
    rejected: list[VariantParity] = field(default_factory=list)  # e.g. int8 recipes tried

    def failures(self, variants: Sequence[str] | None = None) -> list[str]:
        names = list(self.variants) if variants is None else list(variants)
        return [f for n in names if n in self.variants for f in self.variants[n].failures]

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_texts": self.n_texts,
            "batch_sizes": list(self.batch_sizes),
            "variants": {n: v.to_dict() for n, v in self.variants.items()},
            "rejected": [v.to_dict() for v in self.rejected],
        }

    def raise_for_failures(self, variants: Sequence[str] | None = None) -> None:
        """Raise :class:`ParityError` listing every failure of ``variants`` (default all)."""
        failures = self.failures(variants)
        if failures:
            raise ParityError(
                f"{len(failures)} parity check(s) failed:\n  " + "\n  ".join(failures),
                report=self.to_dict(),
                failures=failures,
            )


class ParityChecker:
    """Compares ONNX files with the torch reference on a fixed corpus.

    Torch outputs are computed once per batch size and reused for every variant (and
    every int8 recipe tried).
    """

    def __init__(
        self,
        model: PooledEncoder,
        tokenizer: Tokenizer,
        spec: ExportSpec,
        texts: Sequence[str],
        *,
        batch_sizes: Sequence[int] | None = None,
        threads: int = 0,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.texts = list(texts)
        self.batch_sizes = tuple(batch_sizes or spec.parity_batch_sizes)
        self.threads = threads
        self._batches: dict[int, list[dict[str, np.ndarray]]] = {}
        self._reference: dict[int, np.ndarray] = {}

    def _feeds(self, batch_size: int) -> list[dict[str, np.ndarray]]:
        if batch_size not in self._batches:
            self._batches[batch_size] = [
                tokenize(self.tokenizer, self.texts[i : i + batch_size], self.spec.input_names)
                for i in range(0, len(self.texts), batch_size)
            ]
        return self._batches[batch_size]

    def reference(self, batch_size: int) -> np.ndarray:
        """Torch embeddings ``[n_texts, dim]`` computed at ``batch_size``."""
        if batch_size not in self._reference:
            outs = [torch_encode(self.model, feeds) for feeds in self._feeds(batch_size)]
            self._reference[batch_size] = np.concatenate(outs)  # [n, dim]
        return self._reference[batch_size]

    def check(
        self,
        variant: str,
        file: Path,
        *,
        tolerance: Tolerance | None = None,
        device: str = "cpu",
        recipe: str = "",
    ) -> VariantParity:
        """Check one ONNX file; never raises on a mismatch (failures are recorded)."""
        tol = tolerance or self.spec.tolerances[variant.split(":")[0]]
        result = VariantParity(variant=variant, file=Path(file).name, tolerance=tol, provider=None, recipe=recipe)
        try:
            session, provider = create_session(file, device, self.threads)
        except Exception as exc:  # noqa: BLE001 - any ORT load failure means "cannot verify here"
            result.unverified_reason = f"{type(exc).__name__}: {exc}"
            return result
        result.provider = provider
        output_names = [o.name for o in session.get_outputs()]
        if output_names != [self.spec.output_name]:
            result.failures.append(
                f"{variant}: outputs {output_names} != [{self.spec.output_name!r}]"
            )
            return result
        for batch_size in self.batch_sizes:
            ref = self.reference(batch_size)  # [n, dim]
            feeds_list = self._feeds(batch_size)
            start = time.perf_counter()
            try:
                outs = [session.run([self.spec.output_name], feeds)[0] for feeds in feeds_list]
            except Exception as exc:  # noqa: BLE001 - e.g. a kernel missing on this EP
                result.unverified_reason = f"batch={batch_size}: {type(exc).__name__}: {exc}"
                return result
            elapsed_s = time.perf_counter() - start
            got = np.concatenate(outs).astype(np.float32)  # [n, dim]
            if got.shape != ref.shape:
                result.failures.append(f"{variant} batch={batch_size}: shape {got.shape} != {ref.shape}")
                continue
            if not np.isfinite(got).all():
                result.failures.append(f"{variant} batch={batch_size}: non-finite values in output")
                continue
            cosine = (got * ref).sum(axis=1) / (
                np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1) + 1e-12
            )  # [n]
            worst = int(np.argmin(cosine))
            figures = BatchParity(
                batch_size=batch_size,
                min_cosine=float(cosine[worst]),
                max_abs_diff=float(np.abs(got - ref).max()),
                worst_text_index=worst,
                items_s=len(self.texts) / max(elapsed_s, 1e-9),
            )
            result.by_batch[batch_size] = figures
            if figures.min_cosine < tol.min_cosine:
                result.failures.append(
                    f"{variant} batch={batch_size}: min_cosine {figures.min_cosine:.5f} < "
                    f"{tol.min_cosine} (text #{worst} {self.texts[worst][:40]!r})"
                )
            if tol.atol is not None and figures.max_abs_diff > tol.atol:
                result.failures.append(
                    f"{variant} batch={batch_size}: max_abs_diff {figures.max_abs_diff:.2e} > {tol.atol:.0e}"
                )
        del session
        return result
