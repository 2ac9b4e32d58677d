"""Clip-level evaluation of an exported model (onnxruntime) on held-out clips.

A clip is cut into the model's sliding windows exactly as ``emotrack predict``
does (:func:`streamer.predict.clip_windows`: a shorter clip zero-padded,
centred; the last window ends at the clip's end); window probabilities and VA are averaged; the clip's quadrant is the
argmax of the mean probabilities, its arousal/valence halves the signs of the
mean VA head output (>= 0 counts as high/positive, taxonomy's rule).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from streamer import taxonomy
from streamer.features import extract
from streamer.predict import clip_windows

from .corpora import SR, Clip
from .mixing import MixConfig, model_input


def features_of(x: np.ndarray, cfg: MixConfig) -> np.ndarray:
    """Features of every sliding window of a clip [W, T, 64, 3] (of its separated stem when
    training uses a separator: :func:`training.mixing.model_input`)."""
    x = model_input(x, cfg.source)
    return np.stack([extract(w) for w in clip_windows(x, cfg.n_samples, int(round(cfg.hop_s * SR)))])


def run_model(sess, feats: np.ndarray, batch: int = 32) -> dict[str, np.ndarray]:
    """onnxruntime outputs for a stack of windows."""
    outs = {"quadrant": [], "va": [], "activity": []}
    for i in range(0, len(feats), batch):
        r = sess.run(["quadrant", "va", "activity"], {"features": feats[i:i + batch]})
        for k, v in zip(outs, r):
            outs[k].append(v)
    return {k: np.concatenate(v) for k, v in outs.items()}


def macro_f1(y: np.ndarray, p: np.ndarray, n: int = 4) -> float:
    """Macro-F1 over the classes present in ``y`` or ``p``."""
    f = []
    for c in range(n):
        tp = np.sum((y == c) & (p == c))
        fp = np.sum((y != c) & (p == c))
        fn = np.sum((y == c) & (p != c))
        if tp + fp + fn == 0:
            continue
        f.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f)) if f else 0.0


def metrics(y: np.ndarray, probs: np.ndarray, va: np.ndarray) -> dict:
    """Quadrant accuracy, macro-F1, halves, chance levels, confusion (rows = true Q1..Q4)."""
    y = np.asarray(y)
    pred = probs.argmax(1)
    ya = np.isin(y, [0, 1])            # high arousal: Q1, Q2
    yv = np.isin(y, [0, 3])            # positive valence: Q1, Q4
    counts = np.bincount(y, minlength=4)
    cm = np.zeros((4, 4), dtype=int)
    for t, p in zip(y, pred):
        cm[t, p] += 1
    pa = probs[:, 0] + probs[:, 1]
    pv = probs[:, 0] + probs[:, 3]
    return {
        "n_clips": int(len(y)),
        "class_counts": dict(zip(taxonomy.QUADRANTS, counts.tolist())),
        "quadrant_accuracy": round(float(np.mean(pred == y)), 4),
        "quadrant_macro_f1": round(macro_f1(y, pred), 4),
        "chance_quadrant_majority": round(float(counts.max() / len(y)), 4),
        "chance_quadrant_uniform": 0.25,
        "arousal_half_accuracy": round(float(np.mean((va[:, 1] >= 0) == ya)), 4),
        "valence_half_accuracy": round(float(np.mean((va[:, 0] >= 0) == yv)), 4),
        "arousal_half_accuracy_from_quadrant_probs": round(float(np.mean((pa >= 0.5) == ya)), 4),
        "valence_half_accuracy_from_quadrant_probs": round(float(np.mean((pv >= 0.5) == yv)), 4),
        "chance_arousal_majority": round(float(max(ya.mean(), 1 - ya.mean())), 4),
        "chance_valence_majority": round(float(max(yv.mean(), 1 - yv.mean())), 4),
        "chance_half_uniform": 0.5,
        "confusion_rows_true_cols_pred": cm.tolist(),
    }


def clip_level(sess, clips: Sequence[Clip], cfg: MixConfig, audio_of: Callable[[Clip], np.ndarray],
               mapper=map) -> dict:
    """Metrics over ``clips`` (non-neutral ones scored; neutral ones summarised)."""
    probs, va, act = [], [], []
    # ``mapper`` may be lazy (Pool.imap): features of one clip at a time, never all in memory
    for f in mapper(_feat_job, ((audio_of(c), cfg) for c in clips)):
        o = run_model(sess, f)
        probs.append(o["quadrant"].mean(0))
        va.append(o["va"].mean(0))
        act.append(o["activity"].mean())
    probs, va = np.array(probs), np.array(va)
    q = np.array([c.q_index for c in clips])
    keep = q >= 0
    out = metrics(q[keep], probs[keep], va[keep]) if keep.any() else {"n_clips": 0}
    if (~keep).any():
        out["neutral_clips"] = {"n": int((~keep).sum()),
                                "mean_abs_valence": round(float(np.abs(va[~keep, 0]).mean()), 4),
                                "mean_abs_arousal": round(float(np.abs(va[~keep, 1]).mean()), 4),
                                "mean_abs_va_scored_clips": round(float(np.abs(va[keep]).mean()), 4)
                                if keep.any() else None}
    out["mean_activity"] = round(float(np.mean(act)), 4)
    return out


def _feat_job(args):
    x, cfg = args
    return features_of(x, cfg)


def activity_windows(sess, audios: Sequence[np.ndarray], cfg: MixConfig, mapper=map) -> float:
    """Mean activity output over every sliding window of ``audios``."""
    vals = [run_model(sess, f)["activity"][:, 0] for f in mapper(_feat_job, ((a, cfg) for a in audios))]
    return round(float(np.mean(np.concatenate(vals))), 4)
