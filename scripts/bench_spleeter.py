#!/usr/bin/env python
"""Spleeter 2stems: emotrack's streaming separator against Spleeter's own separation.

On the first --seconds (default 60) of examples/heldout_mix.ogg (16 kHz mono):

  own    Spleeter's own TensorFlow graph (spleeter.separator.Separator's graph-once
         pieces: STFT, U-Nets, masks, inverse STFT in TF) on the whole signal,
         resampled to 44.1 kHz stereo beforehand (not timed);
  ours   streamer.separation.spleeter.SpleeterSeparator fed in --block second blocks,
         16 kHz in and out (resampling both ways, STFT, masks, overlap-add timed);
  onnx   (with --onnx) the same with runtime="onnx" (U-Nets exported by
         training.spleeter_onnx, run by ONNX Runtime).

Each path runs in its own process (so peak RSS is its own): the graph is built,
one warm-up run is made (not timed, like Spleeter's first call), then --repeats
timed runs; the median wall and CPU (user + sys) seconds are printed with x real
time and the ratio to Spleeter's own.  Without --model-dir a random-weight
checkpoint (training.spleeter_checkpoint) in a temporary folder is used: speed
is the same as with the pretrained weights, the separation is meaningless.
Speed is measured here, never asserted in tests.

    python scripts/bench_spleeter.py [--seconds 60] [--block 1.0] [--repeats 3] [--onnx]
                                     [--model-dir DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIX = REPO / "examples" / "heldout_mix.ogg"
SR = 16000


def _load(seconds: float):
    import numpy as np
    import soundfile as sf

    x, sr = sf.read(str(MIX), dtype="float32")
    if sr != SR or x.ndim != 1:
        raise SystemExit(f"{MIX}: expected 16 kHz mono, got {sr} Hz, shape {x.shape}")
    n = int(seconds * SR)
    if len(x) < n:
        raise SystemExit(f"{MIX} has only {len(x) / SR:.1f} s; ask for fewer --seconds")
    return np.ascontiguousarray(x[:n])


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def worker(path: str, model_dir: str, seconds: float, block: float, repeats: int, threads, onnx_file) -> dict:
    import numpy as np
    import soxr

    sys.path.insert(0, str(REPO))
    from streamer.separation import spleeter as sb

    x = _load(seconds)
    t0 = time.perf_counter()
    if path == "own":
        own = sb.SpleeterOwn(model_dir)
        up = soxr.resample(x, SR, 44100, sb.RESAMPLE_QUALITY)
        stereo = np.ascontiguousarray(np.stack([up, up], axis=1))

        def run():
            return own(stereo)
    else:
        sep = sb.SpleeterSeparator(model_dir, runtime="onnx" if path == "onnx" else "tf",
                                   onnx_path=onnx_file, threads=threads)
        step = max(1, int(block * SR))

        def run():
            n = 0
            for i in range(0, len(x), step):
                n += len(sep.process(x[i:i + step])["speech"])
            n += len(sep.flush()["speech"])
            assert n == len(x)
    build = time.perf_counter() - t0
    run()  # warm-up (TensorFlow's first run allocates and picks kernels)
    walls, cpus = [], []
    for _ in range(repeats):
        c0, w0 = _cpu(), time.perf_counter()
        run()
        walls.append(time.perf_counter() - w0)
        cpus.append(_cpu() - c0)
    return {"path": path, "build_s": build, "wall_s": statistics.median(walls), "wall_min_s": min(walls),
            "cpu_s": statistics.median(cpus), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--block", type=float, default=1.0, help="seconds per process() block for ours (default 1)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model-dir", help="a Spleeter 2stems folder (default: a random-weight one in a temp dir)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads for ours (default: the runtime's)")
    p.add_argument("--onnx", action="store_true", help="also time runtime='onnx' (exports the U-Nets first)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON here")
    p.add_argument("--worker", choices=("own", "ours", "onnx"), help=argparse.SUPPRESS)
    p.add_argument("--onnx-file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        res = worker(args.worker, args.model_dir, args.seconds, args.block, args.repeats, args.threads,
                     args.onnx_file)
        print("RESULT " + json.dumps(res))
        return 0

    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="emotrack-spleeter-bench-") as tmp:
        model_dir = args.model_dir
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        if model_dir is None:
            model_dir = str(Path(tmp) / "2stems")
            subprocess.run([sys.executable, "-m", "training.spleeter_checkpoint", model_dir], cwd=REPO, env=env,
                           check=True, capture_output=True)
        onnx_file = None
        paths = ["own", "ours"]
        if args.onnx:
            onnx_file = str(Path(tmp) / "unet.onnx")
            subprocess.run([sys.executable, "-m", "training.spleeter_onnx", model_dir, onnx_file], cwd=REPO,
                           env=env, check=True, capture_output=True)
            paths.append("onnx")
        results = {}
        for path in paths:
            cmd = [sys.executable, __file__, "--worker", path, "--model-dir", model_dir, "--seconds",
                   str(args.seconds), "--block", str(args.block), "--repeats", str(args.repeats)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            if onnx_file:
                cmd += ["--onnx-file", onnx_file]
            cp = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
            line = next((l for l in cp.stdout.splitlines() if l.startswith("RESULT ")), None)
            if cp.returncode or line is None:
                print(cp.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"worker {path} failed (exit {cp.returncode})")
            results[path] = json.loads(line[7:])

    own = results["own"]
    print(f"Spleeter 2stems, {args.seconds:g} s of {MIX.name}, {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}), load average {os.getloadavg()[0]:.2f}, "
          f"median of {args.repeats} runs after a warm-up; weights: "
          f"{'random (speed only)' if args.model_dir is None else args.model_dir}")
    print(f"{'path':<38} {'build s':>8} {'wall s':>8} {'cpu s':>8} {'x real time':>12} {'ours/own':>9} {'peak RSS MB':>12}")
    names = {"own": "Spleeter's own (graph once, 44.1k)", "ours": f"SpleeterSeparator tf ({args.block:g} s blocks)",
             "onnx": f"SpleeterSeparator onnx ({args.block:g} s blocks)"}
    for path, r in results.items():
        ratio = "" if path == "own" else f"{r['wall_s'] / own['wall_s']:.2f}"
        print(f"{names[path]:<38} {r['build_s']:8.1f} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} "
              f"{args.seconds / r['wall_s']:12.1f} {ratio:>9} {r['peak_rss_mb']:12.0f}")
    for path, r in results.items():
        if path != "own":
            print(f"{path}/own: wall {r['wall_s'] / own['wall_s']:.2f} (best runs {r['wall_min_s'] / own['wall_min_s']:.2f}), "
                  f"cpu {r['cpu_s'] / own['cpu_s']:.2f}")
    if args.json:
        for r in results.values():
            r["rtf"] = args.seconds / r["wall_s"]
        Path(args.json).write_text(json.dumps({"seconds": args.seconds, "block_s": args.block,
                                               "repeats": args.repeats, "random_weights": args.model_dir is None,
                                               "paths": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
