"""The next-item sequence model (SASRec, Kang & McAuley 2018), in torch, for training only.

A user's last ``max_len`` positive items, oldest first, left-padded, go through causal
self-attention blocks; the last position's output is the user's vector, and an item's score
is its dot product with that vector. Trained with a full-softmax cross-entropy over the whole
catalogue at every position (Klenitskiy & Vasilev, RecSys'23: this, not negative sampling,
is what makes SASRec strong).

An item's embedding is ``text_vector @ project + residual``: the text encoder's vector
projected into the model's space plus a learned per-item correction that starts at zero. So
co-clicks refine what the text says, and an item nobody clicked yet still has a place (its
projected text vector), also for items that arrive after training: serving projects them
with the same matrix. The exported ONNX graph therefore takes item embeddings, not ids
(``streams/sequence.py`` looks them up), and returns the user's vector.

The attention is written out rather than taken from ``nn.TransformerEncoderLayer``: that
layer switches to a fused fast path in eval mode, which the TorchScript ONNX exporter does
not trace into portable operators.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class _Block(nn.Module):
    """Pre-norm causal self-attention and feed-forward, as SASRec's blocks."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.scale = heads, 1.0 / math.sqrt(dim // heads)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)
        att = (q @ k.transpose(-2, -1)) * self.scale + causal
        y = (self.drop(att.softmax(dim=-1)) @ v).transpose(1, 2).reshape(b, n, d)
        x = x + self.drop(self.out(y))
        return x + self.drop(self.ff(self.norm2(x)))


class SASRec(nn.Module):
    """Items' text vectors -> item table; a padded history -> the user's vector."""

    def __init__(self, text_vectors: torch.Tensor, *, dim: int = 64, max_len: int = 50, layers: int = 2,
                 heads: int = 2, dropout: float = 0.2) -> None:
        super().__init__()
        self.dim, self.max_len = dim, max_len
        self.register_buffer("text", text_vectors.float(), persistent=False)
        self.project = nn.Linear(text_vectors.shape[1], dim, bias=False)
        self.residual = nn.Embedding(text_vectors.shape[0], dim)
        nn.init.zeros_(self.residual.weight)
        self.position = nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList(_Block(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        mask = torch.full((max_len, max_len), float("-inf")).triu(1)
        self.register_buffer("causal", mask, persistent=False)

    def item_table(self) -> torch.Tensor:
        """``(items, dim)``: every item's embedding (input and output side share it)."""
        return self.project(self.text) + self.residual.weight

    def hidden(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, L, dim)`` outputs for left-padded histories given as embeddings ``(B, L, dim)``
        with ``mask`` ``(B, L)`` 1.0 where an item is, 0.0 on padding."""
        n = items.shape[1]
        positions = self.position.weight[self.max_len - n:]  # the newest item always sits at the last position
        x = self.drop((items * math.sqrt(self.dim) + positions) * mask.unsqueeze(-1))
        causal = self.causal[:n, :n]
        for block in self.blocks:
            x = block(x, causal) * mask.unsqueeze(-1)
        return self.norm(x)

    def forward(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The exported graph: ``(B, dim)`` user vectors from the last position."""
        return self.hidden(items, mask)[:, -1, :]
