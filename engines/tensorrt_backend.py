"""TensorRT backend (GPU).  Imported lazily; nothing else needs tensorrt or pycuda.

This module only reports whether TensorRT can run on this host.  Building
engines from the shipped ONNX files and running them (``TensorRTBackend``) is
the TensorRT issue's work; until it lands, ``available()`` says so and
``--backend auto`` falls back to ONNX Runtime.
"""

from __future__ import annotations

import importlib.util


def available() -> tuple[bool, str]:
    """(usable, reason) for the TensorRT backend on this host."""
    if importlib.util.find_spec("tensorrt") is None:
        return False, "the tensorrt package is not installed (pip install 'emotrack[gpu]' on an NVIDIA GPU host)"
    if importlib.util.find_spec("pycuda") is None:
        return False, "pycuda is not installed (pip install 'emotrack[gpu]')"
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() == 0:
            return False, "no CUDA device found"
    except Exception as exc:  # no driver, no device
        return False, f"CUDA is not usable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return False, "TensorRT engine execution is not implemented in this version of emotrack yet"
