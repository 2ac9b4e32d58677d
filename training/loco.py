"""Selection of the speech model on unseen corpora: leave-one-corpus-out (LOCO).

    python -m training.loco features --variant clean      # descriptor caches (slow once)
    python -m training.loco run [--out docs/results/loco_speech.json]
    python -m training.loco ship                          # train the winner on all, export, card

Candidate systems are ranked the way a user meets them: trained on every speech
corpus but one (RAVDESS, TESS, EMOVO), tested on the one left out (another
language, studio and set of speakers), on clean clips and on the same clips
under music (speech over a 4Q song at +5 dB speech-to-music ratio).  Beside it,
the in-corpus number: leave-one-speaker-group-out inside each corpus
(speaker-independent), trained on that corpus plus the others.

Every clip is heard as the streamer hears it: the clip's streaming window
(:func:`stream_window`: a clip shorter than one 3 s window is centred in it,
zero-padded, as ``emotrack predict`` does; a longer clip gives its middle
window), then the descriptors of :mod:`streamer.descriptors`.

Scoring (:func:`score`): neutral clips have no quadrant (DESIGN.md taxonomy): they
are never a quadrant target, not trained on as one, and not scored in the
quadrant macro-F1 or the arousal / valence UARs; what the model says about them
is reported apart (share of each quadrant).  Macro-F1 is over the quadrants the
held-out corpus has (TESS and EMOVO have no Q4; a Q4 prediction on them is an
error of the true class).  Arousal UAR: mean recall of high (Q1, Q2) and low
(Q3, Q4) arousal from the sign of the published arousal; valence alike.  Chance:
the expected macro-F1 of a uniform guess over the 4 quadrants on the corpus's
class shares (per class 2 p q / (p + q), q = 1/4), and 0.5 for each UAR.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from streamer import taxonomy
from streamer.predict import clip_windows

from . import augment, handcrafted
from .corpora import SR, Clip, load_audio, read_manifest

SPEECH_CORPORA = ("ravdess", "tess", "emovo")
FOLDERS = {"ravdess": "speech_ravdess", "tess": "speech_tess", "emovo": "speech_emovo"}
VARIANTS = ("clean", "aug", "mix")
WINDOW = 3 * SR
HOP = SR
MIX_SMR_DB = 5.0
VARIANT_VERSION = 1  # bump when stream_window, augment.imitate or the mixtures change (renames the caches)
REPO = Path(__file__).resolve().parents[1]


def speech_clips(corpora: Sequence[str] = SPEECH_CORPORA) -> list[Clip]:
    """Every clip of the speech corpora (no audio yet); ``group`` is the speaker."""
    out = []
    for corpus in corpora:
        for r in read_manifest(FOLDERS[corpus]):
            out.append(Clip(corpus, r["path"], r["emotion"], taxonomy.label_quadrant(r["emotion"]),
                            r["speaker"], "loco"))
    return out


def clip_key(c: Clip) -> str:
    return f"{c.corpus}:{c.path}"


def stream_window(x: np.ndarray) -> np.ndarray:
    """The 3 s streaming window of a clip: centred and zero-padded if shorter, else its middle window."""
    wins = clip_windows(np.asarray(x, np.float32), WINDOW, HOP)
    return wins[len(wins) // 2]


def _seed(key: str, variant: str) -> int:
    return int(hashlib.sha1(f"{variant}:{key}".encode()).hexdigest()[:8], 16)


_MUSIC: list = []


def music_clips() -> list[Clip]:
    """4Q songs (R128-normalised) for the speech-over-music variant."""
    if not _MUSIC:
        from .corpora import music_index
        _MUSIC.extend(load_audio([c for c in music_index() if c.corpus == "4q"]))
    return _MUSIC


def variant_window(c: Clip, variant: str) -> np.ndarray:
    """What the model hears of clip ``c`` in ``variant``: clean, ``aug`` (:func:`training.augment.imitate`)
    or ``mix`` (over a 4Q song at +5 dB speech-to-music ratio)."""
    key = clip_key(c)
    if variant == "clean":
        return stream_window(c.audio)
    if variant == "aug":
        return stream_window(augment.imitate(c.audio, _seed(key, variant)))
    if variant == "mix":
        rng = np.random.default_rng(_seed(key, variant))
        w = stream_window(c.audio)
        songs = music_clips()
        o = songs[int(rng.integers(len(songs)))].audio
        s = int(rng.integers(0, max(1, o.size - w.size)))
        seg = np.zeros(w.size, np.float32)
        seg[: min(w.size, o.size - s)] = o[s:s + w.size]
        return (w + seg * np.float32(10.0 ** (-MIX_SMR_DB / 20.0))).astype(np.float32)
    raise ValueError(f"variant {variant!r} is not one of {VARIANTS}")


def descriptors(clips: Sequence[Clip], variant: str = "clean", workers: int = 1, log=print) -> np.ndarray:
    """Descriptor rows [len(clips), 496] of the clips' ``variant`` windows (cached per corpus and variant)."""
    out = np.zeros((len(clips), handcrafted.n_features()), np.float32)
    by_corpus: dict[str, list[int]] = {}
    for i, c in enumerate(clips):
        by_corpus.setdefault(c.corpus, []).append(i)
    for corpus, idx in by_corpus.items():
        cs = [clips[i] for i in idx]

        def before(todo, cs=cs):
            need = [cs[i] for i in todo if cs[i].audio is None]
            if need:
                load_audio(need if len(need) < len(cs) else cs)
            if variant == "mix":
                music_clips()

        X = handcrafted.cached(f"loco-{variant}-{corpus}-v{VARIANT_VERSION}", [clip_key(c) for c in cs],
                               lambda i, cs=cs: variant_window(cs[i], variant), workers=workers,
                               before_compute=before, log=log)
        out[idx] = X
    return out


def main_features(args) -> int:
    clips = speech_clips()
    for v in args.variant:
        t0 = time.time()
        descriptors(clips, v, workers=args.workers)
        print(f"{v}: {len(clips)} clips in {time.time() - t0:.0f} s", flush=True)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.loco", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("features", help="compute the descriptor caches")
    f.add_argument("--variant", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    f.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    if args.cmd == "features":
        return main_features(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
