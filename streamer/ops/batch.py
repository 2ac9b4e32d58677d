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
return plain rows; the driver alone writes files.  This module is the driver (index,
plan, output files, the command); :mod:`.batch_tasks` the work and its data,
:mod:`.batch_executors` where it runs (this process or Ray).  With ``--backend tensorrt``
(or ``auto`` on a cluster with GPUs) each pipeline task asks Ray for
``--gpu-fraction`` of a GPU, so that several tasks share one.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from engines.cards import sha256_of

from .. import adapt, schema
from ..errors import EmotrackError, InputError, ParameterError
from ..sources import SAMPLE_RATE, is_url, unique_stream_name
from .batch_executors import LocalExecutor, RayExecutor
from .batch_tasks import (ChunkResult, ChunkTask, RunConfig, file_lines, load_models, make_separator,  # noqa: F401
                          plan_chunks, probe_samples, window_specs)

INDEX_NAME = "index.json"
INDEX_VERSION = 1
LOCK_NAME = ".emotrack-batch.lock"
TMP_PREFIX = ".emotrack-batch-"
#: Extensions taken from a folder given as an input.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aiff", ".aif",
                    ".mp4", ".m4v", ".mkv", ".mov", ".ts", ".webm", ".avi", ".wma")
DEFAULT_CHUNK_S = 600.0
DEFAULT_GPU_FRACTION = 0.25


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
    return (LocalExecutor(cfg, retries) if ray is None else
            RayExecutor(cfg, retries, address=ray, workers=workers, gpu_fraction=gpu_fraction))


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
