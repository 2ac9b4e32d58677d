#!/usr/bin/env python
"""Throughput of cross-channel batching against separate processes (ONNX Runtime, CPU).

For N = 1, 4, 16 copies of examples/heldout_mix.ogg, with the shipped models:

  (a) one process, N streams batched:   emotrack replay MIX x N   (--max-batch 16)
  (b) N separate processes, all started together: N x emotrack replay MIX

Each run writes its messages to a JSONL file (no ZeroMQ), so both pay for
encoding.  Throughput = total audio seconds / wall seconds (process start,
model load and decode included in both); peak RSS is the child's (a) or the
sum of the N children's peaks (b, they run at the same time).  The median of
--repeats runs is printed.  Speed is measured here, never asserted in tests.

    python scripts/bench_batching.py [--quick] [--ns 1,4,16] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIX = REPO / "examples" / "heldout_mix.ogg"


def _cmd(inputs, out, threads, max_batch):
    cmd = [sys.executable, "-m", "streamer.cli", "replay", *map(str, inputs), "--no-pub", "-q",
           "--backend", "onnxruntime", "--out", str(out), "--heartbeat", "5"]
    if threads:
        cmd += ["--threads", str(threads)]
    if max_batch and len(inputs) > 1:
        cmd += ["--max-batch", str(max_batch)]
    return cmd


def _wait_all(procs):
    """Wait for every child; returns {pid: (returncode, peak RSS in MiB)}."""
    res = {}
    pending = {p.pid: p for p in procs}
    while pending:
        pid, status, usage = os.wait4(-1, 0)
        if pid in pending:
            res[pid] = (os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024.0)
            pending[pid].returncode = res[pid][0]
            del pending[pid]
    return res


def run_once(n, mode, tmp: Path, threads, max_batch):
    outs = [tmp / f"{mode}-{n}-{i}.jsonl" for i in range(n)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.monotonic()
    if mode == "batched":
        procs = [subprocess.Popen(_cmd([MIX] * n, outs[0], threads, max_batch), cwd=REPO, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)]
    else:
        procs = [subprocess.Popen(_cmd([MIX], outs[i], threads, max_batch), cwd=REPO, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for i in range(n)]
    res = _wait_all(procs)
    wall = time.monotonic() - t0
    for p in procs:
        err = p.stderr.read().decode(errors="replace")
        p.stderr.close()
        if res[p.pid][0] != 0:
            raise SystemExit(f"bench: {mode} N={n} failed (exit {res[p.pid][0]}): {err.strip()}")
    msgs = sum(sum('"topic":"emotion.' in ln for ln in open(o)) for o in outs if o.exists())
    return wall, sum(r[1] for r in res.values()), msgs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns", default="1,4,16", help="stream counts (default: 1,4,16)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per cell, median reported (default: 3)")
    ap.add_argument("--quick", action="store_true", help="one run per cell")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads per model (default: emotrack's, 1)")
    ap.add_argument("--max-batch", type=int, default=16)
    args = ap.parse_args(argv)
    if not MIX.exists():
        raise SystemExit(f"bench: {MIX} missing")
    import soundfile as sf

    audio_s = sf.info(str(MIX)).duration
    ns = [int(x) for x in args.ns.split(",")]
    repeats = 1 if args.quick else max(1, args.repeats)
    print(f"# {MIX.name} ({audio_s:.1f} s), shipped models, ONNX Runtime CPU, "
          f"{os.cpu_count()} CPU(s), {platform.processor() or platform.machine()}, repeats={repeats}, "
          f"max-batch {args.max_batch}, threads/model {args.threads or 1}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="emotrack-bench-") as td:
        tmp = Path(td)
        for n in ns:
            cells = {}
            for mode in ("batched", "separate"):
                runs = [run_once(n, mode, tmp, args.threads, args.max_batch) for _ in range(repeats)]
                wall = statistics.median(r[0] for r in runs)
                rss = max(r[1] for r in runs)
                cells[mode] = (wall, rss, runs[0][2])
            rows.append((n, cells))
            a, b = cells["batched"], cells["separate"]
            if a[2] != b[2]:
                print(f"# warning: N={n}: {a[2]} emotion messages batched vs {b[2]} separate", file=sys.stderr)
    hdr = (f"{'N':>3} | {'audio s':>7} | {'(a) 1 proc batched':>19} | {'wall s':>6} | {'peak RSS MiB':>12} | "
           f"{'(b) N procs':>12} | {'wall s':>6} | {'peak RSS MiB (sum)':>18} | {'a/b':>5}")
    print(hdr)
    print("-" * len(hdr))
    for n, cells in rows:
        a, b = cells["batched"], cells["separate"]
        total = n * audio_s
        ta, tb = total / a[0], total / b[0]
        print(f"{n:>3} | {total:>7.0f} | {ta:>15.1f} x rt | {a[0]:>6.2f} | {a[1]:>12.0f} | "
              f"{tb:>8.1f} x rt | {b[0]:>6.2f} | {b[1]:>18.0f} | {ta / tb:>5.2f}")
    print("throughput = total audio seconds / wall seconds (x real time); wall includes process start, "
          "model load and decode")
    return 0


if __name__ == "__main__":
    sys.exit(main())
