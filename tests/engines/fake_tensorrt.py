"""CPU stand-ins for ``tensorrt`` and ``pycuda.driver``, for the CPU tests of the TensorRT code.

They implement only the calls emotrack makes, with TensorRT 10 / pycuda names and
semantics: a "plan" is JSON naming the ONNX file and the profile, "executing" it runs
ONNX Runtime on the bytes in fake device memory, and every copy, allocation, stream
synchronisation and context push/pop is counted.  They check emotrack's use of the API
(shapes, profile, addresses, copies, buffer reuse, freeing); they say nothing about real
TensorRT or a real GPU, which the tests marked ``gpu`` cover.
"""

from __future__ import annotations

import importlib.machinery
import itertools
import json
import sys
import types

import numpy as np


class Counters:
    def __init__(self):
        self.reset()

    def reset(self):
        self.pagelocked = 0
        self.mem_alloc = 0
        self.freed = 0
        self.host_freed = 0
        self.htod = 0
        self.dtoh = 0
        self.sync = 0
        self.execute = 0
        self.push = 0
        self.pop = 0
        self.built = []


def _device_classes(c: "Counters") -> tuple:
    """Fake ``Stream``, ``Context`` and ``Device`` of pycuda.driver (one device, counted in ``c``)."""
    class Stream:
        handle = 0xABC

        def synchronize(self):
            c.sync += 1

    class _Ctx:
        def push(self):
            c.push += 1

    class Context:
        @staticmethod
        def pop():
            c.pop += 1

    class Device:
        def __init__(self, i):
            if i != 0:
                raise RuntimeError("cuDeviceGet failed: invalid device ordinal")

        @staticmethod
        def count():
            return 1

        def name(self):
            return "Fake GPU"

        def compute_capability(self):
            return (8, 9)

        def retain_primary_context(self):
            return _Ctx()

    return Stream, Context, Device


def _memory_functions(c: "Counters", allocs: dict, ptrs, Stream) -> tuple:
    """Fake pinned host and device memory and the async copies between them, in ``allocs``."""
    class DevAlloc:
        def __init__(self, nbytes):
            self.buf = bytearray(int(nbytes))
            self.ptr = next(ptrs)
            self.freed = False
            allocs[self.ptr] = self

        def __int__(self):
            assert not self.freed, "use of freed device memory"
            return self.ptr

        def free(self):
            assert not self.freed, "double free"
            self.freed = True
            del allocs[self.ptr]
            c.freed += 1

    class HostAlloc(bytearray):  # what pycuda puts in a pinned array's .base
        freed = False

        def free(self):
            assert not self.freed, "double free of pinned memory"
            self.freed = True
            c.host_freed += 1

    def pagelocked_empty(shape, dtype):
        c.pagelocked += 1
        dtype = np.dtype(dtype)
        shape = (shape,) if np.isscalar(shape) else tuple(shape)
        return np.ndarray(shape, dtype, buffer=HostAlloc(int(np.prod(shape)) * dtype.itemsize))

    def mem_alloc(nbytes):
        c.mem_alloc += 1
        return DevAlloc(nbytes)

    def memcpy_htod_async(dest, src, stream=None):
        assert isinstance(stream, Stream)
        d = allocs[int(dest)]
        src = np.ascontiguousarray(src)
        assert src.nbytes <= len(d.buf)
        d.buf[:src.nbytes] = src.tobytes()
        c.htod += 1

    def memcpy_dtoh_async(dest, src, stream=None):
        assert isinstance(stream, Stream)
        assert dest.flags["C_CONTIGUOUS"]
        s = allocs[int(src)]
        assert dest.nbytes <= len(s.buf)
        dest[...] = np.frombuffer(bytes(s.buf[:dest.nbytes]), dtype=dest.dtype).reshape(dest.shape)
        c.dtoh += 1

    return pagelocked_empty, mem_alloc, memcpy_htod_async, memcpy_dtoh_async


def _make_driver(c: "Counters", allocs: dict, ptrs) -> tuple:
    """Fake ``pycuda`` and ``pycuda.driver``: device memory as bytearrays in ``allocs``, counted in ``c``."""
    drv = types.ModuleType("pycuda.driver")
    drv.__spec__ = importlib.machinery.ModuleSpec("pycuda.driver", None)
    Stream, Context, Device = _device_classes(c)
    pagelocked_empty, mem_alloc, memcpy_htod_async, memcpy_dtoh_async = _memory_functions(c, allocs, ptrs, Stream)
    drv.init = lambda: None
    drv.Device, drv.Context, drv.Stream = Device, Context, Stream
    drv.pagelocked_empty, drv.mem_alloc = pagelocked_empty, mem_alloc
    drv.memcpy_htod_async, drv.memcpy_dtoh_async = memcpy_htod_async, memcpy_dtoh_async
    drv.allocs = allocs
    pycuda = types.ModuleType("pycuda")
    pycuda.__spec__ = importlib.machinery.ModuleSpec("pycuda", None, is_package=True)
    pycuda.driver = drv
    return pycuda, drv


class ILogger:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    def __init__(self):
        pass


class Logger(ILogger):
    def __init__(self, severity=ILogger.WARNING):
        super().__init__()


class TensorIOMode:
    INPUT, OUTPUT = "INPUT", "OUTPUT"


class DataType:
    FLOAT = "FLOAT"


class MemoryPoolType:
    WORKSPACE = "WORKSPACE"


class BuilderFlag:
    FP16, TF32 = "FP16", "TF32"


class NetworkDefinitionCreationFlag:
    pass


class _Tensor:
    def __init__(self, name, shape):
        self.name, self.shape = name, shape


class _ParserError:
    def __init__(self, node, op, name, desc):
        self._v = (node, op, name, desc)

    def node(self):
        return self._v[0]

    def node_operator(self):
        return self._v[1]

    def node_name(self):
        return self._v[2]

    def desc(self):
        return self._v[3]


class _Network:
    def __init__(self):
        self.inputs = []
        self.path = None

    @property
    def num_inputs(self):
        return len(self.inputs)

    def get_input(self, i):
        return self.inputs[i]


class _Profile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, mn, opt, mx):
        self.shapes[name] = (tuple(mn), tuple(opt), tuple(mx))


class _Config:
    def __init__(self):
        self.flags = {BuilderFlag.TF32}  # on by default, as in TensorRT
        self.pools = {}
        self.profiles = []

    def set_memory_pool_limit(self, pool, size):
        self.pools[pool] = size

    def add_optimization_profile(self, p):
        self.profiles.append(p)
        return len(self.profiles) - 1

    def set_flag(self, f):
        self.flags.add(f)

    def clear_flag(self, f):
        self.flags.discard(f)


class _Engine:
    context_class = None  # set by _make_runtime: an execution context bound to the fake device memory

    def __init__(self, plan):
        import onnxruntime as ort

        p = json.loads(bytes(plan))
        self.p = p
        self.sess = ort.InferenceSession(p["onnx"], providers=["CPUExecutionProvider"])
        self.inp = self.sess.get_inputs()[0].name
        assert self.inp == p["input"]
        self.outs = [o.name for o in self.sess.get_outputs()]
        self.out_tails = {o.name: tuple(o.shape[1:]) for o in self.sess.get_outputs()}

    @property
    def num_io_tensors(self):
        return 1 + len(self.outs)

    def get_tensor_name(self, i):
        return ([self.inp] + self.outs)[i]

    def get_tensor_mode(self, name):
        return TensorIOMode.INPUT if name == self.inp else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return DataType.FLOAT

    def get_tensor_profile_shape(self, name, index):
        assert name == self.inp and index == 0
        return [tuple(self.p["min"]), tuple(self.p["opt"]), tuple(self.p["max"])]

    def create_execution_context(self):
        return self.context_class(self)


def _make_builder(c: "Counters", parse_errors=None, fast_fp16=True) -> tuple:
    """Fake ``OnnxParser`` (reporting ``parse_errors`` if given) and ``Builder`` (recording what it built in ``c``)."""

    class OnnxParser:
        def __init__(self, network, logger):
            self.network = network
            self.errors = []

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

        def parse(self, data, path=None):
            if parse_errors:
                self.errors = [_ParserError(*e) for e in parse_errors]
                return False
            import onnx

            m = onnx.load_from_string(bytes(data))
            for i in m.graph.input:
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim)
                self.network.inputs.append(_Tensor(i.name, dims))
            self.network.path = path
            return True

    class Builder:
        platform_has_fast_fp16 = fast_fp16

        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            assert flags == 0, "TensorRT 10 networks are created with flags 0"
            return _Network()

        def create_builder_config(self):
            return _Config()

        def create_optimization_profile(self):
            return _Profile()

        def build_serialized_network(self, network, config):
            assert len(config.profiles) == 1
            (name, (mn, opt, mx)), = config.profiles[0].shapes.items()
            c.built.append({"flags": sorted(config.flags), "pools": dict(config.pools), "name": name,
                            "min": mn, "opt": opt, "max": mx})
            return json.dumps({"onnx": network.path, "input": name, "min": mn, "opt": opt, "max": mx,
                               "fp16": BuilderFlag.FP16 in config.flags}).encode()

    return OnnxParser, Builder


def _make_runtime(c: "Counters", allocs: dict, drv) -> type:
    """Fake ``Runtime``: its engines run the ONNX model with ONNX Runtime on the fake device memory."""

    class _ExecContext:
        def __init__(self, engine):
            self.e = engine
            self.shape = None
            self.addr = {}

        def set_input_shape(self, name, shape):
            shape = tuple(shape)
            if name != self.e.inp or not self.e.p["min"][0] <= shape[0] <= self.e.p["max"][0] \
                    or shape[1:] != tuple(self.e.p["max"][1:]):
                return False
            self.shape = shape
            return True

        def get_tensor_shape(self, name):
            assert self.shape is not None
            return self.shape if name == self.e.inp else (self.shape[0],) + self.e.out_tails[name]

        def set_tensor_address(self, name, ptr):
            assert ptr in allocs
            self.addr[name] = ptr

        def execute_async_v3(self, stream_handle):
            assert stream_handle == drv.Stream.handle
            assert set(self.addr) == {self.e.inp, *self.e.outs}, "every I/O tensor needs an address"
            n = int(np.prod(self.shape))
            x = np.frombuffer(bytes(allocs[self.addr[self.e.inp]].buf[:4 * n]), np.float32).reshape(self.shape)
            outs = self.e.sess.run(self.e.outs, {self.e.inp: x})
            for name, y in zip(self.e.outs, outs):
                y = np.ascontiguousarray(y, np.float32)
                allocs[self.addr[name]].buf[:y.nbytes] = y.tobytes()
            c.execute += 1
            return True

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, plan):
            try:
                engine = _Engine(plan)
                engine.context_class = _ExecContext
                return engine
            except (ValueError, KeyError):
                return None

    return Runtime


def _make_tensorrt(c: "Counters", allocs: dict, drv, parse_errors=None, fast_fp16=True):
    """Fake ``tensorrt``: builder, parser, engine and execution context running the model with ONNX Runtime."""
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = "10.1.0"
    OnnxParser, Builder = _make_builder(c, parse_errors, fast_fp16)
    Runtime = _make_runtime(c, allocs, drv)
    for k, v in dict(ILogger=ILogger, Logger=Logger, TensorIOMode=TensorIOMode, DataType=DataType,
                     MemoryPoolType=MemoryPoolType, BuilderFlag=BuilderFlag, Builder=Builder,
                     NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag, OnnxParser=OnnxParser,
                     Runtime=Runtime, nptype=lambda dt: np.float32).items():
        setattr(trt, k, v)
    return trt


def make_modules(parse_errors=None, fast_fp16=True):
    """(tensorrt, pycuda, pycuda.driver, counters); ``parse_errors``: list of
    (node, op, name, desc) the fake ONNX parser reports instead of succeeding."""
    c = Counters()
    allocs: dict[int, "DevAlloc"] = {}
    ptrs = itertools.count(0x1000, 0x1000)
    pycuda, drv = _make_driver(c, allocs, ptrs)
    trt = _make_tensorrt(c, allocs, drv, parse_errors, fast_fp16)
    return trt, pycuda, drv, c


def install(monkeypatch, **kw):
    """Put the fakes in sys.modules for one test; returns the counters."""
    trt, pycuda, drv, c = make_modules(**kw)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", drv)
    c.allocs = drv.allocs
    return c
