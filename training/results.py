"""Run the evaluation protocols with every registered system and write docs/RESULTS.md.

    python -m training.results                     # every protocol, every system (hours: the runs
                                                   # in docs/results took ~16 h of one core, features cached;
                                                   # --jobs 2 fits two folds at once)
    python -m training.results --only ravdess      # one protocol; the others are re-read from their JSON
    python -m training.results --from-json         # re-render docs/RESULTS.md + PNGs from docs/results/*.json
    python -m training.results --quick             # small settings, output to the cache (not docs/)
    python -m training.results --separator builtin # fills the "separated" cells of seed 001's grid
    python -m training.results --add --only ravdess --systems fusion   # add a system to saved results
    python -m training.results --only music4q --jobs 2   # two folds fitted at once (same results)
    python -m training.results --manifest my.csv [--va-scale 1,9]   # your own corpus (see training.manifest)

Systems are a registry (:func:`training.experiments.systems.register_system`): a name, a description and a
factory ``factory(experiment, settings) -> model`` where ``model.fit(items, y)``
takes the training :class:`training.protocols.Item` objects (each gives its
clip, group and audio) with their targets, and ``model.predict(items)`` returns
class indices (classification) or an [n, 2] valence/arousal array
(regression).  The handcrafted baselines below are the first entries; neural
recipes register theirs the same way and run under the same folds.

Results are saved per protocol as ``docs/results/protocol_<name>.json`` (every
fold's metrics, pooled confusion matrices, chance levels, settings, versions),
so the page can be regenerated without retraining.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Optional

from .experiments import protocols
from .experiments.runner import add_systems, load_json_results, result_name, run_experiment, run_protocol, versions
from .experiments.systems import SYSTEMS, Settings
from .paths import cache_root
from .reports.results import DOC, IMG_DIR, REPO, classify_table, fold_summary, regress_table, render

JSON_DIR = REPO / "docs" / "results"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m training.results", description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help=f"comma-separated protocols ({', '.join(protocols.PROTOCOLS)})")
    ap.add_argument("--systems", default="rf,mlp,svm,svm_seg,mlp_seg,svm_spknorm,svm_corpusnorm,svm_spknorm_online,"
                                          "fusion,fusion_seg,fusion_spknorm,fusion_spknorm_online,fusion_corpusnorm,"
                                          "fusion_corpusnorm_flat,svm_mix10,svm_spknorm_online_mix10,"
                                          "fusion_spknorm_online_mix10,svm_seg_music,fusion_seg_music",
                    help="comma-separated registered systems")
    ap.add_argument("--add", action="store_true",
                    help="run only --systems and add them to the protocol's existing JSON (same folds and features), "
                         "keeping the systems already there")
    ap.add_argument("--tasks", default=None, help="with --add: only these tasks of the protocol (comma-separated)")
    ap.add_argument("--quick", action="store_true", help="cheap settings; JSON + doc go to the cache unless "
                                                        "--json-dir/--doc are given")
    ap.add_argument("--from-json", action="store_true", help="only re-render the doc and PNGs from the JSON files")
    ap.add_argument("--separator", default=None, help="builtin | spleeter | module:callable (mix -> speech, music)")
    ap.add_argument("--music-pool", default="4q", choices=("4q", "emopia"),
                    help="music of the `mixed` protocol: 4q (sung, default) or emopia (instrumental piano)")
    ap.add_argument("--workers", type=int, default=1, help="processes for feature extraction (1 or 2)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="folds fitted at once in separate processes (1 or 2 here; the results do not change; "
                         "features are computed first, except the extra mixtures of the *_mix10 systems, which "
                         "each process computes for its own fold when they are not cached yet)")
    ap.add_argument("--json-dir", default=None)
    ap.add_argument("--doc", default=None)
    ap.add_argument("--manifest", default=None, help="a generic manifest CSV (training.data.manifest): run it only")
    ap.add_argument("--va-scale", default=None, help="LO,HI of the manifest's valence/arousal columns")
    ap.add_argument("--folds", type=int, default=5, help="folds for --manifest without a split column")
    return ap


def run_manifest(a, settings: Settings, systems: list[str]) -> int:
    """``--manifest``: every system on a generic manifest's folds; tables printed, JSON written."""
    from .data.manifest import ManifestError, load_manifest, parse_va_scale
    try:
        clips = load_manifest(a.manifest, parse_va_scale(a.va_scale))
    except ManifestError as exc:
        print(f"training.results: {exc}", file=sys.stderr)
        return 2
    exps = protocols.protocol_manifest(clips, k=a.folds)
    r = {"protocol": "manifest", "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
         "settings": dict(settings.__dict__), "versions": versions(),
         "systems": {s: SYSTEMS[s].description for s in systems if s != "svm_spknorm"},
         "experiments": [run_experiment(e, [s for s in systems if s != "svm_spknorm"], settings) for e in exps]}
    out = Path(a.json_dir or ".") / f"manifest_{clips[0].corpus}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=1))
    for exp in r["experiments"]:
        print(f"\n### {exp['title']}\n\n{fold_summary(exp)}\n")
        for cond in exp["conditions"]:
            rows = classify_table(exp, cond) if exp["kind"] == "classify" else regress_table(exp, cond)
            print("\n".join(rows) + "\n")
    print(f"wrote {out}")
    return 0


def run_protocols(ap, a, settings: Settings, systems: list[str], json_dir: Path, argv) -> int:
    """Run the protocols of ``--only`` (all by default); save, or with ``--add`` merge, their JSON."""
    names = a.only.split(",") if a.only else list(protocols.PROTOCOLS)
    for n in names:
        if n not in protocols.PROTOCOLS:
            ap.error(f"unknown protocol {n!r}; known: {', '.join(protocols.PROTOCOLS)}")
    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()] if a.tasks else None
    if tasks and not a.add:
        ap.error("--tasks needs --add (a protocol's JSON must keep all of its tasks)")
    for n in names if tasks else ():
        saved = json_dir / f"protocol_{result_name(n, a.music_pool)}.json"
        if not saved.exists():
            ap.error(f"--tasks adds to saved results, and {saved} does not exist: run the whole protocol first")
    separator = protocols.separator_from_name(a.separator) if a.separator else None
    for n in names:
        print(f"protocol {n} ...", flush=True)
        try:
            r = run_protocol(n, systems, settings, separator=separator if n == "mixed" else None, tasks=tasks)
        except ValueError as exc:
            print(f"training.results: {exc}", file=sys.stderr)
            return 2
        out = json_dir / f"protocol_{r['protocol']}.json"
        minutes = r["seconds"] / 60
        if a.add and out.exists():
            cmd = " ".join(["python -m training.results", *(sys.argv[1:] if argv is None else argv)])
            try:
                r = add_systems(json.loads(out.read_text()), r, cmd)
            except ValueError as exc:
                print(f"training.results: {exc}", file=sys.stderr)
                return 2
        out.write_text(json.dumps(r, indent=1))
        print(f"protocol {r['protocol']}: {minutes:.1f} min -> {out}", flush=True)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(max(1, a.workers))
    except ImportError:
        pass
    settings = Settings.quick_settings() if a.quick else Settings()
    settings.workers = a.workers
    settings.jobs = max(1, a.jobs)
    settings.music_pool = a.music_pool
    systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s!r}; registered: {', '.join(SYSTEMS)}")
    if a.manifest:
        return run_manifest(a, settings, systems)

    default_dir = cache_root() / "results-quick" if a.quick else None
    json_dir = Path(a.json_dir) if a.json_dir else (default_dir / "results" if a.quick else JSON_DIR)
    doc = Path(a.doc) if a.doc else (default_dir / "RESULTS.md" if a.quick else DOC)
    img_dir = IMG_DIR if doc == DOC else doc.parent / "img"
    json_dir.mkdir(parents=True, exist_ok=True)
    if not a.from_json:
        rc = run_protocols(ap, a, settings, systems, json_dir, argv)
        if rc:
            return rc
    results = load_json_results(json_dir)
    if not results:
        print(f"training.results: no protocol_*.json in {json_dir}", file=sys.stderr)
        return 1
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(render(results, img_dir=img_dir, doc_path=doc))
    print(f"wrote {doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
