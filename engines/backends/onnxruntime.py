"""ONNX Runtime backend (CPU, or CUDA where onnxruntime-gpu is installed).

:func:`ort_session` is the one place an ONNX Runtime session is created in
emotrack (the streamer's models, the built-in separator, training's parity
checks and benchmarks all go through it), so thread counts, graph optimisation
and provider choice are set once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from ..errors import BackendError, ModelError
from .base import Backend


def ort_session(onnx_path: str | Path, threads: Optional[int] = None, providers: Optional[list[str]] = None):
    """An ``onnxruntime.InferenceSession`` for ``onnx_path``: ``threads`` intra-op threads (default 1),
    one inter-op thread, every graph optimisation, CUDA first where present; a model ONNX Runtime
    cannot load is a one-line :class:`BackendError`.

    Intra-op threads do not spin while they wait for work (``session.intra_op.allow_spinning`` 0):
    spinning burnt a core between the musicnn front end's calls (replay of the 5-minute programme
    with ``music_musicnn.onnx``, front end on 2 threads: 9.8 CPU seconds with spinning, 6.2 without,
    docs/BENCHMARKS.md).  A 1-thread session has no pool, so this changes nothing there."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads) if threads else 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    available = ort.get_available_providers()
    if providers is None:
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    try:
        return ort.InferenceSession(str(onnx_path), sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        if type(exc).__name__ in ("InvalidProtobuf", "InvalidGraph", "NoSuchFile", "InvalidArgument"):
            raise ModelError(f"{onnx_path} is not a usable ONNX model: {str(exc).splitlines()[0]}") from None
        raise BackendError(f"onnxruntime cannot load {onnx_path}: {str(exc).splitlines()[0]}") from None


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, threads: Optional[int] = None,
                 providers: Optional[list[str]] = None):
        self.session = ort_session(onnx_path, threads, providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        used = self.session.get_providers()[0]
        n = int(threads) if threads else 1
        self.description = f"onnxruntime ({used.replace('ExecutionProvider', '')}, {n} thread(s))"

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, {k: np.ascontiguousarray(v, dtype=np.float32)
                                                    for k, v in inputs.items()})
        return dict(zip(self.output_names, outs))
