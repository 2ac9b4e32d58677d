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

    python -m training.musicnn_head embed            # cache the embeddings of every corpus
    python -m training.musicnn_head evaluate --json docs/results/musicnn_head.json
    python -m training.musicnn_head train engines/models/music.onnx
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

def _cache_file(feature_set: str, keys: Sequence[str]) -> Path:
    h = hashlib.sha1(("\n".join(keys) + f"|musicnn-v{M.MUSICNN_VERSION}").encode()).hexdigest()[:12]
    return cache_root() / "musicnn" / f"{feature_set}_{h}.npz"


def patch_embeddings(items, front_end: Optional[M.FrontEnd] = None, log=None) -> dict[str, np.ndarray]:
    """{item key: [n_patches, 200]} of the grid patches of each item's audio (with the clip length
    in samples kept as ``n_samples`` per key in a second dict, see :func:`clip_lengths`); cached per
    feature set."""
    from .protocols import ensure_audio

    out: dict[str, np.ndarray] = {}
    by_set: dict[str, list] = {}
    for it in items:
        by_set.setdefault(it.feature_set, []).append(it)
    for fs, its in by_set.items():
        keys = sorted({it.key for it in its})
        cp = _cache_file(fs, keys)
        if cp.exists():
            z = np.load(cp)
            data, off, n = z["data"], z["offsets"], z["n_samples"]
            for i, k in enumerate(keys):
                out[k] = data[off[i]:off[i + 1]]
                _LENGTHS[k] = int(n[i])
            continue
        fe = front_end or M.default_front_end()
        uniq = {it.key: it for it in its}
        embs, lens = [], []
        t0 = time.time()
        for j, k in enumerate(keys):
            it = uniq[k]
            ensure_audio(it.needs)
            x = it.audio()
            embs.append(M.clip_patches(x, fe))
            lens.append(int(x.size))
            if log and j % 100 == 0:
                log(f"  {fs}: {j}/{len(keys)} items embedded ({time.time() - t0:.0f} s)")
        cp.parent.mkdir(parents=True, exist_ok=True)
        off = np.concatenate([[0], np.cumsum([e.shape[0] for e in embs])])
        np.savez(cp.with_suffix(".tmp.npz"), data=np.concatenate(embs), offsets=off, n_samples=np.array(lens))
        cp.with_suffix(".tmp.npz").replace(cp)
        for k, e, n in zip(keys, embs, lens):
            out[k] = e
            _LENGTHS[k] = n
    return out


_LENGTHS: dict[str, int] = {}


def clip_windows(emb: np.ndarray, n_samples: int) -> np.ndarray:
    """The streamer's window inputs [n_windows, 200] of a clip (10 s windows every 2 s)."""
    return M.window_means(emb, n_samples, int(WINDOW_S * SR), int(HOP_S * SR))


def window_set(items, embs: dict) -> tuple[np.ndarray, np.ndarray]:
    """(X [n_windows, 200], item index per window) of ``items``."""
    xs, idx = [], []
    for i, it in enumerate(items):
        w = clip_windows(embs[it.key], _LENGTHS[it.key])
        xs.append(w)
        idx.append(np.full(len(w), i))
    return np.concatenate(xs), np.concatenate(idx)


# --------------------------------------------------------------------------- the head

@dataclass
class Head:
    """Standardisation + multinomial logistic regression (quadrants) + logistic activity."""

    mean: np.ndarray          # [200]
    std: np.ndarray           # [200]
    coef: np.ndarray          # [4, 200]
    intercept: np.ndarray     # [4]
    act_coef: np.ndarray      # [200]
    act_intercept: float
    C: float

    def z(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, np.float64) - self.mean) / self.std

    def probs(self, X: np.ndarray) -> np.ndarray:
        s = self.z(X) @ self.coef.T + self.intercept
        s -= s.max(axis=1, keepdims=True)
        e = np.exp(s)
        return e / e.sum(axis=1, keepdims=True)

    def outputs(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """What the exported ONNX graph computes (float64 here)."""
        p = self.probs(X)
        act = 1.0 / (1.0 + np.exp(-(self.z(X) @ self.act_coef + self.act_intercept)))
        return {"quadrant": p, "va": p @ QUADRANT_VA, "activity": act[:, None]}


def fit_head(X: np.ndarray, y: np.ndarray, C: float = 0.05, Xneg: Optional[np.ndarray] = None,
             seed: int = 0) -> Head:
    """Fit on window inputs ``X`` [n, 200] with quadrant indices ``y``; ``Xneg``: windows without music
    (speech, noise, silence) for the activity output (without them the activity is a constant 1)."""
    from sklearn.linear_model import LogisticRegression

    X = np.asarray(X, np.float64)
    mean, std = X.mean(0), X.std(0) + 1e-6
    Z = (X - mean) / std
    lr = LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=seed)
    lr.fit(Z, y)
    coef = np.zeros((4, X.shape[1]))
    icpt = np.full(4, -30.0)           # a class absent from training never wins
    coef[lr.classes_] = lr.coef_
    icpt[lr.classes_] = lr.intercept_
    if Xneg is not None and len(Xneg):
        Zn = (np.asarray(Xneg, np.float64) - mean) / std
        act = LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000, random_state=seed)
        act.fit(np.concatenate([Z, Zn]), np.r_[np.ones(len(Z)), np.zeros(len(Zn))])
        a_coef, a_icpt = act.coef_[0], float(act.intercept_[0])
    else:
        a_coef, a_icpt = np.zeros(X.shape[1]), 10.0
    return Head(mean, std, coef, icpt, a_coef, a_icpt, C)


# --------------------------------------------------------------------------- protocols

def half_uar(yq: np.ndarray, pq: np.ndarray, which: str) -> float:
    """UAR of the arousal (Q1, Q2 high) or valence (Q1, Q4 positive) half of quadrant indices."""
    hi = np.array([0, 1]) if which == "arousal" else np.array([0, 3])
    t, p = np.isin(yq, hi), np.isin(pq, hi)
    rec = [np.mean(p[t == v] == v) for v in (True, False) if (t == v).any()]
    return float(np.mean(rec))


def quadrant_metrics(y: np.ndarray, p: np.ndarray) -> dict:
    from .protocols import macro_f1

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


def run_fold(train, tests: dict, embs: dict, C: float, Xneg=None) -> tuple[dict, dict]:
    """(metrics per test set, predictions per test set) of a head trained on ``train``."""
    X, idx = window_set(train, embs)
    ytr_clip = np.array([quadrant_index(it) for it in train])
    head = fit_head(X, ytr_clip[idx], C=C, Xneg=Xneg)
    res, preds = {}, {}
    for name, its in tests.items():
        if not its:
            continue
        y = np.array([quadrant_index(it) for it in its])
        P = clip_scores(head.probs, its, embs)
        res[name] = {"musicnn_head": quadrant_metrics(y, P.argmax(1)), "chance": chance_metrics(ytr_clip, y)}
        preds[name] = (y, P)
    return res, preds


def pooled(preds: list, ytr_all: np.ndarray) -> dict:
    """Metrics over the folds' test predictions pooled, per-fold mean +- sd of macro-F1, and chance."""
    y = np.concatenate([p[0] for p in preds])
    P = np.concatenate([p[1] for p in preds])
    out = {"pooled": quadrant_metrics(y, P.argmax(1)), "chance": chance_metrics(ytr_all, y)}
    f = [quadrant_metrics(a, b.argmax(1))["macro_f1"] for a, b in preds]
    out["fold_macro_f1_mean"] = round(float(np.mean(f)), 4)
    out["fold_macro_f1_sd"] = round(float(np.std(f)), 4)
    return out


# --------------------------------------------------------------------------- ONNX export and card

OPSET = 17
PARITY_TOL = 1e-4


def export_head(head: Head, path: Path) -> Path:
    """Write the head as an ONNX graph: input ``musicnn`` [N, 200]; outputs quadrant [N, 4],
    va [N, 2], activity [N, 1] (the streamer's output contract)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    f32 = lambda a, n: numpy_helper.from_array(np.asarray(a, np.float32), n)  # noqa: E731
    inits = [f32(head.mean, "mean"), f32(1.0 / head.std, "inv_std"), f32(head.coef.T, "W"),
             f32(head.intercept, "b"), f32(QUADRANT_VA, "quadrant_va"), f32(head.act_coef[:, None], "Wa"),
             f32([head.act_intercept], "ba")]
    nodes = [helper.make_node("Sub", ["musicnn", "mean"], ["centred"]),
             helper.make_node("Mul", ["centred", "inv_std"], ["z"]),
             helper.make_node("MatMul", ["z", "W"], ["zw"]),
             helper.make_node("Add", ["zw", "b"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["quadrant"], axis=-1),
             helper.make_node("MatMul", ["quadrant", "quadrant_va"], ["va"]),
             helper.make_node("MatMul", ["z", "Wa"], ["za"]),
             helper.make_node("Add", ["za", "ba"], ["act_logit"]),
             helper.make_node("Sigmoid", ["act_logit"], ["activity"])]
    g = helper.make_graph(
        nodes, "musicnn_emotion_head",
        [helper.make_tensor_value_info("musicnn", TensorProto.FLOAT, ["N", M.EMBED_DIM])],
        [helper.make_tensor_value_info("quadrant", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("va", TensorProto.FLOAT, ["N", 2]),
         helper.make_tensor_value_info("activity", TensorProto.FLOAT, ["N", 1])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="emotrack")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def head_parity(head: Head, path: Path, X: np.ndarray) -> float:
    """Max abs difference numpy (float64) head vs onnxruntime on ``X``; raises if >= :data:`PARITY_TOL`."""
    from .export import session

    got = dict(zip(["quadrant", "va", "activity"],
                   session(path).run(["quadrant", "va", "activity"], {"musicnn": np.asarray(X, np.float32)})))
    want = head.outputs(X)
    diff = max(float(np.max(np.abs(want[k] - got[k]))) for k in want)
    if not diff < PARITY_TOL:
        raise RuntimeError(f"head vs onnxruntime parity failed: max abs diff {diff:.3g} >= {PARITY_TOL}")
    return diff


def head_card(head: Head, onnx_path: Path, *, training_data: dict, protocol: str, metrics: dict,
              parity: float, command: str, model_id: str = "emotrack-music-musicnn-1") -> dict:
    """The model card (the format of engines/models/music.json), written by :func:`training.export.write_card`."""
    from engines.models import sha256_of
    from streamer.features import DEFAULT_PARAMS

    from .export import op_types, time_forward

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
                                   f"({M.FRONT_END_ONNX}) over the 3 s patches of the stream's 2 s grid that "
                                   "lie inside the window; standardisation is inside the graph",
                    "front_end": M.front_end_params()}],
        "outputs": [{"name": "quadrant", "dtype": "float32", "shape": ["N", 4], "activation": "softmax",
                     "labels": list(QUADRANTS)},
                    {"name": "va", "dtype": "float32", "shape": ["N", 2], "labels": ["valence", "arousal"],
                     "activation": "probs @ [[1,1],[-1,1],[-1,-1],[1,-1]]: P(V+) - P(V-), P(A+) - P(A-)"},
                    {"name": "activity", "dtype": "float32", "shape": ["N", 1], "activation": "sigmoid",
                     "description": "music vs speech / noise / silence (logistic regression on the same input)"}],
        "features": DEFAULT_PARAMS.to_dict(),
        "architecture": f"front end {M.FRONT_END_ONNX} (musicnn MSD, frozen) -> mean over grid patches -> "
                        f"standardise (constants) -> multinomial logistic regression (C={head.C}, balanced "
                        "class weights) -> softmax; va = probs @ quadrant signs; activity = logistic regression",
        "parameters": int(head.coef.size + head.intercept.size + head.act_coef.size + 1),
        "front_end": {"onnx": M.FRONT_END_ONNX, "id": fe_card.get("id"), "sha256": fe_card.get("onnx_sha256"),
                      "licence": fe_card.get("licence")},
        "training_data": training_data, "protocol": protocol, "metrics": metrics,
        "speed": {"head_forward_pass": time_forward(onnx_path, probe), "head_onnx_max_abs_diff": parity},
        "licence": "head trained on " + ", ".join(training_data.get("corpora", [])) + ": research / "
                   "non-commercial use only; " + fe_card.get("licence", "front end: musicnn (ISC)"),
        "created": time.strftime("%Y-%m-%d"), "command": command,
    }
