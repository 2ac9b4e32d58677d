"""Score ``emotrack predict`` output against corpus labels, with the split named.

    python -m training.score --list speech-test > files.txt     # held-out files
    emotrack predict $(cat files.txt) --source speech --out preds.jsonl
    python -m training.score preds.jsonl                         # metrics as JSON

Lists: ``speech-test`` (RAVDESS actors 19-24), ``music-test`` (4Q test artists),
``emopia-test`` (EMOPIA official test, rendered), ``vgmidi`` (cross-corpus).
A replay of a programme built by :mod:`training.data.make_mix` is scored against its truth file:

    emotrack replay programme.ogg --out replay.jsonl
    python -m training.score replay.jsonl --truth programme.ogg.truth.json

(each speech clip / song of the truth: the mean of the windows of that source that lie at least
half inside its span, scored as one clip prediction).
Neutral clips have no quadrant: they are left out of the quadrant metrics and
summarised separately.  Metrics: :func:`training.evaluate.metrics` (accuracy,
macro-F1, arousal/valence-half accuracy, chance levels, confusion matrix).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from streamer import taxonomy

from .data import corpora
from .evaluate import metrics
from .paths import data_root

LISTS = {
    "speech-test": ("speech", lambda c: c.corpus == "ravdess" and c.split == "test"),
    "music-test": ("music", lambda c: c.corpus == "4q" and c.split == "test"),
    "emopia-test": ("music", lambda c: c.corpus == "emopia" and c.split == "test"),
    "vgmidi": ("music", lambda c: c.corpus == "vgmidi"),
}


def clip_files(name: str) -> list[tuple[str, corpora.Clip]]:
    """(audio path, clip) of a named held-out list; MIDI corpora as rendered audio."""
    kind, keep = LISTS[name]
    index = corpora.speech_index() if kind == "speech" else corpora.music_index()
    out = []
    for c in index:
        if not keep(c):
            continue
        if c.corpus in ("emopia", "vgmidi"):
            from .data.render import cache_path, render_corpus

            folder = corpora._FOLDER[c.corpus]
            p = cache_path(folder, c.path)
            if not p.exists():
                render_corpus(folder, [c.path])
        else:
            p = data_root() / corpora._FOLDER[c.corpus] / c.path
        out.append((str(p), c))
    return out


def score(preds: list[dict], labels: dict[str, Optional[str]]) -> dict:
    """Metrics of clip predictions whose path is in ``labels`` (path -> quadrant or None)."""
    rows = [p for p in preds if p["path"] in labels]
    q = np.array([-1 if labels[p["path"]] is None else taxonomy.QUADRANTS.index(labels[p["path"]]) for p in rows])
    probs = np.array([[p["probs"][k] for k in taxonomy.QUADRANTS] for p in rows])
    va = np.array([[p["valence"], p["arousal"]] for p in rows])
    keep = q >= 0
    out = metrics(q[keep], probs[keep], va[keep])
    if (~keep).any():
        out["neutral_clips"] = {"n": int((~keep).sum()),
                                "mean_abs_valence": round(float(np.abs(va[~keep, 0]).mean()), 4),
                                "mean_abs_arousal": round(float(np.abs(va[~keep, 1]).mean()), 4)}
    return out


def replay_predictions(rows: list[dict], truth: dict) -> tuple[list[dict], dict]:
    """Clip predictions from a replay's emotion messages (``--out`` JSONL rows) over the spans of a
    :mod:`training.data.make_mix` truth file, and the labels (path -> quadrant) of the clips covered."""
    preds, labels = [], {}
    for source, spans in (("speech", truth.get("speech", [])), ("music", truth.get("songs", []))):
        wins = [r for r in rows if r.get("topic") == f"emotion.{source}"]
        for sp in spans:
            inside = [w for w in wins if min(w["t_end"], sp["t_end"]) - max(w["t_start"], sp["t_start"])
                      >= 0.5 * (w["t_end"] - w["t_start"])]
            if not inside:
                continue
            probs = {q: float(np.mean([w["probs"][q] for w in inside])) for q in taxonomy.QUADRANTS}
            key = f"{source}:{sp['path']}@{sp['t_start']:.3f}"
            preds.append({"path": key, "source": source, "probs": probs, "windows": len(inside),
                          "valence": float(np.mean([w["valence"] for w in inside])),
                          "arousal": float(np.mean([w["arousal"] for w in inside]))})
            labels[key] = sp.get("quadrant")
    return preds, labels


def _read(path: str, what: str, lines: bool = False):
    """A JSON file (or JSON lines) -> its content; unreadable or malformed: a one-line error (exit 2)."""
    try:
        text = Path(path).read_text()
        return [json.loads(ln) for ln in text.splitlines() if ln.strip()] if lines else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        print(f"training.score: cannot read {what} {path}: {why}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.score", description=__doc__.splitlines()[0])
    ap.add_argument("preds", nargs="?", help="JSONL from emotrack predict")
    ap.add_argument("--list", choices=sorted(LISTS), help="print the files of a held-out list and exit")
    ap.add_argument("--truth", metavar="JSON", help="PREDS is an emotrack replay --out JSONL of a programme made by "
                                                   "training.data.make_mix; score it against that programme's truth file")
    a = ap.parse_args(argv)
    if a.list:
        for p, _ in clip_files(a.list):
            print(p)
        return 0
    if not a.preds:
        ap.error("give a predictions file or --list")
    preds = _read(a.preds, "predictions", lines=True)
    if a.truth:
        rows, truth = preds, _read(a.truth, "truth file")
        res = {}
        clip_preds, labels = replay_predictions(rows, truth)
        for source in ("speech", "music"):
            mine = [p for p in clip_preds if p["source"] == source]
            if mine:
                res[source] = score(mine, labels)
                res[source]["n_windows"] = int(sum(p["windows"] for p in mine))
        models = next((r.get("models") for r in rows if r.get("event") == "start"), None)
        print(json.dumps({"truth": a.truth, "models": models, **res}, indent=1))
        return 0
    labels = {}
    kinds = {p.get("source") for p in preds}
    for name in (n for n, (kind, _) in LISTS.items() if kind in kinds):
        for p, c in clip_files(name):
            labels[p] = c.quadrant
    res = score(preds, labels)
    res["n_predictions"] = len(preds)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
