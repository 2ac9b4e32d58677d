"""``emotrack engines build | list``: TensorRT engines of the emotion models.

:func:`add_parser` registers ``engines`` on the main parser's subparsers and :func:`run`
runs it (the convention of every command: :mod:`streamer.cli`); TensorRT is imported only
when a subcommand runs.
Errors a user can cause raise engines.errors classes (one line, non-zero exit).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .argtypes import int_at_least


def add_parser(sub) -> None:
    from .backends.trt_build import DEFAULT_MAX_BATCH, DEFAULT_WORKSPACE_MB, MAX_BATCH_LIMIT, MAX_PROFILE_RATIO

    e = sub.add_parser("engines", help="build and list TensorRT engines of the models (NVIDIA GPU hosts)",
                       description="TensorRT engines built from the ONNX models, cached per model, GPU, "
                                   "TensorRT version, precision and batch profile in $EMOTRACK_ENGINE_CACHE "
                                   "(default ~/.cache/emotrack/engines).")
    es = e.add_subparsers(dest="engines_command", metavar="SUBCOMMAND", parser_class=type(e))
    es.required = True
    b = es.add_parser("build", help="build (or refresh) engines for this GPU",
                      description="Build TensorRT engines for MODEL... (default: the shipped speech and music "
                                  "models) on this GPU, unless a valid one is already cached. Needs TensorRT 10 "
                                  "and pycuda on an NVIDIA GPU host.")
    b.add_argument("models", nargs="*", metavar="MODEL", help="ONNX model files (default: the shipped default speech and music models, engines.cards.DEFAULT_MODELS)")
    b.add_argument("--fp16", action="store_true", help="FP16 kernels where the GPU has fast FP16 (default: FP32)")
    b.add_argument("--max-batch", type=int_at_least(1), default=DEFAULT_MAX_BATCH, metavar="N",
                   help=f"largest batch the engine runs (<= {MAX_BATCH_LIMIT}; default {DEFAULT_MAX_BATCH})")
    b.add_argument("--opt-batch", type=int_at_least(1), default=None, metavar="N",
                   help=f"batch the kernels are tuned for (max/{MAX_PROFILE_RATIO} <= N <= max; default "
                        "4, or max/16 when larger)")
    b.add_argument("--workspace", type=int_at_least(1), default=DEFAULT_WORKSPACE_MB, metavar="MB",
                   help=f"TensorRT builder workspace in MiB (default {DEFAULT_WORKSPACE_MB})")
    b.add_argument("--rebuild", action="store_true", help="build even if a valid engine is cached")
    b.set_defaults(engines_run=cmd_build)
    ls = es.add_parser("list", help="list cached engines with their key fields",
                       description="List the cached engines: model, precision, batch profile (min/opt/max), "
                                   "GPU, compute capability, TensorRT version and the model's sha256.")
    ls.set_defaults(engines_run=cmd_list)


def run(args) -> int:
    return args.engines_run(args)


def _default_models() -> list[Path]:
    from .cards import default_model_path

    return [default_model_path("speech"), default_model_path("music")]


def cmd_build(args) -> int:
    from .backends.trt_build import Profile, get_engine, host_info
    from .cards import load_card
    from .errors import BackendError, ModelError

    Profile.for_batch(args.max_batch, args.opt_batch)
    try:
        host = host_info()
    except BackendError as exc:
        raise BackendError(f"engines build needs TensorRT 10 and pycuda on an NVIDIA GPU host: {exc}") from None
    models = [Path(m) for m in args.models] or _default_models()
    for m in models:
        try:
            load_card(m)  # the model exists and matches its card (the card fixes the input's dims)
        except ModelError as exc:
            if "card not found" not in str(exc):
                raise
    print(f"GPU {host['gpu_name']} (compute capability {host['compute_capability']}), "
          f"TensorRT {host['trt_version']}", file=sys.stderr)
    for m in models:
        t0 = time.monotonic()
        plan, path, built = get_engine(m, fp16=args.fp16, max_batch=args.max_batch, opt_batch=args.opt_batch,
                                       workspace_mb=args.workspace, rebuild=args.rebuild)
        what = f"built in {time.monotonic() - t0:.1f} s" if built else "valid engine already cached"
        print(f"{m.name}: {path} ({len(plan) / 1e6:.1f} MB, {what})")
    return 0


def cmd_list(args) -> int:
    from .backends.trt_build import cache_dir, list_cached_engines

    rows = list_cached_engines()
    if not rows:
        print(f"no cached engines in {cache_dir()}", file=sys.stderr)
        return 0
    header = ("MODEL", "PRECISION", "BATCH", "GPU", "CC", "TENSORRT", "ONNX SHA256", "MB", "PLAN")
    table = [header]
    for r in rows:
        table.append((str(r.get("onnx_name", "?")), str(r.get("precision", "?")),
                      "/".join(str(x) for x in r.get("profile", [])) or "?", str(r.get("gpu_name", "?")),
                      str(r.get("compute_capability", "?")), str(r.get("trt_version", "?")),
                      str(r.get("onnx_sha256", "?"))[:12],
                      f"{r.get('plan_bytes', 0) / 1e6:.1f}" if r["present"] else "missing",
                      str(r["plan"])))
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    return 0
