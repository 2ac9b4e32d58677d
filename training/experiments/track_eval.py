"""Raw windows vs tracked curves on programmes with truth (:mod:`training.data.make_mix`).

    python -m training.data.make_mix --out P.flac --seconds 300 --seed 2 --music 4q --music-gap 9
    python -m training.experiments.track_eval P.flac [P2.flac ...] [--smooth 2,4,8,16] [--out docs/results/tracking.json]

Each programme is replayed in-process with ``emotrack replay``'s default options
(shipped models, ``--separator none``, ``--activity detector``, ``--smooth`` default)
and, for comparison, with ``--activity separator`` (the built-in separator's presence,
the default before the detector) and ``--activity model``.  Scored per second of the
programme, per source:

* presence detection: the source is present in second ``s`` when its active
  frames cover at least half of it (the truth file's ``active`` spans:
  corpora.activity_mask, RMS above -40 dB re the clip's loudest frame, the
  models' own activity target; a truth file without them: the clip spans);
  predicted present when the message nearest in time has ``activity >= 0.5``
  (raw: the window's mean) or ``tracked.present`` (the presence over the hop at
  the window's centre); accuracy (the share of seconds called right: "detection"),
  balanced accuracy, recall, specificity, and accuracy per condition of the second
  (``by_condition``: silence, speech alone, music alone, both present);
* quadrant macro-F1 over the seconds that are present with a quadrant label
  (neutral speech has none), of the raw ``quadrant`` field, of
  ``quadrant_of(raw valence, raw arousal)``, and of ``tracked.quadrant``;
* quadrant changes per minute, against the truth's: ``changes_per_min_bridged``
  over the seconds where the source is present (gaps bridged, so a change from
  one clip to the next counts; neutral speech is its own label in the truth),
  and ``changes_per_min`` over pairs of consecutive labelled seconds only.

"Nearest in time": the message whose window centre is nearest to the second's
centre (``--align centre``, how the report plots windows), or the latest
message published by the end of the second (``--align live``, what a live
monitor shows).  ``--smooth`` lists extra time constants, re-tracked offline from
the same messages (streamer.tracking.track_messages: the same filter); ``plain``
in the summary re-tracks them with the plain filter at the default time constants
(no tempering, no hysteresis: the filter before v3, ``sticky-quadrant-hmm-v2``), ``v3`` with
the shipped filter before v4 (``sticky-quadrant-hmm-v3``: V3_SMOOTH_S, V3_PARAMS).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from streamer import taxonomy
from streamer.tracking import DEFAULT_PARAMS, DEFAULT_SMOOTH_S, track_messages

Q = taxonomy.QUADRANTS
#: The shipped tracker before v4 (``sticky-quadrant-hmm-v3``), re-tracked for comparison (``v3`` in
#: the summary).
V3_SMOOTH_S = {"speech": 0.75, "music": 5.0}
V3_PARAMS = {"speech": {"activity_off": 0.1, "temper": 0.5, "margin": 0.25, "yield_margin": None},
             "music": {"activity_off": 0.1, "temper": 0.5, "margin": 0.1, "yield_margin": None}}


def replay(path: str, activity: str = "detector", smooth_s=DEFAULT_SMOOTH_S, options=()) -> list[dict]:
    """Emotion bodies of a replay of ``path`` with the CLI's default options (except those given;
    ``options``: more replay options, e.g. ``["--music-model", PATH]``)."""
    from streamer.cli import build_parser
    from streamer.commands.common import load_models, make_separator, parse_sources
    from streamer.pipeline import Pipeline
    from streamer.publish import Publisher
    from streamer.segments import Collector
    from streamer.sources import open_source

    args = build_parser().parse_args(["replay", path, "--no-pub", "--quiet", "--activity", activity, *options])
    source = open_source(path)
    pub = Collector(Publisher(source.name, None, None))
    sep = make_separator(args)
    try:
        Pipeline(load_models(args, parse_sources(args.sources)), pub, sep, smooth_s=smooth_s).run(source)
    finally:
        sep.close()
        source.close()
        pub.close()
    return pub.bodies


def truth_seconds(truth: dict, n: int) -> dict:
    """Per source: present[n] (bool) and quadrant[n] (index, -1 none) of each second."""
    out = {}
    for src, spans in (("speech", truth["speech"]), ("music", truth["songs"])):
        cover = np.zeros(n)
        quad = np.full(n, -1)
        for sp in spans:
            for s in range(int(sp["t_start"]), min(n, int(np.ceil(sp["t_end"])))):
                ov = min(s + 1, sp["t_end"]) - max(s, sp["t_start"])
                if ov >= 0.5 and sp.get("quadrant"):
                    quad[s] = Q.index(sp["quadrant"])
            for a, b in sp.get("active", [[sp["t_start"], sp["t_end"]]]):
                for s in range(int(a), min(n, int(np.ceil(b)))):
                    cover[s] += max(0.0, min(s + 1, b) - max(s, a))
        present = cover >= 0.5
        quad[~present] = -1
        out[src] = {"present": present, "quadrant": quad}
    return out


def conditions(ts: dict) -> dict:
    """Masks of the seconds per condition: silence (neither source present), speech alone, music
    alone, both (speech over music)."""
    sp, mu = ts["speech"]["present"], ts["music"]["present"]
    return {"silence": ~sp & ~mu, "speech_alone": sp & ~mu, "music_alone": ~sp & mu, "both": sp & mu}


def pick(bodies: list[dict], n: int, align: str) -> list[Optional[dict]]:
    """The message shown at each second (see the module doc), or None."""
    if not bodies:
        return [None] * n
    centre = np.array([(b["t_start"] + b["t_end"]) / 2 for b in bodies])
    end = np.array([b["t_end"] for b in bodies])
    out = []
    for s in range(n):
        if align == "centre":
            out.append(bodies[int(np.argmin(np.abs(centre - (s + 0.5))))])
        else:
            k = int(np.searchsorted(end, s + 1, side="right")) - 1
            out.append(bodies[k] if k >= 0 else None)
    return out


def macro_f1(y: np.ndarray, p: np.ndarray) -> float:
    f1s = []
    for k in sorted(set(y.tolist())):
        tp = np.sum((y == k) & (p == k))
        fp = np.sum((y != k) & (p == k))
        fn = np.sum((y == k) & (p != k))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(f1s)) if f1s else float("nan")


def changes_per_minute(labels: np.ndarray, keep: np.ndarray) -> float:
    pairs = keep[:-1] & keep[1:]
    if not pairs.any():
        return float("nan")
    return float(np.sum(labels[:-1][pairs] != labels[1:][pairs]) / (pairs.sum() / 60.0))


def changes_per_minute_bridged(labels: np.ndarray, keep: np.ndarray) -> float:
    """Changes between successive kept seconds (gaps bridged) per minute of kept seconds."""
    seq = labels[keep]
    if seq.size < 2:
        return float("nan")
    return float(np.sum(seq[1:] != seq[:-1]) / (seq.size / 60.0))


def score(bodies: list[dict], truth: dict, n: int, align: str) -> dict:
    ts = truth_seconds(truth, n)
    res = {}
    for src in ("speech", "music"):
        shown = pick([b for b in bodies if b["source"] == src], n, align)
        ok = np.array([b is not None for b in shown])
        t_pres, t_q = ts[src]["present"], ts[src]["quadrant"]
        raw_pres = np.array([b is not None and b["activity"] >= 0.5 for b in shown])
        tr_pres = np.array([b is not None and b["tracked"]["present"] for b in shown])
        lab = (t_q >= 0) & ok
        curves = {
            "raw": np.array([Q.index(b["quadrant"]) if b else -1 for b in shown]),
            "raw_va": np.array([Q.index(taxonomy.quadrant_of(b["valence"], b["arousal"])) if b else -1 for b in shown]),
            "tracked": np.array([Q.index(b["tracked"]["quadrant"]) if b else -1 for b in shown]),
        }
        r = {"seconds": int(n), "present_seconds": int(t_pres.sum()), "labelled_seconds": int(lab.sum()),
             "truth_changes_per_min": round(changes_per_minute(t_q, lab), 2),
             "truth_changes_per_min_bridged": round(changes_per_minute_bridged(t_q, t_pres & ok), 2)}
        for name, pres in (("raw", raw_pres), ("tracked", tr_pres)):
            acc = float(np.mean(pres == t_pres))
            tpr = float(np.mean(pres[t_pres])) if t_pres.any() else float("nan")
            tnr = float(np.mean(~pres[~t_pres])) if (~t_pres).any() else float("nan")
            bal = np.nanmean([tpr, tnr])
            r[f"detection_{name}"] = {"accuracy": round(acc, 4), "balanced": round(float(bal), 4),
                                      "recall": round(tpr, 4), "specificity": round(tnr, 4)}
            # accuracy per condition of the second (which sources the truth has present)
            r[f"detection_{name}"]["by_condition"] = {
                c: (round(float(np.mean(pres[m] == t_pres[m])), 4) if m.any() else float("nan"))
                for c, m in conditions(ts).items()}
        for name, c in curves.items():
            r[f"quadrant_{name}"] = {"macro_f1": round(macro_f1(t_q[lab], c[lab]), 4),
                                     "changes_per_min": round(changes_per_minute(c, lab), 2),
                                     "changes_per_min_bridged": round(changes_per_minute_bridged(c, t_pres & ok), 2)}
        res[src] = r
    return res


def _mean(dicts: list[dict]) -> dict:
    """Element-wise mean of nested dicts of numbers."""
    out = {}
    for k, v in dicts[0].items():
        if isinstance(v, dict):
            out[k] = _mean([d[k] for d in dicts])
        else:
            out[k] = round(float(np.nanmean([d[k] for d in dicts])), 4)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.experiments.track_eval", description=__doc__.splitlines()[0])
    ap.add_argument("programmes", nargs="+", help="audio made by training.data.make_mix (truth JSON beside it)")
    ap.add_argument("--smooth", default="1,2,4,8,16", help="time constants (both sources) to re-track offline at "
                                                         "(comma list)")
    ap.add_argument("--align", choices=("centre", "live"), default="centre")
    ap.add_argument("--out", type=Path, help="write the results JSON here")
    ap.add_argument("--music-model", help="replay with this music model instead of the default (a path)")
    a = ap.parse_args(argv)
    options = ["--music-model", a.music_model] if a.music_model else []
    extra = [float(x) for x in a.smooth.split(",") if x.strip()]
    per, sweep, sep_act, model_act, plain, prev = {}, {}, {}, {}, {}, {}
    v2 = {src: {"temper": 1.0, "margin": 0.0, "yield_margin": None} for src in DEFAULT_PARAMS}
    for prog in a.programmes:
        truth = json.loads(Path(prog + ".truth.json").read_text())
        bodies = replay(prog, options=options)
        n = int(np.floor(max(b["t_end"] for b in bodies)))
        per[prog] = score(bodies, truth, n, a.align)
        per[prog]["music_corpus"] = truth.get("music_corpus", "4q")
        plain[prog] = score(track_messages(bodies, params=v2), truth, n, a.align)
        prev[prog] = score(track_messages(bodies, V3_SMOOTH_S, params=V3_PARAMS), truth, n, a.align)
        for tau in extra:
            sweep.setdefault(tau, []).append(score(track_messages(bodies, tau), truth, n, a.align))
        sep_act[prog] = score(replay(prog, activity="separator", options=options), truth, n, a.align)
        model_act[prog] = score(replay(prog, activity="model", options=options), truth, n, a.align)
        print(f"{prog}: done", file=sys.stderr)
    kinds = sorted({p["music_corpus"] for p in per.values()})
    summary = {}
    for kind in kinds + ["all"]:
        progs = [p for p, r in per.items() if kind == "all" or r["music_corpus"] == kind]
        summary[kind] = {"programmes": len(progs),
                         "default": _mean([{s: per[p][s] for s in ("speech", "music")} for p in progs]),
                         "plain": _mean([plain[p] for p in progs]),
                         "v3": _mean([prev[p] for p in progs]),
                         "activity_separator": _mean([sep_act[p] for p in progs]),
                         "activity_model": _mean([model_act[p] for p in progs])}
    summary["sweep_all"] = {str(t): _mean(v) for t, v in sweep.items()}
    res = {"align": a.align, "music_model": a.music_model or "default", "smooth_default": DEFAULT_SMOOTH_S, "params_default": DEFAULT_PARAMS, "summary": summary,
           "programmes": {Path(p).name: r for p, r in per.items()}}
    text = json.dumps(res, indent=1)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
