"""The shipped speech model: the winner of :mod:`training.experiments.loco`, exported with skl2onnx.

    python -m training.speech_model --out engines/models [--system lr_aug_mix]

A scikit-learn classifier of :data:`training.experiments.loco.SYSTEMS` (the shipped one: a balanced
multinomial logistic regression) on the 496 descriptors of :mod:`streamer.descriptors`,
standardised in the graph, trained on every speech corpus (RAVDESS, TESS, EMOVO), their
imitated other-corpus versions (:mod:`training.data.augment`) and the same clips over music.
The ONNX graph (skl2onnx, opset 17, ``ai.onnx.ml``) takes ``handcrafted`` [N, 496] (a system on the
log-mel statistics, ``input="logmel_stats"``: the CNN's ``features`` input, its statistics computed in
the graph by :mod:`training.nets.logmel_stats`) and gives the streamer's three outputs:

* ``quadrant`` [N, 4]: the classifier's quadrant probabilities turned into per-axis
  probabilities P(V+) = p1 + p4, P(A+) = p1 + p2, each calibrated by a temperature
  (:mod:`training.calibration`, fitted on the leave-one-corpus-out predictions),
  and published as their product (:func:`streamer.taxonomy.agreeing`);
* ``va`` [N, 2]: 2 P - 1 of the calibrated axes (what the streamer publishes);
* ``activity`` [N, 1]: a logistic regression on the same descriptors, speech
  (clean or under music) against music alone and near-silence.

scikit-learn is needed to train and export, never to stream: the runtime runs the
graph with ONNX Runtime (``SVMClassifier`` of ``ai.onnx.ml`` and standard ops).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from . import calibration
from .export import OPSET
from .experiments import loco

ML_OPSET = 3
INPUT = "handcrafted"
MODEL_ID = "emotrack-speech-{kind}-1"
LICENCE = ("trained on RAVDESS (CC BY-NC-SA 4.0), TESS (CC BY-NC-ND 4.0) and EMOVO (Fondazione Ugo Bordoni, free "
           "research use): research / non-commercial use only")


def reference_outputs(est, X: np.ndarray, temperatures: Sequence[float], activity: tuple) -> dict:
    """What the exported graph computes, in numpy (for the parity check); ``X``: the classifier's rows
    (descriptors, or log-mel statistics)."""
    p = est.predict_proba(np.asarray(X, np.float64))
    ax = calibration.apply_temperature(calibration.axis_probs(p), temperatures)
    pv, pa = ax[:, 0], ax[:, 1]
    w, b = activity
    act = 1.0 / (1.0 + np.exp(-(np.asarray(X, np.float64) @ w + b)))
    return {"quadrant": np.stack([pv * pa, (1 - pv) * pa, (1 - pv) * (1 - pa), pv * (1 - pa)], 1),
            "va": 2 * ax - 1, "activity": act[:, None]}


def export(est, n_features: int, temperatures: Sequence[float], activity: tuple, path: Path,
           input: str = INPUT, frames: Optional[int] = None) -> Path:
    """``est`` (StandardScaler + classifier pipeline) as ONNX at ``path``, with the calibrated per-axis head and
    the activity regression appended (see the module docstring).  ``input="logmel_stats"``: the classifier
    reads the statistics of the ``features`` input [N, ``frames``, 64, 3], computed in the graph by
    :func:`training.nets.logmel_stats.graph` put in front of it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    clf = est.steps[-1][1]
    proto = convert_sklearn(est, initial_types=[(input, FloatTensorType([None, n_features]))],
                            target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET}, options={id(clf): {"zipmap": False}})
    for imp in proto.opset_import:  # skl2onnx declares the lowest opset its nodes need; ours need 17
        if imp.domain in ("", "ai.onnx"):
            imp.version = OPSET
    prob = [o.name for o in proto.graph.output if o.name != "label"][0]
    append_agreeing_head(proto, prob, temperatures, activity=activity, input_name=input)
    if input == "logmel_stats":
        from onnx import compose

        from .nets import logmel_stats
        front = logmel_stats.graph(frames, opset=OPSET, output=input)
        front.ir_version = proto.ir_version
        proto = compose.merge_models(front, proto, io_map=[(input, input)],
                                     outputs=["quadrant", "va", "activity"])
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path


def append_agreeing_head(proto, prob: str, temperatures: Sequence[float], activity: Optional[tuple] = None,
                         input_name: str = INPUT) -> None:
    """Append to ``proto`` the calibrated per-axis head on its quadrant probabilities ``prob`` [N, 4]:
    outputs ``quadrant`` (product of the temperature-scaled axes) and ``va`` (2P - 1); with ``activity``
    = (w, b), also ``activity`` = sigmoid(input @ w + b).  Outputs not rebuilt here are kept."""
    from onnx import TensorProto, helper, numpy_helper

    g = proto.graph
    consts = {
        "axes_M": np.array([[1, 1], [0, 1], [0, 0], [1, 0]], np.float32),
        "eps": np.array(calibration.EPS, np.float32), "one_minus_eps": np.array(1 - calibration.EPS, np.float32),
        "one": np.array(1.0, np.float32), "two": np.array(2.0, np.float32),
        "inv_T": (1.0 / np.asarray(temperatures, np.float64)).astype(np.float32),
        "s0": np.array([0], np.int64), "s1": np.array([1], np.int64), "s2": np.array([2], np.int64),
        "ax1": np.array([1], np.int64),
    }
    if activity is not None:
        consts["act_w"] = np.asarray(activity[0], np.float32).reshape(-1, 1)
        consts["act_b"] = np.array([activity[1]], np.float32)
    for k, v in consts.items():
        g.initializer.append(numpy_helper.from_array(v, k))
    N = helper.make_node
    g.node.extend([
        N("MatMul", [prob, "axes_M"], ["ax_raw"]),
        N("Clip", ["ax_raw", "eps", "one_minus_eps"], ["ax_c"]),
        N("Log", ["ax_c"], ["ax_log"]),
        N("Sub", ["one", "ax_c"], ["ax_neg"]),
        N("Log", ["ax_neg"], ["ax_neg_log"]),
        N("Sub", ["ax_log", "ax_neg_log"], ["ax_logit"]),
        N("Mul", ["ax_logit", "inv_T"], ["ax_scaled"]),
        N("Sigmoid", ["ax_scaled"], ["ax_p"]),
        N("Mul", ["ax_p", "two"], ["ax_2p"]),
        N("Sub", ["ax_2p", "one"], ["va"]),
        N("Slice", ["ax_p", "s0", "s1", "ax1"], ["pv"]),
        N("Slice", ["ax_p", "s1", "s2", "ax1"], ["pa"]),
        N("Sub", ["one", "pv"], ["nv"]),
        N("Sub", ["one", "pa"], ["na"]),
        N("Mul", ["pv", "pa"], ["q1"]),
        N("Mul", ["nv", "pa"], ["q2"]),
        N("Mul", ["nv", "na"], ["q3"]),
        N("Mul", ["pv", "na"], ["q4"]),
        N("Concat", ["q1", "q2", "q3", "q4"], ["quadrant"], axis=1),
    ])
    if activity is not None:
        g.node.extend([N("MatMul", [input_name, "act_w"], ["act_z"]),
                       N("Add", ["act_z", "act_b"], ["act_zb"]),
                       N("Sigmoid", ["act_zb"], ["activity"])])
    keep = [o for o in g.output if o.name == "activity" and activity is None]
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info("quadrant", TensorProto.FLOAT, ["N", 4]),
                     helper.make_tensor_value_info("va", TensorProto.FLOAT, ["N", 2])] + keep)
    if activity is not None:
        g.output.append(helper.make_tensor_value_info("activity", TensorProto.FLOAT, ["N", 1]))


def calibrate_cnn(onnx_path: Path, log=print) -> dict:
    """Calibrate the log-mel speech CNN in place: its softmax quadrant output becomes the calibrated
    per-axis head (temperatures fitted on its predictions for the clips it never trained on: EMOVO and
    RAVDESS actors 19-24, clean and under music; :func:`training.experiments.loco.unseen_by_all`'s sets), its ``va``
    output 2P - 1 of the same axes; the card gets the calibration section and a new sha256."""
    import onnx

    from engines.cards import ModelCard, sha256_of

    from .export import op_types

    data = loco.Data(("clean",), log=None)
    z = np.load(loco.cache_oof("cnn_fair"))
    idx = z["idx"]
    P = np.concatenate([z["clean"], z["mix"]])
    y = np.concatenate([data.y[idx]] * 2)
    grp = np.concatenate([data.corpus[idx]] * 2)
    keep = y >= 0
    cal = calibration_report(P[keep], y[keep], grp[keep], png=loco.REPO / "docs" / "img" / "speech_cnn_reliability.png")
    proto = onnx.load(str(onnx_path))
    g = proto.graph
    for node in g.node:  # the old outputs quadrant, va become internal tensors
        node.output[:] = [{"quadrant": "quadrant_softmax", "va": "va_tanh"}.get(o, o) for o in node.output]
        node.input[:] = [{"quadrant": "quadrant_softmax", "va": "va_tanh"}.get(i, i) for i in node.input]
    append_agreeing_head(proto, "quadrant_softmax", cal["temperatures"])
    onnx.checker.check_model(proto)
    onnx.save(proto, str(onnx_path))
    card_path = onnx_path.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["onnx_sha256"], card["onnx_bytes"] = sha256_of(onnx_path), onnx_path.stat().st_size
    card["onnx_op_types"] = op_types(onnx_path)
    card["id"] = "emotrack-speech-cnn-1-cal"
    card["metrics"]["calibration"] = {**cal["report"], "data": (
        "the CNN's predictions for EMOVO (all) and RAVDESS actors 19-24, clean and under 4Q music at +5 dB "
        "(never trained on); ECE cross-fitted between the two sets")}
    card["calibration"] = ("appended by training.speech_model.calibrate_cnn: quadrant = product of the per-axis "
                           "probabilities P(V+) = p1 + p4, P(A+) = p1 + p2 of the softmax, each logit divided by its "
                           "temperature; va = 2P - 1 of the same axes (the tanh head is no longer an output)")
    for o in card["outputs"]:
        if o["name"] == "quadrant":
            o["activation"] = "product of the calibrated per-axis probabilities of the softmax (streamer.taxonomy.agreeing)"
        if o["name"] == "va":
            o["activation"] = "2 P(V+) - 1, 2 P(A+) - 1 of the calibrated axes"
    ModelCard(card).write(card_path)
    log(f"calibrated {onnx_path}: temperatures {cal['temperatures']}")
    return card


def onnx_outputs(path: Path, X: np.ndarray, input: str = INPUT) -> dict:
    from engines.backends.onnxruntime import ort_session

    s = ort_session(path, providers=["CPUExecutionProvider"])
    return dict(zip(["quadrant", "va", "activity"], s.run(["quadrant", "va", "activity"],
                                                         {input: np.asarray(X, np.float32)})))


def parity(est, path: Path, X: np.ndarray, temperatures, activity, features: Optional[np.ndarray] = None) -> float:
    """Max abs difference, scikit-learn + numpy vs ONNX Runtime, over the three outputs.  A model on the
    log-mel statistics: ``features`` [N, frames, 64, 3] go into the graph, their numpy statistics
    (:func:`training.nets.logmel_stats.stats`) into scikit-learn (``X`` unused)."""
    if features is not None:
        from .nets import logmel_stats
        X = logmel_stats.stats(features)
    ref = reference_outputs(est, X, temperatures, activity)
    got = onnx_outputs(path, X) if features is None else onnx_outputs(path, features, "features")
    return max(float(np.max(np.abs(ref[k] - got[k]))) for k in ref)


# ----------------------------------------------------------------------------- activity


def activity_regression(speech: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, float]:
    """Logistic regression speech (1) vs not (0) on raw descriptors, as (w, b) on unscaled inputs."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    X = np.concatenate([speech, other]).astype(np.float64)
    y = np.r_[np.ones(len(speech)), np.zeros(len(other))]
    sc = StandardScaler().fit(X)
    lr = LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000).fit(sc.transform(X), y)
    w = lr.coef_[0] / (sc.scale_ + 0.0)
    b = float(lr.intercept_[0] - np.sum(lr.coef_[0] * sc.mean_ / sc.scale_))
    return w, b


def non_speech_descriptors(n_music: int = 400, n_quiet: int = 60, seed: int = 0, log=print,
                           kind: str = "handcrafted") -> np.ndarray:
    """Descriptors of 3 s windows without speech: 4Q song excerpts and near-silence (noise at -80..-50 dBFS)."""
    from .data import handcrafted
    from .data.corpora import SR

    songs = loco.music_clips()
    rng = np.random.default_rng(seed)
    wins = []
    for i in range(n_music):
        o = songs[int(rng.integers(len(songs)))].audio
        s = int(rng.integers(0, max(1, o.size - 3 * SR)))
        w = np.zeros(3 * SR, np.float32)
        w[: min(3 * SR, o.size - s)] = o[s:s + 3 * SR]
        wins.append(w)
    for i in range(n_quiet):
        wins.append((rng.standard_normal(3 * SR) * 10 ** (rng.uniform(-80, -50) / 20)).astype(np.float32))
    keys = [f"nonspeech-{seed}-{i}" for i in range(len(wins))]
    return handcrafted.cached(f"loco-nonspeech-v{loco.VARIANT_VERSION}", keys, lambda i: wins[i], log=log, kind=kind)


# ----------------------------------------------------------------------------- ship


def load_audio_if_needed(clips) -> None:
    from .data.corpora import load_audio
    need = [c for c in clips if c.audio is None]
    if need:
        load_audio(need)


def ship(out_dir: Path, system_name: str, name: str = "speech_lr", log=print) -> dict:
    from engines.cards import ModelCard, sha256_of
    from streamer import descriptors
    from streamer.features import DEFAULT_PARAMS
    from streamer.inputs import input_versions

    from .export import op_types, time_forward

    t0 = time.time()
    system = loco.SYSTEMS[system_name]
    if system.norm != "train":
        raise SystemExit(f"{system_name}: only systems with training statistics ship here (no stream adaptation)")
    if system.kind not in ("lr", "svm") or system.blend:
        raise SystemExit(f"{system_name}: only single 4-way classifiers (lr, svm) export here")
    variants = tuple(dict.fromkeys(("clean", "mix", *system.train_variants)))
    data = loco.Data(variants, inputs=(system.input,))
    lm = system.input == "logmel_stats"
    frames = DEFAULT_PARAMS.n_frames(loco.WINDOW)
    allidx = np.arange(len(data.y))
    log(f"fitting {system_name} on {len(allidx)} clips x {system.train_variants}")
    fitted = data.fit(system, allidx)
    est = fitted.est
    # temperatures: fitted on the leave-one-corpus-out predictions (clean) of this very system
    oof = np.load(loco.cache_oof(system_name))
    P = np.concatenate([oof[f"{c}:clean"] for c in loco.SPEECH_CORPORA])
    Y = np.concatenate([data.y[data.corpus == c] for c in loco.SPEECH_CORPORA])
    keep = Y >= 0
    cal = calibration_report(P[keep], Y[keep], np.concatenate([data.corpus[data.corpus == c]
                                                               for c in loco.SPEECH_CORPORA])[keep],
                             png=(loco.REPO / "docs" / "img" / "speech_reliability.png"
                                  if Path(out_dir).resolve() == (loco.REPO / "engines" / "models").resolve()
                                  else Path(out_dir) / f"{name}_reliability.png"))  # a scratch export keeps docs/
    temps = cal["temperatures"]
    # activity: speech windows (clean and under music) against music alone and near-silence
    other = non_speech_descriptors(log=log, kind=system.input)
    act = activity_regression(np.concatenate([data.X["clean"], data.X["mix"]]), other)
    path = export(est, data.X["clean"].shape[1], temps, act, out_dir / f"{name}.onnx", input=system.input,
                  frames=frames)
    Xp = np.concatenate([data.X["clean"][::25], data.X["mix"][::25], other[::10]])
    F = None
    if lm:  # parity from the streamer's input: the windows of some clips, clean and under music
        from streamer.features import extract
        pick = data.clips[::97]
        load_audio_if_needed(pick)
        F = np.stack([extract(loco.variant_window(c, v)) for c in pick for v in ("clean", "mix")])
    diff = parity(est, path, Xp, temps, act, features=F)
    if not diff < 1e-3:
        raise RuntimeError(f"scikit-learn vs ONNX Runtime parity failed: max abs diff {diff:.3g}")
    act_out = (reference_outputs(est, np.concatenate([data.X["clean"], data.X["mix"], other]), temps, act)
               ["activity"][:, 0])
    n_c, n_m = len(data.X["clean"]), len(data.X["mix"])
    sysres = json.loads(loco.cache_oof(system_name).with_suffix(".json").read_text())
    res = {"protocol": loco.__doc__.split("\n\n")[1].replace("\n", " ")}
    clf = est.steps[-1][1]
    if system.kind == "svm":
        arch = (f"StandardScaler -> SVC(rbf, C={clf.C}, gamma='scale', class_weight='balanced', probability=True; "
                f"{int(clf.support_vectors_.shape[0])} support vectors)")
        n_params = int(clf.support_vectors_.size + clf.dual_coef_.size)
    else:
        arch = f"StandardScaler -> LogisticRegression(multinomial, C={clf.C}, class_weight='balanced')"
        n_params = int(clf.coef_.size + clf.intercept_.size)
    if lm:
        from .nets import logmel_stats
        inputs = [{"name": "features", "dtype": "float32", "shape": ["N", frames, DEFAULT_PARAMS.n_mels, 3],
                   "description": "streamer.features.extract of the window (log-mel dB, delta, delta-delta after "
                                  "R128 normalisation), the speech CNN's input; the graph computes its statistics "
                                  f"(training.nets.logmel_stats, {logmel_stats.n_stats()} values: per band and "
                                  "channel mean and std over the active frames, active share, loudness std), then "
                                  "standardises them with the training set's mean and std"}]
        in_names, n_in = ["features"], logmel_stats.n_stats()
        versions = {"logmel_stats": logmel_stats.STATS_VERSION}
        act_doc = "sigmoid of a logistic regression on the log-mel statistics"
        model_id = MODEL_ID.format(kind="lmstats-" + system.kind)
    else:
        inputs = [{"name": INPUT, "dtype": "float32", "shape": ["N", len(descriptors.feature_names())],
                   "description": "streamer.descriptors.features of the window (496 descriptors, names in "
                                  "streamer.descriptors.feature_names()); standardised in the graph with the "
                                  "training set's mean and std"}]
        in_names, n_in = [INPUT], len(descriptors.feature_names())
        versions = {"handcrafted": descriptors.HANDCRAFTED_VERSION}
        act_doc = "sigmoid of a logistic regression on the descriptors"
        model_id = MODEL_ID.format(kind=system.kind)
    card = {
        "id": model_id, "source": "speech",
        "task": ("speech emotion per 3 s window: Russell quadrant probabilities (Q1..Q4) as the product of "
                 "calibrated per-axis probabilities P(V+), P(A+); valence/arousal 2P-1; speech activity"),
        "onnx": f"{name}.onnx", "onnx_sha256": sha256_of(path), "onnx_bytes": path.stat().st_size,
        "onnx_opset": OPSET, "onnx_ml_opset": _ml_opset(path), "onnx_op_types": op_types(path),
        "window_s": 3.0, "hop_s": 1.0,
        "inputs": inputs,
        "input_versions": input_versions(in_names),
        "outputs": [{"name": "quadrant", "dtype": "float32", "shape": ["N", 4], "labels": ["Q1", "Q2", "Q3", "Q4"],
                     "activation": "product of the calibrated per-axis probabilities (streamer.taxonomy.agreeing)"},
                    {"name": "va", "dtype": "float32", "shape": ["N", 2], "labels": ["valence", "arousal"],
                     "activation": "2 P(V+) - 1, 2 P(A+) - 1 of the calibrated axes"},
                    {"name": "activity", "dtype": "float32", "shape": ["N", 1], "labels": ["speech_activity"],
                     "activation": act_doc}],
        "features": DEFAULT_PARAMS.to_dict(),
        "descriptor_versions": versions,
        "parameters": n_params + 3 * n_in + 3,
        "architecture": (arch + " -> quadrant probabilities -> P(V+) = p1 + p4, P(A+) = p1 + p2 -> per-axis temperature -> product; "
                         "exported with skl2onnx " + _skl2onnx_version()),
        "system": {"name": system_name, "kind": system.kind, "description": system.description, "C": system.C,
                   "train_variants": list(system.train_variants)},
        "training_data": {
            "corpora": ["RAVDESS speech (Livingstone & Russo 2018; CC BY-NC-SA 4.0), 24 actors, English",
                        "TESS (Toronto emotional speech set; CC BY-NC-ND 4.0), 2 speakers, English",
                        "EMOVO (Costantini et al. 2014, Fondazione Ugo Bordoni; free research use), 6 actors, Italian"],
            "clip_counts": {c: int(np.sum(data.corpus == c)) for c in loco.SPEECH_CORPORA},
            "trained_on": "every non-neutral clip of the three corpora, its streaming window (training.experiments.loco."
                          "stream_window), clean and once augmented (training.data.augment.imitate: loudness, EQ/"
                          "channel, reverberation, noise, pitch and tempo)",
            "neutral": "neutral clips are never a quadrant target (taxonomy); not trained on",
            "activity": f"{n_c + n_m} speech windows (clean and under 4Q music at +5 dB) vs {len(other)} windows "
                        "of 4Q music alone and near-silence"},
        "protocol": {"selection": res.get("protocol", ""),
                     "command": "python -m training.experiments.loco run && python -m training.speech_model --out engines/models"},
        "metrics": {"leave_one_corpus_out": sysres["loco"], "leave_one_corpus_out_mean": sysres["mean"],
                    "in_corpus_speaker_independent": sysres.get("in_corpus", {}),
                    "calibration": cal["report"]},
        "activity": {"speech_clean_mean": round(float(act_out[:n_c].mean()), 3),
                     "speech_under_music_mean": round(float(act_out[n_c:n_c + n_m].mean()), 3),
                     "music_or_silence_mean": round(float(act_out[n_c + n_m:].mean()), 3),
                     "note": "measured on the training windows (in-sample); the separator's activity, where one "
                             "runs, replaces it"},
        "speed": {"forward_pass": time_forward(path, {in_names[0]: (F[:1] if lm else data.X["clean"][:1])}),
                  "sklearn_onnx_max_abs_diff": diff},
        "licence": LICENCE,
        "created": _dt.date.today().isoformat(),
        "command": f"python -m training.speech_model --out engines/models --system {system_name} --name {name}",
        "training_seconds": round(time.time() - t0, 1),
    }
    ModelCard(card).write(out_dir / f"{name}.json")
    log(f"wrote {path} and its card (parity {diff:.2g}, temperatures {temps})")
    return card


def card_section(card: dict) -> list[str]:
    """MODELS.md lines of a card written by :func:`ship` (for :mod:`training.report`)."""
    m = card["metrics"]
    out = [f"## {card['source']} model: `{card['id']}`", "",
           f"- files: `engines/models/{card['onnx']}` ({card['onnx_bytes']} bytes, sha256 `{card['onnx_sha256'][:16]}...`), "
           f"card `engines/models/{Path(card['onnx']).stem}.json`",
           f"- window {card['window_s']:g} s, hop {card['hop_s']:g} s, input `handcrafted` {card['inputs'][0]['shape']}",
           f"- architecture: {card['architecture']}; {card['parameters']} parameters",
           f"- ONNX ops (opset {card['onnx_opset']}, ai.onnx.ml {card['onnx_ml_opset']}): {', '.join(card['onnx_op_types'])}",
           f"- scikit-learn vs ONNX Runtime max abs diff {card['speed']['sklearn_onnx_max_abs_diff']:.2g}; forward pass "
           f"median {card['speed']['forward_pass']['median_ms']} ms",
           f"- licence: {card['licence']}", f"- command: `{card['command']}`", "",
           "| held-out corpus | macro-F1 | arousal UAR | valence UAR | under music: macro-F1 | A UAR | V UAR | chance macro-F1 |",
           "|---|---|---|---|---|---|---|---|"]
    for held, r in m["leave_one_corpus_out"].items():
        c, x = r["clean"], r.get("mix", {})
        out.append(f"| {held} | {c['macro_f1']:.3f} | {c['arousal_uar']:.3f} | {c['valence_uar']:.3f} | "
                   f"{x.get('macro_f1', float('nan')):.3f} | {x.get('arousal_uar', float('nan')):.3f} | "
                   f"{x.get('valence_uar', float('nan')):.3f} | {r['chance']['macro_f1']:.3f} |")
    cal = m.get("calibration", {})
    if cal:
        out += ["", f"Calibration ({cal['method']}): temperatures {cal['temperatures']}; ECE uncalibrated "
                    f"{cal['uncalibrated']}, calibrated {cal['calibrated_cross_fitted']}; diagram `{cal.get('diagram', '')}`."]
    return out + [""]


def _ml_opset(path: Path) -> int:
    import onnx
    return int({i.domain: i.version for i in onnx.load(str(path)).opset_import}.get("ai.onnx.ml", 0))


def _skl2onnx_version() -> str:
    import skl2onnx
    return skl2onnx.__version__


def calibration_report(P: np.ndarray, y: np.ndarray, corpus: np.ndarray, png: Optional[Path] = None) -> dict:
    """Per-axis temperatures fitted on all held-out predictions ``P`` (shipped), and the honest ECE:
    each corpus's predictions calibrated with temperatures fitted on the other corpora's."""
    A = calibration.axis_probs(P)
    T = calibration.axis_truth(y)
    temps = [calibration.fit_temperature(A[:, j], T[:, j]) for j in range(2)]
    cross = np.zeros_like(A)
    for c in np.unique(corpus):
        m = corpus == c
        t = [calibration.fit_temperature(A[~m, j], T[~m, j]) for j in range(2)]
        cross[m] = calibration.apply_temperature(A[m], t)
    rep = {"method": "per-axis temperature on the logit of P(V+) and P(A+), fitted by minimum NLL on the "
                     "leave-one-corpus-out predictions; ECE: 10 equal-width bins, each corpus calibrated with "
                     "temperatures fitted on the other two",
           "temperatures": {"valence": round(temps[0], 4), "arousal": round(temps[1], 4)}, "n": int(len(y))}
    for name, a in (("uncalibrated", A), ("calibrated_cross_fitted", cross)):
        rep[name] = {"ece_valence": round(calibration.axis_ece(a[:, 0], T[:, 0]), 4),
                     "ece_arousal": round(calibration.axis_ece(a[:, 1], T[:, 1]), 4),
                     "ece_quadrant": round(calibration.quadrant_ece(a, y), 4)}
    if png is not None:
        curves = {}
        for name, a in (("before", A), ("after", cross)):
            for j, ax in enumerate(("valence", "arousal")):
                curves[f"{ax} {name}"] = (np.maximum(a[:, j], 1 - a[:, j]), (a[:, j] >= 0.5) == (T[:, j] > 0.5))
        calibration.reliability_png(png, curves, title="speech model, leave-one-corpus-out predictions")
        rep["diagram"] = str(png.relative_to(loco.REPO)) if png.is_relative_to(loco.REPO) else png.name
    return {"temperatures": temps, "report": rep}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.speech_model", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(loco.REPO / "engines" / "models"))
    ap.add_argument("--system", default="lr_aug_mix")
    ap.add_argument("--name", default="speech_lr", help="file stem of the model and its card")
    ap.add_argument("--calibrate-cnn", metavar="ONNX", help="instead: calibrate this log-mel CNN in place")
    args = ap.parse_args(argv)
    if args.calibrate_cnn:
        calibrate_cnn(Path(args.calibrate_cnn))
    else:
        ship(Path(args.out), args.system, args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
