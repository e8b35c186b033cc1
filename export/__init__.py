"""torch -> ONNX export of Hugging Face encoders, with parity checks and a manifest.

Needs the ``export`` extra (torch, transformers, onnx); serving never imports this package.
torch is imported only when an export or benchmark actually runs.

Entry points: :func:`export_model`, :func:`default_model_path`, and
``export.bench.run_encoder_bench``. ``export.bench_shapes`` needs no torch: the package
imports its exporter only when one of its names is used (PEP 562), so the shape bench runs
on a GPU box that has only onnxruntime, tokenizers and numpy.
"""

from typing import Any

__all__ = ["default_model_path", "export_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from export import exporter

        return getattr(exporter, name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
