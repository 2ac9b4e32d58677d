"""``emotrack batch``: replay an archive of files, on a Ray cluster or in one process.

One task per file.  On a Ray cluster a file longer than ``--chunk`` seconds is
cut into chunks: one decode task reads it once, through the same source code
as ``emotrack replay`` (so decoding and resampling are bit-identical), and
returns one array per chunk, ``[start, own_end + overlap)``, where ``start`` and
``own_end`` lie on the common grid of every windower's hop and the overlap is
the longest window minus its hop; then one task per chunk runs the pipeline on
its array and keeps exactly the windows that start in ``[start, own_end)`` (the
last chunk also keeps the end-of-stream tail).  Stitched in order, the windows
are those of one replay of the whole file: the same ``t_start``/``t_end`` grid,
none missing, none twice, ``seq`` counting from 0 per stream and topic.
Chunking needs a separator without state (``none``) and models without
per-stream adaptation (:mod:`streamer.adapt`); otherwise, and in one process
(``--no-ray``), a file is one task.

Output in ``--out DIR``: ``<name>.jsonl`` per file (the bodies ``emotrack replay
--out`` writes: a ``start`` status, the emotion messages, an ``end`` status;
no heartbeats), written to a temporary file and renamed, and ``index.json``
with one entry per file (status, windows, duration, wall time, error).  A file
whose entry is ``done`` with the same input size and mtime, the same models and
settings, and an output whose sha256 matches, is skipped on a re-run; a failed
one is tried again.  Tasks that crash (a killed worker, an unexpected
exception) are retried ``--retries`` times; input and model errors are not
(they would fail again) and are reported in the index and the summary.

Ray tasks load the models once per worker process (a module-level cache) and
return plain rows; the driver alone writes files.  With ``--backend tensorrt``
(or ``auto`` on a cluster with GPUs) each pipeline task asks Ray for
``--gpu-fraction`` of a GPU, so that several tasks share one.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from engines.cards import sha256_of

from .. import adapt, schema
from ..errors import BackendError, EmotrackError, InputError, ParameterError
from ..sources import SAMPLE_RATE, is_url, open_source, unique_stream_name

INDEX_NAME = "index.json"
INDEX_VERSION = 1
LOCK_NAME = ".emotrack-batch.lock"
TMP_PREFIX = ".emotrack-batch-"
#: Extensions taken from a folder given as an input.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aiff", ".aif",
                    ".mp4", ".m4v", ".mkv", ".mov", ".ts", ".webm", ".avi", ".wma")
DEFAULT_CHUNK_S = 600.0
DEFAULT_GPU_FRACTION = 0.25


# ----------------------------------------------------------------------------- settings and tasks


@dataclass(frozen=True)
class RunConfig:
    """What a task needs to build its pipeline: the replay options that change messages."""

    sources: tuple = ("speech", "music")
    speech_model: Optional[str] = None
    music_model: Optional[str] = None
    backend: str = "auto"
    threads: Optional[int] = None
    separator: str = "none"
    separator_model: Optional[str] = None
    speech_hop: Optional[float] = None
    music_hop: Optional[float] = None

    def model_path(self, source: str) -> Optional[str]:
        return self.speech_model if source == "speech" else self.music_model


@dataclass(frozen=True)
class ChunkTask:
    """Samples [start, stop) of file ``path`` (16 kHz); keep windows starting before ``own_end``.

    ``stop``/``own_end`` None: to the end of the input (the last chunk, which keeps the tail).
    """

    name: str
    path: str
    index: int
    count: int
    start: int = 0
    stop: Optional[int] = None
    own_end: Optional[int] = None

    @property
    def last(self) -> bool:
        return self.stop is None


@dataclass
class ChunkResult:
    """What a chunk task hands back (plain data: it crosses processes)."""

    name: str
    index: int
    #: (source, start sample, end sample, wall_time, message fields) per window kept
    rows: list = field(default_factory=list)
    start_status: Optional[dict] = None  # the pipeline's "start" status fields
    counters: dict = field(default_factory=dict)  # the source's counters (whole file in the last chunk)
    samples: int = 0  # samples of the file this chunk owns (its share of the duration)
    total: Optional[int] = None  # samples of the whole file (last chunk only)
    wall_s: float = 0.0
    warning: Optional[str] = None
    error: Optional[str] = None
    exit_code: int = 0


@dataclass
class DecodeResult:
    """What a decode task hands back besides the chunks' arrays."""

    name: str
    total: int = 0  # samples of the whole file at 16 kHz
    counters: dict = field(default_factory=dict)  # the source's counters (samples_in, samples_sanitised...)
    warning: Optional[str] = None
    short: bool = False  # shorter than planned: the file is redone as one task
    wall_s: float = 0.0
    error: Optional[str] = None
    exit_code: int = 0


def window_specs(models: dict, cfg: RunConfig) -> dict[str, tuple[int, int]]:
    """(window length, hop) in samples per source, as the pipeline computes them."""
    from ..window import window_plans

    plans = window_plans({s: m.card for s, m in models.items()}, {"speech": cfg.speech_hop, "music": cfg.music_hop})
    return {s: (p.length, p.hop) for s, p in plans.items()}


def plan_chunks(name: str, path: str, total: Optional[int], specs: dict[str, tuple[int, int]],
                chunk_samples: int, *, margin: int = SAMPLE_RATE) -> list[ChunkTask]:
    """Cut a file of about ``total`` samples into chunk tasks (one task if short or unknown).

    Boundaries lie on the common grid of every hop and the feature hop, so each
    chunk's windows are on the whole file's grid.  A boundary is only placed
    where at least the longest window plus ``margin`` samples remain, so the
    last chunk always holds a full window of every windower (its tail is then
    the whole file's tail).
    """
    from ..features import DEFAULT_PARAMS

    grid = DEFAULT_PARAMS.hop_length
    for _, hop in specs.values():
        grid = grid * hop // math.gcd(grid, hop)
    longest = max(length for length, _ in specs.values())
    overlap = max(max(0, length - hop) for length, hop in specs.values())
    step = max(grid, int(round(chunk_samples / grid)) * grid)
    if not total:
        return [ChunkTask(name, path, 0, 1)]
    bounds = [0]
    while bounds[-1] + step + longest + margin <= total:
        bounds.append(bounds[-1] + step)
    tasks = []
    for i, start in enumerate(bounds):
        if i + 1 < len(bounds):
            own_end = bounds[i + 1]
            tasks.append(ChunkTask(name, path, i, len(bounds), start, own_end + overlap, own_end))
        else:
            tasks.append(ChunkTask(name, path, i, len(bounds), start))
    return tasks


def probe_samples(path: str) -> Optional[int]:
    """About how many 16 kHz samples ``path`` decodes to (None: unknown, the file is one task).

    libsndfile's header length for what it reads, else ffprobe's duration.  Only the plan
    depends on it: the decode task checks the real length (see :func:`decode_segments`).
    """
    import soundfile as sf

    try:
        info = sf.info(path)
        if info.frames > 0 and info.samplerate > 0:
            return int(info.frames * SAMPLE_RATE // info.samplerate)
    except (sf.LibsndfileError, RuntimeError):
        pass
    try:
        out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                              "-of", "default=noprint_wrappers=1:nokey=1", path],
                             capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        return int(float(out.stdout.strip()) * SAMPLE_RATE)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


# ----------------------------------------------------------------------------- the task (runs on workers)


class _Recorder:
    """A publisher stand-in: keeps the status fields and the emotion messages of a chunk.

    ``position`` holds the whole-file sample range of the window being published
    (set just before the pipeline publishes it).
    """

    def __init__(self):
        self.counters = {"published": 0, "pub_dropped": 0}
        self.status_fields: dict[str, dict] = {}
        self.rows: list = []
        self.position: tuple[int, int] = (0, 0)

    def status(self, event: str, **fields) -> dict:
        self.status_fields[event] = fields
        return fields

    def emotion(self, source: str, *, t_start: float, t_end: float, **fields) -> dict:
        self.rows.append((source, *self.position, time.time(), fields))
        return fields


_MODEL_CACHE: dict = {}


def _cache_key(cfg: RunConfig) -> tuple:
    return (cfg.sources, cfg.speech_model, cfg.music_model, cfg.backend, cfg.threads)


def load_models(cfg: RunConfig) -> dict:
    """The models of ``cfg``, loaded once per process (Ray workers keep them between tasks)."""
    key = _cache_key(cfg)
    if key not in _MODEL_CACHE:
        from ..inputs import load_streamable

        _MODEL_CACHE[key] = {s: load_streamable(cfg.model_path(s), s, backend=cfg.backend, threads=cfg.threads)
                             for s in cfg.sources}
    return _MODEL_CACHE[key]


def make_separator(cfg: RunConfig):
    """A fresh separator as ``emotrack replay`` builds it from the same options."""
    from ..separation import separator_from_options

    return separator_from_options(cfg.separator, cfg.separator_model, cfg.backend, cfg.threads)


def decode_segments(tasks: list[ChunkTask], min_total: int) -> tuple:
    """Decode a file once; returns ``(DecodeResult, array of task 0, array of task 1, ...)``.

    The arrays are samples ``[start, stop)`` of each chunk task (16 kHz float32).  A
    file shorter than ``min_total`` samples (its header promised more) comes back
    ``short``, and with an error a user caused, ``error``: both with empty arrays.
    """
    t0 = time.monotonic()
    meta = DecodeResult(tasks[0].name)
    audio = np.zeros(0, np.float32)
    try:
        src = open_source(tasks[0].path)
        try:
            blocks = list(src.blocks())
        finally:
            src.close()
        audio = np.concatenate(blocks) if blocks else audio
        meta.total, meta.counters, meta.warning = audio.shape[0], dict(src.counters), src.warning
        meta.short = meta.total < min_total
    except EmotrackError as exc:
        meta.error, meta.exit_code = str(exc), exc.exit_code
    meta.wall_s = time.monotonic() - t0
    if meta.error or meta.short:
        return (meta, *[np.zeros(0, np.float32) for _ in tasks])
    return (meta, *[np.ascontiguousarray(audio[t.start:t.stop]) for t in tasks])


def run_chunk(task: ChunkTask, cfg: RunConfig, samples: Optional[np.ndarray] = None) -> ChunkResult:
    """Run one task: the whole file, or ``samples`` (its chunk's array from :func:`decode_segments`).

    Errors a user caused come back in the result; others raise (and Ray retries the task).
    """
    from ..pipeline import Pipeline
    from ..sources import ArraySource

    t0 = time.monotonic()
    res = ChunkResult(task.name, task.index)
    try:
        models = load_models(cfg)
        separator = make_separator(cfg)
        rec = _Recorder()
        if samples is None:
            src = open_source(task.path)
        else:  # blocks of 0.5 s, as a file source yields them
            src = ArraySource(samples, SAMPLE_RATE, name=task.name, block_size=SAMPLE_RATE // 2)
        try:
            pipe = Pipeline(models, rec, separator, hops_s={"speech": cfg.speech_hop, "music": cfg.music_hop},
                            heartbeat_s=1e9, block_max_s=4.0)
            publish_window = pipe.publish

            def publish(source, w, out, i):
                wr = pipe.windows.windowers[source][1]
                if not task.last and (task.start + w.start >= task.own_end or w.start % wr.hop
                                      or w.end - w.start != wr.length):
                    return  # the next chunk's window, or this chunk's artificial tail
                rec.position = (task.start + w.start, task.start + w.end)
                publish_window(source, w, out, i)

            pipe.publish = publish
            pipe.run(src)
        finally:
            src.close()
            separator.close()
        res.rows = rec.rows
        res.start_status = rec.status_fields.get("start")
        res.counters = {k: v for k, v in src.counters.items()}
        res.warning = src.warning
        if task.last:
            res.total = task.start + pipe.windows.total
            res.samples = pipe.windows.total
        else:
            res.samples = task.own_end - task.start
    except EmotrackError as exc:
        res.rows, res.error, res.exit_code = [], str(exc), exc.exit_code
    res.wall_s = time.monotonic() - t0
    return res


# ----------------------------------------------------------------------------- stitching and output


def stitch(results: list[ChunkResult], specs: dict[str, tuple[int, int]], sources: tuple) -> list[tuple]:
    """The rows of a file's chunks in publication order, checked: one window per grid step.

    Raises EmotrackError if a window is missing or repeated (it would be a bug).
    """
    rows = [r for res in sorted(results, key=lambda r: r.index) for r in res.rows]
    rank = {s: i for i, s in enumerate(sources)}
    for s in sources:
        length, hop = specs[s]
        mine = [r for r in rows if r[0] == s]
        full = [r[1] for r in mine if r[2] - r[1] == length and r[1] % hop == 0]
        tails = [r for r in mine if not (r[2] - r[1] == length and r[1] % hop == 0)]
        if full != list(range(0, len(full) * hop, hop)) or len(tails) > 1 or (tails and mine[-1] is not tails[0]):
            raise EmotrackError(f"stitching {results[0].name}: {s} windows missing or repeated "
                                f"({len(full)} on the grid, {len(tails)} tail)")
    return sorted(rows, key=lambda r: (r[2], rank[r[0]], r[1]))


def file_lines(name: str, results: list[ChunkResult], specs: dict, sources: tuple,
               decoded: Optional[DecodeResult] = None) -> tuple[list[str], dict]:
    """The JSON lines of one file (as ``emotrack replay --out``), and its summary.

    ``decoded``: the decode task's result of a chunked file (its counters and warning
    are the whole file's)."""
    results = sorted(results, key=lambda r: r.index)
    last = results[-1]
    warning = decoded.warning if decoded else last.warning
    rows = stitch(results, specs, sources)
    seq: dict[str, int] = {}
    lines = []

    def emit(topic: str, body: dict) -> None:
        line = dict(body)
        line["topic"] = topic
        lines.append(json.dumps(line, separators=(",", ":"), allow_nan=False))

    t_first = min((r[3] for r in rows), default=time.time())
    emit(schema.TOPIC_STATUS, schema.status_body(stream=name, seq=0, wall_time=t_first, event="start",
                                                 **(results[0].start_status or {})))
    windows = {s: 0 for s in sources}
    for source, start, end, wall, fields in rows:
        topic = schema.topic_for(source)
        n = seq.get(topic, 0)
        seq[topic] = n + 1
        windows[source] += 1
        emit(topic, schema.emotion_body(stream=name, seq=n, source=source, t_start=start / SAMPLE_RATE,
                                        t_end=end / SAMPLE_RATE, wall_time=wall, **fields))
    total = last.total or 0
    wall_s = sum(r.wall_s for r in results) + (decoded.wall_s if decoded else 0.0)
    counters = dict(decoded.counters if decoded else last.counters)
    counters.update({"published": len(lines), "pub_dropped": 0, "windows": dict(windows),
                     "stream_time": round(total / SAMPLE_RATE, 3)})
    end = {"reason": "end of input", "counters": counters,
           "realtime_factor": round(total / SAMPLE_RATE / wall_s, 2) if wall_s > 0 else None,
           "chunks": len(results)}
    if warning:
        end["warning"] = warning
    emit(schema.TOPIC_STATUS, schema.status_body(stream=name, seq=1, wall_time=max((r[3] for r in rows), default=t_first),
                                                 event="end", **end))
    summary = {"windows": windows, "duration_s": round(total / SAMPLE_RATE, 3), "wall_s": round(wall_s, 3),
               "chunks": len(results), "warning": warning}
    return lines, summary


def _sha256_or_none(path: Path) -> Optional[str]:
    try:
        return sha256_of(path)
    except OSError:  # gone or unreadable since it was processed: it will not count as finished
        return None


def _atomic_write(path: Path, data: str) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- inputs, index


def collect_inputs(inputs: list[str], list_file: Optional[str]) -> list[str]:
    """INPUT... and the lines of --list (blank lines and # comments skipped); folders expand to their audio files."""
    specs = list(inputs)
    if list_file:
        try:
            text = (sys.stdin.read() if list_file == "-" else Path(list_file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(f"cannot read --list {list_file}: {exc.strerror}") from None
        specs += [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    out = []
    for spec in specs:
        if spec == "-" or is_url(spec):
            raise ParameterError(f"{spec!r}: batch takes files and folders; use emotrack replay for stdin and URLs")
        p = Path(spec)
        if p.is_dir():
            out += sorted(str(f) for f in p.iterdir() if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)
        else:
            out.append(spec)
    if not out:
        raise ParameterError("no inputs: give files or folders, or --list FILE")
    return out


def unique_names(paths: list[str]) -> list[str]:
    """Stream (and output) names: the file stem, ``-2``, ``-3`` ... for repeats (as replay names them)."""
    names, seen = [], {}
    for p in paths:
        names.append(unique_stream_name(Path(p).stem or "stream", names, seen))
    return names


def config_key(models: dict, cfg: RunConfig, specs: dict) -> str:
    """A digest of everything that changes the messages: models, features, separator, windows."""
    from ..features import DEFAULT_PARAMS

    d = {"schema": schema.SCHEMA_VERSION, "features": DEFAULT_PARAMS.to_dict(), "separator": cfg.separator,
         "separator_model": cfg.separator_model and str(Path(cfg.separator_model).resolve()),
         "sources": list(cfg.sources), "windows": {s: list(v) for s, v in sorted(specs.items())},
         "models": {s: [m.id, m.card.get("onnx_sha256")] for s, m in sorted(models.items())}}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def load_index(out_dir: Path) -> dict:
    p = out_dir / INDEX_NAME
    if not p.exists():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # unreadable: everything is redone
    if not isinstance(data, dict) or data.get("version") != INDEX_VERSION or not isinstance(data.get("files"), dict):
        return {}
    return data["files"]


def is_finished(entry: Optional[dict], path: str, out_dir: Path, key: str, *, verify_input: bool) -> bool:
    """True if ``entry`` records a done run of this very input with these settings, output intact."""
    if not entry or entry.get("status") != "done" or entry.get("config") != key:
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    if entry.get("input") != str(Path(path).resolve()) or entry.get("size") != st.st_size \
            or entry.get("mtime_ns") != st.st_mtime_ns:
        return False
    out = out_dir / entry.get("output", "")
    if not out.is_file() or sha256_of(out) != entry.get("output_sha256"):
        return False
    return not verify_input or sha256_of(Path(path)) == entry.get("sha256")


# ----------------------------------------------------------------------------- executors


class _LocalExecutor:
    """Runs whole-file tasks one after another in this process (retrying unexpected errors)."""

    parallelism = 1
    description = "1 process"
    chunks = False  # splitting a file only helps when its chunks run in parallel

    def __init__(self, cfg: RunConfig, retries: int):
        self.cfg, self.retries = cfg, retries
        self.queue: deque = deque()
        load_models(cfg)  # a backend that cannot run here fails now, not once per file

    def submit(self, task: ChunkTask, samples=None) -> None:
        self.queue.append(task)

    def pending(self) -> int:
        return len(self.queue)

    def next_done(self):
        """(kind, task(s), result, chunk arrays): kind is "chunk" here."""
        task = self.queue.popleft()
        for _ in range(self.retries + 1):
            try:
                return "chunk", task, run_chunk(task, self.cfg), None
            except Exception as exc:  # a bug or a transient fault: try again, then report
                err = f"{type(exc).__name__}: {exc}"
        return "chunk", task, ChunkResult(task.name, task.index, exit_code=1,
                                          error=f"failed {self.retries + 1} times: {err}"), None

    def close(self) -> None:
        pass


class _RayExecutor:
    """Runs decode and pipeline tasks on Ray, a few per CPU in flight.

    A decode task returns its chunks' arrays as separate objects owned by this
    driver: a chunk task retried after its worker died finds its array still
    there (or Ray rebuilds it by running the decode again).
    """

    chunks = True

    def __init__(self, cfg: RunConfig, retries: int, *, address: str, workers: Optional[int],
                 gpu_fraction: float):
        try:
            import ray
        except ImportError:
            raise BackendError("Ray is not installed: pip install 'emotrack[batch]', or pass --no-ray") from None
        self.ray = ray
        self.started = False
        self.queue: deque = deque()
        self.running: dict = {}
        if not ray.is_initialized():
            import logging

            opts = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
            on_term = signal.getsignal(signal.SIGTERM)
            try:
                if address == "local":
                    ray.init(num_cpus=workers or os.cpu_count() or 1, **opts)
                else:  # workers of a cluster started elsewhere get emotrack's one BLAS thread too
                    ray.init(address=address, runtime_env={"env_vars": {"OPENBLAS_NUM_THREADS": "1"}}, **opts)
            except Exception as exc:  # ConnectionError, RuntimeError, ValueError... from Ray
                raise BackendError(f"cannot start or reach a Ray cluster ({address}): "
                                   f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
            self.started = True
            if callable(on_term):  # Ray's own SIGTERM handler would end the driver without shutting down
                with contextlib.suppress(ValueError):  # (only the main thread may set handlers)
                    signal.signal(signal.SIGTERM, on_term)
        res = ray.cluster_resources()
        cpus = int(res.get("CPU", 1))
        gpus = float(res.get("GPU", 0))
        self.parallelism = max(1, cpus // max(1, cfg.threads or 1))
        num_gpus = 0.0
        if cfg.backend == "tensorrt" or (cfg.backend == "auto" and gpus > 0):
            if gpus <= 0:
                self.close()
                raise BackendError("--backend tensorrt: the Ray cluster has no GPU; use --backend onnxruntime "
                                   "or a cluster with NVIDIA GPUs")
            num_gpus = gpu_fraction
            self.parallelism = max(self.parallelism, int(gpus / gpu_fraction))
        self.description = (f"Ray, {cpus} CPU" + (f", {gpus:g} GPU ({num_gpus:g} per task)" if num_gpus else "")
                            + (" (local cluster)" if self.started and address == "local" else ""))
        retry = dict(max_retries=retries, retry_exceptions=True)
        self.remote_chunk = ray.remote(run_chunk).options(num_cpus=cfg.threads or 1, num_gpus=num_gpus, **retry)
        self.remote_decode = ray.remote(decode_segments)
        self.decode_options = dict(num_cpus=1, **retry)
        self.cfg_ref = ray.put(cfg)
        self.retries = retries

    def submit(self, task: ChunkTask, samples=None) -> None:
        if samples is None:
            self.queue.append(("chunk", task, None))
        else:  # chunks of a decoded file first: their arrays hold memory
            self.queue.appendleft(("chunk", task, samples))

    def submit_decode(self, tasks: list[ChunkTask], min_total: int) -> None:
        self.queue.append(("decode", tasks, min_total))

    def pending(self) -> int:
        return len(self.queue) + len(self.running)

    def next_done(self):
        """(kind, task(s), result, chunk arrays): kind "decode" (with the arrays' refs) or "chunk"."""
        ray = self.ray
        while self.queue and len(self.running) < 2 * self.parallelism:
            kind, what, extra = self.queue.popleft()
            if kind == "decode":
                refs = self.remote_decode.options(num_returns=len(what) + 1, **self.decode_options).remote(what, extra)
                self.running[refs[0]] = (kind, what, refs[1:])
            else:
                self.running[self.remote_chunk.remote(what, self.cfg_ref, extra)] = (kind, what, None)
        done, _ = ray.wait(list(self.running), num_returns=1)
        kind, what, segments = self.running.pop(done[0])
        try:
            return kind, what, ray.get(done[0]), segments
        except ray.exceptions.RayError as exc:
            text = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
            why = f"failed after {self.retries} retries ({type(exc).__name__}): {text[-1] if text else ''}"
            first = what[0] if kind == "decode" else what
            fail = DecodeResult(first.name) if kind == "decode" else ChunkResult(first.name, first.index)
            fail.error, fail.exit_code = why, 1
            return kind, what, fail, None

    def close(self) -> None:
        # Tasks still running are left alone (ray.cancel racing their completion crashed Ray 2.60's
        # driver); shutting down a cluster we started ends them, in a session we joined they finish.
        self.running.clear()
        self.queue.clear()
        if self.started:
            self.ray.shutdown()
            self.started = False


# ----------------------------------------------------------------------------- the driver


@dataclass
class BatchSummary:
    files: int = 0
    done: list = field(default_factory=list)      # names processed in this run
    skipped: list = field(default_factory=list)   # names already finished
    failed: dict = field(default_factory=dict)    # name -> error
    exit_codes: dict = field(default_factory=dict)
    audio_s: float = 0.0
    wall_s: float = 0.0
    executor: str = ""

    @property
    def exit_code(self) -> int:
        codes = set(self.exit_codes.values())
        if not codes:
            return 0
        return codes.pop() if len(codes) == 1 else 1


class _Progress:
    """Files done and throughput on stderr: a bar on a terminal, else one line per file."""

    def __init__(self, total: int, enabled: bool, tty: bool):
        self.total, self.enabled, self.tty = total, enabled, tty
        self.t0 = time.monotonic()
        self.files = self.failed = 0
        self.audio = 0.0

    def add_audio(self, seconds: float) -> None:
        self.audio += seconds
        self.draw()

    def file_done(self, name: str, text: str, failed: bool = False) -> None:
        self.files += 1
        self.failed += failed
        if self.enabled and not self.tty:
            print(f"emotrack: batch [{self.files}/{self.total}] {name}: {text}", file=sys.stderr, flush=True)
        self.draw()

    def draw(self) -> None:
        if not (self.enabled and self.tty):
            return
        el = max(time.monotonic() - self.t0, 1e-6)
        frac = self.files / self.total if self.total else 1.0
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        failed = f"  {self.failed} failed" if self.failed else ""
        sys.stderr.write(f"\rbatch [{bar}] {self.files}/{self.total} files  {self.audio:8.1f} s audio  "
                         f"{self.audio / el:6.1f}x real time{failed}  ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


@contextlib.contextmanager
def _locked(out_dir: Path):
    import fcntl

    try:
        f = open(out_dir / LOCK_NAME, "a+")
    except OSError as exc:
        raise ParameterError(f"--out {out_dir}: cannot write there ({exc.strerror})") from None
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise EmotrackError(f"another emotrack batch is writing to {out_dir}; wait for it or choose another --out") from None
        yield
    finally:
        f.close()


def _check_options(cfg: RunConfig, chunk_s: float, retries: int, gpu_fraction: float) -> None:
    from ..separation import SEPARATORS

    if cfg.separator not in SEPARATORS:
        raise ParameterError(f"separator={cfg.separator!r} unknown; available: {', '.join(SEPARATORS)}")
    if chunk_s <= 0:
        raise ParameterError(f"--chunk {chunk_s} must be > 0")
    if retries < 0:
        raise ParameterError(f"--retries {retries} must be >= 0")
    if not 0 < gpu_fraction <= 1:
        raise ParameterError(f"--gpu-fraction {gpu_fraction} must be in (0, 1]")


def _plan(cfg: RunConfig) -> tuple[dict, dict, bool]:
    """The models (cards and a first check that they load), their window specs, and whether files
    may be cut into chunks.  On ONNX Runtime: the driver of a GPU cluster need not have a GPU; the
    workers load the backend asked for."""
    from ..pipeline import check_model_features

    models = load_models(replace(cfg, backend="onnxruntime"))
    separator = make_separator(cfg)  # built here too, so that a missing separator model fails at once
    try:
        for m in models.values():
            check_model_features(m)  # what the pipeline checks first, here once for every file
        specs = window_specs(models, cfg)
        # chunks must not depend on what came before them: no separator state, no per-stream adaptation
        chunkable = separator.identity and not any(adapt.from_card(m.card) for m in models.values())
    finally:
        separator.close()
    return models, specs, chunkable


def _executor(ray: Optional[str], cfg: RunConfig, retries: int, workers: Optional[int], gpu_fraction: float,
              notice: Callable[[str], None]):
    if ray == "auto":
        try:
            import ray as _ray  # noqa: F401
            ray = os.environ.get("RAY_ADDRESS") or "local"
        except ImportError:
            notice("Ray is not installed (pip install 'emotrack[batch]'): running in this process")
            ray = None
    return (_LocalExecutor(cfg, retries) if ray is None else
            _RayExecutor(cfg, retries, address=ray, workers=workers, gpu_fraction=gpu_fraction))


def _submit_file(executor, path: str, name: str, key: dict, specs: dict, chunkable: bool, chunk_s: float) -> dict:
    """Submit one file's task (or its decode task, whose chunks run in parallel); its state."""
    entry = {"input": str(Path(path).resolve()), "path": path, "status": "running", "config": key}
    total = None
    try:
        st = os.stat(path)
        entry.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
        if chunkable and executor.chunks:
            total = probe_samples(path)
    except OSError:
        pass  # the task reports the missing file
    # workers open the file by its absolute path (their working folder may differ)
    tasks = plan_chunks(name, entry["input"], total, specs, int(round(chunk_s * SAMPLE_RATE)))
    if len(tasks) == 1:
        executor.submit(tasks[0])
    else:  # decoded once, its chunks run in parallel
        executor.submit_decode(tasks, tasks[-1].start + max(length for length, _ in specs.values()))
    return {"path": path, "entry": entry, "tasks": len(tasks), "results": [], "decode": None}


def _drain(executor, state: dict, prog: "_Progress", finish: Callable[[str, dict], None]) -> None:
    """Run the executor dry: submit the chunks of every decoded file, and ``finish(name, state)``
    each file whose tasks are all back."""
    while executor.pending():
        kind, what, res, segments = executor.next_done()
        if kind == "decode":
            s = state[what[0].name]
            s["decode"] = res
            if res.error is not None:
                s["results"] = [ChunkResult(res.name, 0, error=res.error, exit_code=res.exit_code)]
                s["tasks"] = 1
            elif res.short:  # shorter than its header said: replay it as one task
                s["decode"], s["tasks"] = None, 1
                executor.submit(ChunkTask(res.name, s["entry"]["input"], 0, 1))
                continue
            else:
                for t, seg in zip(what, segments):
                    executor.submit(t, seg)
                continue
        else:
            s = state[what.name]
            s["results"].append(res)
            if res.error is None:
                prog.add_audio(res.samples / SAMPLE_RATE)
        if len(s["results"]) == s["tasks"]:
            finish(res.name, s)


def run_batch(inputs: list[str], out_dir: str | Path, cfg: RunConfig, *, ray: Optional[str] = "auto",
              workers: Optional[int] = None, chunk_s: float = DEFAULT_CHUNK_S, retries: int = 2,
              gpu_fraction: float = DEFAULT_GPU_FRACTION, force: bool = False, verify_inputs: bool = False,
              progress: bool = False, notice: Callable[[str], None] = lambda s: None) -> BatchSummary:
    """Replay ``inputs`` (files) into ``out_dir``; ``ray`` None runs in this process.

    ``ray``: "auto" (the cluster in $RAY_ADDRESS, else a local one; this process if
    Ray is not installed), "local" (a local cluster of ``workers`` CPUs) or a cluster
    address.  A Ray session already started in this process is used as it is.
    """
    _check_options(cfg, chunk_s, retries, gpu_fraction)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError(f"--out {out_dir}: cannot create it ({exc.strerror})") from None
    t0 = time.monotonic()
    summary = BatchSummary(files=len(inputs))
    with _locked(out):
        for stale in out.glob(f"{TMP_PREFIX}*.tmp"):  # left by a run that was killed
            stale.unlink(missing_ok=True)
        models, specs, chunkable = _plan(cfg)
        key = config_key(models, cfg, specs)
        index = load_index(out)
        names = unique_names(inputs)
        summary.files = len(names)
        todo = []
        for path, name in zip(inputs, names):
            if not force and is_finished(index.get(name), path, out, key, verify_input=verify_inputs):
                summary.skipped.append(name)
            else:
                todo.append((path, name))

        def finish(name: str, s: dict) -> None:
            _finish_file(out, name, s, key, specs, cfg, index, summary, prog)
            _atomic_write(out / INDEX_NAME, json.dumps({"version": INDEX_VERSION, "files": index}, indent=1) + "\n")

        prog = _Progress(len(names), progress, sys.stderr.isatty())
        prog.files = len(summary.skipped)
        executor = None
        try:
            if todo:
                executor = _executor(ray, cfg, retries, workers, gpu_fraction, notice)
            summary.executor = executor.description if executor else ""
            notice(f"batch: {_files(len(names))}, {len(summary.skipped)} already done, "
                   + (f"{len(todo)} to run on {summary.executor}" if todo else "nothing to run"))
            prog.draw()
            state = {name: _submit_file(executor, path, name, key, specs, chunkable, chunk_s) for path, name in todo}
            if executor is not None:
                _drain(executor, state, prog, finish)
        finally:
            if executor is not None:
                executor.close()
            prog.close()
    summary.wall_s = time.monotonic() - t0
    return summary


def _finish_file(out: Path, name: str, s: dict, key: str, specs: dict, cfg: RunConfig, index: dict,
                 summary: BatchSummary, prog: _Progress) -> None:
    entry, results = s["entry"], sorted(s["results"], key=lambda r: r.index)
    errors = [r for r in results if r.error is not None]
    target = out / f"{name}.jsonl"
    entry["output"] = target.name
    if not errors:
        try:
            lines, info = file_lines(name, results, specs, cfg.sources, s["decode"])
        except EmotrackError as exc:
            errors = [ChunkResult(name, 0, error=str(exc), exit_code=exc.exit_code)]
    if errors:
        target.unlink(missing_ok=True)  # a stale output of an earlier run is not this input's
        entry.update(status="failed", error=errors[0].error, exit_code=errors[0].exit_code,
                     chunks=len(results), finished_at=_now())
        summary.failed[name] = errors[0].error
        summary.exit_codes[name] = errors[0].exit_code
        index[name] = entry
        prog.file_done(name, f"FAILED: {errors[0].error}", failed=True)
        return
    data = "\n".join(lines) + "\n"
    _atomic_write(target, data)
    entry.update(status="done", error=None, exit_code=0, finished_at=_now(), **info,
                 messages=len(lines), output_sha256=hashlib.sha256(data.encode("utf-8")).hexdigest(),
                 sha256=_sha256_or_none(Path(s["path"])))
    index[name] = entry
    summary.done.append(name)
    summary.audio_s += info["duration_s"]
    rtf = info["duration_s"] / info["wall_s"] if info["wall_s"] > 0 else float("inf")
    prog.file_done(name, f"{info['duration_s']:.1f} s, {sum(info['windows'].values())} windows, "
                         f"{info['chunks']} chunk(s), {info['wall_s']:.1f} s task time ({rtf:.1f}x)")


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ----------------------------------------------------------------------------- CLI


def add_parser(sub) -> None:
    """Register ``emotrack batch`` on the CLI's subparsers (:func:`run` runs it)."""
    from engines.argtypes import positive

    from ..commands.common import add_model_options, add_separation_options

    b = sub.add_parser("batch", help="replay an archive of files on a Ray cluster (or in one process)",
                       description="Replay every INPUT (files; folders expand to their audio and video files) "
                                   "as emotrack replay would, one task per file and one per --chunk of long "
                                   "files, on a Ray cluster. Writes DIR/<name>.jsonl per file and DIR/index.json; "
                                   "a re-run skips finished files and retries failed ones.")
    b.add_argument("inputs", metavar="INPUT", nargs="*", help="audio or video files, or folders of them")
    b.add_argument("--list", dest="list_file", metavar="FILE", help="read more inputs from FILE, one per line (- for stdin)")
    b.add_argument("--out", metavar="DIR", default="emotrack-batch", help="output folder (default: emotrack-batch)")
    b.add_argument("--ray", metavar="auto|local|ADDRESS", default="auto",
                   help="auto: the cluster in $RAY_ADDRESS, else a local one (one process if Ray is not "
                        "installed); local: a local cluster of --workers CPUs; or a cluster address (default: auto)")
    b.add_argument("--no-ray", action="store_true", help="run every task in this process")
    b.add_argument("--workers", type=positive(int), default=None, metavar="N",
                   help="CPUs of a local Ray cluster (default: all cores)")
    b.add_argument("--chunk", type=positive(float), default=DEFAULT_CHUNK_S, metavar="S",
                   help=f"files longer than this are split into chunks of about S seconds (default: {DEFAULT_CHUNK_S:g})")
    b.add_argument("--retries", type=int, default=2, metavar="N",
                   help="retry a task that crashed N times before reporting its file as failed (default: 2)")
    b.add_argument("--gpu-fraction", type=positive(float), default=DEFAULT_GPU_FRACTION, metavar="F",
                   help=f"with --backend tensorrt: share of a GPU each task asks Ray for (default: {DEFAULT_GPU_FRACTION})")
    b.add_argument("--force", action="store_true", help="redo files the index says are finished")
    b.add_argument("--verify-inputs", action="store_true",
                   help="also compare each finished input's sha256 before skipping it (reads every file)")
    add_separation_options(b)
    b.add_argument("--quiet", "-q", action="store_true", help="no progress or summary on stderr")
    add_model_options(b)


def run(args: argparse.Namespace) -> int:
    from ..commands.common import parse_sources

    if args.no_ray and args.workers:
        raise ParameterError("--workers sizes a local Ray cluster; drop it with --no-ray")
    cfg = RunConfig(sources=tuple(parse_sources(args.sources)), speech_model=args.speech_model,
                    music_model=args.music_model, backend=args.backend, threads=args.threads,
                    separator=args.separator, separator_model=args.separator_model,
                    speech_hop=args.speech_hop, music_hop=args.music_hop)
    inputs = collect_inputs(args.inputs, args.list_file)

    def notice(text: str) -> None:
        if not args.quiet:
            print(f"emotrack: {text}", file=sys.stderr, flush=True)

    def on_sigterm(signum, frame):  # like Ctrl-C: finished files stay recorded, a local Ray cluster is shut down
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        s = run_batch(inputs, args.out, cfg, ray=None if args.no_ray else args.ray, workers=args.workers,
                      chunk_s=args.chunk, retries=args.retries, gpu_fraction=args.gpu_fraction, force=args.force,
                      verify_inputs=args.verify_inputs, progress=not args.quiet, notice=notice)
    finally:
        signal.signal(signal.SIGTERM, old)
    rtf = f" ({s.audio_s / s.wall_s:.1f}x real time)" if s.wall_s > 0 and s.audio_s else ""
    notice(f"batch: {_files(s.files)}: {len(s.done)} done, {len(s.skipped)} skipped (already done), "
           f"{len(s.failed)} failed; {s.audio_s:.1f} s of audio in {s.wall_s:.1f} s{rtf}; index {Path(args.out) / INDEX_NAME}")
    for name, err in s.failed.items():
        print(f"emotrack: {name}: {err}", file=sys.stderr, flush=True)
    return s.exit_code
