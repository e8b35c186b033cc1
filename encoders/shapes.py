"""Fixed input shapes for the encoder: token-length and row buckets, and the shapes to warm.

Why: onnxruntime's CUDA execution provider pays a large one-off cost (~75 ms measured on an
H200) the first time a session sees an input shape (rows x tokens), and item texts come in
every length, so a fresh GPU worker pays it on most of its first items and on every burst.
Padding each run to one of a few shapes, and running each shape once before the worker
reports ready (:meth:`ShapeBuckets.shapes`), moves that cost to start-up. The price is
padding: a run computes its bucket's tokens, not its longest text's. Buckets spaced ~1.5x
apart waste at most a third of a run's tokens (a quarter on average over uniform lengths);
power-of-two buckets (up to half) cost a third of the steady-state speed in a trial on
the H200, which is why the default set is denser. The set is a setting
(``model.token_buckets``), to be chosen by measuring ``recstream bench encoder --device cuda``
on the GPU at hand.

The CPU execution provider has no such first-shape cost, so buckets are off there by
default (``model.shape_buckets = "auto"``): padding would only cost.

Pure logic: no onnxruntime here (the encoder pads and runs, :mod:`encoders.item_encoder`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

#: Default token buckets (special tokens included), ~1.5x apart; clipped to the model's
#: ``max_length``, which is always the top bucket.
DEFAULT_TOKEN_BUCKETS = (16, 24, 32, 48, 64, 96, 128, 192, 256)


@dataclass(frozen=True, slots=True)
class Run:
    """One onnxruntime run: ``stop - start`` texts of a length-sorted batch, padded to
    ``rows`` x ``tokens`` (``rows`` >= the texts, ``tokens`` >= the longest of them)."""

    start: int
    stop: int
    rows: int
    tokens: int


@dataclass(frozen=True, slots=True)
class ShapeBuckets:
    """The shapes every run is padded to: ``tokens`` and ``rows``, each ascending."""

    tokens: tuple[int, ...]
    rows: tuple[int, ...]

    @classmethod
    def build(cls, token_buckets: Iterable[int], *, max_length: int, max_rows: int) -> ShapeBuckets:
        """Buckets for a model that truncates at ``max_length`` tokens and runs at most
        ``max_rows`` texts at once: the token buckets below ``max_length`` plus
        ``max_length`` itself; rows in powers of two below ``max_rows`` plus ``max_rows``.

        Raises:
            ValueError: a bucket, ``max_length`` or ``max_rows`` below 1.
        """
        if max_length < 1 or max_rows < 1:
            raise ValueError(f"max_length and max_rows must be >= 1, got {max_length} and {max_rows}")
        wanted = sorted(set(token_buckets))
        if wanted and wanted[0] < 1:
            raise ValueError(f"token buckets must be >= 1, got {wanted}")
        tokens = tuple(b for b in wanted if b < max_length) + (max_length,)
        rows = tuple(1 << p for p in range(max_rows.bit_length()) if 1 << p < max_rows) + (max_rows,)
        return cls(tokens=tokens, rows=rows)

    @property
    def max_rows(self) -> int:
        return self.rows[-1]

    def tokens_for(self, length: int) -> int:
        """The smallest token bucket that holds ``length`` tokens."""
        return _ceil(self.tokens, length)

    def rows_for(self, n: int) -> int:
        """The smallest row bucket that holds ``n`` texts."""
        return _ceil(self.rows, n)

    def shapes(self) -> list[tuple[int, int]]:
        """Every ``(rows, tokens)`` a run can have: what a warm-up runs once each."""
        return [(r, t) for r in self.rows for t in self.tokens]

    def runs(self, lengths: Sequence[int]) -> Iterator[Run]:
        """Runs over token ``lengths`` sorted ascending: consecutive chunks of
        :attr:`max_rows` texts (as many runs as without buckets), each padded to the
        buckets of its size and of its longest text."""
        for start in range(0, len(lengths), self.max_rows):
            stop = min(start + self.max_rows, len(lengths))
            yield Run(start, stop, self.rows_for(stop - start), self.tokens_for(lengths[stop - 1]))


def plain_runs(lengths: Sequence[int], sub_batch: int) -> Iterator[Run]:
    """Runs without buckets: chunks of ``sub_batch`` texts of ``lengths`` (sorted
    ascending), each exactly as many rows as texts and as long as its longest."""
    for start in range(0, len(lengths), sub_batch):
        stop = min(start + sub_batch, len(lengths))
        yield Run(start, stop, stop - start, lengths[stop - 1])


def _ceil(buckets: tuple[int, ...], n: int) -> int:
    for bucket in buckets:
        if bucket >= n:
            return bucket
    raise ValueError(f"{n} exceeds the largest bucket {buckets[-1]}")
