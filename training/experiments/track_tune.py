"""Choose the tracker's settings on make_mix TRAINING / VALIDATION programmes (never the held-out ones).

    for s in 11 12; do m=$([ $s = 11 ] && echo 4q || echo emopia)
      python -m training.data.make_mix --split train --out train_${m}_$s.flac --seconds 300 --seed $s --music $m --music-gap 9; done
    for s in 21 22 23 24 25 26 27 28; do m=$([ $((s % 2)) = 1 ] && echo 4q || echo emopia)
      python -m training.data.make_mix --split val --out val_${m}_$s.flac --seconds 300 --seed $s --music $m --music-gap 9; done
    python -m training.experiments.track_tune train_*.flac val_*.flac --cache CACHE_DIR [--out tune.json]

(v4 was chosen on more: training seeds 11-20 and validation seeds 21-28 and 31-60, the same commands;
docs/TRACKING.md.)

Each programme is replayed once with the defaults (training.experiments.track_eval.replay); with
``--cache DIR`` its emotion messages are kept there, under a key of the programme's bytes, the
shipped models (engines/models) and the code that makes the raw outputs (streamer/ and engines/
except the tracker), so a re-run re-tracks offline only, and a new presence detector, emotion model
or feature code replays afresh.  Every setting of the grid, per source, is re-tracked offline
(streamer.tracking.track_messages: the same filter as live) and scored as track_eval scores
(per-second quadrant macro-F1, quadrant changes per minute with gaps bridged), averaged over the
programmes; the grid is ``--smooth`` x ``--temper`` x ``--margin`` x ``--off`` x ``--yield`` (the
hysteresis' yield margin, v4; ``none``: never yields).  Printed per source: the current defaults
(streamer.tracking.DEFAULT_SMOOTH_S and DEFAULT_PARAMS), then the grid sorted by tracked macro-F1 and, among the settings whose tracked
F1 is at least the raw one, by the distance of the tracked changes per minute to the truth's;
each row with the standard error of the mean tracked-minus-raw F1 over the programmes, how many
programmes are at or above raw, the worst programme's difference and the means over the training and
the validation programmes apart (the speech model has heard the training speakers: those
programmes alone are a poor guide), and of ``emovo_*`` programmes (``make_mix --speech emovo``:
speakers no emotion model has heard) apart.  ``--source`` limits the grid to one source.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import itertools
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from streamer.tracking import DEFAULT_PARAMS, DEFAULT_SMOOTH_S, track_messages
from training.experiments.track_eval import _mean, replay, score

ROOT = Path(__file__).resolve().parents[2]


def code_key() -> str:
    """Digest of what the raw window outputs depend on: the shipped models and the streaming code
    (not the tracker, which is re-run offline)."""
    from engines.cards import MODELS_DIR

    h = hashlib.sha1()
    files = sorted(p for p in Path(MODELS_DIR).iterdir() if p.is_file())
    files += sorted(p for d in ("streamer", "engines") for p in (ROOT / d).rglob("*.py")
                    if p.name not in ("tracking.py", "segments.py"))
    for p in files:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def cached_replay(prog: str, cache: Optional[Path], key: str) -> list[dict]:
    """The default replay's emotion messages of ``prog`` (from ``cache`` where it has them)."""
    if cache is None:
        return replay(prog)
    h = hashlib.sha1(Path(prog).read_bytes()).hexdigest()[:16]
    path = cache / f"{Path(prog).name}.{h}.{key}.json.gz"
    if path.is_file():
        return json.loads(gzip.decompress(path.read_bytes()))
    bodies = replay(prog)
    cache.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(json.dumps(bodies).encode()))
    return bodies


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def optional_floats(text: str) -> list[Optional[float]]:
    """Like :func:`floats`; ``none`` stands for None (a setting turned off)."""
    return [None if x.strip().lower() == "none" else float(x) for x in text.split(",") if x.strip()]


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.experiments.track_tune", description=__doc__.splitlines()[0])
    ap.add_argument("programmes", nargs="+", help="make_mix --split train|val programmes (truth JSON beside)")
    ap.add_argument("--source", choices=("speech", "music"), action="append", help="only this source (repeatable)")
    ap.add_argument("--smooth", default="speech=0.5,0.75,1,1.5;music=3,5,10,20",
                    help="time constants per source, 'speech=a,b;music=c,d' (or one list for both)")
    ap.add_argument("--temper", default="0.33,0.5,0.75,1", help="emission powers (comma list)")
    ap.add_argument("--margin", default="0,0.1,0.2,0.25,0.3", help="hysteresis margins (comma list)")
    ap.add_argument("--off", default="0.1", help="activity off-thresholds of the gate (comma list)")
    ap.add_argument("--yield", dest="yields", default="none,0.02,0.05,0.07,0.1",
                    help="yield margins of the hysteresis (comma list; none: never yields)")
    ap.add_argument("--cache", type=Path, help="keep each programme's replay here (re-runs re-track offline only)")
    ap.add_argument("--top", type=int, default=10, help="rows printed per table")
    ap.add_argument("--out", type=Path, help="write every row as JSON here")
    a = ap.parse_args(argv)
    sources = a.source or ["speech", "music"]
    taus = {}
    for part in a.smooth.split(";"):
        src, _, vals = part.rpartition("=")
        for s in ([src.strip()] if src else sources):
            taus[s] = floats(vals)
    key = code_key() if a.cache else ""
    runs = []
    for prog in a.programmes:
        truth = json.loads(Path(prog + ".truth.json").read_text())
        bodies = cached_replay(prog, a.cache, key)
        runs.append((Path(prog).name, bodies, truth, int(np.floor(max(b["t_end"] for b in bodies)))))
        print(f"{prog}: {len(bodies)} messages", file=sys.stderr)
    rows = {}
    for src in sources:
        d = DEFAULT_PARAMS[src]
        grid = [(DEFAULT_SMOOTH_S[src], d["temper"], d["margin"], d["activity_off"], d["yield_margin"], True)]
        grid += [(*g, False) for g in itertools.product(taus.get(src, [DEFAULT_SMOOTH_S[src]]), floats(a.temper),
                                                         floats(a.margin), floats(a.off), optional_floats(a.yields))]
        out = rows[src] = []
        for tau, temper, margin, off, ym, is_default in grid:
            params = {src: {"temper": temper, "margin": margin, "activity_off": off, "yield_margin": ym}}
            per = {name: score(track_messages([b for b in bodies if b["source"] == src], {src: tau}, params=params),
                               truth, n, "centre")[src] for name, bodies, truth, n in runs}
            m = _mean(list(per.values()))
            deltas = np.array([r["quadrant_tracked"]["macro_f1"] - r["quadrant_raw"]["macro_f1"] for r in per.values()])

            def f1(rs):
                return (round(float(np.mean([r["quadrant_raw"]["macro_f1"] for r in rs])), 4),
                        round(float(np.mean([r["quadrant_tracked"]["macro_f1"] for r in rs])), 4))
            split = {k: f1([r for p, r in per.items() if p.startswith(k)]) for k in ("train", "val", "emovo")
                     if any(p.startswith(k) for p in per)}
            out.append({"default": is_default, "smooth_s": tau, "temper": temper, "margin": margin, "activity_off": off,
                        "yield_margin": ym,
                        "f1_raw": m["quadrant_raw"]["macro_f1"], "f1_tracked": m["quadrant_tracked"]["macro_f1"],
                        "worst_programme_delta": round(min(r["quadrant_tracked"]["macro_f1"] - r["quadrant_raw"]["macro_f1"]
                                                           for r in per.values()), 4),
                        "delta_se": (round(float(np.std(deltas, ddof=1) / np.sqrt(len(deltas))), 4)
                                     if len(deltas) > 1 else None),
                        "at_or_above_raw": int(np.sum(deltas >= 0)),
                        "f1_raw_tracked_by_split": split,
                        "changes_truth": m["truth_changes_per_min_bridged"],
                        "changes_raw": m["quadrant_raw"]["changes_per_min_bridged"],
                        "changes_tracked": m["quadrant_tracked"]["changes_per_min_bridged"]})

    def line(r):
        sp = "  ".join(f"{k} {v[0]:.3f}->{v[1]:.3f}" for k, v in r["f1_raw_tracked_by_split"].items())
        ym = "none" if r["yield_margin"] is None else f"{r['yield_margin']:g}"
        return (f"tau {r['smooth_s']:g} temper {r['temper']:g} margin {r['margin']:g} off {r['activity_off']:g} "
                f"yield {ym} | "
                f"F1 raw {r['f1_raw']:.3f} tracked {r['f1_tracked']:.3f} (+- {r['delta_se'] or 0:.4f}; "
                f"{r['at_or_above_raw']} at or above raw; worst programme {r['worst_programme_delta']:+.3f}; "
                f"{sp}) | changes/min raw {r['changes_raw']:.1f} tracked {r['changes_tracked']:.1f} "
                f"truth {r['changes_truth']:.1f}")
    for src, rs in rows.items():
        print(f"== {src}: defaults\n{line(rs[0])}")
        print(f"== {src}: by tracked macro-F1")
        for r in sorted(rs[1:], key=lambda r: -r["f1_tracked"])[:a.top]:
            print(line(r))
        print(f"== {src}: tracked F1 >= raw, by |changes/min - truth|")
        ok = [r for r in rs[1:] if r["f1_tracked"] >= r["f1_raw"]]
        for r in sorted(ok, key=lambda r: abs(r["changes_tracked"] - r["changes_truth"]))[:a.top]:
            print(line(r))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"programmes": [r[0] for r in runs], "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
