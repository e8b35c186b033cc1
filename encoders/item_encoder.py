"""The run-time item encoder: texts -> L2-normalised float32 vectors, via onnxruntime.

The exported graph already contains the whole sentence-transformers head (mean pooling
under the attention mask, then L2 normalisation), so serving is: tokenise (truncate to
the manifest's ``max_length``), sort the batch by token count and run it in sub-batches
of similar lengths, each padded to its own longest text, and return the ``embedding``
output in the caller's order. No torch, no transformers.

Why sub-batches: padding to the longest text of a mixed batch spends most of the compute
on pad tokens (item texts run from a 3-token title to a 256-token description), and the
CPU kernels gain little from more than a few rows, so ``SUB_BATCH`` texts at a time sorted
by length does less work at no loss. The GPU keeps larger sub-batches: it gains from them.

On the CUDA EP each run is also padded to fixed shapes (token-length and row buckets,
:mod:`encoders.shapes`), all run once at load: the provider's one-off cost for a shape it
has not seen (~75 ms) is paid before the worker serves, not by its first items.

Variant choice (see ``encoders/manifest.py`` for what each variant is):

* CUDA EP: ``fp16`` (with IO binding) if exported, else ``fp32``.
* CPU EP: ``int8`` if it passed parity, else ``fp32``. ``fp16`` is never chosen on CPU:
  without fp16 kernels the CPU EP casts around every node and is slower than fp32.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from encoders.errors import ModelDirError, ProviderError
from encoders.manifest import Manifest, load_manifest
from encoders.session import CPU_PROVIDER, CUDA_PROVIDER, Device, create_session
from encoders.shapes import DEFAULT_TOKEN_BUCKETS, ShapeBuckets, plain_runs

log = logging.getLogger(__name__)

#: ``load``'s ``shape_buckets``: on, off, or on for the CUDA EP only.
BucketMode = Literal["auto", "on", "off"]

#: Texts per onnxruntime run, after sorting a batch by token count (see the module docstring).
SUB_BATCH = {CPU_PROVIDER: 8, CUDA_PROVIDER: 128}

# Preference order per execution provider; the first variant present (and allowed) wins.
_PREFERENCE = {
    CUDA_PROVIDER: ("fp16", "fp32"),
    CPU_PROVIDER: ("int8", "fp32"),
}


def model_feeds(
    encodings: Sequence[Any], input_names: Sequence[str], *, pad_id: int = 0,
    rows: int | None = None, seq: int | None = None,
) -> dict[str, np.ndarray]:
    """The graph's int64 inputs, each ``[rows, seq]``, from tokenizer encodings padded to the
    longest (or to ``seq`` tokens), with padding rows up to ``rows``.

    The one place serving, parity and the benchmark build model inputs, so the torch
    reference and onnxruntime always see the same tensors. Encodings that the tokenizer
    already padded pass through unchanged (their attention masks are kept). A padding row
    attends to its first (pad) token only, so its pooling never divides by zero; its
    output is dropped by the caller.
    """
    seq = max(len(e.ids) for e in encodings) if seq is None else seq
    rows = len(encodings) if rows is None else rows
    input_ids = np.full((rows, seq), pad_id, dtype=np.int64)  # [rows, seq]
    attention_mask = np.zeros((rows, seq), dtype=np.int64)  # [rows, seq]
    attention_mask[len(encodings):, 0] = 1
    for row, e in enumerate(encodings):
        input_ids[row, : len(e.ids)] = e.ids
        attention_mask[row, : len(e.ids)] = e.attention_mask
    feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "token_type_ids" in input_names:
        # Single-segment input: all zeros, as the tokenizer's template would give.
        feeds["token_type_ids"] = np.zeros_like(input_ids)  # [n, seq]
    return feeds


def choose_variant(manifest: Manifest, provider: str) -> str:
    """The variant to serve on ``provider``: the fastest one allowed there whose file the
    directory holds.

    Variants whose parity is ``unverified-no-gpu`` are only allowed on the CUDA EP.

    Raises:
        ModelDirError: the directory holds no variant that can run on ``provider`` (a
            directory with only ``fp16`` given to a CPU worker).
    """
    for name in _PREFERENCE.get(provider, ("fp32",)):
        if not manifest.has(name):
            continue
        if manifest.variants[name].status != "passed" and provider != CUDA_PROVIDER:
            continue
        return name
    held = sorted(v for v in manifest.variants if manifest.has(v))
    wanted = [manifest.variants[v].file for v in _PREFERENCE.get(provider, ()) if v in manifest.variants]
    raise ModelDirError(f"{manifest.model_dir} holds only {', '.join(held)}, which cannot run on {provider}: "
                        f"give this worker the directory's {' or '.join(wanted)} too")


class ItemEncoder:
    """Encodes item texts with an exported ONNX model. Build it with :meth:`load`."""

    def __init__(
        self,
        manifest: Manifest,
        session: ort.InferenceSession,
        provider: str,
        variant: str,
        tokenizer: Tokenizer,
        *,
        buckets: ShapeBuckets | None = None,
    ) -> None:
        self._manifest = manifest
        self._session = session
        self._provider = provider
        self._variant = variant
        self._tokenizer = tokenizer
        self._input_names = tuple(i.name for i in session.get_inputs())
        self._io_binding = provider == CUDA_PROVIDER
        self._sub_batch = SUB_BATCH.get(provider, SUB_BATCH[CPU_PROVIDER])
        self._buckets = buckets
        self._shapes_run: set[tuple[int, int]] = set()
        self._new_shape_runs = 0
        self.warm_up_s = 0.0

    @classmethod
    def load(
        cls,
        model_dir: Path | str,
        device: Device = "auto",
        threads: int = 0,
        variant: str | None = None,
        *,
        verify_hashes: bool = True,
        shape_buckets: BucketMode = "auto",
        token_buckets: Sequence[int] = DEFAULT_TOKEN_BUCKETS,
        max_rows: int | None = None,
        cuda_options: Mapping[str, str] | None = None,
    ) -> ItemEncoder:
        """Load an exported model directory (and, with shape buckets, warm every shape).

        Args:
            model_dir: directory written by ``export_model`` (holds ``manifest.json``).
            device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (see ``create_session``).
            threads: CPU intra-op threads; 0 lets onnxruntime decide.
            variant: force a variant (``"fp32"``, ``"int8"``, ``"fp16"``); default picks
                the fastest variant that passed parity for the provider in use.
            verify_hashes: check model file hashes against the manifest.
            shape_buckets: pad every run to fixed shapes and run each shape once here
                (:mod:`encoders.shapes`): ``"on"``, ``"off"``, or ``"auto"`` (on for the
                CUDA EP only, where a new shape costs a one-off ~75 ms).
            token_buckets: the token-length buckets (clipped to the model's max length).
            max_rows: the most texts one run takes with buckets on (its row buckets are the
                powers of two below it); default the provider's sub-batch. The encode stage
                passes its micro-batch size, so no larger shape is warmed for nothing.
            cuda_options: CUDA execution provider options (see ``create_session``).

        Raises:
            ModelDirError: missing/corrupt model directory, unknown variant, or no variant
                this device can run.
            ProviderError: ``device="cuda"`` without a usable CUDA EP, or a forced
                variant that is unverified on the provider in use.
        """
        manifest = load_manifest(model_dir, verify_hashes=verify_hashes)
        if variant is not None:
            path = manifest.variant_path(variant)
            session, provider = create_session(path, device, threads, cuda_options)
            if manifest.variants[variant].status != "passed" and provider != CUDA_PROVIDER:
                raise ProviderError(
                    f"variant {variant!r} is {manifest.variants[variant].status} and cannot "
                    f"be served on {provider}; choose another --variant or run on a GPU"
                )
        elif device == "cpu":
            variant = choose_variant(manifest, CPU_PROVIDER)
            session, provider = create_session(manifest.variant_path(variant), "cpu", threads)
        else:
            # Try the GPU variant on the requested device; if ORT ends up on the CPU EP,
            # switch to the CPU's best variant (fp16 is never served on CPU).
            variant = choose_variant(manifest, CUDA_PROVIDER)
            session, provider = create_session(manifest.variant_path(variant), device, threads, cuda_options)
            if provider != CUDA_PROVIDER:
                cpu_variant = choose_variant(manifest, CPU_PROVIDER)
                if cpu_variant != variant:
                    variant = cpu_variant
                    session, provider = create_session(manifest.variant_path(variant), "cpu", threads)
        tokenizer = Tokenizer.from_file(str(manifest.tokenizer_path))
        tokenizer.enable_truncation(max_length=manifest.max_length)
        tokenizer.no_padding()  # padding is per run (see encode)
        outputs = {o.name: o for o in session.get_outputs()}
        if manifest.output_name not in outputs:
            raise ModelDirError(f"{manifest.variant_path(variant)} has no output {manifest.output_name!r}")
        width = outputs[manifest.output_name].shape[-1]
        if isinstance(width, int) and width != manifest.dim:  # a symbolic width is checked by encode()
            raise ModelDirError(f"{manifest.variant_path(variant)} outputs {width}-d vectors but the manifest says "
                                f"dim {manifest.dim}: re-export the model (recstream export) or fix manifest.json")
        buckets = None
        if shape_buckets == "on" or (shape_buckets == "auto" and provider == CUDA_PROVIDER):
            sub_batch = SUB_BATCH.get(provider, SUB_BATCH[CPU_PROVIDER])
            buckets = ShapeBuckets.build(token_buckets, max_length=manifest.max_length,
                                         max_rows=min(max_rows or sub_batch, sub_batch))
        encoder = cls(manifest, session, provider, variant, tokenizer, buckets=buckets)
        if buckets is not None:
            encoder.warm_up()
        log.info("ItemEncoder %s: variant=%s provider=%s threads=%d shapes=%s", manifest.version, variant, provider,
                 threads, f"{len(buckets.shapes())} warmed in {encoder.warm_up_s:.1f} s" if buckets else "any")
        return encoder

    def warm_up(self) -> float:
        """Run every bucketed shape once (no-op without buckets); the seconds it took."""
        if self._buckets is None:
            return 0.0
        began = time.perf_counter()
        for rows, tokens in self._buckets.shapes():
            ids = np.full((rows, tokens), self._manifest.pad_id, dtype=np.int64)  # [rows, tokens]
            feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            if "token_type_ids" in self._input_names:
                feeds["token_type_ids"] = np.zeros_like(ids)
            self._run(feeds)
        self.warm_up_s = time.perf_counter() - began
        return self.warm_up_s

    @property
    def buckets(self) -> ShapeBuckets | None:
        """The fixed shapes runs are padded to (None: each run is as long as its longest text)."""
        return self._buckets

    @property
    def new_shape_runs(self) -> int:
        """Runs since load (warm-up excluded) whose input shape this session had not run
        before: each paid the provider's first-shape cost. 0 when every shape was warmed."""
        return self._new_shape_runs

    @property
    def provider(self) -> str:
        """The execution provider in use (``CUDAExecutionProvider``/``CPUExecutionProvider``)."""
        return self._provider

    @property
    def variant(self) -> str:
        """The ONNX variant in use (``fp32``, ``int8`` or ``fp16``)."""
        return self._variant

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self._manifest.dim

    @property
    def version(self) -> str:
        """Model version ``<name>@<sha8>``; stamped on every vector."""
        return self._manifest.version

    @property
    def max_length(self) -> int:
        """Texts are truncated to this many tokens (special tokens included)."""
        return self._manifest.max_length

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Tokenise a batch into the graph's int64 inputs, each ``[n, seq]`` (padded to the longest)."""
        return model_feeds(self._tokenizer.encode_batch(list(texts)), self._input_names, pad_id=self._manifest.pad_id)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts (any number: they run in length-sorted sub-batches).

        Args:
            texts: item texts; empty strings are fine (they encode ``[CLS] [SEP]``).

        Returns:
            float32 array ``[n, dim]``, each row of unit L2 norm, in the order of ``texts``.
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings, not a single string")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)  # [0, dim]
        encodings = self._tokenizer.encode_batch(list(texts))
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        lengths = [len(encodings[i].ids) for i in order]
        runs = self._buckets.runs(lengths) if self._buckets else plain_runs(lengths, self._sub_batch)
        out = np.empty((len(encodings), self.dim), dtype=np.float32)  # [n, dim]
        for run in runs:
            rows = order[run.start : run.stop]
            feeds = model_feeds([encodings[i] for i in rows], self._input_names, pad_id=self._manifest.pad_id,
                                rows=run.rows, seq=run.tokens)
            shape = (run.rows, run.tokens)
            if shape not in self._shapes_run:
                self._new_shape_runs += 1
            out[rows] = self._run(feeds)[: len(rows)]
        return out

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """One onnxruntime run (outputs bound on the device under CUDA: one copy back)."""
        self._shapes_run.add(feeds["input_ids"].shape)
        if self._io_binding:
            binding = self._session.io_binding()
            for name, array in feeds.items():
                binding.bind_cpu_input(name, array)
            binding.bind_output(self._manifest.output_name, "cuda")
            self._session.run_with_iobinding(binding)
            out = binding.copy_outputs_to_cpu()[0]  # [n, dim]
        else:
            out = self._session.run([self._manifest.output_name], feeds)[0]  # [n, dim]
        return np.asarray(out, dtype=np.float32)  # [n, dim]
