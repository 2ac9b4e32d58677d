"""``emotrack separate INPUT -o DIR``: write the speech and music stems to audio files.

What Spleeter's ``separate`` does for vocals/accompaniment, with emotrack's
separators and inputs: ``DIR/<name>/speech.wav`` and ``DIR/<name>/music.wav``
(or ``.flac``), mono at 16 kHz, the rate the emotion models hear.  The input is
streamed through the separator block by block, exactly as ``replay --separator``
does, so any length works in bounded memory.  With the built-in separator the
stems sum to the 16 kHz input (music = input - speech); wav stems are 32-bit
float so the sum survives the file, flac stems are 24-bit.  Spleeter's two masks
sum to one, so its stems add up to the input only up to its STFT round trip.

Stems are written under temporary names and renamed when complete: a failed or
interrupted run leaves no half-written stem behind.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from engines.argtypes import positive

from ..errors import EmotrackError, ParameterError

SUBTYPES = {"wav": "FLOAT", "flac": "PCM_24"}


def add_parser(sub) -> None:
    """Add ``separate`` to the ``emotrack`` subparsers (run: :func:`run`)."""
    from engines.backends import BACKENDS

    p = sub.add_parser("separate", help="write the speech and music stems of an input to audio files",
                       description="Separate INPUT (any file, URL or - that replay reads) into speech and music "
                                   "stems, written as DIR/<name>/speech.<fmt> and DIR/<name>/music.<fmt>, mono "
                                   "16 kHz. With the built-in separator the stems sum to the input.")
    p.add_argument("input", metavar="INPUT")
    p.add_argument("-o", "--out", metavar="DIR", required=True, help="folder for the stems (created if needed)")
    p.add_argument("--separator", choices=("builtin", "spleeter"), default="builtin",
                   help="builtin (the shipped mask network, default) or spleeter (2stems; the separation extra "
                        "and its weights on disk)")
    p.add_argument("--separator-model", metavar="PATH",
                   help="builtin: another separator ONNX file; spleeter: the 2stems model folder")
    p.add_argument("--format", choices=sorted(SUBTYPES), default="wav",
                   help="wav (32-bit float, default) or flac (24-bit)")
    p.add_argument("--name", help="sub-folder name (default: the input's file name without extension)")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="builtin: inference backend")
    p.add_argument("--threads", type=positive(int), default=None, help="builtin: ONNX Runtime threads")
    p.add_argument("--quiet", "-q", action="store_true", help="no summary on stderr")


def _separator(args):
    from ..separation import separator_from_options

    return separator_from_options(args.separator, args.separator_model, args.backend, args.threads)


def run(args: argparse.Namespace) -> int:
    import soundfile as sf

    from ..separation import STEMS
    from ..dsp import SAMPLE_RATE
    from ..sources import open_source

    out_root = Path(args.out)
    if out_root.exists() and not out_root.is_dir():
        raise ParameterError(f"-o {args.out}: exists and is not a folder")
    source = open_source(args.input)
    name = args.name or source.name or "stdin"
    if not name or "/" in name or name in (".", ".."):
        raise ParameterError(f"--name {name!r}: give a plain folder name")
    folder = out_root / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        source.close()
        raise EmotrackError(f"cannot create {folder}: {exc.strerror}") from None
    final = {s: folder / f"{s}.{args.format}" for s in STEMS}
    parts = {s: p.with_name(p.name + ".part") for s, p in final.items()}
    t0 = time.monotonic()
    writers, total = {}, 0
    sep = None
    try:
        sep = _separator(args)
        writers = {s: sf.SoundFile(str(parts[s]), "w", samplerate=SAMPLE_RATE, channels=1,
                                   subtype=SUBTYPES[args.format], format=args.format.upper()) for s in STEMS}

        def write(stems):
            for s in STEMS:
                writers[s].write(stems[s])

        for block in source.blocks():
            total += block.size
            write(sep.process(block))
        write(sep.flush())
        for w in writers.values():
            w.close()
        for s in STEMS:
            parts[s].replace(final[s])
    except OSError as exc:
        raise EmotrackError(f"cannot write the stems in {folder}: {exc.strerror or exc}") from None
    finally:
        for w in writers.values():
            if not w.closed:
                w.close()
        for p in parts.values():
            p.unlink(missing_ok=True)
        if sep is not None:
            sep.close()
        source.close()
    if source.warning:
        print(f"emotrack: warning: {source.warning}", file=sys.stderr, flush=True)
    if not args.quiet:
        wall = time.monotonic() - t0
        secs = total / SAMPLE_RATE
        print(f"emotrack: {name}: {secs:.1f} s separated with {args.separator} in {wall:.1f} s "
              f"({secs / max(wall, 1e-9):.0f}x real time): {final['speech']}, {final['music']}",
              file=sys.stderr, flush=True)
    return 0
