#!/usr/bin/env python
"""Throughput of `emotrack batch` on a local Ray cluster against one process, and equality.

Two workloads cut from examples/heldout_mix.ogg (shipped models, ONNX Runtime, 1 thread each):

  archive   N files of 45-90 s in four formats (Opus ogg, 44.1 kHz stereo FLAC, WAV, MP3)
  long      one programme of M minutes (the example looped, Opus ogg), split into --chunk
            second chunks on the cluster (one process never splits)

For each workload, the same `streamer.ops.batch.run_batch` call runs

  (a) in this process (`emotrack batch --no-ray`), and
  (b) on a local Ray cluster of --workers CPUs (`emotrack batch --ray local`),

into fresh output folders.  Throughput = audio seconds / wall seconds of the call; the
cluster's start-up (ray.init, once per run, before the call) is printed apart, and added
in the "with start-up" column.  Then every output file of (b) is compared with (a): the
emotion bodies must be equal except wall_time.  Speed is measured here, never asserted in
tests.  The machine's load average is printed: other jobs sharing the cores skew both.

Last, the message rate through `emotrack proxy`: --proxy-publishers PUB sockets (threads of
this process) connected to a Proxy send emotion bodies as fast as they can, one subscriber counts.

    python scripts/bench_batch.py [--files 8] [--long-minutes 10] [--chunk 120] [--workers N] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# Before numpy loads: emotrack's one BLAS thread (streamer/__init__.py), as the CLI and the Ray
# workers have it; numpy imported first would keep a multi-threaded BLAS in this process, whose
# rounding differs in the last digits from every other run.
import streamer  # noqa: E402,F401

MIX = REPO / "examples" / "heldout_mix.ogg"


def make_archive(folder: Path, n: int) -> float:
    """N files of 45-90 s in four formats; returns their total duration in s."""
    import numpy as np
    import soundfile as sf
    import soxr

    x, sr = sf.read(MIX, dtype="float32")
    total = 0.0
    for i in range(n):
        seconds = (45, 60, 75, 90)[i % 4]
        start = (i * 7) % max(1, (len(x) // sr) - seconds + 1)
        y = x[start * sr:(start + seconds) * sr]
        kind = i % 4
        if kind == 0:
            sf.write(folder / f"f{i:02d}.ogg", y, sr, format="OGG", subtype="OPUS")
        elif kind == 1:
            z = soxr.resample(y, sr, 44100)
            sf.write(folder / f"f{i:02d}.flac", np.stack([z, 0.7 * z], axis=1), 44100)
        elif kind == 2:
            sf.write(folder / f"f{i:02d}.wav", y, sr)
        else:
            wav = folder / f".f{i:02d}.wav"
            sf.write(wav, y, sr)
            subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), "-c:a", "libmp3lame",
                            "-b:a", "96k", str(folder / f"f{i:02d}.mp3")], check=True)
            wav.unlink()
        total += seconds
    return total


def make_long(folder: Path, minutes: float) -> float:
    import numpy as np
    import soundfile as sf

    x, sr = sf.read(MIX, dtype="float32")
    n = int(minutes * 60 * sr)
    y = np.resize(x, n)
    sf.write(folder / "programme.ogg", y, sr, format="OGG", subtype="OPUS")
    return n / sr


def emotion_bodies(path: Path) -> list[dict]:
    rows = [json.loads(ln) for ln in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in rows if r["topic"].startswith("emotion.")]


def tree_cpu() -> float:
    """CPU seconds (user + system) used so far by this process and every live descendant
    (a local Ray cluster's GCS, raylet, agents and workers are children of its driver)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                f = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(d)] = (int(f[1]), (int(f[11]) + int(f[12])) / tick)  # ppid, utime + stime
    me, total, todo = os.getpid(), 0.0, [os.getpid()]
    seen = {me}
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0.0))[1]
        for child, (ppid, _) in stats.items():
            if ppid == pid and child not in seen:
                seen.add(child)
                todo.append(child)
    return total


def run(inputs: list[str], out: Path, chunk: float, ray_mode) -> tuple[float, float, object]:
    """(wall s, CPU s of this process tree, summary) of one run_batch call."""
    from streamer.ops.batch import RunConfig, run_batch

    shutil.rmtree(out, ignore_errors=True)
    c0, t0 = tree_cpu(), time.monotonic()
    s = run_batch(inputs, out, RunConfig(backend="onnxruntime"), ray=ray_mode, chunk_s=chunk)
    wall, cpu = time.monotonic() - t0, tree_cpu() - c0
    if s.failed:
        raise SystemExit(f"bench: files failed: {s.failed}")
    return wall, cpu, s


def proxy_rate(publishers: int, per_publisher: int) -> dict:
    """Messages per second through `emotrack proxy` (in-process Proxy, real loopback TCP sockets).

    ``publishers`` PUB sockets connected to the XSUB side, each in its own thread, send
    schema-1 emotion bodies as fast as they can; one SUB on the XPUB side counts them.
    """
    import socket
    import threading

    import zmq

    from streamer.ops.proxy import Proxy
    from streamer.publish import Publisher

    def port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return f"tcp://127.0.0.1:{s.getsockname()[1]}"

    proxy = Proxy(port(), port()).start()
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(proxy.xpub)
    time.sleep(0.5)
    pubs = [Publisher(f"ch{i:03d}", proxy.xsub, connect=True, linger_ms=1000, start_grace_s=0.5, hwm=0)
            for i in range(publishers)]

    def send(pub):
        for i in range(per_publisher):
            pub.emotion("speech", t_start=float(i), t_end=i + 3.0, activity=0.5, valence=0.1, arousal=-0.2,
                        quadrant="Q4", probs={"Q1": 0.1, "Q2": 0.2, "Q3": 0.3, "Q4": 0.4}, model="m")

    total = publishers * per_publisher
    got, t_first = 0, None
    threads = [threading.Thread(target=send, args=(p,)) for p in pubs]
    for t in threads:
        t.start()
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    while got < total and poller.poll(3000):
        sub.recv_multipart()
        got += 1
        if t_first is None:
            t_first = time.monotonic()
    t_last = time.monotonic()
    for t in threads:
        t.join()
    before, stats = -1, proxy.stats()
    while sum(c["messages"] for c in stats.values()) != before:  # its counting thread may lag behind
        before = sum(c["messages"] for c in stats.values())
        time.sleep(0.5)
        stats = proxy.stats()
    for p in pubs:
        p.close()
    sub.close(0)
    proxy.close()
    return {"sent": total, "received": got, "rate": (got - 1) / max(t_last - t_first, 1e-9) if got > 1 else 0.0,
            "counted_by_proxy": sum(c["messages"] for c in stats.values()), "streams": len(stats)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=8, help="files in the archive workload (default 8)")
    ap.add_argument("--long-minutes", type=float, default=10.0, help="length of the long programme (0: skip)")
    ap.add_argument("--chunk", type=float, default=120.0, help="--chunk for the cluster runs in s (default 120)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray cluster")
    ap.add_argument("--repeats", type=int, default=2, help="runs per figure; the median is printed (default 2)")
    ap.add_argument("--proxy-publishers", type=int, default=20, help="publishers for the proxy figure (0: skip)")
    ap.add_argument("--proxy-messages", type=int, default=2000, help="messages per publisher (default 2000)")
    args = ap.parse_args(argv)

    import numpy as np
    import onnxruntime
    import ray

    tmp = Path(tempfile.mkdtemp(prefix="emotrack-bench-batch-"))
    try:
        workloads = {}
        (tmp / "archive").mkdir()
        seconds = make_archive(tmp / "archive", args.files)
        workloads["archive"] = (sorted(str(p) for p in (tmp / "archive").iterdir()), seconds)
        if args.long_minutes > 0:
            (tmp / "long").mkdir()
            secs = make_long(tmp / "long", args.long_minutes)
            workloads["long"] = ([str(tmp / "long" / "programme.ogg")], secs)

        print(f"machine: {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}; "
              f"Python {platform.python_version()}, numpy {np.__version__}, onnxruntime {onnxruntime.__version__}, "
              f"ray {ray.__version__}; load average before: {os.getloadavg()[0]:.2f}")
        rows, identical = [], {}
        for name, (inputs, seconds) in workloads.items():
            single, cluster, start, cpu1, cpur = [], [], [], [], []
            for r in range(args.repeats):
                w, c, _ = run(inputs, tmp / f"out-{name}-single", args.chunk, None)
                single.append(w)
                cpu1.append(c)
                t0 = time.monotonic()
                ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
                start.append(time.monotonic() - t0)
                try:
                    w, c, s = run(inputs, tmp / f"out-{name}-ray", args.chunk, "local")
                finally:
                    ray.shutdown()
                cluster.append(w)
                cpur.append(c)
            a, b = tmp / f"out-{name}-single", tmp / f"out-{name}-ray"
            files = sorted(p.name for p in a.glob("*.jsonl"))
            same = [f for f in files if emotion_bodies(a / f) == emotion_bodies(b / f)]
            msgs = sum(len(emotion_bodies(b / f)) for f in files)
            index = json.loads((b / "index.json").read_text())["files"]
            chunks = sum(e["chunks"] for e in index.values())
            identical[name] = (len(same), len(files), msgs)
            ms, mc, st = statistics.median(single), statistics.median(cluster), statistics.median(start)
            rows.append((name, len(inputs), chunks, seconds, ms, mc, st, single, cluster,
                         statistics.median(cpu1), statistics.median(cpur)))
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        print()
        print(f"{'workload':9} {'files':>5} {'tasks':>5} {'audio s':>8} | {'1 process':>19} | "
              f"{'Ray, ' + str(args.workers) + ' CPU':>19} | {'+ start-up':>17} | speed-up")
        for name, n, chunks, seconds, ms, mc, st, single, cluster, c1, cr in rows:
            print(f"{name:9} {n:5d} {chunks:5d} {seconds:8.0f} | {ms:6.1f} s {seconds / ms:6.1f}x rt | "
                  f"{mc:6.1f} s {seconds / mc:6.1f}x rt | {mc + st:5.1f} s {seconds / (mc + st):5.1f}x | "
                  f"{ms / mc:.2f}x ({ms / (mc + st):.2f}x with start-up)")
            print(f"{'':9} runs: 1 process {[round(x, 2) for x in single]}, Ray {[round(x, 2) for x in cluster]}, "
                  f"cluster start {st:.1f} s")
            print(f"{'':9} CPU seconds: 1 process {c1:.1f} ({seconds / c1:.1f} audio s per CPU s), Ray (driver, "
                  f"daemons, workers) {cr:.1f} ({seconds / cr:.1f} audio s per CPU s): {args.workers} idle cores "
                  f"would give at most {args.workers * c1 / cr:.2f}x")
        print()
        for name, (same, files, msgs) in identical.items():
            print(f"outputs identical ({name}): {same}/{files} files, {msgs} emotion messages "
                  f"(bodies equal except wall_time)")
        if args.proxy_publishers > 0:
            r = proxy_rate(args.proxy_publishers, args.proxy_messages)
            print(f"proxy: {r['streams']} publishers x {args.proxy_messages} messages: {r['received']}/{r['sent']} "
                  f"received through the proxy at {r['rate']:.0f} messages/s ({r['counted_by_proxy']} counted "
                  f"by its per-stream statistics)")
        return 0 if all(s == f for s, f, _ in identical.values()) else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
