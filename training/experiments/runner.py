"""The runner: every registered system fitted on every fold of a protocol's experiments, with
metrics per fold and test condition, pooled confusions and chance levels; merging a later run's
systems into saved results.  Results are saved per protocol as ``docs/results/protocol_<name>.json``
(every fold's metrics, pooled confusion matrices, chance levels, settings, versions), so the page
(:mod:`training.reports.results`) can be regenerated without retraining."""

from __future__ import annotations

import datetime as _dt
import json
import platform
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..data import handcrafted
from .. import metrics
from . import protocols
from .protocols import Experiment
from .systems import SYSTEMS, Settings, SystemSpec, merge_needs, prepare_features

# --------------------------------------------------------------------------- running

def _aggregate(per_fold: list[dict]) -> dict:
    """mean and std over folds of every scalar metric."""
    keys = [k for k, v in per_fold[0].items() if isinstance(v, (int, float)) and k != "n"]
    return {k: [float(np.mean([m[k] for m in per_fold if k in m])), float(np.std([m[k] for m in per_fold if k in m]))]
            for k in keys}


def _metrics(exp: Experiment, y, p) -> dict:
    if exp.kind == "classify":
        return metrics.classification_metrics(y, p, exp.classes)
    return metrics.regression_metrics(y, p)


def _chance(exp: Experiment, ytr, yte) -> dict:
    if exp.kind == "classify":
        return metrics.chance_classification(ytr, yte, exp.classes)
    return metrics.chance_regression(ytr, yte)


def _fit_fold(spec: SystemSpec, exp: Experiment, settings: Settings, i: int) -> tuple[Optional[dict], dict]:
    """Fit ``spec``'s system on fold ``i``: its chosen settings and its predictions per test condition."""
    f = exp.folds[i]
    model = spec.factory(exp, settings)
    model.fit(f.train, exp.targets(f.train))
    return getattr(model, "best_params", None), {c: np.asarray(model.predict(v)) for c, v in f.test.items()}


def _serve(fn: Callable[[int], object], indices: list[int], queue) -> None:
    """A forked worker: ``fn(i)`` for each index, every result (or the error) put on ``queue``."""
    import traceback

    for i in indices:
        try:
            queue.put((i, True, fn(i)))
        except BaseException:  # noqa: BLE001  (handed to the parent, which raises it)
            queue.put((i, False, traceback.format_exc()))
            return


def fork_map(fn: Callable[[int], object], n: int, jobs: int) -> list:
    """``[fn(0), ..., fn(n - 1)]`` computed by ``jobs`` forked processes (each with one BLAS thread).
    ``fn`` and what it refers to reach the children by the fork itself, not pickled; the results
    come back pickled, in index order.  A child's exception is raised here with its traceback."""
    import multiprocessing as mp

    from threadpoolctl import threadpool_limits

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    jobs = max(1, min(jobs, n))
    with threadpool_limits(1):
        procs = [ctx.Process(target=_serve, args=(fn, list(range(j, n, jobs)), queue), daemon=True)
                 for j in range(jobs)]
        for pr in procs:
            pr.start()
    out: dict[int, object] = {}
    try:
        while len(out) < n:
            i, ok, value = queue.get()
            if not ok:
                raise RuntimeError(f"fold {i} failed in a worker process:\n{value}")
            out[i] = value
    finally:
        for pr in procs:
            pr.join(timeout=5 if len(out) == n else 0)
            if pr.is_alive():
                pr.terminate()
    return [out[i] for i in range(n)]


def _fit_folds(spec: SystemSpec, exp: Experiment, settings: Settings) -> list[tuple[Optional[dict], dict]]:
    """Every fold fitted, in order; ``settings.jobs`` > 1 fits that many folds at once in forked processes
    (each with one BLAS thread; every fit is seeded, so the results are the same as one after another)."""
    fit = lambda i: _fit_fold(spec, exp, settings, i)  # noqa: E731
    if settings.jobs > 1 and len(exp.folds) > 1:
        return fork_map(fit, len(exp.folds), settings.jobs)
    return [fit(i) for i in range(len(exp.folds))]


def run_experiment(exp: Experiment, systems: Sequence[str], settings: Settings, log=print) -> dict:
    """Fit every applicable system on every fold; metrics per fold and test condition, pooled confusions."""
    t0 = time.time()
    say = log or (lambda *_: None)
    all_items = [it for f in exp.folds for it in f.train + [x for v in f.test.values() for x in v]]
    # the descriptors the systems read (a segment model: its segments'), computed before any fold is fitted
    models = [SYSTEMS[n].factory(exp, settings) for n in systems if SYSTEMS[n].applies(exp)]
    needs = merge_needs(m.feature_needs(all_items) if hasattr(m, "feature_needs") else {"handcrafted": all_items}
                         for m in models)
    for kind, items in needs.items():
        prepare_features(items, settings.workers, log=log, kinds=(kind,))
    conds = list(exp.folds[0].test)
    res = {"protocol": exp.protocol, "task": exp.task, "title": exp.title, "kind": exp.kind,
           "classes": list(exp.classes), "notes": exp.notes, "conditions": conds,
           "folds": [{"name": f.name, "n_train": len(f.train), "n_test": {c: len(v) for c, v in f.test.items()},
                      "train_groups": len({it.group for it in f.train}),
                      "test_groups": {c: len({it.group for it in v}) for c, v in f.test.items()}}
                     for f in exp.folds],
           "systems": {}, "chance": {}}
    chance_folds: dict[str, list[dict]] = {c: [] for c in conds}
    for f in exp.folds:
        ytr = exp.targets(f.train)
        for c in conds:
            chance_folds[c].append(_chance(exp, ytr, exp.targets(f.test[c])))
    for c in conds:
        res["chance"][c] = {kind: _aggregate([cf[kind] for cf in chance_folds[c]]) for kind in chance_folds[c][0]}
    for name in systems:
        spec = SYSTEMS[name]
        if not spec.applies(exp):
            continue
        per = {c: [] for c in conds}
        pooled_y = {c: [] for c in conds}
        pooled_p = {c: [] for c in conds}
        params = []
        ts = time.time()
        for f, (best, preds) in zip(exp.folds, _fit_folds(spec, exp, settings)):
            params.append(best)
            for c in conds:
                y = exp.targets(f.test[c])
                p = preds[c]
                m = _metrics(exp, y, p)
                per[c].append(m)
                pooled_y[c].append(y)
                pooled_p[c].append(p)
        sysres = {"description": spec.description, "seconds": round(time.time() - ts, 1),
                  "per_fold": {c: [{k: v for k, v in m.items() if k != "confusion"} for m in per[c]] for c in conds},
                  "mean_std": {c: _aggregate(per[c]) for c in conds},
                  "pooled": {c: _metrics(exp, np.concatenate(pooled_y[c]), np.concatenate(pooled_p[c]))
                             for c in conds}}
        if any(params):
            sysres["chosen_params"] = params
        res["systems"][name] = sysres
        say(f"  {exp.protocol}/{exp.task} {name}: " + ", ".join(
            f"{c} {_headline(exp.kind, sysres['mean_std'][c])}" for c in conds) + f" ({sysres['seconds']} s)")
    res["seconds"] = round(time.time() - t0, 1)
    return res


def _headline(kind: str, ms: dict) -> str:
    if kind == "classify":
        return f"acc {100 * ms['accuracy'][0]:.1f} % F1 {ms['macro_f1'][0]:.3f}"
    return f"CCC V {ms['valence_ccc'][0]:.3f} A {ms['arousal_ccc'][0]:.3f}"


def versions() -> dict:
    import scipy
    import sklearn

    return {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__, "handcrafted_features": handcrafted.HANDCRAFTED_VERSION,
            "n_features": len(handcrafted.feature_names()),
            "music_descriptors": handcrafted.KINDS["music_descriptors"].version,
            "n_music_descriptors": handcrafted.n_features(("music_descriptors",))}


def result_name(protocol: str, music_pool: str = "4q") -> str:
    """The name of a protocol's results (``protocol_<name>.json``, its section): the grid over another
    music pool than 4Q has its own, ``mixed_<pool>``."""
    return f"mixed_{music_pool}" if protocol == "mixed" and music_pool != "4q" else protocol


def run_protocol(name: str, systems: Sequence[str], settings: Settings, separator=None, log=print,
                 tasks: Optional[Sequence[str]] = None) -> dict:
    """Every experiment of a protocol (or only those whose task is in ``tasks``) -> one JSON-able dict."""
    t0 = time.time()
    if name == "mixed":
        exps = protocols.protocol_mixed(separator=separator, n_mix=settings.n_mix, music_corpus=settings.music_pool)
    else:
        exps = protocols.PROTOCOLS[name]()
    if tasks:
        unknown = set(tasks) - {e.task for e in exps}
        if unknown:
            raise ValueError(f"{name}: no task {', '.join(sorted(unknown))}; tasks: {', '.join(e.task for e in exps)}")
        exps = [e for e in exps if e.task in tasks]
    name = result_name(name, settings.music_pool)
    out = {"protocol": name, "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "settings": {k: v for k, v in settings.__dict__.items()}, "versions": versions(),
           "systems": {s: SYSTEMS[s].description for s in systems},
           "separator": None if separator is None else separator.id,
           "experiments": [run_experiment(e, systems, settings, log) for e in exps]}
    out["seconds"] = round(time.time() - t0, 1)
    protocols.release_audio()
    return out



def add_systems(old: dict, new: dict, command: str) -> dict:
    """``new``'s systems merged into ``old`` (the same protocol, folds and features), recorded in
    ``added_runs``; a system in both is replaced by ``new``'s run."""
    if old["protocol"] != new["protocol"] or old.get("separator") != new.get("separator"):
        raise ValueError(f"cannot add a {new['protocol']} run (separator {new.get('separator')}) to "
                         f"{old['protocol']} (separator {old.get('separator')})")
    if old["versions"].get("handcrafted_features") != new["versions"].get("handcrafted_features"):
        raise ValueError("cannot add systems run on another version of the handcrafted features")
    reads_music = any("music_descriptors" in SYSTEMS[s].kinds for s in new["systems"] if s in SYSTEMS)
    if reads_music and old["versions"].get("music_descriptors", new["versions"].get("music_descriptors")) != \
            new["versions"].get("music_descriptors"):
        raise ValueError("cannot add systems run on another version of the music descriptors")
    by_task = {e["task"]: e for e in old["experiments"]}
    for e in new["experiments"]:
        o = by_task.get(e["task"])
        if o is None:
            raise ValueError(f"{new['protocol']}: task {e['task']!r} is not in the existing results")
        if [f["n_test"] for f in o["folds"]] != [f["n_test"] for f in e["folds"]]:
            raise ValueError(f"{new['protocol']}/{e['task']}: the folds differ from the existing results'")
        o["systems"].update(e["systems"])
    added = [s for e in new["experiments"] for s in e["systems"]]
    if not added:
        raise ValueError(f"{new['protocol']}: none of the systems applies to "
                         f"{', '.join(e['task'] for e in new['experiments'])}; nothing to add")
    old["systems"].update({s: d for s, d in new["systems"].items() if s in added})
    for k in ("music_descriptors", "n_music_descriptors"):  # results older than the music descriptors lack them
        if k in new["versions"]:
            old["versions"].setdefault(k, new["versions"][k])
    run = {"systems": sorted(set(added), key=added.index), "tasks": [e["task"] for e in new["experiments"]],
           "generated": new["generated"], "seconds": new["seconds"],
           "command": command + " (same folds and features; merged)"}
    was, now = json.loads(json.dumps(old.get("settings", {}))), json.loads(json.dumps(new.get("settings", {})))
    changed = {k: v for k, v in now.items() if k in was and was[k] != v and k not in ("workers", "jobs")}
    if changed:  # the added systems ran with other knobs than the page's header says
        run["settings"] = changed
    old.setdefault("added_runs", []).append(run)
    return old


def load_json_results(json_dir: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(json_dir.glob("protocol_*.json")):
        r = json.loads(p.read_text())
        out[r["protocol"]] = r
    return out
