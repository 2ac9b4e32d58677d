"""``emotrack features INPUT --kind KIND -o FILE.csv``: the model inputs per window, as CSV.

What openSMILE's functionals/LLD CSV export gives, for the inputs the streamer
computes (:mod:`streamer.inputs`, the one definition training and streaming
share), so a window's row is what a model of that kind sees:

* ``handcrafted``: the 496 descriptors of :mod:`streamer.descriptors`, one row
  per window: ``t_start, t_end`` then one named column per descriptor;
* ``music_descriptors``: the 53 of :mod:`streamer.music_descriptors`, likewise
  (both vector kinds may be given together: ``--kind handcrafted,music_descriptors``);
* ``features``: the log-mel image (R128-normalised window, 64 mel bands, delta,
  delta-delta), one row per frame of each window: ``t_start, t_end, frame, t``
  (the frame's centre, seconds into the input) then ``logmel_0..63, delta_0..63, delta2_0..63``.

Windows are cut as ``emotrack predict`` cuts a clip (:func:`streamer.predict.window_starts`:
every hop from 0, the last one ending at the input's end; a clip shorter than a window
is zero-padded, centred).  ``--separator`` computes them on one separated ``--stem``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from typing import IO

import numpy as np

from ..errors import EmotrackError, ParameterError

KINDS = ("features", "handcrafted", "music_descriptors")
#: window and hop (s) by kind when not given: the shipped speech models' 3 s / 1 s, the music descriptors' 10 s / 2 s
DEFAULT_WINDOWS = {"features": (3.0, 1.0), "handcrafted": (3.0, 1.0), "music_descriptors": (10.0, 2.0)}


def add_parser(sub) -> None:
    """Add ``features`` to the ``emotrack`` subparsers (run: :func:`run`)."""
    p = sub.add_parser("features", help="write per-window descriptors (model inputs) of an input to CSV",
                       description="Compute the inputs the streamer gives its models, per window of INPUT, and "
                                   "write them as CSV with named columns and window times. Kinds: "
                                   + ", ".join(KINDS) + ".")
    p.add_argument("input", metavar="INPUT")
    p.add_argument("--kind", required=True, metavar="KIND",
                   help="features (log-mel, one row per frame), handcrafted (496 descriptors) or "
                        "music_descriptors (53); the last two may be combined with a comma")
    p.add_argument("-o", "--out", metavar="FILE.csv", required=True, help="CSV file to write (- for stdout)")
    p.add_argument("--window", type=float, metavar="S", default=None,
                   help="window length in s (default: 3 for features/handcrafted, 10 for music_descriptors)")
    p.add_argument("--hop", type=float, metavar="S", default=None, help="hop in s (default: 1, or 2 for "
                                                                        "music_descriptors)")
    p.add_argument("--separator", choices=("none", "builtin", "spleeter"), default="none",
                   help="compute the descriptors of one separated stem (default: none, the mix)")
    p.add_argument("--stem", choices=("speech", "music"), default=None,
                   help="with --separator: which stem (default: music for music_descriptors, else speech)")
    p.add_argument("--quiet", "-q", action="store_true", help="no summary on stderr")


def parse_kinds(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds or len(set(kinds)) != len(kinds):
        raise ParameterError(f"--kind {text!r}: use one of {', '.join(KINDS)} (handcrafted and "
                             "music_descriptors may be combined with a comma)")
    if "features" in kinds and len(kinds) > 1:
        raise ParameterError("--kind features (one row per frame) cannot be combined with the per-window kinds")
    return kinds


def column_names(kinds: list[str]) -> list[str]:
    """CSV header for ``kinds`` (see the module docstring)."""
    from .. import descriptors, music_descriptors
    from ..features import DEFAULT_PARAMS

    if kinds == ["features"]:
        m = range(DEFAULT_PARAMS.n_mels)
        return (["t_start", "t_end", "frame", "t"] + [f"logmel_{i}" for i in m] + [f"delta_{i}" for i in m]
                + [f"delta2_{i}" for i in m])
    names = {"handcrafted": descriptors.feature_names, "music_descriptors": music_descriptors.feature_names}
    return ["t_start", "t_end"] + [n for k in kinds for n in names[k]()]


def read_input(spec: str) -> np.ndarray:
    """The whole input at 16 kHz mono; a truncated one is read as far as it goes, with a warning."""
    from ..sources import open_source

    with open_source(spec) as src:
        blocks = list(src.blocks())
    if src.warning:
        print(f"emotrack: warning: {src.warning}", file=sys.stderr, flush=True)
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def rows(x: np.ndarray, kinds: list[str], window_s: float, hop_s: float):
    """CSV rows (lists of numbers) for the signal ``x``, window by window."""
    from ..features import DEFAULT_PARAMS as P
    from ..inputs import window_inputs
    from ..predict import clip_windows, window_starts
    from ..dsp import SAMPLE_RATE

    win, hop = int(round(window_s * SAMPLE_RATE)), int(round(hop_s * SAMPLE_RATE))
    starts = window_starts(x.size, win, hop)
    for s, w in zip(starts, clip_windows(x, win, hop)):
        t0, t1 = s / SAMPLE_RATE, min(s + win, max(x.size, 1)) / SAMPLE_RATE
        got = window_inputs(w, kinds)
        if kinds == ["features"]:
            img = got["features"]  # [frames, n_mels, 3]
            off = 0 if x.size > win else (win - x.size) // 2  # a padded clip: frame times in the clip
            for k in range(img.shape[0]):
                centre = (s + k * P.hop_length + P.win_length / 2 - off) / SAMPLE_RATE
                yield [t0, t1, k, centre, *img[k, :, 0], *img[k, :, 1], *img[k, :, 2]]
        else:
            yield [t0, t1, *np.concatenate([got[k] for k in kinds])]


def _fmt(v) -> str:
    return str(v) if isinstance(v, (int, np.integer)) else format(float(v), ".7g")


def run(args: argparse.Namespace) -> int:
    import time

    from ..dsp import SAMPLE_RATE

    kinds = parse_kinds(args.kind)
    window_s, hop_s = DEFAULT_WINDOWS[kinds[-1]]
    window_s = args.window if args.window is not None else window_s
    hop_s = args.hop if args.hop is not None else hop_s
    if window_s <= 0.05 or hop_s <= 0:
        raise ParameterError(f"--window {window_s} / --hop {hop_s}: the window must be > 0.05 s and the hop > 0")
    if args.stem and args.separator == "none":
        raise ParameterError("--stem needs --separator builtin or spleeter")
    if not args.out.lower().endswith(".csv") and args.out != "-":
        raise ParameterError(f"-o {args.out!r}: give a .csv file (or - for stdout)")
    t_start = time.monotonic()
    x = read_input(args.input)
    if args.separator != "none":
        from ..separation import make_separator, separate

        sep = make_separator(args.separator)
        try:
            x = separate(x, sep)[args.stem or ("music" if kinds[-1] == "music_descriptors" else "speech")]
        finally:
            sep.close()
    header = column_names(kinds)
    try:
        fh: IO[str] = sys.stdout if args.out == "-" else open(args.out, "w", newline="", encoding="utf-8")
    except OSError as exc:
        raise EmotrackError(f"cannot write -o {args.out}: {exc.strerror}") from None
    n = 0
    try:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        for row in rows(x, kinds, window_s, hop_s):
            w.writerow([_fmt(v) for v in row])
            n += 1
    except OSError as exc:
        raise EmotrackError(f"cannot write -o {args.out}: {exc.strerror or exc}") from None
    finally:
        if fh is not sys.stdout:
            fh.close()
    if not args.quiet:
        print(f"emotrack: {x.size / SAMPLE_RATE:.1f} s, {n} rows of {len(header)} columns ({', '.join(kinds)}; "
              f"{window_s:g} s windows every {hop_s:g} s) in {time.monotonic() - t_start:.1f} s -> {args.out}",
              file=sys.stderr, flush=True)
    return 0
