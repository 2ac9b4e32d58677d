"""``emotrack replay INPUT...``: a file, URL or stdin through the pipeline; several inputs share
batched inference (:mod:`streamer.batching`)."""

from __future__ import annotations

import threading
from pathlib import Path

from engines.argtypes import positive

from ..errors import EmotrackError, ParameterError
from .common import (add_stream_options, hops, load_models, make_publisher, make_separator, parse_sources,
                     run_pipeline, run_summary, smooth_of, stderr, stop_on_signals)


def add_parser(sub) -> None:
    r = sub.add_parser("replay", help="replay a file, URL or stdin through the pipeline",
                       description="Replay INPUT (audio or video file, stream URL, or - for stdin) in sliding "
                                   "windows and publish speech and music emotion over ZeroMQ.")
    r.add_argument("input", metavar="INPUT", nargs="+",
                   help="one or more inputs; several are replayed in one process as separate streams "
                        "(named after their files) whose windows share batched inference")
    r.add_argument("--realtime", action="store_true",
                   help="pace the input at real time through the live capture path (default: as fast as possible)")
    r.add_argument("--max-batch", type=positive(int), default=16, metavar="N",
                   help="with several inputs: largest inference batch across their windows (default: 16)")
    r.add_argument("--latency-budget", type=positive(float), default=20.0, metavar="MS",
                   help="with several inputs and --realtime: longest wait for more windows before a batch "
                        "runs (default: 20 ms)")
    r.add_argument("--segments", action="append", metavar="FILE",
                   help="at the end, write the passages of speech and music with their emotion: .csv, .TextGrid "
                        "(Praat) or .txt (Audacity labels); repeat for several (see emotrack segments)")
    add_stream_options(r)


def run(args) -> int:
    from ..sources import open_source

    if len(args.input) > 1:
        return run_batched(args)
    source = open_source(args.input[0], realtime=args.realtime, name=args.name)
    return run_pipeline(args, source)


class FailedSource:
    """Stands for an input that could not be opened: its stream ends at once with the error."""

    live = False
    warning = None
    last_arrival = None

    def __init__(self, name: str, error: BaseException):
        self.name, self.error = name, error
        self.counters = {"samples_in": 0, "samples_sanitised": 0, "capture_overflows": 0, "blocks_dropped": 0}

    def blocks(self):
        raise self.error
        yield  # pragma: no cover - a generator

    def close(self) -> None:
        pass


def _open_all(specs: list[str], realtime: bool, opened: list) -> list[str]:
    """Open every input into ``opened`` (one that cannot be is a :class:`FailedSource`); their
    unique stream names."""
    from ..sources import open_source, unique_stream_name

    names, seen = [], {}
    for spec in specs:
        try:
            src = open_source(spec, realtime=realtime)
        except EmotrackError as exc:
            stem = "stdin" if spec == "-" else (Path(spec).stem or spec)
            src = FailedSource(stem, exc)
        names.append(unique_stream_name(src.name or "stream", names, seen))
        opened.append(src)
    return names


def run_batched(args) -> int:
    """Several inputs in one process: one stream each, one batched inference for all."""
    from ..batching import BatchedInference, BatchWorker, StreamPublisher, run_batched as run_streams, run_live
    from ..pipeline import Pipeline

    if args.name:
        raise ParameterError("--name works with one INPUT only; several inputs are named after their files")
    if args.input.count("-") > 1:
        raise ParameterError("stdin (-) can be given only once")
    if args.segments:
        raise ParameterError("--segments works with one INPUT; run emotrack segments on the --out JSONL instead")
    sources_list = parse_sources(args.sources)
    smooth_s = smooth_of(args)
    opened = []
    try:
        names = _open_all(args.input, args.realtime, opened)
        publisher = make_publisher(args, ",".join(names))
        stop = threading.Event()
        try:
            models = load_models(args, sources_list)
            engine = BatchedInference(models, max_batch=args.max_batch)
            streams = [(name, src, Pipeline(models, StreamPublisher(publisher, name), make_separator(args),
                                            hops_s=hops(args), heartbeat_s=args.heartbeat,
                                            block_max_s=0.1 if src.live else 4.0, smooth_s=smooth_s))
                       for name, src in zip(names, opened)]
            with stop_on_signals(stop, opened):
                if args.realtime:  # live channels: a worker thread batches within the latency budget
                    worker = BatchWorker(engine, latency_budget_ms=args.latency_budget)
                    try:
                        results = run_live(streams, worker, stop=stop)
                    finally:
                        worker.close()
                else:
                    results = run_streams(streams, engine, stop=stop)
        finally:
            publisher.close()
    finally:
        for src in opened:
            src.close()
    return _report(args, results, engine)


def _report(args, results, engine) -> int:
    failed = [r for r in results if r.error is not None]
    for r in results:
        if r.error is not None:
            stderr(f"emotrack: {r.name}: {r.error}")
            continue
        if r.stats.warning:
            stderr(f"emotrack: warning: {r.stats.warning}")
        if not args.quiet:
            stderr(run_summary(r.name, r.stats, latency=False))
    if not args.quiet and engine.batches:
        sizes = [n for _, n, _ in engine.batches]
        stderr(f"emotrack: {len(results)} streams, {len(sizes)} batches, mean size {sum(sizes) / len(sizes):.1f}")
    if failed:
        return getattr(failed[0].error, "exit_code", 1)
    return 0
