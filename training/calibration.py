"""Calibration of the published probabilities, per axis.

What a window publishes follows from two probabilities, P(V+) and P(A+)
(:func:`streamer.taxonomy.agreeing`), so those two are what is calibrated: each
axis's logit is divided by a temperature fitted on held-out predictions
(minimum negative log-likelihood of the axis's true half).  A temperature keeps
every decision (the sign of the logit) and only says how sure the model may be.

* :func:`axis_probs` -- (P(V+), P(A+)) of rows of quadrant probabilities;
* :func:`fit_temperature` / :func:`apply_temperature` -- one axis;
* :func:`ece` -- expected calibration error (equal-width confidence bins);
* :func:`reliability_png` -- reliability diagram of the axes and of the quadrant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

EPS = 1e-6


def axis_probs(probs: np.ndarray) -> np.ndarray:
    """[n, 2] (P(V+), P(A+)) of rows [n, 4] of quadrant probabilities (normalised first)."""
    p = np.clip(np.asarray(probs, np.float64), 0.0, None)
    p = p / np.maximum(p.sum(1, keepdims=True), 1e-12)
    return np.stack([p[:, 0] + p[:, 3], p[:, 0] + p[:, 1]], 1)


def axis_truth(y: np.ndarray) -> np.ndarray:
    """[n, 2] true halves (1: valence positive, arousal high) of quadrant indices ``y`` (>= 0)."""
    y = np.asarray(y)
    return np.stack([np.isin(y, (0, 3)), np.isin(y, (0, 1))], 1).astype(np.float64)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def apply_temperature(p: np.ndarray, t: "float | Sequence[float]") -> np.ndarray:
    """Probabilities ``p`` with their logits divided by ``t`` (per column when ``t`` is a sequence)."""
    return 1.0 / (1.0 + np.exp(-logit(p) / np.asarray(t, np.float64)))


def fit_temperature(p: np.ndarray, truth: np.ndarray) -> float:
    """The temperature in [0.05, 20] that minimises the negative log-likelihood of ``truth`` (0/1)."""
    from scipy.optimize import minimize_scalar

    z, t = logit(np.asarray(p, np.float64)), np.asarray(truth, np.float64)

    def nll(log_t):
        q = np.clip(1.0 / (1.0 + np.exp(-z / np.exp(log_t))), 1e-12, 1 - 1e-12)
        return -np.mean(t * np.log(q) + (1 - t) * np.log1p(-q))

    r = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(r.x))


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: sum over equal-width confidence bins of |accuracy - confidence|,
    weighted by the bin's share of the samples."""
    c, k = np.asarray(confidence, np.float64), np.asarray(correct, np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(c, edges[1:-1]), 0, bins - 1)
    return float(sum(np.sum(idx == b) / c.size * abs(k[idx == b].mean() - c[idx == b].mean())
                     for b in range(bins) if np.any(idx == b)))


def axis_ece(p: np.ndarray, truth: np.ndarray, bins: int = 10) -> float:
    """ECE of one binary axis: confidence max(p, 1 - p), correct when the likelier half is true."""
    return ece(np.maximum(p, 1 - p), (p >= 0.5) == (truth > 0.5), bins)


def quadrant_ece(pa: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """ECE of the published quadrant (top published probability vs its being the true quadrant),
    from per-axis probabilities ``pa`` [n, 2]."""
    from streamer import taxonomy

    conf, ok = [], []
    for (v, a), t in zip(pa, y):
        f = taxonomy.agreeing(taxonomy.quadrant_probabilities(v, a))
        conf.append(max(f["probs"].values()))
        ok.append(taxonomy.QUADRANTS.index(f["quadrant"]) == t)
    return ece(np.array(conf), np.array(ok), bins)


def reliability_png(path: Path, curves: dict, bins: int = 10, title: str = "") -> Path:
    """Reliability diagram: ``curves`` = {label: (confidence, correct)}; one line per curve."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 5.0), dpi=110)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
    edges = np.linspace(0.0, 1.0, bins + 1)
    for label, (c, k) in curves.items():
        c, k = np.asarray(c, float), np.asarray(k, float)
        idx = np.clip(np.digitize(c, edges[1:-1]), 0, bins - 1)
        xs = [c[idx == b].mean() for b in range(bins) if np.sum(idx == b) >= 5]
        ys = [k[idx == b].mean() for b in range(bins) if np.sum(idx == b) >= 5]
        ax.plot(xs, ys, marker="o", label=f"{label} (ECE {ece(c, k, bins):.3f})")
    ax.set_xlabel("published confidence")
    ax.set_ylabel("observed accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
