"""Inference backends behind one interface, chosen in one place.

``backend.run({"features": x}) -> {"quadrant": ..., "va": ..., "activity": ...}``

- :class:`OnnxRuntimeBackend`: ONNX Runtime, CPU (or CUDA where present).
- TensorRT: :mod:`engines.tensorrt_backend`, imported lazily; on a host
  without a GPU, TensorRT and pycuda it raises :class:`BackendError` with one
  clear line.

``select_backend("auto", ...)`` prefers TensorRT when it is usable (tensorrt,
pycuda and a CUDA device are here, and an engine can be had: a valid cached one
or one built now) and falls back to ONNX Runtime, saying why in
``backend.description``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

BACKENDS = ("auto", "onnxruntime", "tensorrt")


class BackendError(Exception):
    """A backend cannot run on this host (mirrored by streamer.errors.BackendError)."""


class ModelFileError(BackendError):
    """The model file itself is broken (not an ONNX graph): a model problem, not the host's."""


class Backend:
    name = "base"
    description = ""

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, threads: Optional[int] = None,
                 providers: Optional[list[str]] = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads) if threads else 1
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self.session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            if type(exc).__name__ in ("InvalidProtobuf", "InvalidGraph", "NoSuchFile", "InvalidArgument"):
                raise ModelFileError(f"{onnx_path} is not a usable ONNX model: {str(exc).splitlines()[0]}") from None
            raise BackendError(f"onnxruntime cannot load {onnx_path}: {str(exc).splitlines()[0]}") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        used = self.session.get_providers()[0]
        self.description = f"onnxruntime ({used.replace('ExecutionProvider', '')}, {opts.intra_op_num_threads} thread(s))"

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, {k: np.ascontiguousarray(v, dtype=np.float32)
                                                    for k, v in inputs.items()})
        return dict(zip(self.output_names, outs))


def tensorrt_available() -> tuple[bool, str]:
    """Whether TensorRT can run here, and why not."""
    from . import tensorrt_backend

    return tensorrt_backend.available()


def select_backend(kind: str, onnx_path: str | Path, *, threads: Optional[int] = None) -> Backend:
    """The backend ``kind`` (auto|onnxruntime|tensorrt) for the model at ``onnx_path``."""
    if kind not in BACKENDS:
        raise BackendError(f"backend={kind!r} unknown; choose one of {', '.join(BACKENDS)}")
    if kind in ("auto", "tensorrt"):
        ok, why = tensorrt_available()
        if ok:  # TensorRT only if an engine can be had too: a valid cached one, or one built now
            from .tensorrt_backend import TensorRTBackend

            try:
                return TensorRTBackend(onnx_path)
            except BackendError as exc:
                why = _one_line(exc)
            except Exception as exc:  # TensorRT/CUDA raise their own types (out of memory, driver errors)
                if kind == "tensorrt":
                    raise BackendError(f"--backend tensorrt failed for {Path(onnx_path).name}: "
                                       f"{type(exc).__name__}: {_one_line(exc)}") from None
                why = f"{type(exc).__name__}: {_one_line(exc)}"
        if kind == "tensorrt":
            raise BackendError(f"--backend tensorrt is not usable on this host: {why}")
        b = OnnxRuntimeBackend(onnx_path, threads=threads)
        b.description += f"; auto chose it because TensorRT is not usable: {why}"
        return b
    return OnnxRuntimeBackend(onnx_path, threads=threads)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def default_threads() -> int:
    return max(1, min(2, os.cpu_count() or 1))
