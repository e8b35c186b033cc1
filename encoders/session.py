"""The one place that builds onnxruntime sessions (providers, threads, graph options).

Why a session is created just to find out whether CUDA works: with ``onnxruntime-gpu``,
``get_available_providers()`` lists ``CUDAExecutionProvider`` whenever the build has it,
even where the CUDA/cuDNN libraries or the GPU itself are missing. ORT then silently
falls back to the CPU EP when the session is created. The only reliable test is to ask
for CUDA and read back ``session.get_providers()``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import onnxruntime as ort

from encoders.errors import ProviderError

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
_DEVICES = ("auto", "cpu", "cuda")


def _session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    # 0 lets ORT pick (one thread per physical core).
    options.intra_op_num_threads = max(0, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: the CUDA probe warns loudly on CPU hosts
    return options


def create_session(
    model_file: Path | str, device: Device = "auto", threads: int = 0,
    cuda_options: Mapping[str, str] | None = None,
) -> tuple[ort.InferenceSession, str]:
    """Create an inference session on the requested device.

    Args:
        model_file: the ``.onnx`` file.
        device: ``"cuda"`` (fail if CUDA cannot run), ``"cpu"``, or ``"auto"`` (CUDA when
            usable, else CPU with a log line).
        threads: intra-op threads for the CPU EP; 0 lets onnxruntime decide.
        cuda_options: CUDA execution provider options, passed as they are (e.g.
            ``arena_extend_strategy``, ``cudnn_conv_algo_search``, ``use_tf32``): what
            ``recstream bench encoder`` measures before one is kept as a setting.

    Returns:
        ``(session, provider)`` where provider is the execution provider actually in use
        (``"CUDAExecutionProvider"`` or ``"CPUExecutionProvider"``).

    Raises:
        ValueError: unknown ``device``.
        ProviderError: ``device="cuda"`` and no usable CUDA execution provider.
    """
    if device not in _DEVICES:
        raise ValueError(f"device must be one of {_DEVICES}, got {device!r}")
    options = _session_options(threads)
    path = str(model_file)
    fallback: ort.InferenceSession | None = None
    if device in ("auto", "cuda"):
        if CUDA_PROVIDER in ort.get_available_providers():
            # The probe's failure on a CPU host is onnxruntime's default logger's ERROR (the CUDA
            # library cannot load): expected there, and said below in one plain line instead.
            ort.set_default_logger_severity(4)
            try:
                session = ort.InferenceSession(
                    path, sess_options=options, providers=[(CUDA_PROVIDER, dict(cuda_options or {})), CPU_PROVIDER]
                )
            finally:
                ort.set_default_logger_severity(2)  # onnxruntime's default: warnings
            if session.get_providers()[0] == CUDA_PROVIDER:
                return session, CUDA_PROVIDER
            fallback = session  # ORT already fell back to the CPU EP: reuse it
            reason = "CUDAExecutionProvider is built in but could not start (no GPU or CUDA libraries)"
        else:
            reason = "this onnxruntime build has no CUDAExecutionProvider"
        if device == "cuda":
            raise ProviderError(
                f"device='cuda' was requested but {reason}; use device 'cpu' or 'auto' "
                "(--device cpu), or install onnxruntime-gpu with matching CUDA/cuDNN"
            )
        log.info("device='auto': %s; using CPUExecutionProvider (threads=%d)", reason, threads)
    if fallback is not None:
        return fallback, CPU_PROVIDER
    session = ort.InferenceSession(path, sess_options=options, providers=[CPU_PROVIDER])
    return session, CPU_PROVIDER
