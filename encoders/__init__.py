"""Run-time models: the tokenizer + onnxruntime item encoder.

Imports only onnxruntime, tokenizers and numpy: serving never needs torch.
"""
