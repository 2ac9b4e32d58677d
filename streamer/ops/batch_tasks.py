"""The work of ``emotrack batch`` (:mod:`streamer.ops.batch`): settings, chunk tasks and what runs them on
a worker (decode once, run the pipeline on a chunk), and the stitching of chunk results into one
file's messages, as one replay of the whole file would publish them.  Plain data crosses processes.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .. import schema
from ..errors import EmotrackError
from ..sources import SAMPLE_RATE, open_source

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

            def publish(source, w, out, i, activity=None):
                wr = pipe.windows.windowers[source][1]
                if not task.last and (task.start + w.start >= task.own_end or w.start % wr.hop
                                      or w.end - w.start != wr.length):
                    return  # the next chunk's window, or this chunk's artificial tail
                rec.position = (task.start + w.start, task.start + w.end)
                publish_window(source, w, out, i, activity)

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
