"""Inference backends behind one interface, chosen in one place.

- :mod:`.base`: :class:`Backend`, the interface (``run({name: x}) -> {name: y}``, ``close``).
- :mod:`.onnxruntime`: :class:`OnnxRuntimeBackend` and :func:`ort_session`, the one place an
  ONNX Runtime session is made.
- :mod:`.tensorrt` (with :mod:`.trt_build`, :mod:`.trt_ops`): TensorRT engines run with
  pycuda, imported lazily; on a host without a GPU, TensorRT and pycuda it raises
  :class:`BackendError` with one clear line.

``select_backend("auto", ...)`` prefers TensorRT when it is usable (tensorrt,
pycuda and a CUDA device are here, and an engine can be had: a valid cached one
or one built now) and falls back to ONNX Runtime, saying why in
``backend.description``.
"""

from __future__ import annotations

import os

from pathlib import Path
from typing import Optional

from ..errors import BackendError
from .base import Backend
from .onnxruntime import OnnxRuntimeBackend, ort_session

BACKENDS = ("auto", "onnxruntime", "tensorrt")


def tensorrt_available() -> tuple[bool, str]:
    """Whether TensorRT can run here, and why not."""
    from .tensorrt import available

    return available()


def select_backend(kind: str, onnx_path: str | Path, *, threads: Optional[int] = None) -> Backend:
    """The backend ``kind`` (auto|onnxruntime|tensorrt) for the model at ``onnx_path``."""
    if kind not in BACKENDS:
        raise BackendError(f"backend={kind!r} unknown; choose one of {', '.join(BACKENDS)}")
    if kind in ("auto", "tensorrt"):
        ok, why = tensorrt_available()
        if ok:  # TensorRT only if an engine can be had too: a valid cached one, or one built now
            from .tensorrt import TensorRTBackend

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


__all__ = ["BACKENDS", "Backend", "BackendError", "OnnxRuntimeBackend", "ort_session", "select_backend",
           "tensorrt_available"]


def default_threads() -> int:
    """Intra-op threads for a model that dominates a stream's cost (the musicnn front end): up to 2."""
    return max(1, min(2, os.cpu_count() or 1))
