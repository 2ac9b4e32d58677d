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

from streamer import adapt, taxonomy
from streamer.adapt import StreamStandardiser
from streamer.inputs import stack_inputs, window_inputs
from streamer.predict import clip_windows

from .data.corpora import SR, Clip
from .data.mixing import MixConfig, model_input, speech_slots


def input_names(sess) -> tuple[str, ...]:
    """The inputs an onnxruntime session takes (``features``, ``handcrafted``, ``waveform``)."""
    return tuple(i.name for i in sess.get_inputs())


def features_of(x: np.ndarray, cfg: MixConfig, names=("features",),
                stream: Optional[StreamStandardiser] = None, update: bool = True) -> dict[str, np.ndarray]:
    """Inputs ``names`` of every sliding window of a clip, stacked [W, ...] (of its separated stem
    when training uses a separator: :func:`training.data.mixing.model_input`); ``stream``: a model's
    per-stream adaptation (:mod:`streamer.adapt`) of the input its card names, updated with each window
    when ``update``."""
    x = model_input(x, cfg.source)
    wins = clip_windows(x, cfg.n_samples, int(round(cfg.hop_s * SR)))
    per = [window_inputs(w, names) for w in wins]
    if stream is not None:
        per = [stream.adapt_inputs(p, update=update) for p in per]
    return stack_inputs(per)


def run_model(sess, feats: dict[str, np.ndarray], batch: int = 32) -> dict[str, np.ndarray]:
    """onnxruntime outputs for stacked windows (:func:`features_of`)."""
    outs = {"quadrant": [], "va": [], "activity": []}
    n = len(next(iter(feats.values())))
    for i in range(0, n, batch):
        r = sess.run(["quadrant", "va", "activity"], {k: v[i:i + batch] for k, v in feats.items()})
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
    names = input_names(sess)
    for f in mapper(_feat_job, ((audio_of(c), cfg, names) for c in clips)):
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
    x, cfg, names = args
    return features_of(x, cfg, names)


def activity_windows(sess, audios: Sequence[np.ndarray], cfg: MixConfig, mapper=map,
                     stream: Optional[StreamStandardiser] = None, update: bool = True) -> float:
    """Mean activity output over every sliding window of ``audios`` (``stream``, ``update``: a
    model's adaptation, as :func:`features_of`; then the windows are taken in order, one process)."""
    names = input_names(sess)
    if stream is not None:
        feats = (features_of(a, cfg, names, stream, update) for a in audios)
    else:
        feats = mapper(_feat_job, ((a, cfg, names) for a in audios))
    vals = [run_model(sess, f)["activity"][:, 0] for f in feats]
    return round(float(np.mean(np.concatenate(vals))), 4)


def other_source_only(cfg: MixConfig, others: Sequence[Clip], rng: np.random.Generator) -> tuple[list, str]:
    """Held-out audio of the other source alone, and its description: for a speech model the first
    60 held-out 4Q songs of ``others``, for a music model 30 x 30 s of held-out RAVDESS speech in
    seed 001's 4.5 s slots."""
    if cfg.source == "speech":
        return [o.audio for o in others if o.corpus == "4q"][:60], "held-out 4Q test songs (first 60)"
    spk = [o for o in others if o.corpus == "ravdess"] or list(others)
    return ([speech_slots(rng, spk, 30 * SR, cfg.slot_s, phase=0.0)[0] for _ in range(30)],
            "30 s of held-out RAVDESS speech in 4.5 s slots")


def activity_report(sess, cfg: MixConfig, with_: Sequence[np.ndarray], others: Sequence[Clip],
                    rng: np.random.Generator, mapper=map,
                    with_text: str = "held-out target clips (clean)", adaptation: Optional[dict] = None) -> dict:
    """The activity head's mean over held-out windows with the target source (``with_``), with the
    other source only (:func:`other_source_only` of ``others``) and over near-silence.  With a
    model's ``adaptation`` (card section), the target windows are one stream that updates its
    statistics; the other two start from the prior and do not update (a stream's windows below the
    activity gate)."""
    without, other_text = other_source_only(cfg, others, rng)
    silence = [np.random.default_rng(i).standard_normal(int(cfg.window_s * SR * 2)).astype(np.float32) * 1e-4
               for i in range(10)]
    ad = adapt.from_section(adaptation)
    fresh = (lambda: ad.new_stream()) if ad else (lambda: None)  # noqa: E731
    out = {"with_target_source": activity_windows(sess, with_, cfg, mapper, fresh()),
           "other_source_only": activity_windows(sess, without, cfg, mapper, fresh(), update=False),
           "near_silence_-80dBFS_noise": activity_windows(sess, silence, cfg, mapper, fresh(), update=False),
           "protocol": (f"mean activity output over all sliding windows of held-out clips: with the target "
                        f"source = {with_text}; other source only = {other_text}; near-silence = white noise")}
    if ad:
        out["adaptation"] = ("target windows: one stream, statistics updated; other source and near-silence: "
                             "the prior's statistics, not updated (below the streamer's activity gate)")
    return out
