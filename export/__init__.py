"""torch -> ONNX export of Hugging Face encoders, with parity checks and a manifest.

Needs the ``export`` extra (torch, transformers, onnx); serving never imports this package.
torch is imported only when an export or benchmark actually runs.

Entry points: :func:`export_model`, :func:`default_model_path`, and
``export.bench.run_encoder_bench``.
"""

from export.exporter import default_model_path, export_model

__all__ = ["default_model_path", "export_model"]
