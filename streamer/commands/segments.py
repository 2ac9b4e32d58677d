"""``emotrack segments INPUT``: the passages of speech and of music with their emotion, from a
results JSONL or an audio input replayed with the default options (:mod:`streamer.segments`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from ..errors import InputError, ParameterError
from ..segments import Collector, format_of, read_results, segments_of, write


def add_parser(sub) -> None:
    from ..tracking import DEFAULT_SMOOTH_S, METHOD

    p = sub.add_parser("segments", help="passages of speech and music with their emotion (CSV, TextGrid, Audacity)",
                       description="Cut INPUT into contiguous passages of speech and of music, each with start, end, "
                                   "dominant quadrant, mean valence/arousal and confidence. INPUT is a results JSONL "
                                   "(replay --out, record) or an audio/video input, replayed with default options.")
    p.add_argument("input", metavar="INPUT")
    p.add_argument("--out", "-o", action="append", metavar="FILE",
                   help="write segments here: .csv, .TextGrid (Praat) or .txt (Audacity labels); repeat for "
                        "several (default: CSV on stdout)")
    p.add_argument("--smooth", default=None, metavar="S",
                   help=f"re-track ({METHOD}) at this time constant: S or speech=S,music=S (default: the tracked fields in "
                        "INPUT, else " + ",".join(f"{k}={v:g}" for k, v in DEFAULT_SMOOTH_S.items()) + ")")
    p.add_argument("--min-duration", type=float, default=0.0, metavar="S", help="drop shorter segments (default: 0)")


def run(args) -> int:
    from ..tracking import parse_smooth

    smooth = None if args.smooth is None else parse_smooth(args.smooth)
    if args.smooth is not None and smooth is None:
        raise ParameterError(f"--smooth {args.smooth}: segments need tracking; give seconds > 0")
    for path in args.out or []:
        if path != "-":
            format_of(path)
    if args.input.lower().endswith((".jsonl", ".json")):
        if args.input != "-" and not Path(args.input).is_file():
            raise InputError(f"results file not found: {args.input}")
        bodies = read_results(args.input)
        if not bodies:
            raise InputError(f"{args.input}: no emotion messages (give a replay --out or record JSONL)")
        duration = max(b["t_end"] for b in bodies)
    else:
        bodies, duration = _replay(args.input, smooth)
    segs = segments_of(bodies, min_duration=args.min_duration, smooth_s=smooth)
    for path in args.out or ["-"]:
        write(path, segs, duration)
    return 0


def _replay(spec: str, smooth_s: Optional[dict]) -> tuple[list[dict], float]:
    """Replay an audio input with replay's default options, keeping the bodies (no publishing)."""
    from ..pipeline import Pipeline
    from ..publish import Publisher
    from ..sources import open_source
    from .common import load_models, make_separator, parse_sources, smooth_of
    from .replay import add_parser as add_replay_parser

    sub = argparse.ArgumentParser(prog="emotrack").add_subparsers(dest="command")
    add_replay_parser(sub)
    args = sub.choices["replay"].parse_args([spec, "--no-pub", "--quiet"])
    source = open_source(spec)
    pub = Collector(Publisher(source.name, None, None))
    try:
        models = load_models(args, parse_sources(args.sources))
        sep = make_separator(args)
        try:
            Pipeline(models, pub, sep, smooth_s=smooth_s or smooth_of(args)).run(source)
        finally:
            sep.close()
    finally:
        source.close()
        pub.close()
    duration = max((b["t_end"] for b in pub.bodies), default=0.0)
    return pub.bodies, duration
