"""The torch reference: a Hugging Face encoder plus the sentence-transformers head.

``PooledEncoder`` is what gets traced into ONNX *and* what parity and the benchmark
compare against, so the pooling and normalisation are written once:

    h = encoder(input_ids, attention_mask[, token_type_ids]).last_hidden_state  # [b, s, d]
    mean:  e = sum_s(h * mask) / max(sum_s(mask), 1e-9)                         # [b, d]
    cls:   e = h[:, 0]                                                          # [b, d]
    max:   e = max_s(h masked to -1e9)                                          # [b, d]
    out = e / max(||e||_2, 1e-12)                                               # [b, d]

(as ``sentence_transformers.models.Pooling`` and ``Normalize`` do). Loaded with
``attn_implementation="eager"``: the SDPA path traces into a graph that onnxruntime's
BERT fusion does not recognise.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from encoders.item_encoder import model_feeds
from export.errors import ExportError
from export.spec import ExportSpec


class PooledEncoder(torch.nn.Module):
    """Encoder + pooling + L2 normalisation; ``forward`` returns ``[batch, dim]``."""

    def __init__(self, encoder: torch.nn.Module, pooling: str, normalize: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.normalize = normalize

    def forward(
        self,
        input_ids: torch.Tensor,  # [b, s] int64
        attention_mask: torch.Tensor,  # [b, s] int64
        token_type_ids: torch.Tensor | None = None,  # [b, s] int64
    ) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**kwargs).last_hidden_state  # [b, s, d]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [b, s, 1]
        if self.pooling == "mean":
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # [b, d]
        elif self.pooling == "cls":
            pooled = hidden[:, 0]  # [b, d]
        elif self.pooling == "max":
            pooled = hidden.masked_fill(mask == 0, -1e9).max(dim=1).values  # [b, d]
        else:
            raise ExportError(f"unsupported pooling {self.pooling!r}")
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=-1)  # [b, d]
        return pooled


def uses_token_type_ids(encoder: torch.nn.Module) -> bool:
    """Whether the model's ``forward`` takes ``token_type_ids`` (BERT yes, DistilBERT no)."""
    return "token_type_ids" in inspect.signature(encoder.forward).parameters


def load_hf_encoder(model_dir: Path) -> torch.nn.Module:
    """Load a local HF encoder, eager attention, eval mode; never touches a model hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel  # heavy: import on use

    try:
        model = AutoModel.from_pretrained(
            str(model_dir), attn_implementation="eager", local_files_only=True
        )
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot load a Hugging Face encoder from {model_dir}: {exc}") from exc
    return model.eval()


def load_pooled_encoder(spec: ExportSpec) -> PooledEncoder:
    """The torch reference model for ``spec`` (eval mode, float32, CPU)."""
    return PooledEncoder(load_hf_encoder(spec.model_dir), spec.pooling, spec.normalize).eval()


def load_tokenizer(path: Path, max_length: int, pad_id: int, pad_token: str) -> Tokenizer:
    """A fast tokenizer truncating to ``max_length`` and padding to the batch's longest."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
    return tokenizer


def tokenize(tokenizer: Tokenizer, texts: list[str], input_names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """int64 numpy feeds ``[n, seq]`` for the graph's inputs, built as serving builds them."""
    return model_feeds(tokenizer.encode_batch(texts), input_names)


@torch.inference_mode()
def torch_encode(model: PooledEncoder, feeds: dict[str, np.ndarray], device: str = "cpu") -> np.ndarray:
    """Run the torch reference on numpy feeds; returns float32 ``[n, dim]``."""
    tensors = {k: torch.from_numpy(v).to(device) for k, v in feeds.items()}
    return model(**tensors).float().cpu().numpy()
