"""TensorRT backend (NVIDIA GPUs), run with pycuda.  Imported lazily; nothing else needs
tensorrt or pycuda.

:class:`TensorRTBackend` gets its engine through the cache of
:mod:`engines.backends.trt_build` (a valid cached plan for this GPU, TensorRT version
and ONNX file, or one built now), deserialises it, and allocates page-locked
host buffers and device buffers once, for the profile's largest batch.  A call
copies the batch into the pinned input buffer, sets the input shape and every
I/O tensor address, and queues host-to-device copy, ``execute_async_v3`` and the
device-to-host copies on one CUDA stream, then synchronises that stream once.
Batches larger than the engine's maximum are run in slices.

CUDA context: the device's primary context (the one TensorRT's runtime API
uses), retained once and pushed/popped around every call, so the backend can be
called from any thread.  cuda-python is not supported as a pycuda substitute.
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from ..errors import BackendError
from .base import Backend
from .trt_build import (DEFAULT_WORKSPACE_MB, EngineBuildError, get_engine, import_pycuda_driver,
                        import_tensorrt, read_sidecar)


def available() -> tuple[bool, str]:
    """(usable, reason): True only when tensorrt (10) and pycuda import and a CUDA device exists."""
    try:
        trt = import_tensorrt()
        cuda = import_pycuda_driver()
        name = cuda.Device(0).name()
    except EngineBuildError as exc:
        return False, str(exc)
    except Exception as exc:  # a driver error while naming the device
        return False, f"CUDA is not usable: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
    return True, f"TensorRT {trt.__version__} on {name}"


class TensorRTBackend(Backend):
    """``run({name: x}) -> {"quadrant", "va", "activity"}`` on a TensorRT engine of a one-input model.

    ``max_batch``/``fp16``/``opt_batch`` left at None take any valid cached
    engine of this model for this host (e.g. one ``emotrack engines build``
    made), else build FP32 for batches up to 16; given, they select exactly
    that engine (building it if needed).
    """

    name = "tensorrt"

    def __init__(self, onnx_path: str | Path, *, max_batch: Optional[int] = None, fp16: Optional[bool] = None,
                 opt_batch: Optional[int] = None, workspace_mb: int = DEFAULT_WORKSPACE_MB,
                 rebuild: bool = False, device: int = 0):
        self._closed = True
        self._lock = threading.Lock()
        self._ctx = None
        self._stream = None
        self._runtime = self._engine = self._context = None
        self._host: dict[str, np.ndarray] = {}
        self._dev: dict = {}
        self._out_dtypes: dict[str, np.dtype] = {}
        self._out_tails: dict[str, tuple] = {}

        trt = import_tensorrt()
        cuda = import_pycuda_driver()
        self._trt, self._cuda = trt, cuda
        self.onnx_path = Path(onnx_path)
        plan, self.engine_path, built = get_engine(self.onnx_path, fp16=fp16, max_batch=max_batch,
                                                   opt_batch=opt_batch, workspace_mb=workspace_mb,
                                                   rebuild=rebuild)
        try:
            dev = cuda.Device(device)
            self.gpu_name = dev.name()
            self._ctx = dev.retain_primary_context()
        except Exception as exc:
            raise BackendError(f"cannot open CUDA device {device}: {_first_line(exc)}") from None
        self._closed = False
        try:
            with self._current():
                self._setup(plan)
        except BackendError:
            self.close()
            raise
        except Exception as exc:  # pycuda/TensorRT errors (out of memory, driver errors)
            self.close()
            raise BackendError(f"TensorRT cannot load the engine {self.engine_path.name}: "
                               f"{type(exc).__name__}: {_first_line(exc)}") from None
        except BaseException:
            self.close()
            raise
        meta = read_sidecar(self.engine_path) or {}
        self.precision = meta.get("built_precision") or meta.get("precision") or "?"
        self.description = (f"tensorrt (TensorRT {trt.__version__}, {self.gpu_name}, {self.precision}, "
                            f"batch up to {self.max_batch}, engine {self.engine_path}"
                            f"{', built now' if built else ', cached'})")

    # --------------------------------------------------------------- setup

    @contextmanager
    def _current(self):
        """The backend's CUDA context made current for the duration."""
        self._ctx.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def _setup(self, plan: bytes) -> None:
        trt, cuda = self._trt, self._cuda
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise EngineBuildError(f"TensorRT cannot deserialize {self.engine_path}; rebuild it with "
                                   "emotrack engines build --rebuild")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise EngineBuildError("TensorRT cannot create an execution context (out of GPU memory?)")
        eng = self._engine
        self._names = [eng.get_tensor_name(i) for i in range(eng.num_io_tensors)]
        inputs = [n for n in self._names if eng.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in self._names if n not in inputs]
        if len(inputs) != 1 or not self._outputs:
            raise EngineBuildError(f"engine {self.engine_path.name} has inputs {inputs} and outputs "
                                   f"{self._outputs}; emotrack models have one input and named outputs")
        self._input = inputs[0]
        _, _, max_shape = eng.get_tensor_profile_shape(self._input, 0)
        max_shape = tuple(int(d) for d in max_shape)
        self.max_batch = max_shape[0]
        self.input_dims = max_shape[1:]
        if self.max_batch < 1 or any(d < 1 for d in self.input_dims):
            raise EngineBuildError(f"engine {self.engine_path.name} has an unusable profile {max_shape}")
        self._in_dtype = np.dtype(trt.nptype(eng.get_tensor_dtype(self._input)))

        # output shapes at the largest batch size the buffers must hold
        if not self._context.set_input_shape(self._input, max_shape):
            raise EngineBuildError(f"engine {self.engine_path.name} refuses its own max shape {max_shape}")
        shapes = {self._input: max_shape}
        for n in self._outputs:
            shp = tuple(int(d) for d in self._context.get_tensor_shape(n))
            if any(d < 0 for d in shp):
                raise EngineBuildError(f"output {n!r} has a data-dependent shape {shp}; not supported")
            shapes[n] = shp
            self._out_tails[n] = shp[1:]
            self._out_dtypes[n] = np.dtype(trt.nptype(eng.get_tensor_dtype(n)))
        self._stream = cuda.Stream()
        for n in self._names:
            dtype = self._in_dtype if n == self._input else self._out_dtypes[n]
            size = max(1, math.prod(shapes[n]))
            self._host[n] = cuda.pagelocked_empty(size, dtype)  # flat; viewed per call
            self._dev[n] = cuda.mem_alloc(self._host[n].nbytes)

    # --------------------------------------------------------------- run

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._input in inputs:
            x = inputs[self._input]
        elif len(inputs) == 1:
            x = next(iter(inputs.values()))
        else:
            raise BackendError(f"tensorrt backend takes one input ({self._input!r}), got {sorted(inputs)}")
        x = np.asarray(x)
        if x.ndim != 1 + len(self.input_dims) or tuple(x.shape[1:]) != self.input_dims:
            raise BackendError(f"tensorrt backend: input shape {tuple(x.shape)} does not match the engine's "
                               f"(n, {', '.join(map(str, self.input_dims))})")
        with self._lock:
            if self._closed:
                raise BackendError("tensorrt backend used after close()")
            try:
                with self._current():
                    parts = [self._run_batch(x[i:i + self.max_batch])
                             for i in range(0, x.shape[0], self.max_batch)]
            except BackendError:
                raise
            except Exception as exc:  # pycuda/TensorRT errors
                raise BackendError(f"tensorrt inference failed: {type(exc).__name__}: {_first_line(exc)}") from None
        if not parts:  # an empty batch
            return {n: np.zeros((0,) + self._out_tails[n], np.float32) for n in self._outputs}
        if len(parts) == 1:
            return parts[0]
        return {n: np.concatenate([p[n] for p in parts]) for n in self._outputs}

    def _run_batch(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        cuda, ctx, stream = self._cuda, self._context, self._stream
        n = chunk.shape[0]
        h_in = self._host[self._input][:chunk.size].reshape(chunk.shape)
        np.copyto(h_in, chunk, casting="same_kind")
        if not ctx.set_input_shape(self._input, (n, *self.input_dims)):
            raise BackendError(f"tensorrt: batch {n} is outside the engine's profile (1..{self.max_batch})")
        for name in self._names:
            ctx.set_tensor_address(name, int(self._dev[name]))
        out_shapes = {name: tuple(int(d) for d in ctx.get_tensor_shape(name)) for name in self._outputs}
        cuda.memcpy_htod_async(self._dev[self._input], h_in, stream)
        if not ctx.execute_async_v3(stream.handle):
            stream.synchronize()
            raise BackendError("tensorrt: execute_async_v3 failed (see the TensorRT messages above)")
        views = {}
        for name, shp in out_shapes.items():
            views[name] = self._host[name][:math.prod(shp)]
            cuda.memcpy_dtoh_async(views[name], self._dev[name], stream)
        stream.synchronize()
        # copies: the pinned buffers are reused by the next call
        return {name: np.array(v.reshape(out_shapes[name]), dtype=np.float32) for name, v in views.items()}

    # --------------------------------------------------------------- close

    def close(self) -> None:
        """Free the execution context, engine, runtime, stream and every buffer (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                with self._current():
                    if self._stream is not None:
                        self._stream.synchronize()
                    for d in self._dev.values():
                        d.free()
                    for h in self._host.values():
                        base = getattr(h, "base", None)
                        if hasattr(base, "free"):
                            base.free()
                    self._dev.clear()
                    self._host.clear()
                    # the context before the engine before the runtime
                    self._context = None
                    self._engine = None
                    self._runtime = None
                    self._stream = None
            finally:
                self._ctx = None

    def __del__(self):  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
