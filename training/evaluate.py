"""Clip-level evaluation of an exported model (onnxruntime) on held-out clips.

A clip is cut into the model's sliding windows exactly as ``emotrack predict``
does (:func:`streamer.predict.clip_windows`: a shorter clip zero-padded,
centred; the last window ends at the clip's end); window probabilities and VA are averaged; the clip's quadrant is the
argmax of the mean probabilities, its arousal/valence halves the signs of the
mean VA head output (>= 0 counts as high/positive, taxonomy's rule).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from streamer import adapt, taxonomy
from streamer.adapt import StreamStandardiser
from streamer.inputs import stack_inputs, window_inputs
from streamer.predict import clip_windows

from .config import (EMOTIONS8, RecipeError, adapting, clips, emotion_index, input_names, mix_config, use_separator,
                     va_target)
from .data import corpora, mixing
from .data.corpora import SR, Clip
from .data.mixing import MixConfig, model_input, speech_slots
from .experiments.protocols import SEED
from .metrics import ccc, macro_f1, uar


def session(path: Path, threads: int = 1):
    """ONNX Runtime CPU session with ``threads`` intra-op threads (through engines' one session helper)."""
    from engines.backends import ort_session

    return ort_session(path, threads, ["CPUExecutionProvider"])


def session_inputs(sess) -> tuple[str, ...]:
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
        "quadrant_macro_f1": round(macro_f1(y, pred, 4), 4),
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
    names = session_inputs(sess)
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
    names = session_inputs(sess)
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


# ----------------------------------------------------------------------------- recipe models

def clip_streams(clip_list, adaptation: Optional[dict], seed: int = SEED, per_clip: bool = False):
    """``clip_list`` in the order streams hear them, each with its stream (None without adaptation):
    per speaker (corpus, group) one stream, the speaker's clips in a seeded random order, as
    :func:`training.results.online_group_standardise` orders them; ``per_clip``: every clip a stream
    of its own (what ``emotrack predict`` does with one file)."""
    if not adaptation:
        return [(c, None) for c in clip_list]
    ad = adapt.from_section(adaptation)
    out, streams = [], {}
    for c in sorted(clip_list, key=lambda c: (c.corpus, c.group,
                                              hashlib.sha1(f"{seed}:{c.path}".encode()).hexdigest())):
        key = c.path if per_clip else (c.corpus, c.group)
        if key not in streams:
            streams[key] = ad.new_stream()
        out.append((c, streams[key]))
    return out


def clip_outputs(sess, x: np.ndarray, cfg: dict, batch: int = 16,
                 stream: Optional[adapt.StreamStandardiser] = None) -> dict:
    """Mean ONNX outputs over the clip's sliding windows (as ``emotrack predict``); ``stream``: the
    speaker's adaptation state (:func:`clip_streams`), updated with every window of the clip."""
    from streamer.predict import clip_windows

    mc = mix_config(cfg)
    x = model_input(np.asarray(x, np.float32), mc.source)  # the separator's stem when the recipe has one
    wins = clip_windows(x, mc.n_samples, int(round(mc.hop_s * corpora.SR)))
    names = [o.name for o in sess.get_outputs()]
    acc = {n: [] for n in names}
    for i in range(0, len(wins), batch):
        per = [window_inputs(w, input_names(cfg)) for w in wins[i:i + batch]]
        if stream is not None:
            per = [stream.adapt_inputs(p) for p in per]
        feed = {k: np.stack([p[k] for p in per]) for k in per[0]}
        for n, v in zip(names, sess.run(names, feed)):
            acc[n].append(v)
    return {n: np.concatenate(v).mean(0) for n, v in acc.items()}


def clip_metrics(outs: list[dict], clip_list, cfg: dict) -> dict:
    """Clip-level metrics: quadrant (accuracy, macro-F1, UAR, halves, chance, confusion),
    VA (CCC and RMSE against the quadrant sign targets, neutral = origin) and, with the
    emotion head, 8-class accuracy / macro-F1 / UAR."""
    q = np.array([c.q_index for c in clip_list])
    probs = np.stack([o["quadrant"] for o in outs])
    va = np.stack([o["va"] for o in outs])
    keep = q >= 0
    m = metrics(q[keep], probs[keep], va[keep]) if keep.any() else {"n_clips": 0}
    if keep.any():
        m["quadrant_uar"] = round(uar(q[keep], probs[keep].argmax(1), 4), 4)
    tgt = np.array([va_target(c) for c in clip_list])
    m["va_vs_sign_targets"] = {
        "n_clips": int(len(clip_list)),
        "ccc_valence": round(ccc(va[:, 0], tgt[:, 0]), 4), "ccc_arousal": round(ccc(va[:, 1], tgt[:, 1]), 4),
        "rmse_valence": round(float(np.sqrt(np.mean((va[:, 0] - tgt[:, 0]) ** 2))), 4),
        "rmse_arousal": round(float(np.sqrt(np.mean((va[:, 1] - tgt[:, 1]) ** 2))), 4),
        "note": "targets: graded VA where the corpus has it, else the quadrant sign pair (neutral = origin)",
    }
    if "emotion" in outs[0]:
        e = np.array([emotion_index(c.label) for c in clip_list])
        ke = e >= 0
        pe = np.stack([o["emotion"] for o in outs]).argmax(1)
        counts = np.bincount(e[ke], minlength=len(EMOTIONS8))
        cm = np.zeros((len(EMOTIONS8),) * 2, int)
        for t, p in zip(e[ke], pe[ke]):
            cm[t, p] += 1
        m["emotion8"] = {
            "n_clips": int(ke.sum()), "labels": list(EMOTIONS8),
            "class_counts": dict(zip(EMOTIONS8, counts.tolist())),
            "accuracy": round(float(np.mean(pe[ke] == e[ke])), 4),
            "macro_f1": round(macro_f1(e[ke], pe[ke], len(EMOTIONS8)), 4),
            "uar": round(uar(e[ke], pe[ke], len(EMOTIONS8)), 4),
            "chance_majority": round(float(counts.max() / max(ke.sum(), 1)), 4),
            "chance_uniform": round(1 / len(EMOTIONS8), 4),
            "confusion_rows_true_cols_pred": cm.tolist(),
        }
    if (~keep).any():
        m["neutral_clips"] = {"n": int((~keep).sum()),
                              "mean_abs_valence": round(float(np.abs(va[~keep, 0]).mean()), 4),
                              "mean_abs_arousal": round(float(np.abs(va[~keep, 1]).mean()), 4)}
    m["mean_activity"] = round(float(np.mean([np.mean(o["activity"]) for o in outs])), 4)
    return m


def streamed_metrics(sess, clip_list, cfg: dict, adaptation: Optional[dict], audio_of=lambda c: c.audio,
                     per_clip: bool = False) -> dict:
    """:func:`clip_metrics` of ``clip_list``; with ``adaptation``, each speaker's clips are one stream
    (:func:`clip_streams`; ``per_clip``: each clip its own) and the metrics also say so."""
    pairs = clip_streams(clip_list, adaptation, per_clip=per_clip)
    outs = [clip_outputs(sess, audio_of(c), cfg, stream=st) for c, st in pairs]
    m = clip_metrics(outs, [c for c, _ in pairs], cfg)
    if adaptation:
        m["adaptation"] = (("every clip a stream of its own (the prior plus the clip's own windows: what one short "
                            "file gets)") if per_clip else
                           ("causal per-speaker standardisation: each test speaker's clips are one stream, in a "
                            "seeded random order, every window standardised with the statistics heard so far"))
    return m


def evaluate_model(onnx_path: Path, cfg: dict, split: str = "test", max_clips: Optional[int] = None,
                   data: Optional[dict] = None, threads: int = 1, adaptation: Optional[dict] = None) -> dict:
    """Clip-level metrics of an exported model on ``split`` of the recipe's corpora,
    per corpus; clean and, for a mixed recipe, mixed at 0 dB (training.data.mixing.mix_eval).
    ``adaptation``: the card's section for a model that adapts per stream (:func:`clip_streams`)."""
    if adapting(cfg) and not adaptation:
        raise RecipeError(f"{onnx_path}: the recipe adapts per stream and its card has no adaptation section")
    use_separator(cfg)
    data = data or clips(cfg, max_clips, splits=(split,))
    sess = session(onnx_path, threads)
    rng = np.random.default_rng(12345)
    mc = mix_config(cfg)
    res = {}
    for corpus in cfg["data"]["corpora"]:
        cl = [c for c in data["targets"][split] if c.corpus == corpus]
        if not cl:
            continue
        res[f"{corpus}_{split}_clean"] = streamed_metrics(sess, cl, cfg, adaptation)
        if adaptation:  # the cold start: no earlier audio of the speaker
            res[f"{corpus}_{split}_clean_each_clip_alone"] = streamed_metrics(sess, cl, cfg, adaptation,
                                                                              per_clip=True)
        others = data["others"].get(split) or []
        if cfg["mixing"]["mode"] == "mixed" and others:
            if adaptation:  # mixed in list order (the same mixtures as without), heard in stream order
                mixes = {c.path: mixing.mix_eval(rng, mc, c, others, 0.0) for c in cl}
                audio_of = lambda c: mixes[c.path]  # noqa: E731
            else:
                audio_of = lambda c: mixing.mix_eval(rng, mc, c, others, 0.0)  # noqa: E731
            res[f"{corpus}_{split}_mixed_0dB"] = streamed_metrics(sess, cl, cfg, adaptation, audio_of)
    return res


def held_out_extras(onnx_path: Path, cfg: dict, threads: int = 1, adaptation: Optional[dict] = None) -> dict:
    """What the shipped models' cards report besides the test split, measured the same way
    (as the shipped models' cards have them): ``cross_corpus``, clip-level metrics on target corpora the
    recipe never trained on (music: the labelled VGMIDI phrases; speech: RAVDESS or TESS when
    left out), and ``activity``, the mean activity head over held-out windows with the target
    source, with the other source only, and over near-silence."""
    sess = session(onnx_path, threads)
    mc = mix_config(cfg)
    rng = np.random.default_rng(12345)
    task = cfg["task"]
    index = corpora.speech_index() if task == "speech" else corpora.music_index()
    cross = [c for c in index if c.corpus not in cfg["data"]["corpora"] and c.quadrant is not None
             and (task == "speech" or c.split == "xtest")]
    corpora.load_audio(cross)
    out = {"cross_corpus": {}}
    for corpus in sorted({c.corpus for c in cross}):
        cl = [c for c in cross if c.corpus == corpus]
        out["cross_corpus"][f"{corpus}_never_trained_on"] = streamed_metrics(sess, cl, cfg, adaptation)
        if adaptation:  # the same clips, each a stream of its own: what the adaptation adds or costs
            out["cross_corpus"][f"{corpus}_never_trained_on_each_clip_alone"] = streamed_metrics(
                sess, cl, cfg, adaptation, per_clip=True)
    data = clips(cfg, None, splits=("test",))
    if task == "speech":  # only what evaluate.other_source_only uses: 60 4Q test songs, or RAVDESS test speech
        others = [c for c in corpora.music_index() if c.corpus == "4q" and c.split == "test"][:60]
    else:
        others = [c for c in corpora.speech_index() if c.corpus == "ravdess" and c.split == "test"]
    others = corpora.load_audio(others)
    out["activity"] = activity_report(sess, mc, [c.audio for c in data["targets"]["test"]][:60], others, rng,
                                               with_text="the first 60 held-out test clips (clean)",
                                               adaptation=adaptation)
    return out
