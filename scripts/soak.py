#!/usr/bin/env python3
"""Soak and load figures for emotrack (run from the repository root).

    python scripts/soak.py [--minutes 60] [--subscribers 50]

1. Builds a long programme by looping examples/heldout_mix.ogg with ffmpeg.
2. Replays it at full speed with the shipped models, publishing on loopback, while
   one healthy subscriber measures latency (receive time - wall_time) and one
   frozen subscriber (RCVHWM 100) never reads; samples the streamer's RSS.
3. Replays the 90 s example to N subscribers at once and checks each got every
   emotion message.
Prints the figures; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq

REPO = Path(__file__).resolve().parents[1]
MIX = REPO / "examples" / "heldout_mix.ogg"


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def sub_socket(ctx, endpoint, hwm=100_000):
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVHWM, hwm)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.connect(endpoint)
    return s


def emotrack(*args) -> list[str]:
    return [sys.executable, "-m", "streamer.cli", *args]


def soak(minutes: float, tmp: Path) -> dict:
    loops = max(1, int(round(minutes * 60 / 90)))
    long = tmp / "long.flac"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-stream_loop", str(loops - 1), "-i", str(MIX),
                    "-ac", "1", "-ar", "16000", str(long)], check=True)
    ep = free_endpoint()
    ctx = zmq.Context.instance()
    healthy, frozen = sub_socket(ctx, ep), sub_socket(ctx, ep, hwm=100)
    lat, got = [], {"healthy": 0}
    done = threading.Event()

    def listen():
        while not done.is_set():
            if healthy.poll(200):
                topic, body = healthy.recv_multipart()
                b = json.loads(body)
                lat.append((time.time() - b["wall_time"]) * 1000)
                got["healthy"] += 1
                if topic == b"status" and b.get("event") == "end":
                    done.set()

    th = threading.Thread(target=listen, daemon=True)
    th.start()
    out = tmp / "long.jsonl"
    t0 = time.monotonic()
    proc = subprocess.Popen(emotrack("replay", str(long), "--pub", ep, "--out", str(out), "-q", "--no-snapshot"),
                            cwd=REPO)
    samples = []
    while proc.poll() is None:
        samples.append((time.monotonic() - t0, rss_mb(proc.pid)))
        time.sleep(0.25)
    wall = time.monotonic() - t0
    done.wait(10)
    frozen_got = 0
    while frozen.poll(100):
        frozen.recv_multipart()
        frozen_got += 1
    published = sum(1 for _ in out.open())
    s = [r for _, r in samples if r == r]
    n = len(s)
    third = max(1, n // 10)
    return {
        "programme_minutes": loops * 1.5, "wall_s": round(wall, 1), "realtime_factor": round(loops * 90 / wall, 1),
        "rss_mb_start_middle_end": [round(float(np.median(s[third:2 * third])), 1),
                                    round(float(np.median(s[n // 2 - third // 2:n // 2 + third // 2 + 1])), 1),
                                    round(float(np.median(s[-2 * third:-third])), 1)],
        "rss_mb_peak": round(max(s), 1), "published": published, "healthy_received": got["healthy"],
        "healthy_latency_ms_p50_p99": [round(float(np.percentile(lat, 50)), 2), round(float(np.percentile(lat, 99)), 2)],
        "frozen_received": frozen_got, "frozen_dropped": published - frozen_got, "exit_code": proc.returncode,
    }


def fan_out(n: int, tmp: Path) -> dict:
    ep = free_endpoint()
    ctx = zmq.Context.instance()
    subs = [sub_socket(ctx, ep) for _ in range(n)]
    out = tmp / "fan.jsonl"
    proc = subprocess.run(emotrack("replay", str(MIX), "--pub", ep, "--out", str(out), "-q", "--no-snapshot"), cwd=REPO)
    want = [json.loads(ln) for ln in out.open()]
    counts = []
    for s in subs:
        k = 0
        while s.poll(300):
            s.recv_multipart()
            k += 1
        counts.append(k)
    return {"subscribers": n, "published": len(want), "min_received": min(counts), "max_received": max(counts),
            "all_complete": all(c == len(want) for c in counts), "exit_code": proc.returncode}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--subscribers", type=int, default=50)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        res = {"soak": soak(a.minutes, Path(d)), "fan_out": fan_out(a.subscribers, Path(d)),
               "cpu": os.cpu_count()}
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
