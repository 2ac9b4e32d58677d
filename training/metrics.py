"""Metrics, defined once: classification (accuracy, macro-F1, UAR, confusion, the quadrant and
arousal/valence-half views of any class set), regression (CCC, RMSE, R2 per dimension) and chance
levels.  The experiments (:mod:`training.experiments`) and the clip-level evaluation of trained
models (:mod:`training.evaluate`) both use these."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from streamer import taxonomy


def class_quadrant(name: str) -> Optional[str]:
    """Quadrant of a class name (None: neutral / no quadrant)."""
    try:
        return taxonomy.label_quadrant(name)
    except KeyError:
        return None


def confusion(y: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    """Counts [k, k], rows true, columns predicted."""
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (np.asarray(y, int), np.asarray(p, int)), 1)
    return cm


def macro_f1(y: np.ndarray, p: np.ndarray, k: int) -> float:
    """Mean F1 over the classes that occur in ``y`` or ``p`` (scikit-learn's convention)."""
    cm = confusion(y, p, k)
    f = []
    for c in range(k):
        tp, fp, fn = cm[c, c], cm[:, c].sum() - cm[c, c], cm[c, :].sum() - cm[c, c]
        if tp + fp + fn:
            f.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f)) if f else 0.0


def uar(y: np.ndarray, p: np.ndarray, k: int) -> float:
    """Unweighted average recall: mean recall over the classes present in ``y``."""
    cm = confusion(y, p, k)
    n = cm.sum(1)
    return float(np.mean(np.diag(cm)[n > 0] / n[n > 0])) if (n > 0).any() else 0.0


def quadrant_halves(yq: Sequence[Optional[str]], pq: Sequence[Optional[str]]) -> dict:
    """4-quadrant, arousal-half and valence-half accuracy over clips whose TRUE label has a quadrant.

    A prediction without a quadrant (neutral) counts as wrong for all three.
    """
    pairs = [(t, p) for t, p in zip(yq, pq) if t is not None]
    if not pairs:
        return {}
    hi_a = {"Q1", "Q2"}
    pos_v = {"Q1", "Q4"}
    q = np.mean([p == t for t, p in pairs])
    a = np.mean([p is not None and ((p in hi_a) == (t in hi_a)) for t, p in pairs])
    v = np.mean([p is not None and ((p in pos_v) == (t in pos_v)) for t, p in pairs])
    return {"quadrant_accuracy": float(q), "arousal_half_accuracy": float(a), "valence_half_accuracy": float(v),
            "n_quadrant": len(pairs)}


def classification_metrics(y: np.ndarray, p: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, macro-F1, UAR, confusion (and quadrant views when classes map to quadrants)."""
    y, p = np.asarray(y, int), np.asarray(p, int)
    k = len(classes)
    out = {"n": int(len(y)), "accuracy": float(np.mean(y == p)) if len(y) else 0.0,
           "macro_f1": macro_f1(y, p, k), "uar": uar(y, p, k), "confusion": confusion(y, p, k).tolist()}
    cq = [class_quadrant(c) for c in classes]
    if any(q is not None for q in cq):
        out.update(quadrant_halves([cq[i] for i in y], [cq[i] for i in p]))
    return out


def ccc(y: np.ndarray, p: np.ndarray) -> float:
    """Lin's concordance correlation coefficient (population moments)."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    my, mp = y.mean(), p.mean()
    vy, vp = y.var(), p.var()
    cov = np.mean((y - my) * (p - mp))
    den = vy + vp + (my - mp) ** 2
    return float(2 * cov / den) if den > 0 else 0.0


def r2(y: np.ndarray, p: np.ndarray) -> float:
    y, p = np.asarray(y, float), np.asarray(p, float)
    ss = np.sum((y - y.mean()) ** 2)
    return float(1 - np.sum((y - p) ** 2) / ss) if ss > 0 else 0.0


def regression_metrics(Y: np.ndarray, P: np.ndarray) -> dict:
    """CCC, RMSE, R2 per dimension (valence, arousal) and the quadrant view from the signs."""
    Y, P = np.asarray(Y, float), np.asarray(P, float)
    out = {"n": int(len(Y))}
    for j, name in enumerate(("valence", "arousal")):
        out[f"{name}_ccc"] = ccc(Y[:, j], P[:, j])
        out[f"{name}_rmse"] = float(np.sqrt(np.mean((Y[:, j] - P[:, j]) ** 2)))
        out[f"{name}_r2"] = r2(Y[:, j], P[:, j])
    yq = [taxonomy.quadrant_of(v, a) for v, a in Y]
    pq = [taxonomy.quadrant_of(v, a) for v, a in P]
    out.update(quadrant_halves(yq, pq))
    out["confusion"] = confusion([taxonomy.QUADRANTS.index(q) for q in yq],
                                 [taxonomy.QUADRANTS.index(q) for q in pq], 4).tolist()
    return out


def chance_classification(y_train: np.ndarray, y_test: np.ndarray, classes: Sequence[str]) -> dict:
    """Chance levels on one test set.

    ``majority``: always the training fold's most frequent class (all metrics exact).
    ``uniform``: expected values of guessing uniformly (accuracy = UAR = 1/k; macro-F1 and the
    quadrant views by expectation).  ``stratified``: expected accuracy of guessing with the
    training distribution (seed 001's Dummy_strat).
    """
    k = len(classes)
    y_train, y_test = np.asarray(y_train, int), np.asarray(y_test, int)
    maj = int(np.bincount(y_train, minlength=k).argmax())
    out = {"majority": classification_metrics(y_test, np.full(len(y_test), maj), classes)}
    out["majority"].pop("confusion")
    pt = np.bincount(y_test, minlength=k) / max(1, len(y_test))
    ptr = np.bincount(y_train, minlength=k) / max(1, len(y_train))
    present = pt > 0
    # expected F1 of class c under uniform guessing: precision p_c, recall 1/k -> 2 p_c (1/k) / (p_c + 1/k)
    f1 = np.where(present, 2 * pt * (1 / k) / np.maximum(pt + 1 / k, 1e-12), 0.0)
    uni = {"accuracy": 1 / k, "uar": 1 / k, "macro_f1": float(f1[present].mean()) if present.any() else 0.0}
    cq = [class_quadrant(c) for c in classes]
    if any(q is not None for q in cq):
        tq = [cq[i] for i in y_test if cq[i] is not None]
        if tq:
            # uniform over classes: P(predicted class has quadrant q)
            pq = {q: sum(1 for c in cq if c == q) / k for q in taxonomy.QUADRANTS}
            hi_a, pos_v = {"Q1", "Q2"}, {"Q1", "Q4"}
            uni["quadrant_accuracy"] = float(np.mean([pq[t] for t in tq]))
            uni["arousal_half_accuracy"] = float(np.mean(
                [sum(pq[q] for q in taxonomy.QUADRANTS if (q in hi_a) == (t in hi_a)) for t in tq]))
            uni["valence_half_accuracy"] = float(np.mean(
                [sum(pq[q] for q in taxonomy.QUADRANTS if (q in pos_v) == (t in pos_v)) for t in tq]))
    out["uniform"] = uni
    out["stratified"] = {"accuracy": float(np.sum(pt * ptr))}
    return out


def chance_regression(Y_train: np.ndarray, Y_test: np.ndarray) -> dict:
    """Predicting the training mean: CCC 0 by definition, RMSE and R2 of that constant."""
    P = np.tile(np.asarray(Y_train, float).mean(0), (len(Y_test), 1))
    out = regression_metrics(Y_test, P)
    out.pop("confusion")
    return {"train_mean": out}
