"""torch -> ONNX export of Hugging Face encoders, with parity checks and a manifest.

Needs the ``export`` extra (torch, transformers, onnx); serving never imports this package.
"""
