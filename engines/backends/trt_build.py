"""TensorRT engines from the shipped ONNX files, and the on-disk engine cache.

Nothing here imports ``tensorrt`` or ``pycuda`` at module level: the cache key,
the cache files and the profile rules are plain Python, so they are usable
(and tested) on hosts without a GPU.  Only :func:`build_engine` and
:func:`host_info` import them, when called.

A TensorRT plan is only valid for the GPU model (compute capability), the
TensorRT version, the precision and the optimisation profile it was built
with, and for the exact ONNX bytes.  Each ``.plan`` in the cache has a JSON
sidecar beside it recording all of these; :func:`load_cached_engine` returns
the plan only when every recorded field equals the current host's and the ONNX
file's sha256 (and the plan's own sha256 still matches), so a stale or foreign
plan is rebuilt, never deserialised.

Optimisation profile (batch dimension only; every other input dimension is
fixed by the model card): ``min`` is always 1 (the live path runs single
windows), ``1 <= opt <= max <= 256``, and ``max <= 16 * opt``.  TensorRT picks
its kernels for the ``opt`` shape; far from it the chosen kernels are slower
than what a profile centred there would get, and device buffers are sized for
``max``.  A profile wider than 16x is almost always a mistake (e.g. ``--max-batch
256`` left with the default ``opt`` of 4); build a second engine instead.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..errors import BackendError, ParameterError

KEY_VERSION = 1
MAX_BATCH_LIMIT = 256
MAX_PROFILE_RATIO = 16
DEFAULT_MAX_BATCH = 16
DEFAULT_WORKSPACE_MB = 1024
PRECISIONS = ("fp32", "fp16")
INSTALL_HINT = ("pip install --extra-index-url https://pypi.nvidia.com 'emotrack[gpu]' "
                "on an NVIDIA GPU host")


class EngineBuildError(BackendError):
    """An engine cannot be built or loaded here (one line, names the cause)."""


class ProfileError(ParameterError):
    """An optimisation profile that breaks the rules in this module's docstring."""


@dataclass(frozen=True)
class Profile:
    """Batch sizes of a TensorRT optimisation profile: min (always 1), opt, max."""

    min: int = 1
    opt: int = 4
    max: int = DEFAULT_MAX_BATCH

    def __post_init__(self):
        for name in ("min", "opt", "max"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ProfileError(f"profile {name} batch must be an integer, got {v!r}")
        if self.min != 1:
            raise ProfileError(f"profile min batch must be 1 (the live path runs single windows), got {self.min}")
        if not 1 <= self.opt <= self.max:
            raise ProfileError(f"profile needs 1 <= opt <= max, got opt {self.opt}, max {self.max}")
        if self.max > MAX_BATCH_LIMIT:
            raise ProfileError(f"max batch {self.max} is above the limit of {MAX_BATCH_LIMIT}")
        if self.max > MAX_PROFILE_RATIO * self.opt:
            raise ProfileError(f"profile too wide: max batch {self.max} > {MAX_PROFILE_RATIO} x opt batch "
                               f"{self.opt}; use --opt-batch >= {math.ceil(self.max / MAX_PROFILE_RATIO)}")

    @classmethod
    def for_batch(cls, max_batch: int = DEFAULT_MAX_BATCH, opt_batch: Optional[int] = None) -> "Profile":
        """The profile for ``max_batch`` with ``opt_batch`` (default: :func:`default_opt_batch`)."""
        if isinstance(max_batch, int) and not isinstance(max_batch, bool) and max_batch < 1:
            raise ProfileError(f"max batch must be >= 1, got {max_batch}")
        return cls(1, default_opt_batch(max_batch) if opt_batch is None else opt_batch, max_batch)

    def as_list(self) -> list[int]:
        return [self.min, self.opt, self.max]

    def __str__(self) -> str:
        return f"{self.min}/{self.opt}/{self.max}"


def default_opt_batch(max_batch: int) -> int:
    """4 (a few channels' windows at once), within [1, max] and wide enough for the 16x rule."""
    return max(min(4, max_batch), math.ceil(max_batch / MAX_PROFILE_RATIO))


# ----------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    """``$EMOTRACK_ENGINE_CACHE``, else ``~/.cache/emotrack/engines``."""
    env = os.environ.get("EMOTRACK_ENGINE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "emotrack" / "engines"


def _onnx_sha256(onnx_path: str | Path) -> str:
    from ..cards import sha256_of

    try:
        return sha256_of(Path(onnx_path))
    except OSError as exc:
        raise EngineBuildError(f"cannot read {onnx_path}: {exc.strerror or exc}") from None


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def key_fields(onnx_path: str | Path, gpu_name: str, compute_capability: str, trt_version: str,
               precision: str, profile: Profile, *, onnx_sha256: Optional[str] = None) -> dict:
    """Every field an engine depends on (what the key hashes and the sidecar records)."""
    _check_precision(precision)
    if not isinstance(profile, Profile):
        raise TypeError(f"profile must be a Profile, got {type(profile).__name__}")
    return {
        "key_version": KEY_VERSION,
        "onnx_sha256": onnx_sha256 or _onnx_sha256(onnx_path),
        "gpu_name": str(gpu_name),
        "compute_capability": str(compute_capability),
        "trt_version": str(trt_version),
        "precision": precision,
        "profile": profile.as_list(),
    }


def _key_of(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def engine_cache_key(onnx_path: str | Path, gpu_name: str, compute_capability: str, trt_version: str,
                     precision: str, profile: Profile) -> str:
    """Stable hex key (sha256) of the ONNX bytes, GPU, compute capability, TensorRT version,
    precision and profile.  The ONNX file's path does not enter the key, only its content."""
    return _key_of(key_fields(onnx_path, gpu_name, compute_capability, trt_version, precision, profile))


def _path_for(onnx_path: str | Path, fields: dict) -> Path:
    return cache_dir() / f"{Path(onnx_path).stem}-{fields['precision']}-{_key_of(fields)[:16]}.plan"


def engine_path(onnx_path: str | Path, gpu_name: str, compute_capability: str, trt_version: str,
                precision: str, profile: Profile) -> Path:
    """Where the plan for these key fields lives in :func:`cache_dir` (its sidecar: ``.json``)."""
    return _path_for(onnx_path, key_fields(onnx_path, gpu_name, compute_capability, trt_version,
                                           precision, profile))


def sidecar_path(plan_path: Path) -> Path:
    return Path(plan_path).with_suffix(".json")


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_engine(plan: bytes, onnx_path: str | Path, gpu_name: str, compute_capability: str,
                trt_version: str, precision: str, profile: Profile, *, extra: Optional[dict] = None) -> Path:
    """Write ``plan`` and its sidecar into the cache; returns the plan's path.

    The sidecar is written last (atomically), so a plan without a valid sidecar
    is never taken for a usable one."""
    fields = key_fields(onnx_path, gpu_name, compute_capability, trt_version, precision, profile)
    path = _path_for(onnx_path, fields)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, bytes(plan))
        meta = dict(fields, key=_key_of(fields), plan_sha256=hashlib.sha256(plan).hexdigest(),
                    plan_bytes=len(plan), onnx_name=Path(onnx_path).name,
                    onnx_path=str(Path(onnx_path).resolve()), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        if extra:
            meta.update({k: v for k, v in extra.items() if k not in meta})
        _atomic_write(sidecar_path(path), (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())
    except OSError as exc:
        raise EngineBuildError(f"cannot write the engine cache {path.parent}: {exc.strerror or exc} "
                               "(set EMOTRACK_ENGINE_CACHE to a writable directory)") from None
    return path


def read_sidecar(plan_path: Path) -> Optional[dict]:
    try:
        meta = json.loads(sidecar_path(plan_path).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def load_cached_engine(onnx_path: str | Path, gpu_name: str, compute_capability: str, trt_version: str,
                       precision: str, profile: Profile) -> Optional[bytes]:
    """The cached plan's bytes if its sidecar matches this host and ONNX file exactly, else None.

    None (so the caller rebuilds) when: no plan or sidecar, an unreadable
    sidecar, any recorded key field different from the current one (another
    GPU, compute capability, TensorRT version, precision, profile or ONNX
    content), or plan bytes whose sha256 differs from the recorded one."""
    fields = key_fields(onnx_path, gpu_name, compute_capability, trt_version, precision, profile)
    path = _path_for(onnx_path, fields)
    meta = read_sidecar(path)
    if meta is None or meta.get("key") != _key_of(fields):
        return None
    if any(meta.get(k) != v for k, v in fields.items()):
        return None
    try:
        plan = path.read_bytes()
    except OSError:
        return None
    if len(plan) != meta.get("plan_bytes") or hashlib.sha256(plan).hexdigest() != meta.get("plan_sha256"):
        return None
    return plan


def list_cached_engines(directory: Optional[Path] = None) -> list[dict]:
    """The sidecars in the cache (with ``plan`` = the plan's path and ``present``), sorted by name."""
    d = Path(directory) if directory else cache_dir()
    out = []
    if not d.is_dir():
        return out
    for side in sorted(d.glob("*.json")):
        plan = side.with_suffix(".plan")
        meta = read_sidecar(plan)
        if meta is None:
            continue
        meta["plan"] = str(plan)
        meta["present"] = plan.is_file()
        out.append(meta)
    return out


# ----------------------------------------------------------------------------- host


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def import_tensorrt():
    """``tensorrt``, or EngineBuildError saying why it cannot be used (one line)."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        raise EngineBuildError(f"the tensorrt package is not installed ({INSTALL_HINT})")
    try:
        import tensorrt as trt
    except Exception as exc:  # a broken install (missing libnvinfer, ...)
        raise EngineBuildError(f"tensorrt cannot be imported: {_first_line(exc)}") from None
    major = str(getattr(trt, "__version__", "0")).split(".")[0]
    if not major.isdigit() or int(major) < 10:
        raise EngineBuildError(f"TensorRT {getattr(trt, '__version__', '?')} is installed; emotrack needs "
                               f"TensorRT 10 ({INSTALL_HINT})")
    return trt


def import_pycuda_driver():
    """``pycuda.driver`` initialised, with at least one device; EngineBuildError otherwise."""
    import importlib.util

    if importlib.util.find_spec("pycuda") is None:
        raise EngineBuildError(f"pycuda is not installed ({INSTALL_HINT})")
    try:
        import pycuda.driver as cuda
    except Exception as exc:  # built against a CUDA that is not here, no driver
        raise EngineBuildError(f"pycuda cannot be imported (no CUDA driver?): {_first_line(exc)}") from None
    try:
        cuda.init()
        n = cuda.Device.count()
    except Exception as exc:  # no driver, driver/runtime mismatch
        raise EngineBuildError(f"CUDA is not usable: {_first_line(exc)}") from None
    if n == 0:
        raise EngineBuildError("no CUDA device found")
    return cuda


def host_info(device: int = 0) -> dict:
    """``gpu_name``, ``compute_capability`` ("8.9") and ``trt_version`` of this host."""
    trt = import_tensorrt()
    cuda = import_pycuda_driver()
    try:
        dev = cuda.Device(device)
        major, minor = dev.compute_capability()
        name = dev.name()
    except Exception as exc:
        raise EngineBuildError(f"cannot query CUDA device {device}: {_first_line(exc)}") from None
    return {"gpu_name": name, "compute_capability": f"{major}.{minor}", "trt_version": trt.__version__}


def fast_fp16_by_capability(compute_capability: str) -> bool:
    """Whether a GPU of this compute capability has fast native FP16 (6.1 has not)."""
    major, minor = (int(p) for p in str(compute_capability).split(".")[:2])
    return major >= 7 or (major, minor) in ((5, 3), (6, 0), (6, 2))


def _platform_fast_fp16(builder) -> bool:
    # IBuilder.platform_has_fast_fp16 is deprecated since TensorRT 10.5 (still present in 10.x);
    # where it is gone, ask the device's compute capability
    has = getattr(builder, "platform_has_fast_fp16", None)
    if has is not None:
        return bool(has)
    return fast_fp16_by_capability(host_info()["compute_capability"])


# ----------------------------------------------------------------------------- build


def _parser_error_line(err) -> str:
    """One line for a TensorRT ONNX parser error: node index, operator, name and description."""
    def call(name, default=None):
        f = getattr(err, name, None)
        try:
            return f() if callable(f) else default
        except Exception:
            return default

    desc = call("desc") or str(err)
    node = call("node", -1)
    op = call("node_operator") or ""
    nname = call("node_name") or ""
    where = ""
    if isinstance(node, int) and node >= 0:
        where = f"node {node}" + (f" ({op}" + (f" '{nname}'" if nname else "") + ")" if op or nname else "") + ": "
    return " ".join(f"{where}{desc}".split())


def _make_logger(trt, echo: Callable[[str], None]):
    """A TensorRT logger that keeps errors (for the exception) and echoes warnings."""

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                self.errors.append(" ".join(str(msg).split()))
            elif severity == trt.ILogger.WARNING:
                echo(f"TensorRT warning: {' '.join(str(msg).split())}")

    return _Logger()


def _stderr(msg: str) -> None:
    print(f"emotrack: {msg}", file=sys.stderr, flush=True)


def _network_flags(trt) -> int:
    # TensorRT 10 networks are always explicit-batch; the flag is deprecated and ignored there
    major = int(str(trt.__version__).split(".")[0])
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    return (1 << int(flag)) if major < 10 and flag is not None else 0


def model_input_dims(onnx_path: Path, name: str, graph_dims: tuple) -> tuple[int, ...]:
    """Non-batch dims of input ``name``: the model card's ``inputs.<name>.shape[1:]`` where a card
    is beside the model (an emotion model's or the separator's), else the ONNX graph's (which must
    then be static); both must agree."""
    from ..cards import ModelCardError, read_card, specs_by_name

    graph_dims = tuple(int(d) for d in graph_dims)
    card_path = onnx_path.with_suffix(".json")
    card = None
    if card_path.is_file():
        try:
            card = read_card(onnx_path)
            card["inputs"] = specs_by_name(card.get("inputs"), card_path, "inputs")
        except ModelCardError as exc:
            raise EngineBuildError(f"cannot read the card of {onnx_path.name}: {exc}") from None
    if card is not None:
        try:
            shape = card["inputs"][name]["shape"]
            dims = tuple(int(d) for d in shape[1:])
        except (KeyError, TypeError, ValueError):
            raise EngineBuildError(f"the card of {onnx_path.name} has no usable inputs.{name}.shape") from None
        if len(dims) != len(graph_dims) or any(g > 0 and g != c for g, c in zip(graph_dims, dims)):
            raise EngineBuildError(f"{onnx_path.name}: input {name!r} has non-batch dims {list(graph_dims)} "
                                   f"in the graph but {list(dims)} in its card")
        return dims
    if any(d <= 0 for d in graph_dims):
        raise EngineBuildError(f"{onnx_path.name}: input {name!r} has dynamic non-batch dims {list(graph_dims)} "
                               "and there is no model card beside it to fix them")
    return graph_dims


def build_engine(onnx_path: str | Path, *, fp16: bool = False, max_batch: int = DEFAULT_MAX_BATCH,
                 opt_batch: Optional[int] = None, workspace_mb: int = DEFAULT_WORKSPACE_MB,
                 echo: Callable[[str], None] = _stderr) -> tuple[bytes, dict]:
    """Build a serialized TensorRT engine (plan) from ``onnx_path``.

    One optimisation profile over the batch dimension (``Profile.for_batch``).
    ``fp16`` enables FP16 kernels only where the GPU has fast FP16; otherwise
    it says so through ``echo`` and builds FP32.  FP32 engines are built with
    TF32 off (TensorRT enables it by default), so they match ONNX Runtime's
    FP32.  Returns ``(plan, info)``; ``info`` has ``precision`` (what was
    actually built), ``input_name``, ``input_shape`` (non-batch dims),
    ``profile`` and ``build_s``.  Raises EngineBuildError naming every ONNX
    parser error, one per '; '-separated part.
    """
    onnx_path = Path(onnx_path)
    profile = Profile.for_batch(max_batch, opt_batch)
    if not isinstance(workspace_mb, int) or workspace_mb < 1:
        raise ProfileError(f"workspace must be >= 1 MB, got {workspace_mb!r}")
    trt = import_tensorrt()
    try:
        data = onnx_path.read_bytes()
    except OSError as exc:
        raise EngineBuildError(f"cannot read {onnx_path}: {exc.strerror or exc}") from None
    t0 = time.monotonic()
    logger = _make_logger(trt, echo)
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # no CUDA device or driver
        raise EngineBuildError(f"TensorRT cannot create a builder: {_first_line(exc)}") from None
    if builder is None:
        raise EngineBuildError("TensorRT cannot create a builder: " + ("; ".join(logger.errors) or "no GPU?"))
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse(data, str(onnx_path))  # the path resolves external weights, if any
    if not ok or parser.num_errors:
        errs = [_parser_error_line(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path.name}: "
                               + "; ".join(errs or logger.errors or ["the parser reported failure without errors"]))
    if network.num_inputs != 1:
        names = [network.get_input(i).name for i in range(network.num_inputs)]
        raise EngineBuildError(f"{onnx_path.name} has inputs {names}; emotrack models have exactly one")
    inp = network.get_input(0)
    name = inp.name
    shape = tuple(int(d) for d in inp.shape)
    if not shape or shape[0] > 0:
        raise EngineBuildError(f"{onnx_path.name}: input {name!r} has shape {list(shape)}; the first (batch) "
                               "dimension must be dynamic (export with a None/'N' batch)")
    dims = model_input_dims(onnx_path, name, shape[1:])

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(name, (profile.min, *dims), (profile.opt, *dims), (profile.max, *dims))
    config.add_optimization_profile(opt_profile)
    precision = "fp32"
    if fp16:
        if _platform_fast_fp16(builder):
            config.set_flag(trt.BuilderFlag.FP16)
            precision = "fp16"
        else:
            echo(f"{onnx_path.name}: FP16 requested but this GPU has no fast FP16; building FP32")
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if precision == "fp32" and tf32 is not None:
        config.clear_flag(tf32)  # TF32 is on by default (Ampere+); FP32 engines stay FP32 (ONNX Runtime parity)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build an engine for {onnx_path.name}: "
                               + ("; ".join(logger.errors) or "no reason given"))
    plan = bytes(serialized)
    info = {"precision": precision, "input_name": name, "input_shape": list(dims),
            "profile": profile.as_list(), "workspace_mb": int(workspace_mb),
            "build_s": round(time.monotonic() - t0, 2)}
    return plan, info


def resolve_precision(fp16: bool, compute_capability: str) -> str:
    """The precision an engine will have here: fp16 only where requested and the GPU has fast FP16."""
    return "fp16" if fp16 and fast_fp16_by_capability(compute_capability) else "fp32"


def find_cached_engine(onnx_path: str | Path, gpu_name: str, compute_capability: str,
                       trt_version: str) -> Optional[tuple[bytes, Path, dict]]:
    """The newest valid cached engine for ``onnx_path`` on this host, whatever its precision and
    profile (so ``emotrack engines build --fp16 --max-batch 32`` is what the backend then uses)."""
    sha = _onnx_sha256(onnx_path)
    found = []
    for meta in list_cached_engines():
        if (meta.get("onnx_sha256"), meta.get("gpu_name"), meta.get("compute_capability"),
                meta.get("trt_version")) != (sha, str(gpu_name), str(compute_capability), str(trt_version)):
            continue
        try:
            profile = Profile(*meta["profile"])
            plan = load_cached_engine(onnx_path, gpu_name, compute_capability, trt_version,
                                      meta["precision"], profile)
        except (KeyError, TypeError, ValueError):
            continue
        if plan is not None:
            found.append((str(meta.get("created", "")), Path(meta["plan"]).stat().st_mtime, plan,
                          Path(meta["plan"]), meta))
    if not found:
        return None
    found.sort(key=lambda t: (t[0], t[1]))
    _, _, plan, path, meta = found[-1]
    return plan, path, meta


def get_engine(onnx_path: str | Path, *, fp16: Optional[bool] = None, max_batch: Optional[int] = None,
               opt_batch: Optional[int] = None, workspace_mb: int = DEFAULT_WORKSPACE_MB,
               rebuild: bool = False, echo: Callable[[str], None] = _stderr) -> tuple[bytes, Path, bool]:
    """The plan for ``onnx_path`` on this host: from the cache if valid, else built now and cached.

    With ``fp16``, ``max_batch`` and ``opt_batch`` all None, any valid cached
    engine of this model for this host will do (the newest); if there is none,
    an FP32 engine for batches up to 16 is built.  Given explicitly, they select
    exactly that engine.  Returns ``(plan, path, built)``."""
    onnx_path = Path(onnx_path)
    host = host_info()
    hargs = (host["gpu_name"], host["compute_capability"], host["trt_version"])
    if fp16 is None and max_batch is None and opt_batch is None and not rebuild:
        hit = find_cached_engine(onnx_path, *hargs)
        if hit is not None:
            return hit[0], hit[1], False
    fp16 = bool(fp16)
    profile = Profile.for_batch(DEFAULT_MAX_BATCH if max_batch is None else max_batch, opt_batch)
    precision = resolve_precision(fp16, host["compute_capability"])
    if fp16 and precision != "fp16":
        echo(f"{onnx_path.name}: FP16 requested but this GPU ({host['gpu_name']}, compute capability "
             f"{host['compute_capability']}) has no fast FP16; using FP32")
    args = (onnx_path, *hargs, precision, profile)
    if not rebuild:
        plan = load_cached_engine(*args)
        if plan is not None:
            return plan, engine_path(*args), False
    echo(f"building a TensorRT {precision.upper()} engine for {onnx_path.name} (batch {profile}); "
         "done once per model, GPU and TensorRT version")
    plan, info = build_engine(onnx_path, fp16=precision == "fp16", max_batch=profile.max,
                              opt_batch=profile.opt, workspace_mb=workspace_mb, echo=echo)
    # keyed by the precision asked for here; what the builder actually used is recorded beside it
    extra = {("built_precision" if k == "precision" else k): v for k, v in info.items()}
    path = save_engine(plan, *args, extra=extra)
    return plan, path, True


__all__ = ["Profile", "ProfileError", "EngineBuildError", "cache_dir", "engine_cache_key", "engine_path",
           "sidecar_path", "save_engine", "load_cached_engine", "list_cached_engines", "build_engine",
           "get_engine", "find_cached_engine", "host_info", "default_opt_batch", "resolve_precision", "fast_fp16_by_capability"]
