"""The music emotion head on musicnn embeddings: recipe, protocols, ONNX export, card.

Input of the head: a window's ``musicnn`` vector [200], the mean embedding of the grid
patches inside it (:mod:`streamer.musicnn`).  The head is a standardised multinomial
logistic regression (the quadrant probabilities), exported to ONNX with its VA and
activity outputs (:func:`export_head`):

    quadrant  = softmax(W z + b)                           z = (musicnn - mean) / std
    va        = probs @ [[+1, +1], [-1, +1], [-1, -1], [+1, -1]]  (expected valence/arousal sign)
    activity  = sigmoid(w_a . z + b_a)                     music vs speech / noise / silence

Patch embeddings of every item are computed once and cached under
``cache_root()/musicnn`` (:func:`patch_embeddings`).  The protocols are those of
:mod:`training.protocols` (4Q artist-grouped 10-fold, 4Q <-> EMOPIA, EMOPIA official
split and VGMIDI never trained on, music under speech); a clip is scored as the
streamer scores it: the mean of the quadrant probabilities of its 10 s windows every 2 s.

    python -m training.musicnn_head evaluate --json docs/results/musicnn_head.json
    python -m training.musicnn_head train OUT.onnx      # one head (the 4Q-only head emotrack-music-musicnn-2)

The shipped head (``engines/models/music_musicnn.onnx``, ``emotrack-music-musicnn-4``) is a
:class:`GatedHead`: a 4Q expert and an EMOPIA expert (each a :class:`Head`) mixed per window by a logistic
gate, the gate and the EMOPIA expert also trained on the clips under training speech
(:func:`training_mixture_items`), the probe ``training.musicnn_crosscorpus.SHIPPED``; exported as one graph with the same input and
outputs (``quadrant`` = sum over experts of gate x expert probabilities):

    python -m training.musicnn_crosscorpus --json docs/results/musicnn_crosscorpus.json 'LABEL::{SETTINGS}'
    python -m training.musicnn_crosscorpus --train-gated engines/models/music_musicnn.onnx
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from streamer import musicnn as M
from streamer.taxonomy import QUADRANTS

from .paths import cache_root

WINDOW_S, HOP_S = 10.0, 2.0
SR = M.SAMPLE_RATE
#: valence/arousal sign of each quadrant (Q1..Q4), the VA output's basis
QUADRANT_VA = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]], np.float32)


# --------------------------------------------------------------------------- embeddings, cached

#: grid of the cached patch embeddings (the shipped grid or a finer one it is a subset of)
CACHE_GRID = M.GRID


def _cache_file(feature_set: str, keys: Sequence[str], grid: int) -> Path:
    tag = "" if grid == 32000 else f"-grid{grid}"
    h = hashlib.sha1(("\n".join(keys) + f"|musicnn-v{M.MUSICNN_VERSION}{tag}").encode()).hexdigest()[:12]
    return cache_root() / "musicnn" / f"{feature_set}_{h}.npz"


def _load(cp: Path, keys, out: dict) -> None:
    z = np.load(cp)
    data, off, n = z["data"], z["offsets"], z["n_samples"]
    for i, k in enumerate(keys):
        out[k] = data[off[i]:off[i + 1]]
        _LENGTHS[k] = int(n[i])


def _save(cp: Path, embs: list, lens: list) -> None:
    cp.parent.mkdir(parents=True, exist_ok=True)
    off = np.concatenate([[0], np.cumsum([e.shape[0] for e in embs])])
    np.savez(cp.with_suffix(".tmp.npz"), data=np.concatenate(embs), offsets=off, n_samples=np.array(lens))
    cp.with_suffix(".tmp.npz").replace(cp)


def patch_embeddings(items, front_end: Optional[M.FrontEnd] = None, log=None,
                     grid: Optional[int] = None, shard: Optional[tuple[int, int]] = None) -> dict[str, np.ndarray]:
    """{item key: [n_patches, 200]} of the grid patches of each item's audio (with the clip length
    in samples kept as ``n_samples`` per key in a second dict, see :func:`clip_lengths`); cached per
    feature set."""
    from .experiments.protocols import ensure_audio

    global CACHE_GRID
    grid = grid or M.GRID
    CACHE_GRID = grid
    out: dict[str, np.ndarray] = {}
    by_set: dict[str, list] = {}
    for it in items:
        by_set.setdefault(it.feature_set, []).append(it)
    for fs, its in by_set.items():
        keys = sorted({it.key for it in its})
        cp = _cache_file(fs, keys, grid)
        if cp.exists():
            _load(cp, keys, out)
            continue
        if shard is None:  # shards of it computed by parallel processes: merge them
            n_sh = next((n for n in range(1, 9) if all(cp.with_name(f"{cp.stem}.{i}of{n}.npz").exists()
                                                      for i in range(n))), None)
            if n_sh:
                part: dict = {}
                for i in range(n_sh):
                    _load(cp.with_name(f"{cp.stem}.{i}of{n_sh}.npz"), keys[i::n_sh], part)
                _save(cp, [part[k] for k in keys], [_LENGTHS[k] for k in keys])
                out.update(part)
                continue
        else:
            cp = cp.with_name(f"{cp.stem}.{shard[0]}of{shard[1]}.npz")
            keys = keys[shard[0]::shard[1]]
            if cp.exists():
                _load(cp, keys, out)
                continue
        fe = front_end or M.default_front_end()
        uniq = {it.key: it for it in its}
        embs, lens = [], []
        t0 = time.time()
        for j, k in enumerate(keys):
            it = uniq[k]
            ensure_audio(it.needs)
            x = it.audio()
            embs.append(M.clip_patches(x, fe, grid=grid))
            lens.append(int(x.size))
            if log and j % 100 == 0:
                log(f"  {fs}: {j}/{len(keys)} items embedded ({time.time() - t0:.0f} s)")
        _save(cp, embs, lens)
        for k, e, n in zip(keys, embs, lens):
            out[k] = e
            _LENGTHS[k] = n
    return out


_LENGTHS: dict[str, int] = {}


#: the grid the windows pool (a multiple of the cache grid: a 2 s cache measures 2 s and 4 s grids)
POOL_GRID = M.GRID


def clip_windows(emb: np.ndarray, n_samples: int) -> np.ndarray:
    """The streamer's window inputs [n_windows, 200] of a clip (10 s windows every 2 s)."""
    step = POOL_GRID // CACHE_GRID
    return M.window_means(emb[::step], n_samples, int(WINDOW_S * SR), int(HOP_S * SR), POOL_GRID)


def window_set(items, embs: dict) -> tuple[np.ndarray, np.ndarray]:
    """(X [n_windows, 200], item index per window) of ``items``."""
    xs, idx = [], []
    for i, it in enumerate(items):
        w = clip_windows(embs[it.key], _LENGTHS[it.key])
        xs.append(w)
        idx.append(np.full(len(w), i))
    return np.concatenate(xs), np.concatenate(idx)


# --------------------------------------------------------------------------- the head

def _softmax(s: np.ndarray) -> np.ndarray:
    s = s - s.max(axis=1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=1, keepdims=True)


class _Outputs:
    """The exported graph's three outputs of a head with ``probs``, ``z`` and an activity logistic
    regression (``act_coef``, ``act_intercept``) on the standardised input."""

    def outputs(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """What the exported ONNX graph computes (float64 here)."""
        p = self.probs(X)
        act = 1.0 / (1.0 + np.exp(-(self.z(X) @ self.act_coef + self.act_intercept)))
        return {"quadrant": p, "va": p @ QUADRANT_VA, "activity": act[:, None]}


@dataclass
class Head(_Outputs):
    """Standardisation + the quadrant classifier + logistic activity.

    The quadrant classifier is a multinomial logistic regression (``coef``, ``intercept``) or, when
    ``mlp`` holds members, the mean of the members' softmax outputs: each member a one-hidden-layer
    ReLU network ``(W1 [200, h], b1 [h], W2 [h, 4], b2 [4])`` on the standardised input.
    """

    mean: np.ndarray          # [200]
    std: np.ndarray           # [200]
    coef: np.ndarray          # [4, 200]
    intercept: np.ndarray     # [4]
    act_coef: np.ndarray      # [200]
    act_intercept: float
    C: float
    mlp: tuple = ()
    alpha: Optional[float] = None

    def z(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, np.float64) - self.mean) / self.std

    def probs(self, X: np.ndarray) -> np.ndarray:
        Z = self.z(X)
        if self.mlp:
            return np.mean([_softmax(np.maximum(Z @ W1 + b1, 0.0) @ W2 + b2) for W1, b1, W2, b2 in self.mlp], axis=0)
        return _softmax(Z @ self.coef.T + self.intercept)

    @property
    def kind(self) -> str:
        return "mlp" if self.mlp else "lr"

    def describe(self) -> str:
        if self.mlp:
            return (f"mean of {len(self.mlp)} seeded one-hidden-layer ReLU networks ({self.mlp[0][0].shape[1]} units, "
                    f"L2 alpha={self.alpha}, sklearn MLPClassifier, adam) -> softmax")
        return f"multinomial logistic regression (C={self.C}, balanced class weights) -> softmax"

    def n_parameters(self) -> int:
        q = sum(sum(a.size for a in m) for m in self.mlp) if self.mlp else self.coef.size + self.intercept.size
        return int(q + self.act_coef.size + 1)


#: the quadrant classifier of the shipped head and its settings (measured on the 4Q artist-grouped 10-fold,
#: docs/results/musicnn_head.json: the 5-member MLP 0.741 fold mean vs 0.737 for the logistic regression)
KIND = "mlp"
MLP_HIDDEN, MLP_MEMBERS, MLP_ALPHA = 64, 5, 10.0


def fit_head(X: np.ndarray, y: np.ndarray, C: float = 0.05, Xneg: Optional[np.ndarray] = None,
             seed: int = 0, kind: str = "lr", alpha: float = MLP_ALPHA, members: int = MLP_MEMBERS,
             hidden: int = MLP_HIDDEN) -> Head:
    """Fit on window inputs ``X`` [n, 200] with quadrant indices ``y``; ``Xneg``: windows without music
    (speech, noise, silence) for the activity output (without them the activity is a constant 1).
    ``kind``: "lr" (logistic regression, ``C``) or "mlp" (``members`` seeded networks, L2 ``alpha``)."""
    from sklearn.linear_model import LogisticRegression

    X = np.asarray(X, np.float64)
    mean, std = X.mean(0), X.std(0) + 1e-6
    Z = (X - mean) / std
    coef = np.zeros((4, X.shape[1]))
    icpt = np.full(4, -30.0)           # a class absent from training never wins
    mlp: tuple = ()
    if kind == "mlp":
        from sklearn.neural_network import MLPClassifier

        if len(np.unique(y)) != 4:
            raise ValueError("the MLP head needs training rows of all 4 quadrants")
        nets = [MLPClassifier((hidden,), alpha=alpha, max_iter=500, random_state=seed + r).fit(Z, y)
                for r in range(members)]
        mlp = tuple((n.coefs_[0], n.intercepts_[0], n.coefs_[1], n.intercepts_[1]) for n in nets)
    elif kind == "lr":
        lr = LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=seed)
        lr.fit(Z, y)
        coef[lr.classes_] = lr.coef_
        icpt[lr.classes_] = lr.intercept_
    else:
        raise ValueError(f"unknown head kind {kind!r} (lr or mlp)")
    a_coef, a_icpt = fit_activity(Z, None if Xneg is None else (np.asarray(Xneg, np.float64) - mean) / std, seed)
    return Head(mean, std, coef, icpt, a_coef, a_icpt, C, mlp, alpha if mlp else None)


def fit_activity(Z: np.ndarray, Zneg: Optional[np.ndarray], seed: int = 0) -> tuple[np.ndarray, float]:
    """(coef, intercept) of the activity output: a logistic regression music rows ``Z`` vs non-music rows
    ``Zneg`` (both standardised); without negatives a constant 1."""
    from sklearn.linear_model import LogisticRegression

    if Zneg is None or not len(Zneg):
        return np.zeros(Z.shape[1]), 10.0
    act = LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000, random_state=seed)
    act.fit(np.concatenate([Z, Zneg]), np.r_[np.ones(len(Z)), np.zeros(len(Zneg))])
    return act.coef_[0], float(act.intercept_[0])


@dataclass
class GatedHead(_Outputs):
    """A mixture of experts: one :class:`Head` per training corpus and a logistic gate that says which corpus a
    window is like, ``quadrant = sum_c gate_c(x) expert_c(x)``; the gate is a multinomial logistic regression
    (``gate_coef`` [n_corpora, 200], a binary one written as softmax rows ``[0, w]``) on its own
    standardisation, which the activity output shares."""

    experts: tuple            # Heads, one per corpus (their activity outputs unused)
    corpora: tuple            # the corpora's names, the gate's classes
    gate_mean: np.ndarray     # [200]
    gate_std: np.ndarray      # [200]
    gate_coef: np.ndarray     # [n_corpora, 200]
    gate_intercept: np.ndarray  # [n_corpora]
    act_coef: np.ndarray      # [200]
    act_intercept: float
    gate_C: float

    @property
    def mean(self) -> np.ndarray:
        return self.gate_mean

    def z(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, np.float64) - self.gate_mean) / self.gate_std

    def gate(self, X: np.ndarray) -> np.ndarray:
        return _softmax(self.z(X) @ self.gate_coef.T + self.gate_intercept)

    def probs(self, X: np.ndarray) -> np.ndarray:
        g = self.gate(X)
        return sum(g[:, [i]] * e.probs(X) for i, e in enumerate(self.experts))

    @property
    def kind(self) -> str:
        return "gated " + self.experts[0].kind

    def describe(self) -> str:
        return (f"mixture of {len(self.experts)} experts ({', '.join(self.corpora)}), each the "
                f"{self.experts[0].describe()} on its own standardisation, weighted per window by a logistic "
                f"gate over the corpora (C={self.gate_C}, balanced classes)")

    def n_parameters(self) -> int:
        ex = sum(e.n_parameters() - e.act_coef.size - 1 for e in self.experts)
        return int(ex + self.gate_coef.size + self.gate_intercept.size + self.act_coef.size + 1)


def fit_gated(Xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], spec="mlp alpha=10.0", seed: int = 0,
              gate_C: float = 1.0, corpora: Optional[Sequence[str]] = None,
              Xneg: Optional[np.ndarray] = None, gate_Xs: Optional[Sequence[np.ndarray]] = None) -> GatedHead:
    """One expert (:func:`fit_head`, candidate ``spec`` as :func:`head_settings`) per corpus's rows ``Xs[c]``
    and a gate trained to tell the corpora apart (classes balanced) on ``gate_Xs[c]`` (default ``Xs``);
    ``Xneg``: non-music rows for the activity output."""
    from sklearn.linear_model import LogisticRegression

    experts = tuple(fit_head(X, y, seed=seed, **head_settings(spec)) for X, y in zip(Xs, ys))
    gate_Xs = Xs if gate_Xs is None else gate_Xs
    X = np.concatenate([np.asarray(x, np.float64) for x in gate_Xs])
    c = np.concatenate([np.full(len(x), i) for i, x in enumerate(gate_Xs)])
    mu, sd = X.mean(0), X.std(0) + 1e-6
    Z = (X - mu) / sd
    gate = LogisticRegression(C=gate_C, class_weight="balanced", max_iter=3000, random_state=seed).fit(Z, c)
    if len(Xs) == 2:   # binary: P(1) = sigmoid(w z + b) = softmax([0, w z + b])
        gc, gi = np.vstack([np.zeros_like(gate.coef_[0]), gate.coef_[0]]), np.r_[0.0, gate.intercept_[0]]
    else:
        gc, gi = gate.coef_, gate.intercept_
    a_coef, a_icpt = fit_activity(Z, None if Xneg is None else (np.asarray(Xneg, np.float64) - mu) / sd, seed)
    names = tuple(corpora or (f"corpus {i}" for i in range(len(gate_Xs))))
    return GatedHead(experts, names, mu, sd, gc, gi, a_coef, a_icpt, gate_C)


# --------------------------------------------------------------------------- protocols

def half_uar(yq: np.ndarray, pq: np.ndarray, which: str) -> float:
    """UAR of the arousal (Q1, Q2 high) or valence (Q1, Q4 positive) half of quadrant indices."""
    hi = np.array([0, 1]) if which == "arousal" else np.array([0, 3])
    t, p = np.isin(yq, hi), np.isin(pq, hi)
    rec = [np.mean(p[t == v] == v) for v in (True, False) if (t == v).any()]
    return float(np.mean(rec))


def quadrant_metrics(y: np.ndarray, p: np.ndarray) -> dict:
    from .metrics import macro_f1

    y, p = np.asarray(y, int), np.asarray(p, int)
    return {"n": int(len(y)), "macro_f1": round(macro_f1(y, p, 4), 4), "accuracy": round(float(np.mean(y == p)), 4),
            "arousal_uar": round(half_uar(y, p, "arousal"), 4), "valence_uar": round(half_uar(y, p, "valence"), 4)}


def chance_metrics(y_train: np.ndarray, y_test: np.ndarray, seed: int = 0, draws: int = 200) -> dict:
    """Chance: the training majority class, and guessing with the training class distribution
    (mean of ``draws`` seeded draws)."""
    k = np.bincount(y_train, minlength=4)
    maj = quadrant_metrics(y_test, np.full(len(y_test), int(k.argmax())))
    rng = np.random.default_rng(seed)
    d = [quadrant_metrics(y_test, rng.choice(4, len(y_test), p=k / k.sum())) for _ in range(draws)]
    strat = {m: round(float(np.mean([x[m] for x in d])), 4) for m in ("macro_f1", "accuracy", "arousal_uar",
                                                                      "valence_uar")}
    return {"majority": maj, "stratified": strat}


def clip_scores(head_probs, items, embs: dict) -> np.ndarray:
    """Clip probabilities [n, 4]: the mean of each clip's window probabilities (the streamer's windows)."""
    X, idx = window_set(items, embs)
    p = head_probs(X)
    return np.stack([p[idx == i].mean(0) for i in range(len(items))])


def quadrant_index(it) -> int:
    return QUADRANTS.index(it.clip.quadrant)


#: what the head is fitted on: "clips" (one row per training clip: the mean of its window inputs; measured
#: 0.737 vs 0.729 fold-mean macro-F1 on the 4Q folds) or "windows" (every window input a row)
FIT_ON = "clips"


def training_rows(items, embs: dict, fit_on: str = FIT_ON) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) the head is fitted on: per clip (mean of its windows) or per window."""
    y = np.array([quadrant_index(it) for it in items])
    if fit_on == "clips":
        return np.stack([clip_windows(embs[it.key], _LENGTHS[it.key]).mean(0) for it in items]), y
    X, idx = window_set(items, embs)
    return X, y[idx]


def head_settings(spec) -> dict:
    """:func:`fit_head` keywords of a candidate's name: ``"C=0.05"`` (logistic regression; a bare number
    is a C) or ``"mlp alpha=10"`` (the MLP members)."""
    if isinstance(spec, (int, float)):
        return {"kind": "lr", "C": float(spec)}
    if spec.startswith("mlp alpha="):
        return {"kind": "mlp", "alpha": float(spec.split("=", 1)[1])}
    if spec.startswith("C="):
        return {"kind": "lr", "C": float(spec[2:])}
    raise ValueError(f"unknown head candidate {spec!r}")


def run_fold(train, tests: dict, embs: dict, spec, Xneg=None) -> tuple[dict, dict]:
    """(metrics per test set, predictions per test set) of a head (candidate ``spec``, see
    :func:`head_settings`) trained on ``train``."""
    X, y = training_rows(train, embs)
    ytr_clip = np.array([quadrant_index(it) for it in train])
    head = fit_head(X, y, Xneg=Xneg, **head_settings(spec))
    res, preds = {}, {}
    for name, its in tests.items():
        if not its:
            continue
        y = np.array([quadrant_index(it) for it in its])
        P = clip_scores(head.probs, its, embs)
        res[name] = {"musicnn_head": quadrant_metrics(y, P.argmax(1)), "chance": chance_metrics(ytr_clip, y)}
        preds[name] = (y, P)
    return res, preds


def calibration(y: np.ndarray, P: np.ndarray, bins: int = 10) -> dict:
    """Expected calibration error of the top probability (equal-width bins) and the reliability
    diagram's rows (bin, mean confidence, accuracy, count)."""
    conf, pred = P.max(1), P.argmax(1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            acc, c = float(np.mean(pred[m] == y[m])), float(conf[m].mean())
            ece += m.mean() * abs(acc - c)
            rows.append([round(float(lo), 2), round(c, 4), round(acc, 4), int(m.sum())])
    return {"ece": round(float(ece), 4), "reliability": rows, "bins": bins}


def pooled(preds: list, ytr_all: np.ndarray) -> dict:
    """Metrics over the folds' test predictions pooled, per-fold mean +- sd of macro-F1, and chance."""
    y = np.concatenate([p[0] for p in preds])
    P = np.concatenate([p[1] for p in preds])
    out = {"pooled": quadrant_metrics(y, P.argmax(1)), "chance": chance_metrics(ytr_all, y),
           "calibration_clip": calibration(y, P)}
    f = [quadrant_metrics(a, b.argmax(1))["macro_f1"] for a, b in preds]
    out["fold_macro_f1"] = [round(float(x), 4) for x in f]
    out["fold_macro_f1_mean"] = round(float(np.mean(f)), 4)
    out["fold_macro_f1_sd"] = round(float(np.std(f)), 4)
    return out


# --------------------------------------------------------------------------- ONNX export and card

PARITY_TOL = 1e-4


def _quadrant_nodes(head: Head, f32, pre: str, out: str) -> tuple[list, list]:
    """(initialisers, nodes) computing ``out`` (quadrant probabilities) of one :class:`Head` from the input
    ``musicnn``; its standardised input is ``<pre>z``."""
    from onnx import helper

    n = lambda s: pre + s  # noqa: E731
    inits = [f32(head.mean, n("mean")), f32(1.0 / head.std, n("inv_std"))]
    nodes = [helper.make_node("Sub", ["musicnn", n("mean")], [n("centred")]),
             helper.make_node("Mul", [n("centred"), n("inv_std")], [n("z")])]
    if head.mlp:   # the members' softmax outputs, summed, times 1 / members
        for i, (W1, b1, W2, b2) in enumerate(head.mlp):
            inits += [f32(W1, n(f"W1_{i}")), f32(b1, n(f"b1_{i}")), f32(W2, n(f"W2_{i}")), f32(b2, n(f"b2_{i}"))]
            nodes += [helper.make_node("MatMul", [n("z"), n(f"W1_{i}")], [n(f"h{i}")]),
                      helper.make_node("Add", [n(f"h{i}"), n(f"b1_{i}")], [n(f"hb{i}")]),
                      helper.make_node("Relu", [n(f"hb{i}")], [n(f"r{i}")]),
                      helper.make_node("MatMul", [n(f"r{i}"), n(f"W2_{i}")], [n(f"o{i}")]),
                      helper.make_node("Add", [n(f"o{i}"), n(f"b2_{i}")], [n(f"logits{i}")]),
                      helper.make_node("Softmax", [n(f"logits{i}")], [n(f"p{i}")], axis=-1)]
        inits.append(f32(1.0 / len(head.mlp), n("inv_members")))
        nodes += [helper.make_node("Sum", [n(f"p{i}") for i in range(len(head.mlp))], [n("psum")]),
                  helper.make_node("Mul", [n("psum"), n("inv_members")], [out])]
    else:
        inits += [f32(head.coef.T, n("W")), f32(head.intercept, n("b"))]
        nodes += [helper.make_node("MatMul", [n("z"), n("W")], [n("zw")]),
                  helper.make_node("Add", [n("zw"), n("b")], [n("logits")]),
                  helper.make_node("Softmax", [n("logits")], [out], axis=-1)]
    return inits, nodes


def export_head(head, path: Path) -> Path:
    """Write the head (a :class:`Head` or a :class:`GatedHead`) as an ONNX graph: input ``musicnn`` [N, 200];
    outputs quadrant [N, 4], va [N, 2], activity [N, 1] (the streamer's output contract)."""
    from onnx import TensorProto, helper, numpy_helper

    from .export import save_graph

    f32 = lambda a, n: numpy_helper.from_array(np.asarray(a, np.float32), n)  # noqa: E731
    if isinstance(head, GatedHead):   # experts, the gate's softmax, sum_c gate[:, c] * expert_c
        inits, nodes = [], []
        for c, e in enumerate(head.experts):
            i, n = _quadrant_nodes(e, f32, f"e{c}_", f"e{c}_quadrant")
            inits += i
            nodes += n
        k = len(head.experts)
        inits += [f32(head.gate_mean, "mean"), f32(1.0 / head.gate_std, "inv_std"),
                  f32(head.gate_coef.T, "gate_W"), f32(head.gate_intercept, "gate_b")]
        nodes += [helper.make_node("Sub", ["musicnn", "mean"], ["centred"]),
                  helper.make_node("Mul", ["centred", "inv_std"], ["z"]),
                  helper.make_node("MatMul", ["z", "gate_W"], ["gz"]),
                  helper.make_node("Add", ["gz", "gate_b"], ["gate_logits"]),
                  helper.make_node("Softmax", ["gate_logits"], ["gate"], axis=-1)]
        for c in range(k):   # gate[:, c:c+1] as a MatMul with a one-hot column
            inits.append(f32(np.eye(k)[:, [c]], f"gate_pick{c}"))
            nodes += [helper.make_node("MatMul", ["gate", f"gate_pick{c}"], [f"g{c}"]),
                      helper.make_node("Mul", [f"g{c}", f"e{c}_quadrant"], [f"gp{c}"])]
        nodes.append(helper.make_node("Sum", [f"gp{c}" for c in range(k)], ["quadrant"]))
    else:
        inits, nodes = _quadrant_nodes(head, f32, "", "quadrant")
    inits += [f32(QUADRANT_VA, "quadrant_va"), f32(head.act_coef[:, None], "Wa"), f32([head.act_intercept], "ba")]
    nodes += [helper.make_node("MatMul", ["quadrant", "quadrant_va"], ["va"]),
             helper.make_node("MatMul", ["z", "Wa"], ["za"]),
             helper.make_node("Add", ["za", "ba"], ["act_logit"]),
             helper.make_node("Sigmoid", ["act_logit"], ["activity"])]
    g = helper.make_graph(
        nodes, "musicnn_emotion_head",
        [helper.make_tensor_value_info("musicnn", TensorProto.FLOAT, ["N", M.EMBED_DIM])],
        [helper.make_tensor_value_info("quadrant", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("va", TensorProto.FLOAT, ["N", 2]),
         helper.make_tensor_value_info("activity", TensorProto.FLOAT, ["N", 1])], inits)
    return save_graph(g, path, "emotrack")


def head_parity(head, path: Path, X: np.ndarray) -> float:
    """Max abs difference numpy (float64) head vs onnxruntime on ``X``; raises if >= :data:`PARITY_TOL`."""
    from .evaluate import session

    got = dict(zip(["quadrant", "va", "activity"],
                   session(path).run(["quadrant", "va", "activity"], {"musicnn": np.asarray(X, np.float32)})))
    want = head.outputs(X)
    diff = max(float(np.max(np.abs(want[k] - got[k]))) for k in want)
    if not diff < PARITY_TOL:
        raise RuntimeError(f"head vs onnxruntime parity failed: max abs diff {diff:.3g} >= {PARITY_TOL}")
    return diff


def head_card(head, onnx_path: Path, *, training_data: dict, protocol: str, metrics: dict,
              parity: float, command: str, model_id: str = "emotrack-music-musicnn-1") -> dict:
    """The model card (the format of engines/models/music.json), written by :class:`engines.cards.ModelCard`."""
    from engines.cards import sha256_of
    from streamer.features import DEFAULT_PARAMS
    from streamer.inputs import input_versions

    from .export import OPSET, op_types, time_forward

    fe_card = json.loads((Path(onnx_path).parent / M.FRONT_END_ONNX).with_suffix(".json").read_text()) \
        if (Path(onnx_path).parent / M.FRONT_END_ONNX).with_suffix(".json").exists() else {}
    probe = {"musicnn": np.asarray(head.mean[None, :], np.float32)}
    return {
        "id": model_id, "source": "music",
        "task": "music emotion: Russell quadrant probabilities (Q1..Q4), valence/arousal (the probabilities' "
                "expected quadrant signs) and music activity per 10 s window, from the pretrained musicnn "
                "front end's embeddings",
        "onnx": onnx_path.name, "onnx_sha256": sha256_of(onnx_path), "onnx_bytes": onnx_path.stat().st_size,
        "onnx_opset": OPSET, "onnx_op_types": op_types(onnx_path),
        "window_s": WINDOW_S, "hop_s": HOP_S,
        "inputs": [{"name": "musicnn", "dtype": "float32", "shape": ["N", M.EMBED_DIM],
                    "description": "streamer.musicnn: mean 200-d embedding of the musicnn front end "
                                   f"({M.FRONT_END_ONNX}) over the 3 s patches of the stream's "
                                   f"{M.GRID / M.SAMPLE_RATE:g} s grid that "
                                   "lie inside the window; standardisation is inside the graph",
                    "front_end": M.front_end_params()}],
        "input_versions": input_versions(["musicnn"]),
        "outputs": [{"name": "quadrant", "dtype": "float32", "shape": ["N", 4], "activation": "softmax",
                     "labels": list(QUADRANTS)},
                    {"name": "va", "dtype": "float32", "shape": ["N", 2], "labels": ["valence", "arousal"],
                     "activation": "probs @ [[1,1],[-1,1],[-1,-1],[1,-1]]: P(V+) - P(V-), P(A+) - P(A-)"},
                    {"name": "activity", "dtype": "float32", "shape": ["N", 1], "activation": "sigmoid",
                     "description": "music vs speech / noise / silence (logistic regression on the same input)"}],
        "features": DEFAULT_PARAMS.to_dict(),
        "architecture": f"front end {M.FRONT_END_ONNX} (musicnn MSD, frozen) -> mean over grid patches -> "
                        f"standardise (constants) -> {head.describe()}; va = probs @ quadrant signs; "
                        "activity = logistic regression",
        "parameters": head.n_parameters(),
        "front_end": {"onnx": M.FRONT_END_ONNX, "id": fe_card.get("id"), "sha256": fe_card.get("onnx_sha256"),
                      "licence": fe_card.get("licence")},
        "training_data": training_data, "protocol": protocol, "metrics": metrics,
        "speed": {"head_forward_pass": time_forward(onnx_path, probe), "head_onnx_max_abs_diff": parity},
        "licence": "head trained on " + ", ".join(training_data.get("corpora", [])) + ": research / "
                   "non-commercial use only; " + fe_card.get("licence", "front end: musicnn (ISC)"),
        "created": time.strftime("%Y-%m-%d"), "command": command,
    }


# --------------------------------------------------------------------------- experiments

#: EMOPIA train/val clips the head trains on (a seeded subset: the front end costs ~50 ms per patch)
EMOPIA_TRAIN_CLIPS = 150


def _items(corpus: str, split: Optional[Sequence[str]] = None, limit: Optional[int] = None):
    from .experiments.protocols import SEED, clip_item, corpus_clips

    its = [clip_item(c) for c in corpus_clips(corpus) if split is None or c.split in split]
    if limit and len(its) > limit:
        keep = sorted(np.random.default_rng(SEED).permutation(len(its))[:limit])
        its = [its[i] for i in keep]
    return its


def fourq_folds(k: int = 10):
    from .experiments.protocols import protocol_4q

    return [(f.train, f.test["clean"]) for f in protocol_4q(k)[0].folds]


def mixture_items(test_items):
    """Each of ``test_items`` (music clips) under one held-out RAVDESS speech clip in every 4.5 s slot
    (seed 001's music side, :func:`training.protocols.music_mixture`); speech chosen with a seeded draw."""
    from .experiments.protocols import SEED, Item, Mixture, music_mixture

    speech = [it.clip for it in _items("ravdess") if it.clip.split == "test"]
    rng = np.random.default_rng(SEED + 7)
    out = []
    for it in test_items:
        mx = Mixture(speech[int(rng.integers(len(speech)))], it.clip, -1, 0)
        out.append(Item(mx.key, mx.music, lambda mx=mx: music_mixture(mx), "mixmusic-h23m",
                        needs=(mx.speech, mx.music), other=mx.speech))
    return out


#: speech-to-music ratios (dB) of the training mixtures, drawn uniformly per clip: the programmes' +5 dB
#: (training.data.make_mix, TV dialogue above its music) inside the range, equal loudness at its bottom
TRAIN_SMR_DB = (0.0, 10.0)


def _training_speech() -> list:
    """Speech clips of training speakers only (RAVDESS train actors, TESS): the validation and test
    speakers of the programmes and of :func:`mixture_items` are never mixed into training rows."""
    return [it.clip for it in _items("ravdess") + _items("tess") if it.clip.split == "train"]


def speech_over(music: np.ndarray, speech: Sequence[np.ndarray], smr_db: float) -> np.ndarray:
    """``music`` with the ``speech`` clips (centred, one per 4.5 s slot, every third slot left empty as in
    training.data.make_mix's programmes) at speech-to-music ratio ``smr_db``."""
    from .experiments.protocols import SLOT_S, fit_length

    n = int(SLOT_S * SR)
    sp = np.zeros(music.size, np.float32)
    for k, start in enumerate(range(0, music.size, n)):
        if k % 3 == 2:
            continue
        seg = fit_length(speech[k % len(speech)], n)[: music.size - start]
        sp[start:start + seg.size] = seg
    return (sp * np.float32(10 ** (smr_db / 40)) + music * np.float32(10 ** (-smr_db / 40))).astype(np.float32)


def training_mixture_items(music_items, seed: int = 23) -> list:
    """Each of ``music_items`` under training speakers' speech (:func:`speech_over`, a seeded draw of the
    speech clips and of the speech-to-music ratio in :data:`TRAIN_SMR_DB` per music clip), keyed by the
    music clip, the speech clips and the ratio; same label and group as the clean clip."""
    from .experiments.protocols import Item

    speech = _training_speech()
    out = []
    for it in music_items:
        rng = np.random.default_rng([seed, int(hashlib.sha1(it.key.encode()).hexdigest()[:8], 16)])
        sp = [speech[int(i)] for i in rng.integers(len(speech), size=8)]
        smr = round(float(rng.uniform(*TRAIN_SMR_DB)), 1)
        key = f"{it.key}|{smr}|" + ",".join(f"{c.corpus}:{c.path}" for c in sp)
        out.append(Item(key, it.clip, lambda it=it, sp=sp, smr=smr: speech_over(it.audio(), [c.audio for c in sp], smr),
                        f"trainmix-{it.feature_set}", needs=(*it.needs, *sp), other=sp[0]))
    return out


def cv_4q(embs: dict, C, k: int = 10, extra: Sequence = ()) -> dict:
    """4Q artist-grouped k-fold of candidate ``C``; ``extra``: items added to every fold's training."""
    preds, ytr = [], []
    for tr, te in fourq_folds(k):
        _, p = run_fold(tr + list(extra), {"clean": te}, embs, C)
        preds.append(p["clean"])
        ytr.append(np.array([quadrant_index(it) for it in tr]))
    return pooled(preds, np.concatenate(ytr))


def previous_model_scores(onnx_path: Path, items) -> np.ndarray:
    """Clip probabilities [n, 4] of a shipped window model (log-mel or descriptor inputs): the mean of
    its 10 s windows every 2 s (a clip shorter than a window: zero-padded, as the streamer's tail)."""
    from engines.runtime import load_model
    from streamer.inputs import stack_inputs, window_inputs

    from .experiments.protocols import ensure_audio

    model = load_model(onnx_path, "music", backend="onnxruntime")
    win, hop = int(float(model.card["window_s"]) * SR), int(float(model.card["hop_s"]) * SR)
    out = []
    for it in items:
        ensure_audio(it.needs)
        x = np.asarray(it.audio(), np.float32)
        if x.size < win:
            x = np.pad(x, (0, win - x.size))
        starts = range(0, x.size - win + 1, hop)
        ins = stack_inputs([window_inputs(x[s:s + win], model.input_names) for s in starts])
        out.append(model.predict(ins)["quadrant"].mean(0))
    return np.stack(out)


# --------------------------------------------------------------------------- commands

C_DEFAULT = 0.05
PREVIOUS = {"music.onnx (previous shipped CNN)": "music.onnx", "music_dnn.onnx (descriptor DNN)": "music_dnn.onnx"}


def _y(items) -> np.ndarray:
    return np.array([quadrant_index(it) for it in items])


#: the candidates the 4Q folds rank (logistic regression per C, the MLP members per alpha)
CANDIDATES = ("C=0.02", "C=0.05", "C=0.1", "mlp alpha=10.0", "mlp alpha=30.0")


def evaluate(out_json: Optional[Path], Cs: Sequence[str] = CANDIDATES, log=print,
             with_previous: bool = True, corpora_wanted: Sequence[str] = ("4q", "emopia", "vgmidi", "mix")) -> dict:
    """Every protocol this head is selected on; returns (and writes) the results."""
    from engines.cards import MODELS_DIR

    res: dict = {"front_end": M.front_end_params(), "window_s": WINDOW_S, "hop_s": HOP_S,
                 "scoring": "a clip's probabilities are the mean of its 10 s windows every 2 s (the streamer's "
                            "windows); each window's input is the mean embedding of the grid patches inside it"}
    q4 = _items("4q")
    embs = patch_embeddings(q4, log=log)
    # 1. 4Q artist-grouped 10-fold, per C (selection) -- the in-corpus number
    res["4q_10fold"] = {}
    for C in Cs:
        r = cv_4q(embs, C)
        res["4q_10fold"][C] = r
        log(f"4Q 10-fold {C}: pooled {r['pooled']}, folds {r['fold_macro_f1_mean']} +- {r['fold_macro_f1_sd']}")
    best_c = max(Cs, key=lambda c: res["4q_10fold"][c]["fold_macro_f1_mean"])
    res["selected"] = best_c
    # 2. the 4Q test artists of the previous models' split (their held-out clips): same clips for all
    q4_test = [it for it in q4 if it.clip.split == "test"]
    q4_train = [it for it in q4 if it.clip.split != "test"]
    sets = {"4q_test_artists": q4_test}
    train_sets = {"4q_test_artists": q4_train}
    have = {"4q"}
    if "vgmidi" in corpora_wanted:
        vg = _items("vgmidi")
        embs.update(patch_embeddings(vg, log=log))
        sets["vgmidi_never_trained_on"] = vg
        have.add("vgmidi")
    if "emopia" in corpora_wanted:
        em_test = _items("emopia", ["test"])
        embs.update(patch_embeddings(em_test, log=log))
        sets["emopia_official_test"] = em_test
        have.add("emopia_test")
        em_tv = _items("emopia", ["train", "val"], EMOPIA_TRAIN_CLIPS)
        if "emopia_train" in corpora_wanted:
            embs.update(patch_embeddings(em_tv, log=log))
            have.add("emopia_trainval")
    if "mix" in corpora_wanted:
        mix = mixture_items(q4_test)
        embs.update(patch_embeddings(mix, log=log))
        sets["4q_test_artists_under_speech"] = mix
    em_train = _items("emopia", ["train", "val"], EMOPIA_TRAIN_CLIPS) if "emopia_trainval" in have else []
    if em_train:  # does adding EMOPIA train/val to every fold's training keep the 4Q score?
        r = cv_4q(embs, best_c, extra=em_train)
        res["4q_10fold_with_emopia"] = {best_c: r}
        log(f"4Q 10-fold {best_c} + EMOPIA train/val: pooled {r['pooled']}, folds {r['fold_macro_f1_mean']}")
        if r["fold_macro_f1_mean"] < res["4q_10fold"][best_c]["fold_macro_f1_mean"]:
            em_train = []
    res["train_on"] = "4q+emopia" if em_train else "4q"
    others = [c for c in Cs if head_settings(c)["kind"] != head_settings(best_c)["kind"]]
    alt = max(others, key=lambda c: res["4q_10fold"][c]["fold_macro_f1_mean"]) if others else None
    res["alternative"] = alt
    heldout: dict = {}
    # the shipped recipe: 4Q (non-test artists for the 4Q sets), + EMOPIA train/val when the folds keep it
    for name, its in sets.items():
        base = q4_train if name.startswith("4q_test") else q4
        tr = base + em_train
        r, _ = run_fold(tr, {name: its}, embs, best_c)
        heldout[name] = {"musicnn_head (4Q + EMOPIA)" if em_train else "musicnn_head (4Q)": r[name]["musicnn_head"],
                         "chance": r[name]["chance"], "head": best_c,
                         "trained_on": f"{len(base)} 4Q clips" + (f" + {len(em_train)} EMOPIA train/val" if em_train else "")}
        if alt:  # the best candidate of the other kind, same training
            heldout[name][f"alternative: musicnn_head {alt}"] = run_fold(tr, {name: its}, embs, alt)[0][name]["musicnn_head"]
        log(f"{name}: {heldout[name]}")
    # cross-corpus: 4Q only -> EMOPIA test / VGMIDI
    for name in [n for n in sets if not n.startswith("4q_test")]:
        r, _ = run_fold(q4, {name: sets[name]}, embs, best_c)
        heldout[name]["musicnn_head (4Q only, cross-corpus)"] = r[name]["musicnn_head"]
    if em_train:
        r, _ = run_fold(em_train, {"4q_test_artists": q4_test}, embs, best_c)
        heldout["4q_test_artists"]["musicnn_head (EMOPIA only, cross-corpus)"] = r["4q_test_artists"]["musicnn_head"]
    if with_previous:
        prev = previous_from_cards()
        for name in sets:
            heldout[name].update(prev.get(name, {}))
    res["held_out"] = heldout
    if out_json:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(res, indent=1) + "\n")
    return res


PREVIOUS_JSON = Path("docs/results/music_previous_models.json")


def held_out_sets(corpora_wanted: Sequence[str] = ("4q", "emopia", "vgmidi", "mix")) -> dict:
    q4_test = [it for it in _items("4q") if it.clip.split == "test"]
    sets = {"4q_test_artists": q4_test}
    if "vgmidi" in corpora_wanted:
        sets["vgmidi_never_trained_on"] = _items("vgmidi")
    if "emopia" in corpora_wanted:
        sets["emopia_official_test"] = _items("emopia", ["test"])
    if "mix" in corpora_wanted:
        sets["4q_test_artists_under_speech"] = mixture_items(q4_test)
    return sets


#: where the previous models' cards hold the same held-out sets (confusions of clip-level quadrant argmax,
#: clips scored as the mean of their 10 s windows every 2 s, as here)
CARD_SETS = {
    "music.onnx (previous shipped CNN)": ("music.json", {
        "4q_test_artists": ("metrics", "4q_test_artists_clean"),
        "4q_test_artists_under_speech": ("metrics", "4q_test_artists_with_test_speech_0dB_4.5s_slots"),
        "emopia_official_test": ("metrics", "emopia_official_test_clean"),
        "vgmidi_never_trained_on": ("cross_corpus", "vgmidi_labelled_never_trained_on")}),
    "music_dnn.onnx (descriptor DNN)": ("music_dnn.json", {
        "4q_test_artists": ("metrics", "4q_test_clean"),
        "4q_test_artists_under_speech": ("metrics", "4q_test_mixed_0dB"),
        "emopia_official_test": ("metrics", "emopia_test_clean"),
        "vgmidi_never_trained_on": ("cross_corpus", "vgmidi_never_trained_on")}),
}


def metrics_from_confusion(cm) -> dict:
    """:func:`quadrant_metrics` of a 4 x 4 confusion (rows true, columns predicted)."""
    cm = np.asarray(cm, int)
    y = np.repeat(np.repeat(np.arange(4), 4), cm.ravel())
    p = np.repeat(np.tile(np.arange(4), 4), cm.ravel())
    return quadrant_metrics(y, p)


def previous_from_cards() -> dict:
    """The previous models' held-out metrics, from the confusions in their cards."""
    from engines.cards import MODELS_DIR

    out: dict = {}
    for label, (card_name, where) in CARD_SETS.items():
        card = json.loads((MODELS_DIR / card_name).read_text())
        for name, (section, key) in where.items():
            m = card.get(section, {}).get(key)
            if m and "confusion_rows_true_cols_pred" in m:
                r = metrics_from_confusion(m["confusion_rows_true_cols_pred"])
                r["from"] = f"{card_name} {section}.{key} (its confusion)"
                out.setdefault(name, {})[label] = r
    return out


def previous(sets: dict, path: Path, log=print) -> dict:
    """Metrics of the previously shipped window models on ``sets`` (cached in ``path``)."""
    from engines.cards import MODELS_DIR, sha256_of

    done = json.loads(path.read_text()) if path.exists() else {}
    for label, fname in PREVIOUS.items():
        sha = sha256_of(MODELS_DIR / fname)
        for name, its in sets.items():
            if done.get(name, {}).get(label, {}).get("onnx_sha256") == sha:
                continue
            P = previous_model_scores(MODELS_DIR / fname, its)
            m = quadrant_metrics(_y(its), P.argmax(1))
            m["onnx_sha256"] = sha
            done.setdefault(name, {})[label] = m
            log(f"{name} {label}: {m}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(done, indent=1) + "\n")
    return done


def negatives(n_speech: int = 300, seed: int = 0) -> np.ndarray:
    """Window inputs without music for the activity output: RAVDESS + TESS speech clips, seeded noise
    and near-silence (one window each)."""
    from .experiments.protocols import ensure_audio

    rng = np.random.default_rng(seed)
    sp = _items("ravdess") + _items("tess")
    sp = [sp[i] for i in rng.permutation(len(sp))[:n_speech]]
    embs = patch_embeddings(sp)
    X = [clip_windows(embs[it.key], _LENGTHS[it.key]).mean(0) for it in sp]
    fe = M.default_front_end()
    for k in range(40):
        x = (rng.standard_normal(M.PATCH_SAMPLES) * 10 ** rng.uniform(-4, -1)).astype(np.float32)
        if k % 2:
            x = np.cumsum(x).astype(np.float32) * 0.01  # brown noise
        X.append(fe.embed([x])[0])
    return np.stack(X)


def train_shipped(out: Path, C: Optional[str] = None, results: Optional[Path] = None, log=print,
                  emopia: Optional[bool] = None, model_id: str = "emotrack-music-musicnn-2") -> dict:
    """Train the shipped head (the candidate the folds selected, on all of 4Q, + EMOPIA train/val when
    the folds kept it; + activity negatives), export, parity check, card."""
    from engines.cards import ModelCard

    res = json.loads(results.read_text()) if results and results.exists() else {}
    C = C or res.get("selected") or res.get("selected_C") or f"mlp alpha={MLP_ALPHA}"
    if emopia is None:
        emopia = res.get("train_on", "4q") == "4q+emopia"
    q4 = _items("4q")
    embs = patch_embeddings(q4, log=log)
    em = _items("emopia", ["train", "val"], EMOPIA_TRAIN_CLIPS) if emopia else []
    if em:
        embs.update(patch_embeddings(em, log=log))
    tr = q4 + em
    X, y = training_rows(tr, embs)
    head = fit_head(X, y, Xneg=negatives(), **head_settings(C))
    export_head(head, out)
    diff = head_parity(head, out, X[:256])
    corpora = ["4Q Audio Emotion Dataset (Panda, Malheiro & Paiva 2018; AllMusic 30 s previews, research use)"]
    if em:
        corpora.append("EMOPIA 1.0 (CC BY-NC-SA 4.0)")
    corpora.append("RAVDESS and TESS speech as non-music windows for the activity output (CC BY-NC-SA 4.0, "
                   "CC BY-NC-ND 4.0)")
    td = {"corpora": corpora, "clips": {"4q": len(q4), "emopia_train_val": len(em)}, "rows": int(len(X)),
          "fit_on": FIT_ON + " (a clip's row: the mean of its 10 s windows' inputs)",
          "class_rows": {q: int((y == i).sum()) for i, q in enumerate(QUADRANTS)}}
    metrics = {k: res[k] for k in ("4q_10fold", "4q_10fold_with_emopia", "held_out", "selected", "train_on")
               if k in res}
    card = head_card(head, out, training_data=td, metrics=metrics, parity=diff,
                     protocol="selected on 4Q artist-grouped 10-fold (training.protocols.protocol_4q; the candidate "
                              f"({', '.join(CANDIDATES)}) with the best mean macro-F1 over the folds, a clip scored "
                              "as the mean of its windows' probabilities; EMOPIA train/val added to training only "
                              "if the folds keep their score), then measured on held-out sets: the 4Q test artists "
                              "of training.corpora's split (trained without them), the EMOPIA official test split, "
                              "all VGMIDI (never trained on), and the 4Q test-artist clips under RAVDESS speech; the "
                              "shipped head (" + C + ") is then refit on all of 4Q" + (" + EMOPIA train/val" if em
                                                                                        else ""),
                     command="python -m training.musicnn_head train " + str(out), model_id=model_id)
    ModelCard(card).write(out)
    log(f"wrote {out} (parity {diff:.3g})")
    return card



def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="the music emotion head on musicnn embeddings")
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("evaluate", help="run the protocols (embeddings cached)")
    e.add_argument("--json", type=Path, default=Path("docs/results/musicnn_head.json"))
    e.add_argument("--no-previous", action="store_true")
    e.add_argument("--corpora", default="4q,emopia,emopia_train,vgmidi,mix")
    sub.add_parser("table", help="print the markdown table of the saved results").add_argument(
        "--json", type=Path, default=Path("docs/results/musicnn_head.json"))
    pv = sub.add_parser("previous", help="score the previously shipped models on the held-out sets")
    pv.add_argument("--corpora", default="4q,emopia,vgmidi,mix")
    t = sub.add_parser("train", help="train, export and card the shipped head")
    t.add_argument("out", type=Path)
    t.add_argument("--candidate", help="e.g. 'C=0.05' or 'mlp alpha=10.0' (default: the one the results selected)")
    t.add_argument("--results", type=Path, default=Path("docs/results/musicnn_head.json"))
    t.add_argument("--emopia", choices=("yes", "no"), help="add EMOPIA train/val (default: as the results chose)")
    a = ap.parse_args(argv)
    if a.cmd == "previous":
        previous(held_out_sets(a.corpora.split(",")), PREVIOUS_JSON)
    elif a.cmd == "table":
        print(markdown_table(json.loads(a.json.read_text())))
    elif a.cmd == "evaluate":
        evaluate(a.json, with_previous=not a.no_previous, corpora_wanted=a.corpora.split(","))
    else:
        train_shipped(a.out, a.candidate, a.results, emopia=None if a.emopia is None else a.emopia == "yes")
    return 0



def _cell(m: Optional[dict]) -> str:
    if not m:
        return "-"
    return f"{m['macro_f1']:.3f} / {m['arousal_uar']:.3f} / {m['valence_uar']:.3f}"


def markdown_table(res: dict) -> str:
    """The "shipped defaults on unseen corpora" table (music) from :func:`evaluate`'s results."""
    ho = res["held_out"]
    new = lambda d: next((v for k, v in d.items() if k.startswith("musicnn_head (4Q")), None)  # noqa: E731
    sel = res.get("selected") or f"C={res['selected_C']}"
    alt = res.get("alternative")
    alt_of = lambda d: d.get(f"alternative: musicnn_head {alt}") if alt else None  # noqa: E731
    names = {"4q_test_artists": "4Q test artists (137 clips, 20 % of artists)",
             "4q_test_artists_under_speech": "the same 137 clips under RAVDESS test speech (every 4.5 s slot)",
             "emopia_official_test": "EMOPIA official test (88 clips)",
             "vgmidi_never_trained_on": "VGMIDI, all 204 labelled phrases (never trained on)"}
    on = "4Q + EMOPIA" if res.get("train_on", "4q+emopia") == "4q+emopia" else "4Q"
    lines = [f"| held-out set | music_musicnn.onnx (musicnn head, {sel}; {on}; by path) | "
             f"alternative: musicnn head ({alt or '-'}) | previous default: music.onnx (CNN) | "
             "music_dnn.onnx (descriptor DNN) | musicnn head trained on the other corpus only | chance: majority; "
             "stratified |",
             "|---|---|---|---|---|---|---|"]
    cv = res["4q_10fold"][sel]
    acv = res["4q_10fold"].get(alt) if alt else None
    alt_cell = f"{_cell(acv['pooled'])} (folds {acv['fold_macro_f1_mean']:.3f})" if acv else "-"
    lines.append(f"| 4Q artist-grouped 10-fold (630 clips, pooled; folds {cv['fold_macro_f1_mean']:.3f} ± "
                 f"{cv['fold_macro_f1_sd']:.3f}) | {_cell(cv['pooled'])} | {alt_cell} | (trained on 4Q) | "
                 f"(trained on 4Q) | - | {_cell(cv['chance']['majority'])}; {_cell(cv['chance']['stratified'])} |")
    for k, label in names.items():
        if k not in ho:
            continue
        d = ho[k]
        cross = d.get("musicnn_head (4Q only, cross-corpus)") or d.get("musicnn_head (EMOPIA only, cross-corpus)")
        cross_from = "4Q only" if "musicnn_head (4Q only, cross-corpus)" in d else "EMOPIA only"
        lines.append(f"| {label} | {_cell(new(d))} | {_cell(alt_of(d))} | "
                     f"{_cell(d.get('music.onnx (previous shipped CNN)'))} | "
                     f"{_cell(d.get('music_dnn.onnx (descriptor DNN)'))} | "
                     f"{_cell(cross) + f' ({cross_from})' if cross else '-'} | "
                     f"{_cell(d['chance']['majority'])}; {_cell(d['chance']['stratified'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
