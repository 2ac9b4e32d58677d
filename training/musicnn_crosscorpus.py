"""Issue 23's cross-corpus probes of the musicnn head: can EMOPIA join its training without losing 4Q?

Every probe trains a head (:func:`training.musicnn_head.fit_head`'s two kinds: the logistic regression
C=0.05, or the 5 seeded MLP members alpha=10) on clip rows (the mean of a clip's 10 s window inputs,
as the shipped head) and scores clips as the streamer does (the mean of the window probabilities):

- 4Q artist-grouped 10-fold (:func:`training.musicnn_head.fourq_folds`), EMOPIA train/val added to
  every fold's training where the probe trains on EMOPIA;
- 4Q test artists and the same clips under RAVDESS speech (trained on the other 4Q artists);
- EMOPIA official test and VGMIDI (never trained on), trained on all of 4Q (+ EMOPIA train/val).

Settings of a probe (a JSON object): ``emopia`` (false: 4Q only; "150": the seeded 150 train/val
clips the shipped recipe uses; "all": the 990 train/val clips), ``corpus_w`` (sample weight per
training corpus, 4Q first), ``balance`` (weight each corpus's clips so the corpora weigh the same),
``prior_n`` (per-stream standardisation, :mod:`streamer.adapt`: each stream's windows z-scored
causally with its running mean and variance, shrunk toward the training streams' average with the
weight of ``prior_n`` windows; a stream is a seeded playlist of 10 clips of one corpus, in training
and in test), ``kind`` ("lr" or "mlp"), ``pool_grid`` (pool the patches of a coarser grid, samples).

    python -m training.musicnn_crosscorpus --json docs/results/musicnn_crosscorpus.json \\
        'lr 4Q only::{"emopia": false}' 'lr 4Q + EMOPIA 150::{"emopia": "150"}' ...
    python -m training.musicnn_crosscorpus --json docs/results/musicnn_crosscorpus.json --table

``gated`` (true): one head per training corpus and a logistic gate over the corpora (``gate_C``), see
:func:`gated`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from streamer import musicnn as M
from streamer.adapt import StreamStandardiser
from streamer.taxonomy import QUADRANTS

from . import musicnn_head as H

PLAYLIST = 10   # clips per simulated stream (5 minutes of 30 s previews)


class Data:
    """The items and their cached patch embeddings."""

    def __init__(self, emopia_all: bool = False, log=print):
        self.q4 = H._items("4q")
        self.q4_test = [it for it in self.q4 if it.clip.split == "test"]
        self.q4_train = [it for it in self.q4 if it.clip.split != "test"]
        self.em150 = H._items("emopia", ["train", "val"], H.EMOPIA_TRAIN_CLIPS)
        self.em_test = H._items("emopia", ["test"])
        self.vg = H._items("vgmidi")
        self.mix = H.mixture_items(self.q4_test)
        self.embs: dict = {}
        for s in (self.q4, self.em150, self.em_test, self.vg, self.mix):
            self.embs.update(H.patch_embeddings(s, log=log))
        self.em_all = None
        if emopia_all:  # the rest of EMOPIA train/val, cached as its own set
            have = {it.key for it in self.em150}
            rest = [it for it in H._items("emopia", ["train", "val"]) if it.key not in have]
            self.embs.update(H.patch_embeddings(rest, log=log))
            self.em_all = self.em150 + rest
        self.folds = H.fourq_folds(10)

    def emopia(self, which) -> list:
        if not which:
            return []
        if which == "all":
            if self.em_all is None:
                raise ValueError("load Data(emopia_all=True) for the probes on all of EMOPIA train/val")
            return self.em_all
        return self.em150

    def windows(self, it) -> np.ndarray:
        return H.clip_windows(self.embs[it.key], H._LENGTHS[it.key])


def _y(items) -> np.ndarray:
    return np.array([H.quadrant_index(it) for it in items])


def playlists(n: int, seed: int, size: int = PLAYLIST) -> list:
    """Indices of ``n`` clips shuffled (seeded) into streams of ``size`` clips."""
    order = np.random.default_rng(seed).permutation(n)
    return [order[i:i + size] for i in range(0, n, size)]


def stream_windows(data: Data, items, prior, prior_n: float, seed: int) -> list:
    """Each item's window inputs standardised causally within its playlist stream (streamer.adapt)."""
    out: list = [None] * len(items)
    for pl in playlists(len(items), seed):
        st = StreamStandardiser(prior[0], prior[1], prior_n)
        for i in pl:
            out[i] = np.stack([st(w) for w in data.windows(items[i])])
    return out


def stream_prior(data: Data, corpora: list, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The training streams' average mean and variance (what a stream is before it is heard)."""
    st = []
    for items in corpora:
        for pl in playlists(len(items), seed):
            W = np.concatenate([data.windows(items[i]) for i in pl])
            st.append((W.mean(0), W.var(0)))
    return np.mean([s[0] for s in st], 0), np.mean([s[1] for s in st], 0)


def _fit(X, y, w, kind: str, seed: int):
    """Clip probabilities function of a head fitted on rows ``X`` (sample weights ``w``; the MLP, which
    takes none, repeats rows in proportion)."""
    if kind == "mlp" and w is not None:
        rep = np.maximum(1, np.round(w / w.min())).astype(int)
        X, y, w = np.repeat(X, rep, 0), np.repeat(y, rep), None
    if w is None:
        head = H.fit_head(X, y, seed=seed, **H.head_settings(SPEC[kind]))
        return head.probs
    from sklearn.linear_model import LogisticRegression

    mu, sd = X.mean(0), X.std(0) + 1e-6
    lr = LogisticRegression(C=0.05, class_weight="balanced", max_iter=3000, random_state=seed)
    lr.fit((X - mu) / sd, y, sample_weight=w)
    return lambda A: lr.predict_proba((np.asarray(A) - mu) / sd)


#: the head candidate of each kind (:func:`training.musicnn_head.head_settings`)
SPEC = {"lr": "C=0.05", "mlp": "mlp alpha=10.0"}


def gated(Xs: list, ys: list, kind: str, seed: int, gate_C: float = 0.1):
    """One head per training corpus and a logistic gate that says which corpus a window is like:
    ``p = sum_c gate_c(x) head_c(x)`` (:class:`training.musicnn_head.GatedHead`, a mixture of experts, the
    gate trained on the clip rows' corpus, classes balanced)."""
    return H.fit_gated(Xs, ys, SPEC[kind], seed, gate_C).probs


#: the probe the shipped head ``engines/models/music_musicnn.onnx`` is (``python -m training.musicnn_crosscorpus
#: --train-gated OUT``): above the default CNN on every held-out set, 0.731 on the 4Q folds
SHIPPED = ("mlp gated 4Q | EMOPIA all, gate C=1", {"emopia": "all", "gated": True, "gate_C": 1.0, "kind": "mlp"})


def clip_rows(data: Data, items) -> np.ndarray:
    """A clip's training row: the mean of its window inputs (as :func:`run` fits)."""
    return np.stack([data.windows(it).mean(0) for it in items])


def run(data: Data, corpora: list, tests: dict, cfg: dict, seed: int = 0) -> dict:
    """{test name: (y, clip probabilities)} of a head trained on ``corpora`` (lists of items, 4Q first)."""
    prior_n = cfg.get("prior_n")
    prior = stream_prior(data, corpora, seed + 1) if prior_n is not None else None
    Xs, ys, ws = [], [], []
    weights = cfg.get("corpus_w") or [1.0] * len(corpora)
    for c, items in enumerate(corpora):
        wins = (stream_windows(data, items, prior, prior_n, seed + 1) if prior is not None
                else [data.windows(it) for it in items])
        Xs.append(np.stack([w.mean(0) for w in wins]))
        ys.append(_y(items))
        scale = len(corpora[0]) / len(items) if cfg.get("balance") else 1.0
        ws.append(np.full(len(items), float(weights[c]) * scale))
    X, y, w = np.concatenate(Xs), np.concatenate(ys), np.concatenate(ws)
    if cfg.get("gated"):
        probs = gated(Xs, ys, cfg.get("kind", "lr"), seed, cfg.get("gate_C", 0.1))
    else:
        probs = _fit(X, y, None if np.allclose(w, w[0]) else w, cfg.get("kind", "lr"), seed)
    out = {}
    for name, its in tests.items():
        wins = (stream_windows(data, its, prior, prior_n, seed + 2) if prior is not None
                else [data.windows(it) for it in its])
        out[name] = (_y(its), np.stack([probs(w).mean(0) for w in wins]))
    return out


def probe(data: Data, label: str, cfg: dict, log=print) -> dict:
    """One probe's metrics on every protocol (see the module docstring)."""
    t0 = time.time()
    H.POOL_GRID = int(cfg.get("pool_grid", M.GRID))
    try:
        em = data.emopia(cfg.get("emopia", "150"))
        extra = [em] if em else []
        preds = [run(data, [tr, *extra], {"t": te}, cfg)["t"] for tr, te in data.folds]
        cv = H.pooled(preds, _y(data.q4))
        ho = run(data, [data.q4_train, *extra], {"4q_test_artists": data.q4_test,
                                                  "4q_test_artists_under_speech": data.mix}, cfg)
        ho.update(run(data, [data.q4, *extra], {"emopia_official_test": data.em_test,
                                                "vgmidi_never_trained_on": data.vg}, cfg))
    finally:
        H.POOL_GRID = M.GRID
    ytr = {"4q_test_artists": _y(data.q4_train + em), "4q_test_artists_under_speech": _y(data.q4_train + em),
           "emopia_official_test": _y(data.q4 + em), "vgmidi_never_trained_on": _y(data.q4 + em)}
    row = {"label": label, "settings": cfg, "emopia_train_clips": len(em),
           "4q_10fold": {k: cv[k] for k in ("pooled", "fold_macro_f1_mean", "fold_macro_f1_sd", "fold_macro_f1",
                                            "chance", "calibration_clip")},
           "held_out": {k: {**H.quadrant_metrics(y, P.argmax(1)), "calibration_clip": H.calibration(y, P),
                            "chance": H.chance_metrics(ytr[k], y)} for k, (y, P) in ho.items()}}
    cell = lambda m: f"{m['macro_f1']:.3f}/{m['arousal_uar']:.3f}/{m['valence_uar']:.3f}"  # noqa: E731
    log(f"{label}: 4Q 10-fold {cv['fold_macro_f1_mean']:.3f} (pooled {cv['pooled']['macro_f1']:.3f}) | "
        + " | ".join(f"{k} {cell(m)}" for k, m in row["held_out"].items()) + f" [{time.time() - t0:.0f} s]")
    return row


#: the default CNN's figures on the same held-out sets (from its card's confusions, docs/RESULTS.md's table)
CNN_LABEL = "music.onnx (the default CNN)"


def markdown_table(done: dict) -> str:
    """The probes' table: macro-F1 / arousal UAR / valence UAR per protocol, the default CNN beside."""
    cell = lambda m: f"{m['macro_f1']:.3f} / {m['arousal_uar']:.3f} / {m['valence_uar']:.3f}" if m else "-"  # noqa: E731
    sets = ("4q_test_artists", "4q_test_artists_under_speech", "emopia_official_test", "vgmidi_never_trained_on")
    lines = ["| probe | 4Q 10-fold macro-F1: fold mean (pooled) | 4Q test artists | under speech | EMOPIA test | "
             "VGMIDI (never trained on) |", "|---|---|---|---|---|---|"]
    for label, r in done.items():
        cv = r["4q_10fold"]
        lines.append(f"| {label.replace('|', '/')} | {cv['fold_macro_f1_mean']:.3f} ({cv['pooled']['macro_f1']:.3f}) | "
                     + " | ".join(cell(r["held_out"].get(k)) for k in sets) + " |")
    try:
        prev = H.previous_from_cards()
        lines.append(f"| {CNN_LABEL} | (no 10-fold: trained on the 4Q train artists + EMOPIA train/val) | "
                     + " | ".join(cell(prev.get(k, {}).get("music.onnx (previous shipped CNN)")) for k in sets) + " |")
    except (OSError, ValueError):
        pass
    return "\n".join(lines)


GATED_RESULTS = Path("docs/results/musicnn_crosscorpus.json")


def train_gated(out: Path, results: Path = GATED_RESULTS, log=print,
                model_id: str = "emotrack-music-musicnn-3") -> dict:
    """Train the shipped head: the gated mixture of :data:`SHIPPED` (an MLP
    expert on all 630 4Q clips, one on all 990 EMOPIA train/val clips, a logistic gate between them), fitted on
    the clip rows of the probe's final model (the one it scores EMOPIA test and VGMIDI with), + activity
    negatives; export one ONNX graph, parity check on real window inputs, card with the probe's metrics."""
    from engines.cards import ModelCard

    label, cfg = SHIPPED
    done = json.loads(results.read_text()) if results.exists() else {}
    row = done.get(label)
    if not row or "calibration_clip" not in row["4q_10fold"]:
        raise SystemExit(f"{results} lacks the probe {label!r} with calibration: run python -m "
                         f"training.musicnn_crosscorpus --json {results} '{label}::{json.dumps(cfg)}'")
    data = Data(emopia_all=True, log=log)
    corpora = [data.q4, data.emopia(cfg["emopia"])]
    Xs = [clip_rows(data, its) for its in corpora]
    ys = [_y(its) for its in corpora]
    head = H.fit_gated(Xs, ys, SPEC[cfg["kind"]], seed=0, gate_C=cfg["gate_C"], corpora=("4Q", "EMOPIA"),
                     Xneg=H.negatives())
    H.export_head(head, out)
    rng = np.random.default_rng(0)   # real window inputs: 128 of each training corpus and of the held-out sets
    wins = np.concatenate([np.concatenate([data.windows(it) for it in its])
                           for its in (*corpora, data.em_test, data.vg, data.mix)])
    diff = H.head_parity(head, out, wins[rng.permutation(len(wins))[:640]])
    td = {"corpora": ["4Q Audio Emotion Dataset (Panda, Malheiro & Paiva 2018; AllMusic 30 s previews, research "
                      "use)", "EMOPIA 1.0 (CC BY-NC-SA 4.0)",
                      "RAVDESS and TESS speech as non-music windows for the activity output (CC BY-NC-SA 4.0, "
                      "CC BY-NC-ND 4.0)"],
          "clips": {"4q": len(corpora[0]), "emopia_train_val": len(corpora[1])},
          "rows": int(sum(len(x) for x in Xs)),
          "fit_on": H.FIT_ON + " (a clip's row: the mean of its 10 s windows' inputs); one expert per corpus, "
                    "the gate on both corpora's rows (classes balanced)",
          "class_rows": {c: {q: int((y == i).sum()) for i, q in enumerate(QUADRANTS)}
                         for c, y in zip(("4q", "emopia"), ys)},
          "front_end_training_data": "Million Song Dataset tags (musicnn MSD_musicnn, by its authors)"}
    metrics = {"selected": label, "settings": cfg, "4q_10fold": {label: row["4q_10fold"]},
               "held_out": row["held_out"], "from": f"{results} (python -m training.musicnn_crosscorpus)"}
    try:
        prev = H.previous_from_cards()
        metrics["previous_on_held_out"] = {k: v for k, v in prev.items() if k in row["held_out"]}
    except (OSError, ValueError):
        pass
    card = H.head_card(head, out, training_data=td, metrics=metrics, parity=diff,
                     protocol="training.musicnn_crosscorpus, probe " + repr(label) + ": 4Q artist-grouped 10-fold "
                              "(training.protocols.protocol_4q; all 990 EMOPIA train/val clips added to every "
                              "fold's training), a clip scored as the mean of its 10 s windows' probabilities "
                              "every 2 s; the 4Q test artists of training.corpora's split and the same clips under "
                              "RAVDESS test speech (trained on the other 4Q artists + EMOPIA train/val); the EMOPIA "
                              "official test split and all VGMIDI, never trained on (trained on all 4Q + EMOPIA "
                              "train/val, the shipped model's data). Chosen among the probes of "
                              "docs/RESULTS.md ('Can a musicnn model be the default?') as the one above the "
                              "default CNN on every held-out set; the 4Q-only head scores 0.007 more on the 4Q "
                              "folds and far less across corpora",
                     command=f"python -m training.musicnn_crosscorpus --train-gated {out}", model_id=model_id)
    card["calibration"] = {"method": "none (raw mixture probabilities); expected calibration error of the clip "
                                     "probabilities' top class, 10 equal-width bins",
                           "4q_10fold_pooled": row["4q_10fold"]["calibration_clip"],
                           **{k: v["calibration_clip"] for k, v in row["held_out"].items()}}
    ModelCard(card).write(out)
    log(f"wrote {out} (parity {diff:.3g} on {min(640, len(wins))} real window inputs)")
    return card


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description="cross-corpus probes of the musicnn head (issue 23)")
    ap.add_argument("probes", nargs="*", help="'label::{json settings}'")
    ap.add_argument("--json", type=Path, help="add the rows to this JSON file (by label)")
    ap.add_argument("--table", action="store_true", help="print the markdown table of --json and stop")
    ap.add_argument("--train-gated", type=Path, metavar="OUT",
                    help="train, export and card the shipped gated mixture (4Q | EMOPIA) of SHIPPED at OUT "
                         "(its metrics from --json, default %s) and stop" % GATED_RESULTS)
    a = ap.parse_args(argv)
    if a.train_gated:
        train_gated(a.train_gated, a.json or GATED_RESULTS)
        return 0
    if a.table:
        print(markdown_table(json.loads(a.json.read_text())))
        return 0
    specs = [(s.split("::", 1)[0], json.loads(s.split("::", 1)[1])) for s in a.probes]
    data = Data(emopia_all=any(c.get("emopia") == "all" for _, c in specs))
    done = json.loads(a.json.read_text()) if a.json and a.json.exists() else {}
    for label, cfg in specs:
        done[label] = probe(data, label, cfg)
        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps(done, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
