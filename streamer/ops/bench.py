"""``emotrack bench``: per-stage and whole-pipeline performance figures.

Stages are timed in this process on generated audio (seeded noise + tones,
44.1 kHz stereo) and on ``examples/heldout_mix.ogg``; the whole pipeline runs
as ``emotrack replay`` / ``emotrack stream --input`` subprocesses (wall time,
real-time factor, live per-hop latency, time to first message, peak RSS).
Every figure is the median of ``--repeats`` runs with its min-max spread.
Speed is measured here, never asserted in tests.

    emotrack bench [--quick] [--smoke] [--repeats N] [--json FILE] [--no-tf]
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

from ..dsp import SAMPLE_RATE

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "heldout_mix.ogg"
SR = SAMPLE_RATE

#: targets on 2 CPU cores (issue 8)
TARGETS = {"replay_rtf_min": 50.0, "hop_p99_ms_max": 50.0, "first_message_s_max": 3.0, "peak_rss_mb_max": 600.0}


def add_parser(sub) -> None:
    """Register ``emotrack bench`` on the CLI's subparsers (:func:`run` runs it)."""
    b = sub.add_parser("bench", help="measure stage and pipeline speed, latency and memory",
                       description="Time each stage (decode, resample, separation, features, inference, "
                                   "publish) and the whole pipeline (replay RTF, live per-hop latency, "
                                   "time to first message, peak RSS, scaling with programme length and "
                                   "concurrent streams). Prints a table; --json writes every figure.")
    b.add_argument("--quick", action="store_true", help="1 repeat, programmes of 1 and 10 min, 1/2/4 streams")
    b.add_argument("--smoke", action="store_true",
                   help="tiny run for tests: 10 s of audio, no scaling, no TensorFlow, 1 repeat")
    b.add_argument("--repeats", type=int, default=None, metavar="N", help="runs per figure (default: 3; --quick 1)")
    b.add_argument("--json", metavar="FILE", help="write the results as JSON here")
    b.add_argument("--no-tf", action="store_true", help="skip the TensorFlow vs ONNX Runtime comparison")
    b.add_argument("--no-spleeter", action="store_true", help="skip the Spleeter side-by-side")
    b.add_argument("--markdown", metavar="FILE",
                   help="also rewrite the generated table between the bench markers in FILE "
                        "(docs/BENCHMARKS.md)")
    b.add_argument("--live-seconds", type=float, default=20.0, metavar="S",
                   help="length of the paced input for live latency and start-up (default: 20)")
    b.add_argument("--baseline", nargs="?", const=BASELINE_REF, default=None, metavar="REF",
                   help="also run the same replays, start-up and live commands on git REF of this checkout "
                        f"(default {BASELINE_REF}: before issue 27), interleaved with this tree's, and print them "
                        "side by side with each stage's share of wall time")
    b.add_argument("--side-by-side-only", action="store_true",
                   help="with --baseline: only the side-by-side section (no stages, Spleeter or scaling)")
    b.add_argument("--startup-only", action="store_true",
                   help="only the start-up: launch of emotrack replay to its first message (wall, CPU seconds, "
                        "wall less run-queue wait), --repeats launches (with --baseline: of REF too, interleaved), "
                        "and the CPU cost of each part (imports, sessions, first calls)")
    b.add_argument("--programme-minutes", type=float, default=5.0, metavar="M",
                   help="length of the looped programme of the side-by-side replays (default: 5)")


# ----------------------------------------------------------------------------- helpers

def summary(values: list[float], digits: int = 3) -> dict:
    """Median, min, max and the raw runs."""
    v = [float(x) for x in values]
    return {"median": round(statistics.median(v), digits), "min": round(min(v), digits),
            "max": round(max(v), digits), "runs": [round(x, digits) for x in v]}


def repeat(n: int, fn: Callable[[], float]) -> dict:
    return summary([fn() for _ in range(n)])


def machine() -> dict:
    import numpy
    import onnxruntime

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        ff = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    except OSError:
        ff = None
    return {"cores": os.cpu_count(), "cpu_model": cpu, "memory_gib": mem, "python": platform.python_version(),
            "numpy": numpy.__version__, "onnxruntime": onnxruntime.__version__, "ffmpeg": ff,
            "platform": platform.platform()}


def generated_audio(seconds: float, sr: int = 44100, seed: int = 0):
    """Seeded noise + tones, stereo float32 [n, 2]."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    left = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 660 * t * (1 + 0.01 * np.sin(t)))
    right = 0.2 * np.sin(2 * np.pi * 330 * t)
    noise = 0.05 * rng.standard_normal((t.size, 2))
    return (np.stack([left, right], axis=1) + noise).astype(np.float32)


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamer.cli", *args]


def _env(tree: Path = REPO) -> dict:
    return dict(os.environ, PYTHONPATH=str(tree) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _vm_hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    return 0.0


def _wait_rss(proc: subprocess.Popen, tick: Optional[Callable[[], None]] = None) -> tuple[int, float]:
    """Wait for ``proc``; (exit code, its peak RSS in MiB).

    The peak is VmHWM from /proc/PID/status, polled every 10 ms until the child
    exits (wait4's ru_maxrss would include this process's own RSS, inherited
    through fork/vfork before exec).  ``tick`` runs at every poll.
    """
    peak = 0.0
    while True:
        peak = max(peak, _vm_hwm_mb(proc.pid))  # read before reaping: the zombie has no mm
        if tick is not None:
            tick()
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            proc.cpu_s = usage.ru_utime + usage.ru_stime  # the child's CPU time, for load-robust figures
            return proc.returncode, peak
        time.sleep(0.01)


def _end_status(out: Path) -> dict:
    end = {}
    with open(out, encoding="utf-8") as f:
        for line in f:
            m = json.loads(line)
            if m.get("topic") == "status" and m.get("event") == "end":
                end = m
    return end


def run_replay(inputs: list[Path], tmp: Path, audio_s: float, separator: str = "none",
               extra: tuple = (), tree: Path = REPO) -> dict:
    """One ``emotrack replay INPUT... --no-pub`` run: wall, RTFs, peak RSS (``tree``: the
    emotrack checkout to run, e.g. a ``--baseline`` one)."""
    out = tmp / "replay.jsonl"
    t0 = time.monotonic()
    proc = subprocess.Popen(_cli("replay", *map(str, inputs), "--no-pub", "-q", "--backend", "onnxruntime",
                                 "--out", str(out), "--heartbeat", "5", "--separator", separator, *extra),
                            env=_env(tree), cwd=str(tmp), stderr=subprocess.PIPE)
    rc, rss = _wait_rss(proc)
    wall = time.monotonic() - t0
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if rc != 0:
        raise RuntimeError(f"replay exited {rc}: {err.strip()[-300:]}")
    ends = [json.loads(ln) for ln in out.read_text().splitlines() if '"event":"end"' in ln]
    rtf_in = [e["realtime_factor"] for e in ends if e.get("realtime_factor")]
    return {"wall_s": wall, "rtf_wall": audio_s / wall, "rtf_in_process": min(rtf_in) if rtf_in else float("nan"),
            "peak_rss_mb": rss, "cpu_s": proc.cpu_s, "rtf_cpu": audio_s / max(proc.cpu_s, 1e-9)}


def run_live(path: Path, tmp: Path, window_fill_s: float = 3.0, tree: Path = REPO) -> dict:
    """One ``emotrack stream --input FILE --no-pub`` run (paced at real time)."""
    out = tmp / "live.jsonl"
    if out.exists():
        out.unlink()
    t0 = time.monotonic()
    proc = subprocess.Popen(_cli("stream", "--input", str(path), "--no-pub", "-q", "--backend", "onnxruntime",
                                 "--out", str(out), "--heartbeat", "5"),
                            env=_env(tree), cwd=str(tmp), stderr=subprocess.PIPE)
    first = [None]

    def tick() -> None:
        if first[0] is None and out.exists():
            with open(out, encoding="utf-8") as f:
                for line in f:
                    if '"topic":"emotion.' in line:
                        first[0] = time.monotonic() - t0
                        break
    rc, rss = _wait_rss(proc, tick)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if rc != 0:
        raise RuntimeError(f"stream exited {rc}: {err.strip()[-300:]}")
    end = _end_status(out)
    lat = end.get("hop_latency_ms", {})
    first = first[0] if first[0] is not None else float("nan")  # nan: exited before a poll saw it
    return {"first_message_s": first, "first_message_minus_fill_s": first - window_fill_s,
            "hop_p50_ms": lat.get("p50", float("nan")), "hop_p95_ms": lat.get("p95", float("nan")),
            "hop_p99_ms": lat.get("p99", float("nan")), "peak_rss_mb": rss,
            "blocks_dropped": end.get("counters", {}).get("blocks_dropped")}


def _collect(runs: list[dict]) -> dict:
    return {k: summary([r[k] for r in runs]) for k in runs[0] if isinstance(runs[0][k], (int, float))
            and runs[0][k] is not None}


# ----------------------------------------------------------------------------- stages

def elapsed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _drain_source(src) -> None:
    with src:
        for _ in src.blocks():
            pass


def _bench_decode(audio_path: Path, gen_wav: Path, audio_s: float, gen_s: float, reps: int) -> dict:
    """Decoding (soundfile, ffmpeg) and the sources' 44.1 -> 16 kHz resampler, as real-time factors."""
    from ..sources import FFmpegSource, SoundFileSource, _Resampler

    st: dict = {}
    st["decode_soundfile_ogg"] = {"rtf": repeat(reps, lambda: audio_s / elapsed(lambda: _drain_source(SoundFileSource(str(audio_path)))))}
    st["decode_ffmpeg_ogg"] = {"rtf": repeat(reps, lambda: audio_s / elapsed(lambda: _drain_source(FFmpegSource(str(audio_path)))))}
    st["decode_soundfile_wav44k_stereo"] = {
        "rtf": repeat(reps, lambda: gen_s / elapsed(lambda: _drain_source(SoundFileSource(str(gen_wav))))),
        "note": "includes the downmix and the 44.1 -> 16 kHz resample"}

    # resample 44.1 kHz stereo -> 16 kHz mono in 0.5 s blocks through the sources' resampler
    stereo = generated_audio(gen_s)
    mono = stereo.mean(axis=1)

    def resample() -> None:
        rs = _Resampler(44100)
        blk = 22050
        for i in range(0, mono.size, blk):
            rs(mono[i:i + blk], last=i + blk >= mono.size)
    st["resample_44k1_to_16k"] = {"rtf": repeat(reps, lambda: gen_s / elapsed(resample))}
    return st


def _bench_separation(blocks: list, audio_s: float, reps: int) -> dict:
    from ..separation import BuiltinSeparator, NoneSeparator

    st: dict = {}
    sep = NoneSeparator()
    st["separation_none"] = {"rtf": repeat(reps, lambda: audio_s / max(1e-9, elapsed(lambda: [sep.process(b) for b in blocks])))}

    def builtin() -> float:
        b = BuiltinSeparator(threads=1)
        t = elapsed(lambda: ([b.process(blk) for blk in blocks], b.flush()))
        return audio_s / t
    st["separation_builtin"] = {"rtf": repeat(reps, builtin),
                                "note": "streaming mask network, 0.5 s blocks, ONNX Runtime 1 thread; "
                                        "STFT, network and overlap-add"}
    return st


def _bench_features(x, blocks: list, audio_s: float, reps: int) -> dict:
    """Per-window extraction (log-mel, descriptors) and the stream's cached log-mel frames."""
    from .. import descriptors, features as F
    from ..inputs import InputWindowStream

    st: dict = {}
    # features: per window via extract, and the cached LogMelStream path
    specs = {"speech": (3.0, 1.0), "music": (10.0, 2.0)}
    for name, (win_s, hop_s) in specs.items():
        win, hop = int(win_s * SR), int(hop_s * SR)
        starts = list(range(0, max(1, x.size - win + 1), hop))

        for kind, fn in (("extract", F.extract), ("descriptors", descriptors.features)):
            def per_window() -> float:
                t = elapsed(lambda: [fn(x[s:s + win]) for s in starts])
                return t / len(starts) * 1e3
            ms = repeat(reps, per_window)
            st[f"features_{kind}_{name}"] = {"ms_per_window": ms, "windows": len(starts),
                                             "rtf": summary([hop_s * 1e3 / v for v in ms["runs"]])}

    def stream_features() -> float:
        ws = InputWindowStream({"speech": ("mix", 3 * SR, SR), "music": ("mix", 10 * SR, 2 * SR)}, 4 * SR, F.DEFAULT_PARAMS)
        for b in blocks:
            for wins in ws.push({"mix": b}):
                for w in wins:
                    ws.features(w)
        for w in ws.flush():
            ws.features(w)
        return 0.0
    st["features_logmelstream_both"] = {"rtf": repeat(reps, lambda: audio_s / elapsed(stream_features)),
                                        "note": "InputWindowStream.features, speech 3 s/1 s + music 10 s/2 s windows"}
    return st


def _bench_inference(reps: int) -> dict:
    """Forward passes of the shipped models on ONNX Runtime, batch 1 and 8."""
    import numpy as np

    from engines.backends import tensorrt_available
    from engines.runtime import load_model

    inf: dict = {}
    for source in ("speech", "music"):
        m = load_model(None, source, backend="onnxruntime")
        rng = np.random.default_rng(0)
        feats = {n: rng.standard_normal((8, *m.card["inputs"][n]["shape"][1:])).astype(np.float32)
                 for n in m.input_names}
        one = {n: v[:1] for n, v in feats.items()}
        m.predict(one)
        n_calls = 20

        def b1() -> float:
            return elapsed(lambda: [m.predict(one) for _ in range(n_calls)]) / n_calls * 1e3

        def b8() -> float:
            return elapsed(lambda: [m.predict(feats) for _ in range(n_calls // 4)]) / (n_calls // 4) / 8 * 1e3
        inf[f"onnxruntime_{source}"] = {"ms_per_window_batch1": repeat(reps, b1),
                                        "ms_per_window_batch8": repeat(reps, b8),
                                        "backend": m.backend.description}
        m.close()
    ok, why = tensorrt_available()
    inf["tensorrt"] = {"skipped": why} if not ok else {"skipped": "available but not timed by this bench: " + why}
    return inf


def _publish_rate() -> float:
    """Messages per second one SUB receives from a loopback PUB."""
    import socket
    import threading

    import zmq

    from .. import schema
    from ..publish import Publisher

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ep = f"tcp://127.0.0.1:{port}"
    pub = Publisher("bench", endpoint=ep, start_grace_s=0.3)
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVTIMEO, 2000)
    sub.setsockopt(zmq.MAXMSGSIZE, schema.MAX_FRAME_BYTES)
    sub.connect(ep)
    n = 5000
    got = [0]

    def recv() -> None:
        try:
            while got[0] < n + 1:
                sub.recv_multipart()
                got[0] += 1
        except zmq.Again:
            pass
    th = threading.Thread(target=recv, daemon=True)
    th.start()
    fields = {"t_start": 0.0, "t_end": 3.0, "model": "m", "valence": 0.1, "arousal": 0.2, "activity": 0.5,
              "quadrant": "Q1", "probs": {"Q1": 0.7, "Q2": 0.1, "Q3": 0.1, "Q4": 0.1}}
    pub.emotion("speech", **fields)  # pays the slow-joiner grace
    t0 = time.perf_counter()
    for _ in range(n):
        pub.emotion("speech", **fields)
    th.join(timeout=10)
    dt = time.perf_counter() - t0
    pub.close()
    sub.close(linger=0)
    return got[0] / dt if got[0] else float("nan")


def bench_stages(audio_path: Path, gen_wav: Path, audio_s: float, gen_s: float, reps: int, tmp: Path) -> dict:
    """Every stage on its own: decode, resample, separation, features, inference, publish."""
    import numpy as np

    from ..sources import SoundFileSource

    st = _bench_decode(audio_path, gen_wav, audio_s, gen_s, reps)
    # audio at 16 kHz for the rest
    with SoundFileSource(str(audio_path)) as src:
        x = np.concatenate(list(src.blocks()))
    blocks = [x[i:i + SR // 2] for i in range(0, x.size, SR // 2)]
    st.update(_bench_separation(blocks, audio_s, reps))
    st.update(_bench_features(x, blocks, audio_s, reps))
    st["inference"] = _bench_inference(reps)
    st["publish_zmq_loopback"] = {"messages_per_s": repeat(reps, _publish_rate),
                                  "note": "messages received by one SUB per second of publishing"}
    return st


def bench_spleeter(audio: Path, audio_s: float, reps: int, tmp: Path, log: Callable[[str], None]) -> dict:
    """Spleeter's own 2stems separation (graph built once) vs our streaming Spleeter path, and a
    whole replay with ``--separator spleeter``, on the same audio.  With no pretrained weights
    in $MODEL_PATH/2stems a random-weight checkpoint is used: the same cost, no separation."""
    import importlib.util

    if importlib.util.find_spec("spleeter") is None:
        return {"skipped": "spleeter is not installed (pip install 'emotrack[separation]')"}
    from ..errors import ModelError
    from ..separation.spleeter import find_model_dir

    env = dict(_env(), TF_CPP_MIN_LOG_LEVEL="3")
    try:
        model_dir, random_weights = str(find_model_dir()), False
    except ModelError:
        model_dir, random_weights = str(tmp / "spleeter" / "2stems"), True
        subprocess.run([sys.executable, "-m", "training.spleeter_checkpoint", model_dir], cwd=str(REPO),
                       env=env, check=True, capture_output=True)
    log("Spleeter: its own separation vs our streaming path (child processes)")
    js = tmp / "spleeter.json"
    cp = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_spleeter.py"), "--seconds", f"{audio_s:g}",
                         "--repeats", str(reps), "--model-dir", model_dir, "--json", str(js)],
                        cwd=str(REPO), env=env, capture_output=True, text=True)
    if cp.returncode != 0 or not js.exists():
        return {"skipped": "failed: " + cp.stderr.strip()[-300:]}
    sp = json.loads(js.read_text())["paths"]
    own, ours = sp["own"], sp["ours"]
    log("pipeline replay, spleeter separator")
    rep = _collect([run_replay([audio], tmp, audio_s, "spleeter", ("--separator-model", model_dir))
                    for _ in range(reps)])
    replay_s = audio_s / rep["rtf_in_process"]["median"]
    return {"weights": "random (speed only: the separation itself is meaningless)" if random_weights else model_dir,
            "spleeter_own": {"rtf": round(own["rtf"], 2), "wall_s": round(own["wall_s"], 3),
                             "cpu_s": round(own["cpu_s"], 3), "peak_rss_mb": round(own["peak_rss_mb"], 1),
                             "note": "spleeter.separator.Separator's own TF graph (STFT, U-Nets, masks, iSTFT) "
                                     "built once, 44.1 kHz stereo in"},
            "ours_stream": {"rtf": round(ours["rtf"], 2), "wall_s": round(ours["wall_s"], 3),
                            "cpu_s": round(ours["cpu_s"], 3), "peak_rss_mb": round(ours["peak_rss_mb"], 1),
                            "note": "streamer.separation.spleeter.SpleeterSeparator, 1 s blocks of 16 kHz, "
                                    "resampling both ways included"},
            "ratio_ours_over_own_wall": round(ours["wall_s"] / own["wall_s"], 2),
            "ratio_ours_over_own_cpu": round(ours["cpu_s"] / own["cpu_s"], 2),
            "replay": rep,
            "ratio_replay_over_own": round(replay_s / own["wall_s"], 2),
            "replay_note": "emotrack replay --separator spleeter (whole pipeline, in-process time: graph "
                           "build excluded as in Spleeter's own figure) over Spleeter's own separation alone"}


# ----------------------------------------------------------------------------- before / after

#: the commit issue 27 started from: ``--baseline`` without a REF measures it beside this tree
BASELINE_REF = "16c1e62"
#: issue 27's goals on 2 CPU cores
GOALS = {"replay_builtin_rtf_wall_min": 100.0, "startup_s_max": 0.4}

_STAGES_CHILD = r"""
import cProfile, json, pstats, sys
from streamer.cli import main
pr = cProfile.Profile()
pr.enable()
try:
    main(sys.argv[1:])
except SystemExit:
    pass
pr.disable()
st = pstats.Stats(pr).stats
def cum(suffix, name):
    return sum(v[3] for k, v in st.items() if k[0].replace("\\", "/").endswith(suffix) and k[2] == name)
total = cum("streamer/cli.py", "main")
run = cum("streamer/pipeline.py", "run")
print(json.dumps({"total": total, "pipeline": run, "separation": cum("streamer/pipeline.py", "_stems"),
                  "features": cum("streamer/pipeline.py", "inputs") + cum("streamer/inputs.py", "written"),
                  "inference": cum("engines/runtime.py", "predict"),
                  "publish": cum("streamer/pipeline.py", "publish"), "decode": cum("streamer/sources.py", "blocks")}))
"""


def materialise(ref: str, dest: Path) -> str:
    """Write the files of git ``ref`` of this checkout under ``dest`` (git archive); its full hash."""
    import io
    import tarfile

    try:
        full = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"],
                              capture_output=True, text=True, check=True).stdout.strip()
        data = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", full],
                              capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(f"--baseline {ref}: not a commit of this git checkout ({exc})") from None
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        tf.extractall(dest, filter="data") if hasattr(tarfile, "data_filter") else tf.extractall(dest)
    return full


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _queued_s(pid: int) -> float:
    """Seconds the threads of process ``pid`` have waited on a run queue, ready to run but not
    running (/proc/PID/task/*/schedstat): what a loaded machine adds to a wall time."""
    try:
        return sum(int((t / "schedstat").read_text().split()[1]) for t in Path(f"/proc/{pid}/task").iterdir()) / 1e9
    except (OSError, ValueError, IndexError):
        return float("nan")


def startup_figures(audio: Path, tmp: Path, tree: Path = REPO) -> dict:
    """One ``emotrack replay`` launch until its first emotion message (start-up, plus the first
    window's fill processed at replay speed): ``wall_s``; ``cpu_s``, the CPU seconds it had used by
    then (the figure a loaded machine moves least); ``queued_s``, the seconds its threads waited for
    a core; ``unqueued_s`` = wall less that wait, near what a quiet machine shows."""
    t0 = time.monotonic()
    proc = subprocess.Popen(_cli("replay", str(audio), "--no-pub", "-q", "--backend", "onnxruntime", "--out", "-"),
                            env=_env(tree), cwd=str(tmp), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    first = cpu = queued = float("nan")
    for line in proc.stdout:
        if b'"topic":"emotion.' in line:
            first = time.monotonic() - t0
            cpu, queued = _cpu_s(proc.pid), _queued_s(proc.pid)
            break
    proc.kill()
    proc.wait()
    proc.stdout.close()
    return {"wall_s": first, "cpu_s": cpu, "queued_s": queued, "unqueued_s": first - queued}


def run_startup(audio: Path, tmp: Path, tree: Path = REPO) -> tuple[float, float]:
    """(wall, CPU seconds) of :func:`startup_figures`."""
    f = startup_figures(audio, tmp, tree)
    return f["wall_s"], f["cpu_s"]


def stage_shares(audio: Path, tmp: Path, separator: str, tree: Path = REPO) -> dict:
    """One replay under cProfile: each stage's share of the profiled wall time (start-up: all
    before the pipeline runs; decode, separation, features (per window, and per stream as blocks
    are written: log-mel frames, K-weighted energies), inference, publish; other: the rest of
    the loop).  cProfile slows Python-heavy stages most: shares, not absolute times."""
    out = tmp / "profiled.jsonl"
    cp = subprocess.run([sys.executable, "-c", _STAGES_CHILD, "replay", str(audio), "--no-pub", "-q", "--backend",
                         "onnxruntime", "--out", str(out), "--separator", separator],
                        env=_env(tree), cwd=str(tmp), capture_output=True, text=True)
    try:
        t = json.loads(cp.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"profiled replay failed: {cp.stderr.strip()[-300:]}") from None
    parts = {"startup": t["total"] - t["pipeline"]}
    parts.update({k: t[k] for k in ("decode", "separation", "features", "inference", "publish")})
    parts["other"] = max(0.0, t["pipeline"] - sum(t[k] for k in ("decode", "separation", "features", "inference",
                                                                  "publish")))
    total = max(t["total"], 1e-9)
    return {k: round(100.0 * v / total, 1) for k, v in parts.items()}


def bench_side_by_side(ref: str, minutes: float, reps: int, live_s: float, tmp: Path,
                       log: Callable[[str], None]) -> dict:
    """The same commands on git ``ref`` (materialised under ``tmp``) and on this tree, interleaved
    run by run so that both see the same machine load."""
    base = tmp / "baseline"
    full = materialise(ref, base)
    prog = tmp / f"programme{minutes:g}min.wav"
    audio_s = minutes * 60.0
    loops = math.ceil(audio_s / 90.0)
    _ffmpeg("-stream_loop", str(loops), "-i", str(EXAMPLE), "-t", f"{audio_s:g}", "-ar", str(SAMPLE_RATE),
            "-ac", "1", str(prog))
    live_in = tmp / "side_live.ogg"
    _ffmpeg("-i", str(EXAMPLE), "-t", f"{live_s:g}", "-c:a", "libopus", str(live_in))
    trees = {"before": base, "after": REPO}
    for tree in trees.values():  # bytecode for both (as an installed emotrack has), so neither compiles per run
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-j0", str(tree / "streamer"), str(tree / "engines")],
                       capture_output=True)
    runs: dict = {k: {"replay": [], "replay_builtin": [], "startup": [], "startup_cpu": [], "startup_unqueued": [],
                      "live": []} for k in trees}
    for r in range(reps):
        for name, tree in trees.items():
            log(f"side by side: {name} run {r + 1}/{reps}")
            runs[name]["replay"].append(run_replay([prog], tmp, audio_s, tree=tree))
            runs[name]["replay_builtin"].append(run_replay([prog], tmp, audio_s, "builtin", tree=tree))
            f = startup_figures(prog, tmp, tree)
            runs[name]["startup"].append(f["wall_s"])
            runs[name]["startup_cpu"].append(f["cpu_s"])
            runs[name]["startup_unqueued"].append(f["unqueued_s"])
            runs[name]["live"].append(run_live(live_in, tmp, tree=tree))
    res: dict = {"baseline_ref": ref, "baseline_commit": full, "programme": f"{minutes:g} min: examples/heldout_mix.ogg "
                 "looped with ffmpeg, 16 kHz mono WAV", "live_input_seconds": live_s}
    for name, tree in trees.items():
        rr = runs[name]
        log(f"side by side: {name}, profiled replays")
        res[name] = {"replay": _collect(rr["replay"]), "replay_builtin": _collect(rr["replay_builtin"]),
                     "startup_s": summary(rr["startup"]), "startup_cpu_s": summary(rr["startup_cpu"]),
                     "startup_unqueued_s": summary(rr["startup_unqueued"]),
                     "live": _collect(rr["live"]),
                     "stage_share_pct": {"default": stage_shares(prog, tmp, "none", tree),
                                         "builtin": stage_shares(prog, tmp, "builtin", tree)}}
    a, b = res["after"], res["before"]
    res["ratios_after_over_before"] = {
        "replay_rtf_wall": round(a["replay"]["rtf_wall"]["median"] / b["replay"]["rtf_wall"]["median"], 2),
        "replay_builtin_rtf_wall": round(a["replay_builtin"]["rtf_wall"]["median"]
                                         / b["replay_builtin"]["rtf_wall"]["median"], 2),
        "replay_rtf_cpu": round(a["replay"]["rtf_cpu"]["median"] / b["replay"]["rtf_cpu"]["median"], 2),
        "replay_builtin_rtf_cpu": round(a["replay_builtin"]["rtf_cpu"]["median"]
                                        / b["replay_builtin"]["rtf_cpu"]["median"], 2),
        "startup_s": round(a["startup_s"]["median"] / b["startup_s"]["median"], 2),
        "startup_cpu_s": round(a["startup_cpu_s"]["median"] / b["startup_cpu_s"]["median"], 2)}
    res["goal"] = {
        "replay_builtin_rtf_wall / 100x": round(a["replay_builtin"]["rtf_wall"]["median"]
                                                / GOALS["replay_builtin_rtf_wall_min"], 2),
        "startup_s / 0.4 s": round(a["startup_s"]["median"] / GOALS["startup_s_max"], 2)}
    res["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    return res


def side_by_side_table(sb: dict) -> str:
    def f(s: dict, unit: str = "") -> str:
        return f"{s['median']:.4g}{unit}"
    rows = [("", "before", "after")]
    for key, label in (("replay", "replay RTF wall, default"), ("replay_builtin", "replay RTF wall, --separator builtin")):
        rows.append((label, f(sb["before"][key]["rtf_wall"], "x"), f(sb["after"][key]["rtf_wall"], "x")))
    for key, label in (("replay", "replay RTF per CPU second, default"),
                       ("replay_builtin", "replay RTF per CPU second, builtin")):
        rows.append((label, f(sb["before"][key]["rtf_cpu"], "x"), f(sb["after"][key]["rtf_cpu"], "x")))
    for key, label in (("replay", "replay RTF in process, default"),
                       ("replay_builtin", "replay RTF in process, builtin")):
        rows.append((label, f(sb["before"][key]["rtf_in_process"], "x"), f(sb["after"][key]["rtf_in_process"], "x")))
    rows.append(("start-up (launch to first message)", f(sb["before"]["startup_s"], " s"), f(sb["after"]["startup_s"], " s")))
    rows.append(("start-up, CPU seconds to first message", f(sb["before"]["startup_cpu_s"], " s"),
                 f(sb["after"]["startup_cpu_s"], " s")))
    if "startup_unqueued_s" in sb["before"]:
        rows.append(("start-up less run-queue wait", f(sb["before"]["startup_unqueued_s"], " s"),
                     f(sb["after"]["startup_unqueued_s"], " s")))
    rows.append(("peak RSS, builtin replay", f(sb["before"]["replay_builtin"]["peak_rss_mb"], " MB"),
                 f(sb["after"]["replay_builtin"]["peak_rss_mb"], " MB")))
    for k in ("hop_p50_ms", "hop_p99_ms"):
        rows.append((f"live {k[4:7]} per hop", f(sb["before"]["live"][k], " ms"), f(sb["after"]["live"][k], " ms")))
    for mode in ("default", "builtin"):
        for name in ("before", "after"):
            sh = sb[name]["stage_share_pct"][mode]
            rows.append((f"share of wall, {mode}, {name}", ", ".join(f"{k} {v:g}%" for k, v in sh.items()), ""))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows if r[2])
    lines = [f"{a.ljust(w0)}  {b.ljust(w1)}  {c}".rstrip() for a, b, c in rows]
    lines.append(f"after/before: {sb['ratios_after_over_before']}")
    lines.append(f"goal ratios (>= 1 for RTF, <= 1 for start-up): {sb['goal']}")
    lines.append(f"baseline {sb['baseline_ref']} ({sb['baseline_commit'][:10]}); programme {sb['programme']}; "
                 f"load average at the end {sb['load_average_end']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- start-up alone

#: what a replay's start-up is made of, timed in a fresh process (CPU seconds: ``time.process_time``,
#: which counts from the process's start, so the first row is the interpreter with ``site``)
_STARTUP_CHILD = r"""
import json, sys, time
rows = {"interpreter (python, site)": time.process_time()}
last = time.process_time()
def step(name, fn):
    global last
    fn()
    now = time.process_time()
    rows[name] = now - last
    last = now
models = {}
def cli():
    import streamer.cli
    streamer.cli.build_parser(["replay"])
def load(src):
    from engines.runtime import load_model
    models[src] = load_model(None, src, backend="onnxruntime")
def detector():
    from streamer.presence import PresenceDetector
    models["presence"] = PresenceDetector(backend="onnxruntime")
def first_call(src):
    import numpy as np
    from streamer.inputs import input_shape
    m = models[src]
    n = int(round(float(m.card["window_s"]) * 16000))
    m.predict({k: np.zeros((1, *input_shape(k, n)), np.float32) for k in m.input_names})
step("import numpy", lambda: __import__("numpy"))
step("import onnxruntime", lambda: __import__("onnxruntime"))
step("import soundfile", lambda: __import__("soundfile"))
step("emotrack: command line (replay's parser)", cli)
step("emotrack: pipeline modules", lambda: __import__("streamer.pipeline"))
step("session: speech model (card, checks)", lambda: load("speech"))
step("session: music model", lambda: load("music"))
step("session: presence detector", detector)
step("first call (warm-up): speech", lambda: first_call("speech"))
step("first call (warm-up): music", lambda: first_call("music"))
print(json.dumps(rows))
"""


def startup_breakdown(tmp: Path, tree: Path = REPO) -> dict:
    """CPU seconds of each part of a replay's start-up (:data:`_STARTUP_CHILD`), in one fresh process."""
    cp = subprocess.run([sys.executable, "-c", _STARTUP_CHILD], env=_env(tree), cwd=str(tmp),
                        capture_output=True, text=True)
    try:
        return json.loads(cp.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"start-up breakdown failed: {cp.stderr.strip()[-300:]}") from None


def bench_startup(ref: Optional[str], reps: int, tmp: Path, log: Callable[[str], None]) -> dict:
    """Start-up alone (``--startup-only``): :func:`startup_figures` of this tree (and of git ``ref``,
    interleaved run by run), ``reps`` launches each, and this tree's :func:`startup_breakdown`."""
    trees = {"after": REPO}
    res: dict = {}
    if ref:
        res["baseline_ref"], res["baseline_commit"] = ref, materialise(ref, tmp / "baseline")
        trees = {"before": tmp / "baseline", "after": REPO}
    prog = tmp / "startup.wav"  # the side-by-side's programme, 30 s of it (only the first block matters)
    _ffmpeg("-i", str(EXAMPLE), "-t", "30", "-ar", str(SAMPLE_RATE), "-ac", "1", str(prog))
    for tree in trees.values():  # bytecode, as an installed emotrack has
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-j0", str(tree / "streamer"), str(tree / "engines")],
                       capture_output=True)
    res["load_average_start"] = [round(v, 2) for v in os.getloadavg()]
    runs: dict = {k: [] for k in trees}
    parts: list = []
    for r in range(reps):
        log(f"start-up: run {r + 1}/{reps}")
        for name, tree in trees.items():
            runs[name].append(startup_figures(prog, tmp, tree))
        parts.append(startup_breakdown(tmp))
    for name in trees:
        res[name] = _collect(runs[name])
    res["breakdown_cpu_ms"] = {k: round(1000 * statistics.median(p[k] for p in parts), 1) for k in parts[0]}
    res["breakdown_cpu_ms"]["the rest (difference of medians): pipeline set-up, first block and window"] = round(
        1000 * res["after"]["cpu_s"]["median"] - sum(res["breakdown_cpu_ms"].values()), 1)
    res["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    return res


def startup_table(st: dict) -> str:
    sides = [k for k in ("before", "after") if k in st]
    rows = [("start-up: launch to first message", *sides)]
    for key, label in (("wall_s", "wall"), ("cpu_s", "CPU seconds"), ("unqueued_s", "wall less run-queue wait")):
        rows.append((label, *(f"{st[k][key]['median']:.3f} s [{st[k][key]['min']:.3f}-{st[k][key]['max']:.3f}]"
                               for k in sides)))
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    lines.append("CPU ms by part (this tree, medians of fresh processes):")
    width = max(len(k) for k in st["breakdown_cpu_ms"])
    lines += [f"  {k.ljust(width)} {v:7.1f}" for k, v in st["breakdown_cpu_ms"].items()]
    a = st["after"]
    lines.append(f"goal ratio start-up / 0.4 s: wall {a['wall_s']['median'] / GOALS['startup_s_max']:.2f}, "
                 f"CPU {a['cpu_s']['median'] / GOALS['startup_s_max']:.2f}, "
                 f"less run-queue wait {a['unqueued_s']['median'] / GOALS['startup_s_max']:.2f}")
    base = f"baseline {st['baseline_ref']} ({st['baseline_commit'][:10]}); " if "baseline_ref" in st else ""
    lines.append(f"{base}load average at the start {st['load_average_start']}, at the end {st['load_average_end']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main

def _targets(res: dict) -> dict:
    out = {}
    rp = res.get("pipeline", {}).get("replay")
    if rp:
        v = rp["rtf_wall"]["median"]
        out["replay_rtf_wall >= 50x"] = {"value": v, "met": v >= TARGETS["replay_rtf_min"]}
        v = rp["rtf_in_process"]["median"]
        out["replay_rtf_in_process >= 50x"] = {"value": v, "met": v >= TARGETS["replay_rtf_min"]}
    rb = res.get("pipeline", {}).get("replay_builtin")
    if rb:
        v = rb["rtf_wall"]["median"]
        out["replay with the builtin separator, RTF wall >= 50x"] = {"value": v, "met": v >= TARGETS["replay_rtf_min"]}
        v = rb["rtf_in_process"]["median"]
        out["replay with the builtin separator, RTF in-process >= 50x"] = {"value": v, "met": v >= TARGETS["replay_rtf_min"]}
    sp = res.get("spleeter", {})
    if "ratio_ours_over_own_wall" in sp:
        v = sp["ratio_ours_over_own_wall"]
        out["Spleeter path within 1.2x of Spleeter alone"] = {"value": v, "met": v <= 1.2}
        v = sp["ratio_replay_over_own"]
        out["replay with Spleeter within 1.2x of Spleeter alone"] = {"value": v, "met": v <= 1.2}
    sb = res.get("stages", {}).get("separation_builtin")
    if sb:
        v = sb["rtf"]["median"]
        out["builtin separator alone >= 100x"] = {"value": v, "met": v >= 100.0}
    sl = res.get("scaling_length", {})
    if sl:
        k = list(sl)[-1]
        v = sl[k]["rtf_wall"]["median"]
        out[f"replay {k} programme, RTF wall >= 50x"] = {"value": v, "met": v >= TARGETS["replay_rtf_min"]}
    lv = res.get("pipeline", {}).get("live")
    if lv:
        v = lv["hop_p99_ms"]["median"]
        out["live hop p99 < 50 ms"] = {"value": v, "met": v < TARGETS["hop_p99_ms_max"]}
        v = lv["first_message_minus_fill_s"]["median"]
        out["first message < 3 s + window fill"] = {"value": v, "met": v < TARGETS["first_message_s_max"]}
    st = res.get("startup")
    if st:
        v = st["after"]["wall_s"]["median"]
        out["start-up (launch to first message) <= 0.4 s (issue 27)"] = {"value": v, "met": v <= GOALS["startup_s_max"]}
    sb = res.get("side_by_side")
    if sb:
        v = sb["after"]["replay_builtin"]["rtf_wall"]["median"]
        out[f"replay {sb['programme'].split(':')[0]}, builtin separator, RTF wall >= 100x (issue 27)"] = {
            "value": v, "met": v >= GOALS["replay_builtin_rtf_wall_min"]}
        v = sb["after"]["startup_s"]["median"]
        out["start-up (launch to first message) <= 0.4 s (issue 27)"] = {"value": v, "met": v <= GOALS["startup_s_max"]}
        v, w = sb["after"]["live"]["hop_p99_ms"]["median"], sb["before"]["live"]["hop_p99_ms"]["median"]
        out["live hop p99 not worse than before (+10 %)"] = {"value": v, "met": v <= 1.1 * w}
    rss = [r["peak_rss_mb"]["max"] for r in [rp, rb, lv] if r]
    rss += [v["peak_rss_mb"]["max"] for v in res.get("scaling_length", {}).values()]
    rss += [v["peak_rss_mb"]["max"] for v in res.get("scaling_streams", {}).values()]
    if rss:
        out["peak RSS < 600 MB (no TensorFlow)"] = {"value": round(max(rss), 1), "met": max(rss) < TARGETS["peak_rss_mb_max"]}
    return out


def table(res: dict) -> str:
    def fmt(s: dict, unit: str = "") -> str:
        return f"{s['median']:.4g}{unit} [{s['min']:.4g}-{s['max']:.4g}]"
    rows = []
    for k, v in res["stages"].items():
        if k == "inference":
            for b, iv in v.items():
                if "skipped" in iv:
                    rows.append((f"inference {b}", "skipped: " + iv["skipped"][:70]))
                else:
                    rows.append((f"inference {b}", f"{fmt(iv['ms_per_window_batch1'], ' ms')}/window b1; "
                                                   f"{fmt(iv['ms_per_window_batch8'], ' ms')} b8"))
        elif "skipped" in v:
            rows.append((k, "skipped: " + v["skipped"][:70]))
        elif "rtf" in v and "ms_per_window" in v:
            rows.append((k, f"{fmt(v['ms_per_window'], ' ms')}/window, RTF {fmt(v['rtf'], 'x')}"))
        elif "rtf" in v:
            rows.append((k, f"RTF {fmt(v['rtf'], 'x')}"))
        elif "messages_per_s" in v:
            rows.append((k, f"{fmt(v['messages_per_s'])} msg/s"))
    tfr = res.get("tensorflow_vs_onnxruntime", {})
    if "skipped" in tfr:
        rows.append(("TF vs ORT", "skipped: " + tfr["skipped"][:70]))
    else:
        for b in ("batch1", "batch8"):
            if b in tfr:
                rows.append((f"TF vs ORT {b}", f"TF {fmt(tfr[b]['tensorflow_ms_per_window'], ' ms')}, "
                                               f"ORT {fmt(tfr[b]['onnxruntime_ms_per_window'], ' ms')} /window, "
                                               f"TF/ORT {tfr[b]['ratio_tf_over_ort']}x"))
    p = res.get("pipeline", {})
    if "replay" in p:
        r = p["replay"]
        rows.append(("pipeline replay", f"RTF wall {fmt(r['rtf_wall'], 'x')}, in-process {fmt(r['rtf_in_process'], 'x')}, "
                                        f"wall {fmt(r['wall_s'], ' s')}, RSS {fmt(r['peak_rss_mb'], ' MB')}"))
    if "replay_builtin" in p:
        r = p["replay_builtin"]
        rows.append(("pipeline replay, builtin separator", f"RTF wall {fmt(r['rtf_wall'], 'x')}, in-process "
                     f"{fmt(r['rtf_in_process'], 'x')}, wall {fmt(r['wall_s'], ' s')}, RSS {fmt(r['peak_rss_mb'], ' MB')}"))
    if "live" in p:
        r = p["live"]
        rows.append(("pipeline live hop", f"p50 {fmt(r['hop_p50_ms'], ' ms')}, p95 {fmt(r['hop_p95_ms'], ' ms')}, "
                                          f"p99 {fmt(r['hop_p99_ms'], ' ms')}"))
        rows.append(("pipeline live start", f"first message {fmt(r['first_message_s'], ' s')} "
                                            f"(minus 3 s fill: {fmt(r['first_message_minus_fill_s'], ' s')}), "
                                            f"RSS {fmt(r['peak_rss_mb'], ' MB')}"))
    sp = res.get("spleeter", {})
    if "skipped" in sp:
        rows.append(("Spleeter side by side", "skipped: " + sp["skipped"][:70]))
    elif sp:
        o, u = sp["spleeter_own"], sp["ours_stream"]
        rows.append(("Spleeter's own separation", f"RTF {o['rtf']}x, wall {o['wall_s']} s, RSS {o['peak_rss_mb']} MB"))
        rows.append(("Spleeter, our streaming path", f"RTF {u['rtf']}x, wall {u['wall_s']} s, RSS {u['peak_rss_mb']} MB; "
                                                     f"ours/own wall {sp['ratio_ours_over_own_wall']}, cpu "
                                                     f"{sp['ratio_ours_over_own_cpu']}"))
        r = sp["replay"]
        rows.append(("pipeline replay, spleeter", f"RTF in-process {fmt(r['rtf_in_process'], 'x')}, wall "
                                                  f"{fmt(r['wall_s'], ' s')}, RSS {fmt(r['peak_rss_mb'], ' MB')}; "
                                                  f"replay/own {sp['ratio_replay_over_own']}"))
    for k, v in res.get("scaling_length", {}).items():
        rows.append((f"length {k}", f"wall {fmt(v['wall_s'], ' s')}, RTF {fmt(v['rtf_wall'], 'x')}, "
                                    f"RSS {fmt(v['peak_rss_mb'], ' MB')}"))
    for k, v in res.get("scaling_streams", {}).items():
        rows.append((f"streams {k}", f"wall {fmt(v['wall_s'], ' s')}, aggregate RTF {fmt(v['rtf_wall'], 'x')}, "
                                     f"RSS {fmt(v['peak_rss_mb'], ' MB')}"))
    for k, v in res.get("targets", {}).items():
        rows.append((f"target: {k}", f"{v['value']} -> {'met' if v['met'] else 'NOT met'}"))
    w = max(len(a) for a, _ in rows)
    return "\n".join(f"{a.ljust(w)}  {b}" for a, b in rows)


BEGIN, END = "<!-- bench:begin (generated by emotrack bench --markdown) -->", "<!-- bench:end -->"


def write_markdown(path: Path, res: dict, text: str) -> None:
    """Replace the generated block of ``path`` (between the bench markers, appended when absent)
    with the command, the machine, the table and the targets."""
    m = res["machine"]
    block = [BEGIN, "", f"Command: `{res['command']}`; {res['repeats']} run(s) per figure, median [min-max]. "
             f"Machine: {m['cores']} cores, `{m['cpu_model']}`, {m['memory_gib']} GiB, {m['platform']}, "
             f"Python {m['python']}, numpy {m['numpy']}, onnxruntime {m['onnxruntime']}. "
             f"Load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}.", "", "```", text, "```", "",
             "| target (2 CPU cores) | value | met |", "|---|---|---|"]
    block += [f"| {k} | {v['value']} | {'yes' if v['met'] else 'NO'} |" for k, v in res.get("targets", {}).items()]
    block += ["", END]
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + "\n".join(block) + old[old.index(END) + len(END):]
    else:
        new = old.rstrip() + "\n\n" + "\n".join(block) + "\n"
    path.write_text(new, encoding="utf-8")


def bench_scaling(audio: Path, audio_s: float, quick: bool, reps: int, tmp: Path,
                  log: Callable[[str], None]) -> dict:
    """Replay wall time, RTF and RSS against programme length and the number of concurrent streams."""
    res: dict = {}
    lengths = (1, 10) if quick else (1, 10, 60)
    res["scaling_length"] = {}
    for minutes in lengths:
        loops = math.ceil(minutes * 60 / audio_s)
        f = tmp / f"programme{minutes}.flac"
        _ffmpeg("-stream_loop", str(loops - 1), "-i", str(EXAMPLE), "-t", str(minutes * 60),
                "-ar", str(SAMPLE_RATE), "-ac", "1", str(f))
        log(f"scaling: {minutes} min programme")
        res["scaling_length"][f"{minutes}min"] = _collect(
            [run_replay([f], tmp, minutes * 60.0) for _ in range(reps)])
    res["scaling_length_note"] = ("programmes built by looping examples/heldout_mix.ogg with ffmpeg, "
                                  "stored as 16 kHz mono FLAC")
    ns = (1, 2, 4) if quick else (1, 2, 4, 8)
    res["scaling_streams"] = {}
    for n in ns:
        copies = []
        for i in range(n):  # distinct names, one stream each
            c = tmp / f"stream{i}.ogg"
            if not c.exists():
                os.symlink(audio, c)
            copies.append(c)
        log(f"scaling: {n} concurrent streams")
        res["scaling_streams"][str(n)] = _collect([run_replay(copies, tmp, n * audio_s) for _ in range(reps)])
    return res


def run(args) -> int:
    import numpy as np
    import soundfile as sf

    smoke = bool(getattr(args, "smoke", False))
    quick = bool(args.quick) or smoke
    reps = args.repeats or (1 if quick else 3)
    if reps < 1:
        print("emotrack: --repeats must be >= 1", file=sys.stderr)
        return 2
    if shutil.which("ffmpeg") is None:
        print("emotrack: bench needs ffmpeg on PATH", file=sys.stderr)
        return 5
    log = (lambda m: print(f"[bench {time.strftime('%H:%M:%S')}] {m}", file=sys.stderr, flush=True))
    res: dict = {"command": "emotrack bench" + (" --smoke" if smoke else " --quick" if args.quick else "")
                 + (f" --repeats {args.repeats}" if args.repeats else "") + (" --no-tf" if args.no_tf else ""),
                 "repeats": reps, "machine": machine(), "input": "examples/heldout_mix.ogg", "targets_spec": TARGETS}
    tmp = Path(tempfile.mkdtemp(prefix="emotrack-bench-"))
    try:
        info = sf.info(str(EXAMPLE))
        # audio: the example (or its first 10 s for --smoke)
        if smoke:
            audio = tmp / "example10.ogg"
            _ffmpeg("-i", str(EXAMPLE), "-t", "10", "-c:a", "libopus", str(audio))
            audio_s = 10.0
        else:
            audio, audio_s = EXAMPLE, float(info.duration)
        gen_s = 10.0 if smoke else 60.0
        gen_wav = tmp / "generated44k.wav"
        sf.write(str(gen_wav), generated_audio(gen_s), 44100, subtype="PCM_16")
        res["generated_audio"] = f"{gen_s:g} s seeded noise + tones, 44.1 kHz stereo PCM16"

        baseline = getattr(args, "baseline", None)
        only = bool(baseline) and getattr(args, "side_by_side_only", False)
        if getattr(args, "startup_only", False):
            res["command"] += (f" --baseline {baseline}" if baseline else "") + " --startup-only"
            res["startup"] = bench_startup(baseline, reps, tmp, log)
            baseline, only = None, True
        if baseline:
            res["command"] += f" --baseline {baseline}" + (" --side-by-side-only" if only else "")
            log(f"side by side with {baseline}")
            res["side_by_side"] = bench_side_by_side(baseline, 0.5 if smoke else args.programme_minutes, reps,
                                                     6.0 if smoke else min(args.live_seconds, 90.0), tmp, log)
        if not only:
            log("stages")
            res["stages"] = bench_stages(audio, gen_wav, audio_s, gen_s, reps, tmp)

            if smoke or args.no_tf:
                res["tensorflow_vs_onnxruntime"] = {"skipped": "--smoke" if smoke else "--no-tf"}
            else:
                log("TensorFlow vs ONNX Runtime (in a child process: TensorFlow stays out of this one)")
                code = ("import json,sys,pathlib; from training.bench_tf import bench_tf; "
                        f"print(json.dumps(bench_tf({reps}, pathlib.Path({str(tmp)!r}))))")
                cp = subprocess.run([sys.executable, "-c", code], env=dict(_env(), TF_CPP_MIN_LOG_LEVEL="3"),
                                    capture_output=True, text=True, cwd=str(REPO))
                try:
                    res["tensorflow_vs_onnxruntime"] = json.loads(cp.stdout.strip().splitlines()[-1])
                except (ValueError, IndexError):
                    res["tensorflow_vs_onnxruntime"] = {"skipped": "failed: " + cp.stderr.strip()[-300:]}

            log("pipeline replay")
            pipe: dict = {"replay": _collect([run_replay([audio], tmp, audio_s) for _ in range(reps)])}
            log("pipeline replay, builtin separator")
            pipe["replay_builtin"] = _collect([run_replay([audio], tmp, audio_s, "builtin") for _ in range(reps)])
            res["spleeter"] = ({"skipped": "--smoke"} if smoke
                               else {"skipped": "--no-spleeter"} if getattr(args, "no_spleeter", False)
                               else bench_spleeter(audio, audio_s, reps, tmp, log))
            live_s = min(audio_s, args.live_seconds if not smoke else 6.0)
            live_in = tmp / "live.ogg"
            _ffmpeg("-i", str(EXAMPLE), "-t", f"{live_s:g}", "-c:a", "libopus", str(live_in))
            log(f"pipeline live ({live_s:g} s paced input x {reps})")
            pipe["live"] = _collect([run_live(live_in, tmp) for _ in range(reps)])
            pipe["live"]["input_seconds"] = live_s
            res["pipeline"] = pipe

            if not smoke:
                res.update(bench_scaling(audio, audio_s, bool(args.quick), reps, tmp, log))
        res["targets"] = _targets(res)
    except RuntimeError as exc:
        print(f"emotrack: bench: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = table(res) if "stages" in res else ""
    if "side_by_side" in res:
        text = (text + "\n\n" if text else "") + side_by_side_table(res["side_by_side"])
    if "startup" in res:
        text = (text + "\n\n" if text else "") + startup_table(res["startup"])
    print(text)
    if getattr(args, "markdown", None):
        write_markdown(Path(args.markdown), res, text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    return 0
