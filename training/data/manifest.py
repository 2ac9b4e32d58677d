"""Your own corpus: a generic manifest CSV, loaded as :class:`training.data.corpora.Clip` objects.

One row per clip; a header row names the columns (any order, extra columns
ignored):

=========== ========= ===================================================================
column      required  meaning
=========== ========= ===================================================================
path        yes       audio file, relative to the CSV's folder (or absolute); anything
                      soundfile reads (wav, flac, ogg/opus, mp3 with libsndfile >= 1.1),
                      other containers (mp4, m4a, ...) through ffmpeg
label       one of    categorical label, mapped to a quadrant by the ONE table in
            label or  :mod:`streamer.taxonomy` (happy, surprised, angry, fearful, disgust,
            valence + sad, boredom, calm, neutral, ... or Q1..Q4 directly); neutral
            arousal   has no quadrant
valence,    one of    graded targets; by default in [-1, 1]; another scale with
arousal     the two   ``va_scale=(lo, hi)`` / ``--va-scale LO,HI`` (e.g. 1,9 for DEAM or
                      SAM ratings, 1,7 for MSP-Podcast), mapped linearly to [-1, 1]; the
                      quadrant follows the taxonomy's zero rule (>= 0 is positive/high)
group       yes       speaker, artist or song: folds never split a group
start, end  no        segment of the file in seconds (empty: from the start / to the end)
split       no        train / val / test (or any name): used instead of folds when given
=========== ========= ===================================================================

Audio is decoded to 16 kHz mono and R128-normalised like every corpus here
(:func:`training.data.corpora.load_audio`).  Every problem is reported as one line
naming the file, the CSV line and what to do (:class:`ManifestError`), before
any audio is decoded.

Example (IEMOCAP-style, categorical)::

    path,label,group,start,end
    Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav,neutral,Ses01F,,
    Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F005.wav,angry,Ses01F,0.5,3.2

Example (DEAM-style, 1-9 ratings: ``--va-scale 1,9``)::

    path,valence,arousal,group
    audio/2.mp3,3.1,3.0,2
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Optional, Sequence

from streamer import taxonomy
from streamer.errors import ParameterError

from .corpora import Clip

REQUIRED = ("path", "group")


class ManifestError(ParameterError):
    """A manifest row or column is missing or wrong (one line, names file and line)."""


def parse_va_scale(text: Optional[str]) -> tuple[float, float]:
    """``"LO,HI"`` -> (lo, hi); None -> (-1, 1)."""
    if text is None:
        return (-1.0, 1.0)
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ManifestError(f"--va-scale {text!r}: expected two numbers LO,HI such as 1,9") from None
    if not hi > lo:
        raise ManifestError(f"--va-scale {text!r}: HI must be greater than LO")
    return (lo, hi)


def _num(row: dict, col: str, where: str) -> Optional[float]:
    v = (row.get(col) or "").strip()
    if v == "":
        return None
    try:
        return float(v)
    except ValueError:
        raise ManifestError(f"{where}: column '{col}' is {v!r}, not a number") from None


def _targets(r: dict, where: str, rel: str, has_label: bool, has_va: bool, lo: float, hi: float):
    """(label, quadrant, valence, arousal) of one manifest row; VA mapped from [lo, hi] to [-1, 1]."""
    valence = arousal = None
    label = (r.get("label") or "").strip() if has_label else ""
    if has_va and ((r.get("valence") or "").strip() or (r.get("arousal") or "").strip()):
        v, a = _num(r, "valence", where), _num(r, "arousal", where)
        if v is None or a is None:
            raise ManifestError(f"{where}: give both valence and arousal (or neither)")
        for name, x in (("valence", v), ("arousal", a)):
            if not lo <= x <= hi:
                raise ManifestError(f"{where}: {name}={x} is outside the scale [{lo:g}, {hi:g}] "
                                    f"(set --va-scale LO,HI)")
        valence = float(2.0 * (v - lo) / (hi - lo) - 1.0)
        arousal = float(2.0 * (a - lo) / (hi - lo) - 1.0)
    if label:
        try:
            quadrant = taxonomy.label_quadrant(label)
        except KeyError:
            known = ", ".join(sorted(taxonomy.LABEL_TO_QUADRANT)) + ", " + ", ".join(taxonomy.QUADRANTS)
            raise ManifestError(f"{where}: label {label!r} is not in the taxonomy table "
                                f"(streamer/taxonomy.py); use one of: {known}; or give valence/arousal "
                                f"columns instead") from None
    elif valence is not None:
        quadrant = taxonomy.quadrant_of(valence, arousal)
        label = quadrant
    else:
        raise ManifestError(f"{where}: no label and no valence/arousal for {rel}")
    return label, quadrant, valence, arousal


def load_manifest(csv_path: "str | Path", va_scale: Sequence[float] = (-1.0, 1.0),
                  corpus: Optional[str] = None, check_files: bool = True) -> list[Clip]:
    """Clips of a generic manifest (no audio yet; :func:`training.data.corpora.load_audio` decodes).

    ``corpus`` names the clips' corpus (default: the CSV's file stem plus a short
    hash of its location, so two manifests never share a cache entry).  Raises
    :class:`ManifestError` for a missing column, an unknown label, a value out
    of range or a missing file (``check_files``).
    """
    p = Path(csv_path)
    if not p.is_file():
        raise ManifestError(f"manifest {p} not found")
    lo, hi = float(va_scale[0]), float(va_scale[1])
    if not hi > lo:
        raise ManifestError(f"va_scale {tuple(va_scale)}: the upper end must be greater than the lower")
    root = p.resolve().parent
    if corpus is None:
        corpus = f"manifest-{p.stem}-{hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:6]}"
    with open(p, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = cols
        rows = list(reader)
    for c in REQUIRED:
        if c not in cols:
            raise ManifestError(f"{p}: missing column '{c}' (columns: path, label or valence+arousal, group; "
                                f"optional start, end, split); found {cols}")
    has_label = "label" in cols
    has_va = "valence" in cols and "arousal" in cols
    if not has_label and not has_va:
        if "valence" in cols or "arousal" in cols:
            raise ManifestError(f"{p}: 'valence' and 'arousal' must be given together")
        raise ManifestError(f"{p}: needs a 'label' column or 'valence' and 'arousal' columns; found {cols}")
    if not rows:
        raise ManifestError(f"{p}: no rows")
    clips = []
    for n, r in enumerate(rows, start=2):  # line 1 is the header
        where = f"{p}:{n}"
        rel = (r.get("path") or "").strip()
        if not rel:
            raise ManifestError(f"{where}: empty 'path'")
        group = (r.get("group") or "").strip()
        if not group:
            raise ManifestError(f"{where}: empty 'group' (speaker, artist or song of {rel})")
        f = Path(rel) if Path(rel).is_absolute() else root / rel
        if check_files and not f.is_file():
            raise ManifestError(f"{where}: audio file not found: {f}")
        start, end = _num(r, "start", where), _num(r, "end", where)
        if start is not None and start < 0:
            raise ManifestError(f"{where}: start={start} is negative")
        if start is not None and end is not None and end <= start:
            raise ManifestError(f"{where}: end={end} is not after start={start}")
        label, quadrant, valence, arousal = _targets(r, where, rel, has_label, has_va, lo, hi)
        split = (r.get("split") or "").strip() or "all"
        clips.append(Clip(corpus, str(rel), label, quadrant, group, split, valence=valence, arousal=arousal,
                          root=str(root), start=start, end=end))
    return clips
