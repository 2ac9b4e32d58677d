"""The labelled corpora, their splits, and decoded (cached) audio.

Splits (named in the model cards):

* speech: TEST = RAVDESS actors 19-24, VAL = RAVDESS actors 17-18,
  TRAIN = RAVDESS actors 1-16 + all of TESS (TESS has only 2 speakers, so no
  TESS speaker is held out; TESS numbers are not speaker-independent).
* music: 4Q grouped by artist (``split_4q_artists``: the sorted artist list is
  shuffled with ``numpy.random.default_rng(SPLIT_SEED)``; the first 20 % of
  artists are TEST, the next 10 % VAL, the rest TRAIN); EMOPIA by its
  ``official_split`` column; VGMIDI (labelled) is a cross-corpus TEST set only
  (split ``xtest``), never trained on.

Labels come only from :mod:`streamer.taxonomy`.  Users' own corpora come in through a
generic manifest CSV (:mod:`training.data.manifest`) as the same :class:`Clip` objects.
"""

from __future__ import annotations

import csv
import hashlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from streamer.features import DEFAULT_PARAMS, loudness_normalise
from streamer import taxonomy
from streamer.errors import InputError

from ..paths import cache_root, data_root

SPLIT_SEED = 20261122
SR = DEFAULT_PARAMS.sample_rate
FRAME = DEFAULT_PARAMS.hop_length  # 10 ms activity frames
ACTIVITY_DB = -40.0


@dataclass
class Clip:
    """One labelled clip: R128-normalised mono audio and its labels."""

    corpus: str
    path: str
    label: str
    quadrant: Optional[str]
    group: str
    split: str
    audio: np.ndarray = field(repr=False, default=None)
    active: np.ndarray = field(repr=False, default=None)  # bool per 10 ms frame
    # graded targets in [-1, 1] where the corpus has them (VGMIDI, VA manifests), else None
    valence: Optional[float] = None
    arousal: Optional[float] = None
    # generic manifests (training.data.manifest): folder that ``path`` is relative to, segment in seconds
    root: Optional[str] = field(default=None, repr=False)
    start: Optional[float] = None
    end: Optional[float] = None

    @property
    def q_index(self) -> int:
        """Index into QUADRANTS, -1 for no quadrant (neutral)."""
        return -1 if self.quadrant is None else taxonomy.QUADRANTS.index(self.quadrant)


def read_manifest(corpus: str) -> list[dict]:
    """Rows of ``<data>/<corpus>/manifest.csv`` (InputError, exit 3, when the corpus is not there)."""
    path = data_root() / corpus / "manifest.csv"
    try:
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))
    except FileNotFoundError:
        from streamer.errors import InputError

        raise InputError(f"corpus {corpus!r} not found: no {path}; set EMOTRACK_DATA to the folder holding "
                         "the corpora (see the data README)") from None


def activity_mask(x: np.ndarray, db: float = ACTIVITY_DB) -> np.ndarray:
    """Per 10 ms frame: RMS above ``db`` relative to the clip's loudest frame."""
    n = x.size // FRAME
    if n == 0:
        return np.zeros(0, dtype=bool)
    rms = np.sqrt(np.mean(x[: n * FRAME].reshape(n, FRAME).astype(np.float64) ** 2, axis=1))
    peak = rms.max()
    if peak <= 0:
        return np.zeros(n, dtype=bool)
    return rms > peak * 10.0 ** (db / 20.0)


def split_4q_artists(artists: list[str]) -> dict[str, str]:
    """Artist -> split for 4Q: seeded shuffle, 20 % test, 10 % val, rest train."""
    uniq = sorted(set(artists))
    order = np.random.default_rng(SPLIT_SEED).permutation(len(uniq))
    n_test, n_val = round(0.2 * len(uniq)), round(0.1 * len(uniq))
    out = {}
    for rank, i in enumerate(order):
        out[uniq[i]] = "test" if rank < n_test else ("val" if rank < n_test + n_val else "train")
    return out


def ravdess_split(speaker: str) -> str:
    """RAVDESS actor -> split (19-24 test, 17-18 val, 1-16 train)."""
    n = int(speaker.replace("actor", ""))
    return "test" if n >= 19 else ("val" if n >= 17 else "train")


def speech_index() -> list[Clip]:
    """All speech clips (no audio yet) with labels and splits."""
    clips = []
    for r in read_manifest("speech_ravdess"):
        clips.append(Clip("ravdess", r["path"], r["emotion"], taxonomy.label_quadrant(r["emotion"]),
                          r["speaker"], ravdess_split(r["speaker"])))
    for r in read_manifest("speech_tess"):
        clips.append(Clip("tess", r["path"], r["emotion"], taxonomy.label_quadrant(r["emotion"]),
                          r["speaker"], "train"))
    return clips


def music_index() -> list[Clip]:
    """All music clips (no audio yet): 4Q, EMOPIA (rendered) and VGMIDI (rendered, xtest)."""
    clips = []
    rows = read_manifest("music_4q")
    amap = split_4q_artists([r["artist"] for r in rows])
    for r in rows:
        clips.append(Clip("4q", r["path"], r["quadrant"], taxonomy.label_quadrant(r["quadrant"]),
                          r["artist"], amap[r["artist"]]))
    for r in read_manifest("midi_emopia"):
        clips.append(Clip("emopia", r["path"], r["quadrant"], taxonomy.label_quadrant(r["quadrant"]),
                          r["youtube_song_id"], r["official_split"]))
    for r in read_manifest("midi_vgmidi"):
        clips.append(Clip("vgmidi", r["path"], r["quadrant"], taxonomy.label_quadrant(r["quadrant"]),
                          r["piece"], "xtest", valence=float(r["valence"]), arousal=float(r["arousal"])))
    return clips


_FOLDER = {"ravdess": "speech_ravdess", "tess": "speech_tess", "emovo": "speech_emovo", "4q": "music_4q",
           "emopia": "midi_emopia", "vgmidi": "midi_vgmidi"}


def _read_any(path: Path) -> tuple[np.ndarray, int]:
    """(mono float32 audio, sample rate): soundfile, else ffmpeg to 16 kHz."""
    import soundfile as sf

    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return x.mean(axis=1), sr
    except Exception:
        pass
    try:
        proc = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-f", "f32le", "-ac", "1",
                               "-ar", str(SR), "-"], capture_output=True, timeout=600)
    except FileNotFoundError:
        raise InputError(f"{path}: soundfile cannot read it and ffmpeg is not installed") from None
    if proc.returncode != 0 or not proc.stdout:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise InputError(f"{path}: cannot decode ({msg[-1] if msg else 'no audio'})")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy(), SR


def _decode_manifest_clip(clip: Clip) -> np.ndarray:
    """16 kHz mono audio of a manifest clip (its start/end segment), not yet normalised."""
    f = Path(clip.path) if Path(clip.path).is_absolute() else Path(clip.root) / clip.path
    if not f.is_file():
        raise InputError(f"audio file not found: {f}")
    x, sr = _read_any(f)
    if sr != SR:
        import soxr
        x = soxr.resample(x, sr, SR).astype(np.float32)
    a = 0 if clip.start is None else int(round(clip.start * SR))
    b = x.size if clip.end is None else min(x.size, int(round(clip.end * SR)))
    if b - a < int(0.1 * SR):
        raise InputError(f"{f}: segment {clip.start}-{clip.end} s holds less than 0.1 s of audio "
                         f"(file is {x.size / SR:.2f} s)")
    return np.ascontiguousarray(x[a:b], dtype=np.float32)


def _decode(clip: Clip) -> np.ndarray:
    import soundfile as sf

    if clip.root is not None:  # a clip of a generic manifest (training.data.manifest)
        return _decode_manifest_clip(clip)
    if clip.corpus in ("emopia", "vgmidi"):
        from .render import cache_path, render_corpus
        p = cache_path(_FOLDER[clip.corpus], clip.path)
        if not p.exists():
            render_corpus(_FOLDER[clip.corpus], [clip.path], processes=1)
    else:
        p = data_root() / _FOLDER[clip.corpus] / clip.path
    x, sr = sf.read(str(p), dtype="float32", always_2d=True)
    if sr != SR:
        raise RuntimeError(f"{p}: {sr} Hz, expected {SR}")
    return x.mean(axis=1)


def load_audio(clips: list[Clip], use_cache: bool = True) -> list[Clip]:
    """Fill ``audio`` (R128-normalised to -23 LUFS) and ``active`` of every clip.

    Decoded, normalised audio of a whole corpus is cached as one .npz under
    ``cache_root()/decoded`` keyed by the hash of its path list.
    """
    by_corpus: dict[str, list[Clip]] = {}
    for c in clips:
        by_corpus.setdefault(c.corpus, []).append(c)
    for corpus, cs in by_corpus.items():
        key = hashlib.sha1(("\n".join(c.path if c.start is None and c.end is None else f"{c.path}@{c.start}-{c.end}"
                                       for c in cs) + "v1").encode()).hexdigest()[:12]
        cp = cache_root() / "decoded" / f"{corpus}_{key}.npz"
        if use_cache and cp.exists():
            z = np.load(cp)
            data, off = z["data"], z["offsets"]
            for i, c in enumerate(cs):
                c.audio = data[off[i]:off[i + 1]]
        else:
            for c in cs:
                c.audio = loudness_normalise(_decode(c))
            if use_cache and len(cs) > 200:
                cp.parent.mkdir(parents=True, exist_ok=True)
                off = np.concatenate([[0], np.cumsum([c.audio.size for c in cs])])
                np.savez(cp.with_suffix(".tmp.npz"), data=np.concatenate([c.audio for c in cs]),
                         offsets=off)
                cp.with_suffix(".tmp.npz").replace(cp)
        for c in cs:
            c.active = activity_mask(c.audio)
    return clips


def subset(clips: list[Clip], max_clips: Optional[int], seed: int = 0) -> list[Clip]:
    """At most ``max_clips`` clips per (corpus, split), chosen by a seeded shuffle."""
    if not max_clips:
        return clips
    rng = np.random.default_rng(seed)
    groups: dict[tuple, list[Clip]] = {}
    for c in clips:
        groups.setdefault((c.corpus, c.split), []).append(c)
    out = []
    for k in sorted(groups):
        g = groups[k]
        idx = rng.permutation(len(g))[:max_clips]
        out.extend(g[i] for i in sorted(idx))
    return out


def load(kind: str, max_clips: Optional[int] = None) -> dict[str, list[Clip]]:
    """Both sources' clips with audio: ``{"speech": [...], "music": [...]}``.

    Every model needs both (the other source is mixed in).  VGMIDI is loaded only
    for the music model.
    """
    speech = subset(speech_index(), max_clips)
    music = [c for c in music_index() if kind == "music" or c.corpus != "vgmidi"]
    music = subset(music, max_clips)
    full = not max_clips
    load_audio(speech, use_cache=full)
    load_audio(music, use_cache=full)
    return {"speech": speech, "music": music}
