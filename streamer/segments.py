"""Segments: contiguous passages of speech or music, with their emotion.

A segment is a run of one source's messages whose tracked ``present`` flag is
true (activity with hysteresis, :mod:`streamer.tracking`).  Each message owns
the hop around its window's centre, ``[centre - hop/2, centre + hop/2)``, so a
segment spans from its first message's share to its last one's, and segments
of one source never overlap.  Per segment:

* ``quadrant``: the dominant quadrant, the tracked quadrant of most of the
  segment's messages (ties: the higher summed confidence);
* ``confidence``: the mean over the segment's messages of the tracked
  confidence where the tracked quadrant is the dominant one, 0 elsewhere (a
  lower bound of the mean posterior probability of the dominant quadrant);
* ``valence``, ``arousal``: means of the tracked curves over the segment;
  ``valence_raw``, ``arousal_raw``: means of the raw window values.

Writers: CSV (one row per segment), Praat TextGrid (one interval tier per
stream and source, gaps as empty intervals) and Audacity labels (tab-separated
``start end label``), chosen by the file's extension (``.csv``, ``.TextGrid``,
``.txt``/``.labels``).

Commands: ``emotrack segments INPUT --out FILE...`` (INPUT: a results JSONL of
``replay --out`` / ``record``, or any audio or video input, replayed with the
default options), and ``emotrack replay INPUT --segments FILE``.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional

from .errors import InputError, ParameterError
from .schema import QUADRANTS

FORMATS = {".csv": "csv", ".textgrid": "textgrid", ".txt": "audacity", ".labels": "audacity"}
CSV_COLUMNS = ("stream", "source", "start", "end", "duration", "quadrant", "confidence",
               "valence", "arousal", "valence_raw", "arousal_raw", "windows")


@dataclass
class Segment:
    stream: str
    source: str
    start: float
    end: float
    quadrant: str
    confidence: float
    valence: float
    arousal: float
    valence_raw: float
    arousal_raw: float
    windows: int

    @property
    def duration(self) -> float:
        return self.end - self.start

    def label(self) -> str:
        return f"{self.source} {self.quadrant} ({self.confidence:.0%})"


def _segment(stream: str, source: str, run: list[dict], hop: float) -> Segment:
    n = len(run)
    tv = [b["tracked"]["valence"] for b in run]
    ta = [b["tracked"]["arousal"] for b in run]
    votes = {q: (sum(b["tracked"]["quadrant"] == q for b in run),
                 sum(b["tracked"]["confidence"] for b in run if b["tracked"]["quadrant"] == q)) for q in QUADRANTS}
    dom = max(QUADRANTS, key=lambda q: votes[q])
    conf = votes[dom][1] / n
    centre = [(b["t_start"] + b["t_end"]) / 2.0 for b in run]
    return Segment(stream=stream, source=source, start=round(max(0.0, centre[0] - hop / 2), 3),
                   end=round(centre[-1] + hop / 2, 3), quadrant=dom, confidence=round(conf, 4),
                   valence=round(sum(tv) / n, 4), arousal=round(sum(ta) / n, 4),
                   valence_raw=round(sum(b["valence"] for b in run) / n, 4),
                   arousal_raw=round(sum(b["arousal"] for b in run) / n, 4), windows=n)


def segments_of(bodies: Iterable[dict], *, min_duration: float = 0.0, smooth_s: Optional[float] = None) -> list[Segment]:
    """Segments of emotion message bodies (any streams and sources, each in stream order).

    Messages without ``tracked`` (a recording made with ``--smooth 0`` or before
    tracking existed), or every message when ``smooth_s`` is given, are tracked here
    afresh (:func:`streamer.tracking.track_messages`)."""
    from .tracking import DEFAULT_SMOOTH_S, track_messages

    groups: dict[tuple, list[dict]] = {}
    for b in bodies:
        if "valence" not in b or "source" not in b:
            continue  # status and anything else
        groups.setdefault((b.get("stream", ""), b["source"]), []).append(b)
    out = []
    for (stream, source), bs in sorted(groups.items()):
        bs.sort(key=lambda b: (b["t_start"], b.get("seq", 0)))
        if smooth_s is not None or any("tracked" not in b for b in bs):
            bs = track_messages(bs, smooth_s or DEFAULT_SMOOTH_S)
        hop = _hop(bs)
        run: list[dict] = []
        for b in bs + [None]:
            if b is not None and b["tracked"]["present"]:
                run.append(b)
                continue
            if run:
                seg = _segment(stream, source, run, hop)
                if seg.duration >= min_duration:
                    out.append(seg)
                run = []
    out.sort(key=lambda s: (s.stream, s.start, s.source))
    return out


def _hop(bs: list[dict]) -> float:
    steps = sorted(b2["t_start"] - b1["t_start"] for b1, b2 in zip(bs, bs[1:]) if b2["t_start"] > b1["t_start"])
    if steps:
        return steps[len(steps) // 2]
    return bs[0]["t_end"] - bs[0]["t_start"] if bs else 1.0


# ----------------------------------------------------------------------------- writers
def to_csv(segs: list[Segment]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for s in segs:
        d = asdict(s)
        d["duration"] = round(s.duration, 3)
        w.writerow([d[c] for c in CSV_COLUMNS])
    return buf.getvalue()


def _tiers(segs: list[Segment]) -> dict[str, list[Segment]]:
    streams = {s.stream for s in segs}
    tiers: dict[str, list[Segment]] = {}
    for s in segs:
        name = s.source if len(streams) <= 1 else f"{s.stream}/{s.source}"
        tiers.setdefault(name, []).append(s)
    return tiers


def _q(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def to_textgrid(segs: list[Segment], duration: Optional[float] = None) -> str:
    """Praat TextGrid (long text format): one IntervalTier per source (and stream), labels
    ``Q1``..``Q4``, empty intervals where the source is absent."""
    tiers = _tiers(segs)
    if not tiers:
        tiers = {"speech": [], "music": []}
    xmax = max([duration or 0.0] + [s.end for s in segs]) or 1.0
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", f"xmax = {xmax:g}",
             "tiers? <exists>", f"size = {len(tiers)}", "item []:"]
    for i, (name, ss) in enumerate(sorted(tiers.items()), 1):
        ivs, t = [], 0.0
        for s in sorted(ss, key=lambda s: s.start):
            if s.start > t:
                ivs.append((t, s.start, ""))
            ivs.append((max(t, s.start), s.end, s.quadrant))
            t = s.end
        if t < xmax:
            ivs.append((t, xmax, ""))
        lines += [f"    item [{i}]:", '        class = "IntervalTier"', f"        name = {_q(name)}",
                  "        xmin = 0", f"        xmax = {xmax:g}", f"        intervals: size = {len(ivs)}"]
        for j, (a, b, text) in enumerate(ivs, 1):
            lines += [f"        intervals [{j}]:", f"            xmin = {a:g}", f"            xmax = {b:g}",
                      f"            text = {_q(text)}"]
    return "\n".join(lines) + "\n"


def to_audacity(segs: list[Segment]) -> str:
    """Audacity label track: ``start<TAB>end<TAB>label`` per segment, in time order."""
    multi = len({s.stream for s in segs}) > 1
    rows = []
    for s in sorted(segs, key=lambda s: (s.start, s.source)):
        label = (f"{s.stream}/" if multi else "") + (f"{s.source} {s.quadrant} v={s.valence:+.2f} a={s.arousal:+.2f} "
                                                    f"conf={s.confidence:.2f}")
        rows.append(f"{s.start:.3f}\t{s.end:.3f}\t{label}")
    return "\n".join(rows) + ("\n" if rows else "")


def format_of(path: str) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ParameterError(f"segments file {path!r}: name it .csv, .TextGrid or .txt (Audacity labels)")
    return fmt


def write(path: str, segs: list[Segment], duration: Optional[float] = None) -> None:
    """Write ``segs`` to ``path`` in the format its extension names (``-``: CSV on stdout)."""
    if path == "-":
        sys.stdout.write(to_csv(segs))
        return
    fmt = format_of(path)
    text = {"csv": to_csv, "audacity": to_audacity}.get(fmt, None)
    text = text(segs) if text else to_textgrid(segs, duration)
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ParameterError(f"cannot write segments to {path}: {exc.strerror or exc}") from None


class Collector:
    """Wraps a publisher and keeps every emotion body it publishes (for ``--segments``)."""

    def __init__(self, pub):
        self._pub = pub
        self.bodies: list[dict] = []

    def emotion(self, source: str, **fields) -> dict:
        body = self._pub.emotion(source, **fields)
        self.bodies.append(body)
        return body

    def __getattr__(self, name):
        return getattr(self._pub, name)


def read_results(path: str) -> list[dict]:
    """Emotion bodies of a results JSONL (``replay --out``, ``record``); bad lines are skipped."""
    bodies = []
    try:
        fh = sys.stdin if path == "-" else open(path, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        for line in fh:
            try:
                b = json.loads(line)
            except ValueError:
                continue
            if isinstance(b, dict) and b.get("source") in ("speech", "music") and "valence" in b:
                bodies.append(b)
    return bodies
