"""Figures for docs/HARDENING.md (issue 26): what hostile peers and odd files cost.

    python scripts/hardening_bench.py flood      # publisher RSS and real-time factor, 0 vs 50 snapshot flooders
    python scripts/hardening_bench.py bigframe   # recorder RSS while a 400 MB frame arrives
    python scripts/hardening_bench.py chained    # a chained 60-minute Ogg replayed to its end
    python scripts/hardening_bench.py view       # the viewer under 200 event streams + 2,000 idle connections

Real processes (`python -m streamer.cli ...`), real sockets on loopback, the shipped models.
Each prints one JSON line of figures.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "streamer.cli"]
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024  # MiB
            elif k == "Threads":
                out[k] = int(v)
    except OSError:
        pass
    return out


class PeakRSS:
    """Samples a process's RSS every 50 ms (VmHWM is lost when it exits)."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            st = proc_status(self.pid)
            self.peak = max(self.peak, st.get("VmHWM", 0.0), st.get("VmRSS", 0.0))
            time.sleep(0.05)

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return round(self.peak, 1)


def tone_file(path: Path, seconds: float, sr: int = 16000) -> Path:
    import soundfile as sf

    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", sr, 1, subtype="PCM_16") as f:
        for i in range(int(seconds // 10)):
            t = np.arange(10 * sr) / sr
            f.write((0.2 * np.sin(2 * np.pi * (200 + 20 * (i % 10)) * t) + 0.02 * rng.standard_normal(t.size))
                    .astype(np.float32))
    return path


# --------------------------------------------------------------------------------- flood


def _replay(wav: Path, pub: str, flooders: int) -> dict:
    import zmq

    snap = f"tcp://127.0.0.1:{int(pub.rsplit(':', 1)[1]) + 1}"
    proc = subprocess.Popen(CLI + ["replay", str(wav), "--pub", pub, "--snapshot", snap, "--threads", "1"],
                            env=ENV, stderr=subprocess.PIPE, text=True)
    rss = PeakRSS(proc.pid)
    stop = threading.Event()
    sent = [0]

    def flood():
        ctx = zmq.Context()
        socks = []
        for _ in range(flooders):
            d = ctx.socket(zmq.DEALER)
            d.setsockopt(zmq.LINGER, 0)
            d.setsockopt(zmq.RCVHWM, 1)
            d.setsockopt(zmq.RCVBUF, 4096)
            d.setsockopt(zmq.SNDHWM, 1000)
            d.connect(snap)
            socks.append(d)
        while not stop.is_set():
            for d in socks:        # ask, and never read
                try:
                    d.send_multipart([b"", b"SNAPSHOT"], zmq.NOBLOCK)
                    sent[0] += 1
                except zmq.Again:
                    pass
            time.sleep(0.01)
        for d in socks:
            d.close(0)
        ctx.term()

    t = threading.Thread(target=flood, daemon=True)
    if flooders:
        t.start()
    _, err = proc.communicate(timeout=3600)
    stop.set()
    peak = rss.stop()
    m = re.search(r"\(([\d.]+)x real time\)", err)
    return {"flooders": flooders, "requests_sent": sent[0], "rtf": float(m.group(1)) if m else None,
            "peak_rss_mib": peak, "rc": proc.returncode, "stderr_tail": err.strip().splitlines()[-1:]}


def bench_flood(seconds: float = 600.0) -> dict:
    with tempfile.TemporaryDirectory() as d:
        wav = tone_file(Path(d) / "a.wav", seconds)
        res = [_replay(wav, f"tcp://127.0.0.1:{free_port()}", n) for n in (0, 50, 0, 50)]
    return {"bench": "flood", "audio_s": seconds, "runs": res}


# ------------------------------------------------------------------------------ big frame


def bench_bigframe(size_mb: int = 400) -> dict:
    import zmq

    sys.path.insert(0, str(REPO))
    from streamer import schema

    port = free_port()
    ep = f"tcp://127.0.0.1:{port}"
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(ep)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "rec.jsonl"
        proc = subprocess.Popen(CLI + ["record", "--sub", ep, "--no-snapshot", "--out", str(out)],
                                env=ENV, stderr=subprocess.PIPE, text=True)
        rss = PeakRSS(proc.pid)

        def body(seq):
            return schema.emotion_body(stream="s", seq=seq, source="speech", t_start=seq, t_end=seq + 3.0,
                                       wall_time=time.time(), activity=0.5, valence=0.1, arousal=0.2, quadrant="Q1",
                                       probs={"Q1": 0.7, "Q2": 0.1, "Q3": 0.1, "Q4": 0.1}, model="m")

        seq = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120 and not (out.exists() and out.stat().st_size > 0):
            pub.send_multipart(schema.encode("emotion.speech", body(seq)))   # until the recorder has joined
            seq += 1
            time.sleep(0.05)
        before = proc_status(proc.pid).get("VmRSS")
        big = b"x" * (size_mb * 1024 * 1024)
        pub.send_multipart([b"emotion.speech", big])
        del big
        big_at = seq
        t1 = time.monotonic()
        while time.monotonic() - t1 < 10:
            pub.send_multipart(schema.encode("emotion.speech", body(seq)))
            seq += 1
            time.sleep(0.05)
        proc.terminate()
        err = proc.communicate(timeout=60)[1]
        peak = rss.stop()
        lines = out.read_text().splitlines()
    pub.close(0)
    ctx.term()
    return {"bench": "bigframe", "frame_mb": size_mb, "rss_before_mib": before, "peak_rss_mib": peak,
            "published": seq, "recorded": len(lines), "published_after_big_frame": seq - big_at,
            "recorded_after_big_frame": sum(1 for ln in lines if json.loads(ln)["seq"] >= big_at),
            "rc": proc.returncode, "summary": err.strip().splitlines()[-3:]}


# -------------------------------------------------------------------------------- chained


def bench_chained(minutes: int = 60, parts: int = 6) -> dict:
    with tempfile.TemporaryDirectory() as d:
        chunks = []
        for i in range(parts):
            p = Path(d) / f"p{i}.ogg"
            subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i",
                            f"sine=f={200 + 50 * i}:d={minutes * 60 / parts}", "-ar", "48000", "-c:a", "libopus",
                            "-b:a", "24k", str(p)], check=True)
            chunks.append(p.read_bytes())
        chained = Path(d) / "radio.ogg"
        chained.write_bytes(b"".join(chunks))
        out = Path(d) / "r.jsonl"
        t0 = time.monotonic()
        proc = subprocess.run(CLI + ["replay", str(chained), "--no-pub", "--out", str(out), "--sources", "speech"],
                              env=ENV, capture_output=True, text=True, timeout=7200)
        wall = time.monotonic() - t0
        end = json.loads(out.read_text().splitlines()[-1])
    return {"bench": "chained", "minutes": minutes, "chains": parts, "rc": proc.returncode,
            "stream_time_s": end["counters"]["stream_time"], "reason": end.get("reason"),
            "warning": end.get("warning"), "wall_s": round(wall, 1), "stderr": proc.stderr.strip().splitlines()[-2:]}


# ----------------------------------------------------------------------------------- view


def bench_view(streams: int = 200, idle: int = 2000) -> dict:
    import urllib.request

    import zmq

    sys.path.insert(0, str(REPO))
    from streamer import schema

    sub_port, http_port = free_port(), free_port()
    ep = f"tcp://127.0.0.1:{sub_port}"
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(ep)
    proc = subprocess.Popen(CLI + ["view", "--sub", ep, "--no-snapshot", "--port", str(http_port), "-q"],
                            env=ENV, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()

    def publish():
        seq = 0
        while not stop.is_set():
            b = schema.emotion_body(stream="s", seq=seq, source="speech", t_start=seq, t_end=seq + 3.0,
                                    wall_time=time.time(), activity=0.5, valence=0.1, arousal=0.2, quadrant="Q1",
                                    probs={"Q1": 0.7, "Q2": 0.1, "Q3": 0.1, "Q4": 0.1}, model="m")
            pub.send_multipart(schema.encode("emotion.speech", b))
            seq += 1
            time.sleep(0.05)

    threading.Thread(target=publish, daemon=True).start()
    url = f"http://127.0.0.1:{http_port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1).read()
            break
        except OSError:
            time.sleep(0.1)

    def health() -> float:
        t0 = time.monotonic()
        try:
            urllib.request.urlopen(url + "/healthz", timeout=5).read()
        except OSError:
            return float("inf")
        return round(time.monotonic() - t0, 4)

    import selectors

    sel = selectors.DefaultSelector()
    es, idles, received = [], [], [0]
    for _ in range(streams):
        s = socket.create_connection(("127.0.0.1", http_port))
        s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        es.append(s)

    def drain():
        while not stop.is_set():
            for key, _ in sel.select(0.2):
                try:
                    data = key.fileobj.recv(65536)
                    received[0] += len(data)
                except OSError:
                    pass

    threading.Thread(target=drain, daemon=True).start()
    time.sleep(2)
    base = {"threads": proc_status(proc.pid).get("Threads"), "health_s": health()}
    for _ in range(idle):
        try:
            idles.append(socket.create_connection(("127.0.0.1", http_port), timeout=5))
        except OSError:
            break
    samples = []
    for _ in range(10):
        samples.append(health())
        time.sleep(0.5)
    st = proc_status(proc.pid)
    state = json.loads(urllib.request.urlopen(url + "/api/state", timeout=5).read())["state"]
    stop.set()
    alive = proc.poll() is None
    for s in es + idles:
        s.close()
    proc.terminate()
    proc.wait(timeout=30)
    pub.close(0)
    ctx.term()
    return {"bench": "view", "event_streams": streams, "idle_opened": len(idles), "before_idle": base,
            "health_s_max": max(samples), "health_s_median": sorted(samples)[len(samples) // 2],
            "threads": st.get("Threads"), "rss_mib": st.get("VmRSS"), "alive": alive,
            "browsers": state["browsers"], "sse_bytes_received": received[0]}


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    benches = {"flood": bench_flood, "bigframe": bench_bigframe, "chained": bench_chained, "view": bench_view}
    for name, fn in benches.items():
        if what in (name, "all"):
            print(json.dumps(fn()), flush=True)
