"""docs/RESULTS.md from the saved results (``docs/results/protocol_*.json``): tables and figures
in code, the prose in ``results_template.md`` beside this module."""


from __future__ import annotations

import os
import re
import string
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..data import handcrafted
from ..experiments.systems import SYSTEMS, systems_adapting

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "RESULTS.md"
IMG_DIR = REPO / "docs" / "img" / "results"
TEMPLATE = Path(__file__).with_name("results_template.md")

# --------------------------------------------------------------------------- the seeds' numbers

#: (protocol, task) -> rows quoted from the seeds: (source, system, {metric: value}, note)
SEED_NUMBERS: dict[tuple[str, str], list[tuple[str, str, dict, str]]] = {
    ("ravdess", "8class"): [
        ("seed 001 Table 4.1", "D-NN, openSMILE emobase2010", {"accuracy": 0.61}, "speaker-independent 6-fold"),
        ("seed 001 Table 4.1", "MLPC, emobase2010", {"accuracy": 0.603}, ""),
        ("seed 001 Table 4.1", "SVC (sklearn defaults), emobase2010", {"accuracy": 0.574}, ""),
        ("seed 001 Table 4.1", "RFC, emobase2010", {"accuracy": 0.551}, ""),
        ("seed 001 Table 4.1", "Dummy_strat / Dummy_mf", {"accuracy": 0.13}, "13 % / 13.3 %"),
    ],
    ("music4q", "4quadrant"): [
        ("seed 003 Table 2", "SVM baseline (Panda et al. features)", {"macro_f1": 0.7559},
         "Original-4QAED, 900 clips, 10-fold x 10-repetition stratified CV, not artist-grouped"),
        ("seed 003 Table 2", "DL baseline (CNN, mel-spectrogram)", {"macro_f1": 0.6062}, "same protocol"),
        ("seed 003 Table 3", "DNN, top-100 / all 1714 handcrafted features", {"macro_f1": 0.7248},
         "72.5 % / 69.2 %, Original-4QAED, same protocol"),
        ("seed 003 Table 3", "Hybrid Augmented (DNN + CNN)", {"macro_f1": 0.6804},
         "Original-4QAED; its 80.2 % is on New-4QAED B (1372 clips), a different, larger set"),
        ("seed 004 Table 1", "MLP, IS13 ComParE features", {"accuracy": 0.63, "macro_f1": 0.63},
         "4Q, 720 clips, within-dataset"),
        ("seed 004 Table 1", "SincNet (raw waveform)", {"accuracy": 0.57, "macro_f1": 0.52}, "same"),
    ],
    ("emopia", "4quadrant"): [
        ("seed 000 Table 5.1", "MER2MER DCNN / ADCRNN (3D log-mel)", {"accuracy": 0.431},
         "43.1 % / 49.2 %, on seed 000's own instrumental test set (325 clips: DEAM/Soundtracks/EMOPIA "
         "segments), not EMOPIA's official split"),
    ],
    ("transfer", "4quadrant"): [
        ("seed 000 Table 5.1", "SER2MER DCNN (3D log-mel, MSP-Podcast -> instrumental music)",
         {"accuracy": 0.3317}, "+- 1.7 %, test set of 325 instrumental clips"),
        ("seed 000 Table 5.1", "SER2MER ADCRNN", {"accuracy": 0.307}, ""),
        ("seed 000 Table 5.1", "random baseline (training distribution)", {"accuracy": 0.24}, ""),
    ],
}

#: seed 001 Table 4.2 (speech, 8 RAVDESS emotions): (train, test) -> (RFC, D-NN, Dummy-Strat)
SEED001_GRID = {
    ("clean", "clean"): ("A", 0.551, 0.61, 0.13),
    ("clean", "mixed"): ("B", 0.148, 0.14, 0.13),
    ("clean", "separated"): ("C", 0.156, 0.171, 0.128),
    ("mixed", "mixed"): ("D", 0.301, 0.29, 0.128),
    ("mixed", "separated"): ("E", 0.273, 0.214, 0.134),
    ("separated", "separated"): ("F", 0.414, 0.431, 0.131),
}


# --------------------------------------------------------------------------- rendering

def _pct(ms, key, std=True) -> str:
    if key not in ms:
        return "-"
    m, s = ms[key]
    return f"{100 * m:.1f} ± {100 * s:.1f}" if std else f"{100 * m:.1f}"


def _num(ms, key, std=True) -> str:
    if key not in ms:
        return "-"
    m, s = ms[key]
    return f"{m:.3f} ± {s:.3f}" if std else f"{m:.3f}"


SYS_LABEL = {"rf": "RF (seed 001 config)", "mlp": "MLP (seed 001 config)", "svm": "SVM (seed 003 style, tuned)",
             "svm_spknorm": "SVM + speaker normalisation", "svm_seg": "SVM on 6 segments per clip",
             "mlp_seg": "MLP (ReLU, L2 tuned) on 6 segments per clip",
             "svm_corpusnorm": "SVM + per-corpus normalisation",
             "svm_spknorm_online": "SVM + causal speaker normalisation (streaming)",
             "fusion": "Fusion SVM + MLP + RF", "fusion_seg": "Fusion SVM + MLP + RF on 6 segments per clip",
             "fusion_spknorm_online": "Fusion + causal speaker normalisation (streaming)",
             "fusion_spknorm": "Fusion + speaker normalisation",
             "fusion_corpusnorm": "Fusion + per-corpus normalisation",
             "fusion_corpusnorm_flat": "Fusion + per-corpus normalisation, uniform class prior",
             "svm_mix10": "SVM, trained on twice the mixtures",
             "svm_spknorm_online_mix10": "SVM + causal speaker normalisation, trained on twice the mixtures",
             "fusion_spknorm_online_mix10": "Fusion + causal speaker normalisation, trained on twice the mixtures",
             "svm_seg_music": "SVM on 6 segments per clip, with the music descriptors",
             "fusion_seg_music": "Fusion SVM + MLP + RF on 6 segments per clip, with the music descriptors"}


def classify_table(exp: dict, cond: str, seeds: Sequence = ()) -> list[str]:
    nf = len(exp["folds"])
    std = nf > 1
    quad = "quadrant_accuracy" in next(iter(exp["systems"].values()))["mean_std"][cond] if exp["systems"] else False
    is4 = set(exp["classes"]) <= {"Q1", "Q2", "Q3", "Q4"}  # quadrant classes: no mapped column
    head = ["system", "accuracy %", "macro-F1", "UAR %"]
    if quad:
        head += ([] if is4 else ["4Q acc % (mapped)"]) + ["arousal half %", "valence half %"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(label, ms, std_=std):
        r = [label, _pct(ms, "accuracy", std_), _num(ms, "macro_f1", std_), _pct(ms, "uar", std_)]
        if quad:
            r += ([] if is4 else [_pct(ms, "quadrant_accuracy", std_)]) + \
                 [_pct(ms, "arousal_half_accuracy", std_), _pct(ms, "valence_half_accuracy", std_)]
        return "| " + " | ".join(r) + " |"

    for name, s in exp["systems"].items():
        rows.append(row(f"**{SYS_LABEL.get(name, name)}**", s["mean_std"][cond]))
    ch = exp["chance"][cond]
    rows.append(row("chance: majority class of the training fold", ch["majority"]))
    rows.append(row("chance: uniform guessing (expected)", ch["uniform"], False))
    rows.append(row("chance: guessing with the training distribution (seed 001's Dummy_strat)",
                    ch["stratified"], False))
    for src, system, vals, note in seeds:
        cells = [f"{src}: {system}" + (f" ({note})" if note else "")]
        cells.append(f"{100 * vals['accuracy']:.1f}" if "accuracy" in vals else "-")
        cells.append(f"{vals['macro_f1']:.3f}" if "macro_f1" in vals else "-")
        cells.append("-")
        if quad:
            cells += ([] if is4 else ["-"]) + ["-", "-"]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def regress_table(exp: dict, cond: str) -> list[str]:
    std = len(exp["folds"]) > 1
    head = ["system", "valence CCC", "arousal CCC", "valence RMSE", "arousal RMSE", "valence R2", "arousal R2",
            "4Q acc % (signs)", "arousal half %", "valence half %"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(label, ms, std_=std):
        return "| " + " | ".join([label] + [_num(ms, k, std_) for k in (
            "valence_ccc", "arousal_ccc", "valence_rmse", "arousal_rmse", "valence_r2", "arousal_r2")] +
            [_pct(ms, k, std_) for k in ("quadrant_accuracy", "arousal_half_accuracy",
                                          "valence_half_accuracy")]) + " |"

    for name, s in exp["systems"].items():
        rows.append(row(f"**{SYS_LABEL.get(name, name)}**", s["mean_std"][cond]))
    rows.append(row("chance: predict the training mean", exp["chance"][cond]["train_mean"]))
    return rows


def confusion_png(exp: dict, cond: str, path: Path) -> None:
    """Row-normalised pooled confusion matrices of every system, side by side, counts annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(exp["systems"])
    labels = exp["classes"] if exp["kind"] == "classify" else ["Q1", "Q2", "Q3", "Q4"]
    k = len(labels)
    ncol = min(3, len(names))
    nrow = -(-len(names) // ncol)
    side = 1.3 + 0.38 * k
    fig, axes = plt.subplots(nrow, ncol, figsize=(side * ncol, (side + 0.6) * nrow + 0.3), squeeze=False)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names):
        cm = np.array(exp["systems"][name]["pooled"][cond]["confusion"], float)
        rn = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(rn, vmin=0, vmax=1, cmap="Blues")
        for i in range(k):
            for j in range(k):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7 if k > 4 else 9,
                        color="white" if rn[i, j] > 0.6 else "black")
        acc = exp["systems"][name]["pooled"][cond]["accuracy"] if exp["kind"] == "classify" else \
            exp["systems"][name]["pooled"][cond].get("quadrant_accuracy", 0)
        ax.set_title(f"{SYS_LABEL.get(name, name)}\npooled acc {100 * acc:.1f} %", fontsize=8)
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xticklabels(labels, rotation=60 if k > 4 else 0, fontsize=7)
        ax.set_yticklabels(labels, fontsize=7)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    fig.suptitle(f"{exp['title']} -- test: {cond}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _img(protocol: str, exp: dict, cond: str, img_dir: Path, doc_dir: Path, lines: list[str]) -> None:
    if not exp["systems"]:
        return
    p = img_dir / f"{protocol}_{exp['task']}_{cond}.png"
    confusion_png(exp, cond, p)
    lines += [f"![confusion matrices, {exp['title']}, test {cond}]({os.path.relpath(p, doc_dir)})", ""]


def fold_summary(exp: dict) -> str:
    f = exp["folds"]
    conds = exp["conditions"]
    tests = ", ".join(f"{c} {sum(x['n_test'][c] for x in f)}" for c in conds)
    return (f"{len(f)} fold(s); training items per fold {min(x['n_train'] for x in f)}-"
            f"{max(x['n_train'] for x in f)} ({min(x['train_groups'] for x in f)}-"
            f"{max(x['train_groups'] for x in f)} groups); test items over all folds: {tests}.")


def template(path: Path = TEMPLATE) -> dict[str, str]:
    """The prose sections of ``results_template.md``: a line ``<!-- name -->`` starts each."""
    sections: dict[str, list[str]] = {}
    cur = None
    for line in path.read_text().splitlines():
        m = re.fullmatch(r"<!-- ([\w ]+) -->", line)
        if m:
            cur = sections.setdefault(m.group(1), [])
        elif cur is not None:
            cur.append(line)
    return {k: "\n".join(v).strip("\n") for k, v in sections.items()}


def prose(T: dict[str, str], name: str, **values) -> str:
    """Section ``name`` of the template with its ``$values`` filled in."""
    return string.Template(T[name]).substitute(values)


def _versions_line(results: dict[str, dict], T: dict[str, str]) -> list[str]:
    any_r = next(iter(results.values()), None)
    if not any_r:
        return []
    v = any_r["versions"]
    mv = next((r["versions"] for r in results.values() if "music_descriptors" in r["versions"]), None)
    music = prose(T, "versions_music", **mv) if mv else ""
    return [prose(T, "versions", music_versions=music, scikit_learn=v["scikit-learn"],
                  **{k: x for k, x in v.items() if k != "scikit-learn"}), ""]


def _run_line(r: dict) -> str:
    """When the protocol ran (and the systems added later)."""
    return (f"_Run: {r['generated']}, {r['seconds'] / 60:.1f} min"
            + (", QUICK settings (not the full protocol)" if r["settings"].get("quick") else "")
            + "".join(f"; `{', '.join(a['systems'])}` added by a later run on the same folds and features "
                      + (f"for {', '.join(a['tasks'])} " if len(a.get("tasks", [])) < len(r["experiments"]) else "")
                      + f"({a['generated']}, {a['seconds'] / 60:.1f} min"
                      + "".join(f", {k} {v}" for k, v in a.get("settings", {}).items()) + ")"
                      for a in r.get("added_runs", []))
            + "._")


def _experiment_lines(name: str, exp: dict, img_dir: Path, doc_dir: Path) -> list[str]:
    """One experiment of a protocol: fold summary, a table per test condition, notes, chosen parameters."""
    L = [f"### {exp['title']}", "", fold_summary(exp), ""]
    seeds = SEED_NUMBERS.get((name, exp["task"]), [])
    for cond in exp["conditions"]:
        if len(exp["conditions"]) > 1:
            L += [f"Test: **{cond}**", ""]
        if exp["kind"] == "classify":
            L += classify_table(exp, cond, seeds if cond == exp["conditions"][0] else ()) + [""]
        else:
            L += regress_table(exp, cond) + [""]
        _img(name, exp, cond, img_dir, doc_dir, L)
    for n in exp.get("notes", []):
        L += [n, ""]
    params = {s: v.get("chosen_params") for s, v in exp["systems"].items() if v.get("chosen_params")}
    if params:
        L += ["Parameters chosen by the inner CV, per fold: " + "; ".join(
            f"`{s}` " + ", ".join(_short_params(p, s) for p in ps) for s, ps in params.items()), ""]
    return L


def render(results: dict[str, dict], img_dir: Path = IMG_DIR, doc_path: Path = DOC,
           template_path: Path = TEMPLATE) -> str:
    """The whole RESULTS.md from the per-protocol result dicts and the template's prose."""
    T = template(template_path)
    doc_dir = doc_path.parent
    L = [T["header"], ""] + _versions_line(results, T) + ["## Systems", ""]
    order = ["ravdess", "mixed", "mixed_emopia", "music4q", "emopia", "transfer", "crosscorpus", "vgmidi"]
    names = [n for n in order if n in results] + [n for n in results if n not in order]
    seen = {}
    for n in names:  # a later protocol's description of a system wins
        seen.update(results[n]["systems"])
    L += [f"- **{SYS_LABEL.get(n, n)}** (`{n}`): {d}" for n, d in seen.items()]
    L += ["", T["systems"], ""]
    L += summary_lines(results, T)
    for name in names:
        if name.startswith("_"):
            continue
        r = results[name]
        L += [T.get(f"protocol {name}", f"## {name}\n\n"), "", _run_line(r), ""]
        if name.startswith("mixed"):
            L += mixed_section(r, img_dir, doc_dir, T)
            continue
        for exp in r["experiments"]:
            L += _experiment_lines(name, exp, img_dir, doc_dir)
    L += [T["limits"], "", T["manifest"], "", ""]
    return "\n".join(L) + "\n"


def _short_params(p: Optional[dict], system: str = "") -> str:
    if not p:
        return "-"
    d = handcrafted.n_features(SYSTEMS[system].kinds if system in SYSTEMS else ("handcrafted",))
    out = []
    for k, v in p.items():
        if k.endswith("gamma"):
            out.append(f"g={v * d:.2g}/d")
        elif k.endswith("alpha"):
            out.append(f"alpha={v:g}")
        else:
            out.append(f"C={v:g}")
    return "(" + " ".join(out) + ")"


def mixed_section(r: dict, img_dir: Path, doc_dir: Path, T: dict[str, str]) -> list[str]:
    exps = {e["task"]: e for e in r["experiments"]}
    name = r["protocol"]
    systems = []  # every system run on any speech experiment (one added later may have run on some only)
    for task, e in exps.items():
        systems += [s for s in e["systems"] if task.startswith("speech_") and s not in systems]
    L = ["### Speech: seed 001 Table 4.2, 8 RAVDESS emotions, accuracy %", "",
         "| | train -> test | " + " | ".join(SYS_LABEL.get(s, s) for s in systems) +
         " | chance (Dummy_strat) | seed 001 RFC | seed 001 D-NN | seed 001 Dummy-Strat |",
         "|" + "---|" * (len(systems) + 6)]
    sep = r.get("separator")
    for (tr, te), (letter, rfc, dnn, dummy) in SEED001_GRID.items():
        e = exps.get(f"speech_train_{tr}")
        if e is None or te not in e["conditions"]:
            cells = ["n/a (no separator given: `--separator`)"] * len(systems) + ["-"]
        else:
            cells = [_pct(e["systems"][s]["mean_std"][te], "accuracy") if s in e["systems"] else "-"
                     for s in systems]
            cells.append(_pct(e["chance"][te]["stratified"], "accuracy", False))
        L.append(f"| {letter} | {tr} -> {te} | " + " | ".join(cells) +
                 f" | {100 * rfc:.1f} | {100 * dnn:.1f} | {100 * dummy:.1f} |")
    sep_text = (prose(T, "mixed_separator_given", separator=sep) if sep else T["mixed_separator_missing"])
    L += ["", prose(T, "mixed_seed_rows", separator=sep_text), ""]
    for task, e in exps.items():
        if not task.startswith("speech_"):
            continue
        L += [f"#### {e['title']}", "", fold_summary(e), ""]
        for cond in e["conditions"]:
            L += [f"Test: **{cond}**", ""] + classify_table(e, cond) + [""]
            if cond == task.split("_")[-1] or (task.endswith("clean") and cond == "mixed"):
                _img(name, e, cond, img_dir, doc_dir, L)
    pool = {"4q": "4Q", "emopia": "EMOPIA"}.get(r["settings"].get("music_pool", "4q"), r["settings"].get("music_pool"))
    L += [prose(T, "mixed_music_side", pool=pool), "",
          "| train -> test | " + " | ".join(SYS_LABEL.get(s, s) for s in systems if s in
                                             exps.get("music_train_clean", {}).get("systems", {})) +
          " | chance (majority) |", "|" + "---|" * 2 + "---|" * len([
              s for s in systems if s in exps.get("music_train_clean", {}).get("systems", {})])]
    for task, e in exps.items():
        if not task.startswith("music_"):
            continue
        tr = task.split("_")[-1]
        for cond in e["conditions"]:
            cells = [f"{_pct(e['systems'][s]['mean_std'][cond], 'accuracy')} (F1 "
                     f"{_num(e['systems'][s]['mean_std'][cond], 'macro_f1', False)})" for s in e["systems"]]
            L.append(f"| {tr} -> {cond} | " + " | ".join(cells) + " | "
                     + _pct(e["chance"][cond]["majority"], "accuracy") + " |")
    L.append("")
    for task, e in exps.items():
        if task.startswith("music_"):
            tr = task.split("_")[-1]
            if tr in e["conditions"]:
                _img(name, e, tr, img_dir, doc_dir, L)
    return L


def best(exp, cond, key, excl=(), only=None):
    c = [(v["mean_std"][cond][key][0], v["mean_std"][cond][key][1], s, len(exp["folds"]))
         for s, v in exp["systems"].items()
         if s not in excl and (only is None or s in only) and key in v["mean_std"][cond]]
    return max(c) if c else None


def fmt(b, pct=True):
    if b is None:
        return "-"
    if b[3] == 1:  # one split: no spread over folds
        return (f"{100 * b[0]:.1f} %" if pct else f"{b[0]:.3f}") + f" ({b[2]})"
    return (f"{100 * b[0]:.1f} ± {100 * b[1]:.1f} %" if pct else f"{b[0]:.3f} ± {b[1]:.3f}") + f" ({b[2]})"


def met(b, goal):
    return "-" if b is None else ("**met**" if b[0] >= goal else "**not met**")


def get(results, p, task):
    for e in results.get(p, {}).get("experiments", []):
        if e["task"] == task:
            return e
    return None


def shared(e, w):  # the unadapted systems run on both experiments
    return tuple(n for n in systems_adapting("") if n in e["systems"] and n in w["systems"])


def maj(e, cond):
    return f"{100 * e['chance'][cond]['majority']['accuracy'][0]:.1f} % majority"


def by_adaptation(e, cond, goal, extra=""):
    """Cells and target verdicts of a speech experiment: its best system with speaker normalisation over
    all of a speaker's clips, with causal (streaming) normalisation, and without any."""
    cells, targets = [], []
    online, plain = systems_adapting("online"), systems_adapting("")
    for label, short, b in (("speaker normalisation over all of a speaker's clips", "with it",
                             best(e, cond, "accuracy", only=systems_adapting("group"))),
                            ("causal (streaming) speaker normalisation", "causal", best(e, cond, "accuracy",
                                                                                        only=online)),
                            ("without", "without", best(e, cond, "accuracy", only=plain))):
        if b:
            cells.append(f"{label} {fmt(b)}")
            targets.append(f"{met(b, goal)} {short}")
    return "; ".join(cells) + extra, ", ".join(targets)


def _speech_rows(results: dict) -> list[str]:
    """Summary rows of the speech protocols: RAVDESS and seed 001's grids."""
    L = []
    for task, what, goal, seed in (("8class", "8 emotions", 0.65, "seed 001 D-NN 61 %, SVC 57.4 %, RFC 55.1 %"),
                                   ("4quadrant", "4 quadrants (no neutral)", 0.70, "-")):
        e = get(results, "ravdess", task)
        if not e:
            continue
        uni = 12.5 if task == "8class" else 25
        cells, targets = by_adaptation(e, "clean", goal)
        L.append(f"| RAVDESS {what}, speaker-independent 6-fold, accuracy | {cells} | "
                 f"{maj(e, 'clean')}, {uni} % uniform | {seed} | >= {100 * goal:.0f} %: {targets} |")
    for proto, pool in (("mixed", "sung 4Q music"), ("mixed_emopia", "instrumental EMOPIA piano")):
        if proto not in results:
            continue
        e = get(results, proto, "speech_train_mixed")
        if e:
            cells, targets = by_adaptation(e, "mixed", 0.40)
            L.append(f"| Seed 001 grid ({pool}), mixed -> mixed (8 emotions), accuracy | {cells} | "
                     f"{100 * e['chance']['mixed']['stratified']['accuracy'][0]:.1f} % Dummy_strat | "
                     f"seed 001 RFC 30.1 %, D-NN 29 % | >= 40 %: {targets} |")
        e = get(results, proto, "speech_train_clean")
        if e:
            L.append(f"| Seed 001 grid ({pool}), clean -> mixed, accuracy | {fmt(best(e, 'mixed', 'accuracy'))} | "
                     f"{100 * e['chance']['mixed']['stratified']['accuracy'][0]:.1f} % Dummy_strat | "
                     f"seed 001 RFC 14.8 %, D-NN 14 % | reported |")
        e = get(results, proto, "speech_train_separated")
        cells, targets = (by_adaptation(e, "separated", 0.50, f"; separator `{results[proto].get('separator')}`")
                          if e else ("not run: no separator given", "-"))
        L.append(f"| Seed 001 grid ({pool}), separated -> separated | {cells} | | seed 001 RFC 41.4 %, D-NN 43.1 % | "
                 f">= 50 %: {targets} |")
    return L


def _music_rows(results: dict) -> list[str]:
    """Summary rows of the music protocols and the speech -> music transfer."""
    L = []
    plain = systems_adapting("")
    e = get(results, "music4q", "4quadrant")
    if e:
        b = best(e, "clean", "macro_f1")
        L.append(f"| 4Q music, 10-fold artist-grouped, macro-F1 | {fmt(b, False)} | "
                 f"{e['chance']['clean']['uniform']['macro_f1'][0]:.3f} uniform | seed 003 SVM 0.756 (900 clips, "
                 f"not artist-grouped); seed 004 MLP 0.63 | >= 0.70: {met(b, 0.70)} |")
    e = get(results, "emopia", "4quadrant")
    if e:
        L.append(f"| EMOPIA official test (88 clips), accuracy | {fmt(best(e, 'emopia_test', 'accuracy'))} | "
                 f"{maj(e, 'emopia_test')}, 25 % uniform | (seed 000 MER2MER 43.1-49.2 % on its own test set) | "
                 f"reported |")
    e = get(results, "transfer", "4quadrant")
    if e:
        b = best(e, "emopia_test", "accuracy")
        also = "".join(f"; the same system on {what}: {100 * e['systems'][b[2]]['mean_std'][c]['accuracy'][0]:.1f} %"
                       for c, what in (("emopia_all", "all 1078 EMOPIA clips"), ("4q_all", "all 630 4Q clips"))
                       if b and c in e["systems"][b[2]]["mean_std"])
        if b and b[2] not in plain:
            also += f"; without adaptation {fmt(best(e, 'emopia_test', 'accuracy', only=plain))}"
        L.append(f"| Speech -> music (EMOPIA test), accuracy | {fmt(b)}{also} | {maj(e, 'emopia_test')}, 25 % "
                 f"uniform | seed 000 SER2MER 33.2 % (random 24 %) | vs 33.2 %: "
                 f"{'above' if b and b[0] > 0.332 else 'below'} |")
        L.append(f"| Speech -> music (4Q, all 630), accuracy | {fmt(best(e, '4q_all', 'accuracy'))} | "
                 f"{maj(e, '4q_all')}, 25 % uniform | | |")
    return L


def _crosscorpus_rows(results: dict) -> list[str]:
    """Summary rows of the cross-corpus protocol and the VA regression."""
    L = []
    online, corpus, plain = systems_adapting("online"), systems_adapting("corpus"), systems_adapting("")
    for task, what, key in (("7emotions", "7 shared emotions, accuracy", "accuracy"),
                            ("3quadrants", "quadrants Q1-Q3, UAR", "uar")):
        for src, dst, nm in (("ravdess", "tess", "RAVDESS -> TESS"), ("tess", "ravdess", "TESS -> RAVDESS")):
            e = get(results, "crosscorpus", f"{task}_{src}_to_{dst}")
            if not e:
                continue
            cond, ch = f"{dst}_all", e["chance"][f"{dst}_all"]
            L.append(f"| Cross-corpus speech, {nm}, {what} | without adaptation {fmt(best(e, cond, key, only=plain))}; "
                     f"per-corpus normalisation (batch) {fmt(best(e, cond, key, only=corpus))}; causal "
                     f"speaker normalisation {fmt(best(e, cond, key, only=online))}; within-corpus: "
                     f"none with these classes | {100 * ch['majority'][key][0]:.1f} % majority, "
                     f"{100 * ch['uniform'][key][0]:.1f} % uniform | - | reported |")
    e, w = get(results, "crosscorpus", "4quadrants_4q_to_emopia"), get(results, "emopia", "4quadrant")
    if e:
        L.append(f"| Cross-corpus music, 4Q -> EMOPIA, accuracy | all 1078: without adaptation "
                 f"{fmt(best(e, 'emopia_all', 'accuracy', only=plain))}, per-corpus normalisation "
                 f"{fmt(best(e, 'emopia_all', 'accuracy', only=corpus))}; official test (88): without "
                 f"{fmt(best(e, 'emopia_test', 'accuracy', only=plain))}, per-corpus normalisation "
                 f"{fmt(best(e, 'emopia_test', 'accuracy', only=corpus))}; within-corpus (EMOPIA "
                 f"train+val -> the same 88) "
                 f"{fmt(best(w, 'emopia_test', 'accuracy', only=shared(e, w))) if w else '-'} | "
                 f"{maj(e, 'emopia_all')} (all), 25 % uniform | - | reported |")
    e, w = get(results, "crosscorpus", "4quadrants_emopia_to_4q"), get(results, "music4q", "4quadrant")
    if e:
        L.append(f"| Cross-corpus music, EMOPIA -> 4Q (all 630), macro-F1 | without adaptation "
                 f"{fmt(best(e, '4q_all', 'macro_f1', only=plain), False)}; per-corpus normalisation "
                 f"{fmt(best(e, '4q_all', 'macro_f1', only=corpus), False)}; within-corpus (4Q 10-fold, "
                 f"same systems) {fmt(best(w, 'clean', 'macro_f1', only=shared(e, w)), False) if w else '-'} | "
                 f"{e['chance']['4q_all']['uniform']['macro_f1'][0]:.3f} uniform | - | reported |")
    e = get(results, "vgmidi", "va")
    if e:
        L.append(f"| VGMIDI VA regression, CCC valence / arousal | {fmt(best(e, 'clean', 'valence_ccc'), False)} / "
                 f"{fmt(best(e, 'clean', 'arousal_ccc'), False)} | 0 (training mean) | - | |")
    return L


def summary_lines(results: dict, T: dict[str, str]) -> list[str]:
    """The headline numbers against the targets of issue 3 and the seeds."""
    L = ["## Summary", "",
         "| protocol | our best (system) | chance | seed | target (issue 3) |", "|---|---|---|---|---|"]
    L += _speech_rows(results) + _music_rows(results) + _crosscorpus_rows(results)
    L += ["", prose(T, "summary_note", crosscorpus=T["summary_note_crosscorpus"] if "crosscorpus" in results else ""),
          ""]
    return L
