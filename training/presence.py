"""Train, export and evaluate the speech/music presence detector (:mod:`streamer.presence`).

    python -m training.presence [--out engines/models] [--programmes N] [--sung K] [--seconds S] [--cache DIR]
                                [--members K] [--hidden 64[,32]]

Data: TV-like programmes of :mod:`training.data.make_mix` (speech in 4.5 s slots, every third
empty, over music with gaps), built from TRAINING speakers and music only (RAVDESS actors 1-16,
TESS and EMOVO, each slot's corpus drawn with equal odds (``more_speech``), over 4Q train artists
(sung) and EMOPIA official train pieces (piano, rendered MIDI); ``--sung K`` adds K programmes over 4Q
train artists: more singers heard),
half with 9 s without music after every piece, at speech-to-music ratios -5, 0, +5 and +10 dB, an
overall gain U[-20, +6] dB and, for half of them, white noise 60-70 dB under the programme (so
silence is not digital zero).  Validation: the same from the val split (RAVDESS actors 17-18, 4Q
val artists, EMOPIA val).  Test: held-out programmes (RAVDESS actors 19-24 over 4Q test artists
and EMOPIA test), scored per step here and per second by :mod:`training.experiments.track_eval`.

Targets per step (0.25 s): a source is present when its active frames (the truth's ``active``
spans: RMS above -40 dB re the clip's loudest frame) cover at least half of the step.  The four
combinations (none, speech, music, both) are the classes of scikit-learn MLPs over the
standardised ``presence_features`` (``--members`` of them, different seeds, their probabilities
averaged); the exported ONNX graph (standard operators only) adds them up into P(speech),
P(music) (``presence`` [N, 2]).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from engines.cards import MODELS_DIR, ModelCard
from streamer.features import DEFAULT_PARAMS
from streamer.presence import (CONTEXT, PAST, PRESENCE_VERSION, STACK, STEP, STEMS, features_of, input_names,
                               model_input)

from .data import corpora, make_mix

SR = corpora.SR
INPUT = "presence_features"
LICENCES = ["RAVDESS (CC BY-NC-SA 4.0)", "TESS (CC BY-NC-ND 4.0)",
            "4Q Audio Emotion Dataset (Panda, Malheiro & Paiva 2018; AllMusic 30 s previews, research use)",
            "EMOPIA 1.0 (CC BY-NC-SA 4.0)"]
SMRS = (-5.0, 0.0, 5.0, 10.0)


def n_inputs() -> int:
    """Model inputs per step: the features of 2 STACK + 1 steps side by side and the past means
    (:func:`streamer.presence.model_input`)."""
    return len(input_names())


def step_targets(truth: dict, centres: np.ndarray) -> np.ndarray:
    """[S, 2] booleans: speech, music present at each step (active cover >= half of the step)."""
    half = STEP * DEFAULT_PARAMS.hop_length / 2 / SR
    out = np.zeros((centres.size, 2), bool)
    t = centres / SR
    for col, key in enumerate(("speech", "songs")):
        cover = np.zeros(centres.size)
        for sp in truth[key]:
            for a, b in sp.get("active", [[sp["t_start"], sp["t_end"]]]):
                cover += np.clip(np.minimum(t + half, b) - np.maximum(t - half, a), 0, None)
        out[:, col] = cover >= half
    return out


def programme(split: str, i: int, seconds: float, seed0: int) -> tuple[np.ndarray, dict, dict]:
    """Programme ``i`` of ``split``: (mix, truth, its settings)."""
    rng = np.random.default_rng([seed0, i, {"train": 0, "val": 1, "test": 2}[split]])
    music = ("4q", "emopia")[i % 2]
    gap = 9.0 if (i // 2) % 2 == 0 or split == "test" else 0.0
    smr = float(SMRS[(i // 4) % len(SMRS)]) if split != "test" else 5.0  # test: as the held-out programmes
    seed = int(rng.integers(1 << 30))
    mix, truth = make_mix.build(seconds, smr, seed, music, gap, split=split, more_speech=split == "train")
    gain_db = float(rng.uniform(-20, 6)) if split != "test" else 0.0
    noise_db = float(rng.uniform(-70, -60)) if split != "test" and i % 8 >= 4 else None
    x = mix * np.float32(10 ** (gain_db / 20))
    if noise_db is not None:
        rms = float(np.sqrt(np.mean(x ** 2))) or 1.0
        x = x + rng.standard_normal(x.size).astype(np.float32) * np.float32(rms * 10 ** (noise_db / 20))
    return x.astype(np.float32), truth, {"music": music, "music_gap_s": gap, "smr_db": smr, "seed": seed,
                                          "gain_db": round(gain_db, 2), "noise_db": noise_db}


def sung_indices(n: int, extra_sung: int) -> list[int]:
    """Programme indices: ``0 .. n - 1``, then ``extra_sung`` more of those after them that draw 4Q (sung)
    music (:func:`programme`: the even ones)."""
    return list(range(n)) + [i for i in range(n, n + 2 * extra_sung + 1) if i % 2 == 0][:extra_sung]


def dataset(split: str, n: int, seconds: float, seed0: int, cache: Optional[Path], log=print,
            extra_sung: int = 0) -> dict:
    """Features, targets and settings of ``n`` programmes of ``split`` and ``extra_sung`` more over sung
    music (:func:`sung_indices`; cached per programme)."""
    xs, ys, kinds = [], [], []
    settings = []
    for i in sung_indices(n, extra_sung):
        f = cache / f"presence_v{PRESENCE_VERSION}_{split}_{seed0}_{i}_{int(seconds)}.npz" if cache else None
        if f is not None and f.exists():
            z = np.load(f, allow_pickle=False)
            x, y, st = z["x"], z["y"], json.loads(str(z["settings"]))
        else:
            mix, truth, st = programme(split, i, seconds, seed0)
            centres, x = features_of(mix)
            y = step_targets(truth, centres)
            if f is not None:
                f.parent.mkdir(parents=True, exist_ok=True)
                np.savez(f, x=x, y=y, settings=json.dumps(st))
        xs.append(model_input(x))
        ys.append(y)
        kinds.append(np.full(len(x), i % 2))
        settings.append(st)
        log(f"{split} programme {i}: {st}")
    return {"x": np.concatenate(xs), "y": np.concatenate(ys), "music": np.concatenate(kinds), "settings": settings}


def classes(y: np.ndarray) -> np.ndarray:
    """Class index 0 none, 1 speech, 2 music, 3 both."""
    return y[:, 0].astype(int) + 2 * y[:, 1].astype(int)


def hidden_layers(hidden) -> tuple[int, ...]:
    """Hidden layer sizes from an int (one layer) or "64,32" / a sequence (one per layer)."""
    if isinstance(hidden, str):
        hidden = [int(h) for h in hidden.split(",") if h.strip()]
    sizes = (int(hidden),) if isinstance(hidden, (int, np.integer)) else tuple(int(h) for h in hidden)
    if not sizes or min(sizes) < 1:
        raise ValueError(f"hidden layer sizes must be positive integers, got {hidden!r}")
    return sizes


def fit(x: np.ndarray, y: np.ndarray, hidden=64, seed: int = 0, max_iter: int = 200, alpha: float = 1.0):
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    est = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=hidden_layers(hidden), alpha=alpha, max_iter=max_iter,
                                                        early_stopping=True, n_iter_no_change=10, random_state=seed))
    est.fit(x, classes(y))
    return est


def presence_of(probs4: np.ndarray, labels) -> np.ndarray:
    """[N, 2] P(speech), P(music) from class probabilities over ``labels`` (a subset of 0..3)."""
    m = np.array([[k & 1, (k >> 1) & 1] for k in labels], np.float32)
    return probs4 @ m


def scores(p: np.ndarray, y: np.ndarray, music: np.ndarray) -> dict:
    """Per-step accuracy of presence >= 0.5, per source, overall and over sung (4q) / piano music."""
    out = {}
    for col, src in enumerate(STEMS):
        pred = p[:, col] >= 0.5
        r = {"accuracy": round(float(np.mean(pred == y[:, col])), 4)}
        for k, name in ((0, "4q"), (1, "emopia")):
            sel = music == k
            if sel.any():
                r[name] = round(float(np.mean(pred[sel] == y[sel, col])), 4)
        out[src] = r
    return out


def members_of(est) -> list:
    """The fitted pipelines of a detector: one (:func:`fit`) or several averaged (:func:`fit_members`)."""
    return list(est) if isinstance(est, (list, tuple)) else [est]


def fit_members(x: np.ndarray, y: np.ndarray, members: int = 1, hidden=64, seed: int = 0,
                max_iter: int = 200, alpha: float = 1.0) -> list:
    """``members`` MLPs (:func:`fit`, seeds ``seed .. seed + members - 1``) whose class probabilities
    the detector averages."""
    return [fit(x, y, hidden, seed + k, max_iter, alpha) for k in range(members)]


def predict(est, x: np.ndarray) -> np.ndarray:
    """[N, 2] P(speech), P(music) of a detector (one pipeline or several averaged), as its ONNX graph."""
    ms = members_of(est)
    return sum(presence_of(m.predict_proba(x), m.steps[-1][1].classes_) for m in ms) / len(ms)


def export(est, path: Path) -> Path:
    """A detector (one MLP pipeline of :func:`fit`, or several of :func:`fit_members` averaged) as an
    ONNX graph of standard operators (no ai.onnx.ml): ``presence_features`` [N, D] -> standardised ->
    every member's ReLU layers side by side (one MatMul per layer: the first layer's weights
    concatenated, the next ones block-diagonal) -> softmax per member over none/speech/music/both ->
    mean over the members -> ``presence`` [N, 2] (P(speech), P(music))."""
    from onnx import TensorProto, helper, numpy_helper

    from .export import save_graph

    ms = members_of(est)
    scalers = [m.steps[0][1] for m in ms]
    clfs = [m.steps[-1][1] for m in ms]
    if any(not np.array_equal(s.mean_, scalers[0].mean_) or not np.array_equal(s.scale_, scalers[0].scale_)
           for s in scalers) or any(list(c.classes_) != list(clfs[0].classes_) for c in clfs):
        raise ValueError("the members of a detector must share their scaler and classes (fit on the same data)")
    if clfs[0].out_activation_ != "softmax" or any(c.activation != "relu" for c in clfs):
        raise ValueError("export needs ReLU MLPs with a softmax output (3 or more classes present)")
    k, n_cls = len(ms), len(clfs[0].classes_)
    inits = [numpy_helper.from_array(scalers[0].mean_.astype(np.float32), "mean"),
             numpy_helper.from_array(scalers[0].scale_.astype(np.float32), "scale")]
    nodes = [helper.make_node("Sub", [INPUT, "mean"], ["centred"]), helper.make_node("Div", ["centred", "scale"], ["h0"])]
    h = "h0"
    for layer in range(len(clfs[0].coefs_)):
        ws = [c.coefs_[layer] for c in clfs]
        if layer == 0:
            w = np.concatenate(ws, axis=1)
        else:
            w = np.zeros((sum(a.shape[0] for a in ws), sum(a.shape[1] for a in ws)))
            r = c0 = 0
            for a in ws:
                w[r:r + a.shape[0], c0:c0 + a.shape[1]] = a
                r, c0 = r + a.shape[0], c0 + a.shape[1]
        b = np.concatenate([c.intercepts_[layer] for c in clfs])
        inits += [numpy_helper.from_array(w.astype(np.float32), f"w{layer}"),
                  numpy_helper.from_array(b.astype(np.float32), f"b{layer}")]
        nodes += [helper.make_node("MatMul", [h, f"w{layer}"], [f"m{layer}"]),
                  helper.make_node("Add", [f"m{layer}", f"b{layer}"], [f"a{layer}"])]
        h = f"a{layer}"
        if layer < len(clfs[0].coefs_) - 1:
            nodes.append(helper.make_node("Relu", [h], [f"r{layer}"]))
            h = f"r{layer}"
    m = np.array([[c & 1, (c >> 1) & 1] for c in clfs[0].classes_], np.float32)
    inits += [numpy_helper.from_array(np.array([-1, k, n_cls], np.int64), "per_member"),
              numpy_helper.from_array(m, "class_to_presence")]
    nodes += [helper.make_node("Reshape", [h, "per_member"], ["logits"]),
              helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
              helper.make_node("ReduceMean", ["probs"], ["mean_probs"], axes=[1], keepdims=0),
              helper.make_node("MatMul", ["mean_probs", "class_to_presence"], ["presence"])]
    g = helper.make_graph(nodes, "presence", [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [None, n_inputs()])],
                          [helper.make_tensor_value_info("presence", TensorProto.FLOAT, [None, 2])], inits)
    return save_graph(g, path, "training.presence")


def parity(est, path: Path, x: np.ndarray) -> float:
    """Max |ONNX Runtime - scikit-learn| of the presence probabilities on ``x``."""
    from engines.backends.onnxruntime import ort_session

    sess = ort_session(path, threads=1)
    got = sess.run(["presence"], {INPUT: x.astype(np.float32)})[0]
    return float(np.max(np.abs(got - predict(est, x))))


def card(a, est, path: Path, data: dict, metrics: dict, diff: float, t0: float, argv) -> ModelCard:
    clfs = [m.steps[-1][1] for m in members_of(est)]
    members = (f"{len(clfs)} MLPs (seeds {a.seed}-{a.seed + len(clfs) - 1}, averaged): " if len(clfs) > 1 else "MLP ")
    return ModelCard({
        "id": "emotrack-presence-1",
        "source": "mix",
        "task": "speech / music presence every 0.25 s of the mix (telling speech from singing), the default "
                "activity of emotrack replay / stream (--activity detector)",
        "onnx": path.name,
        "window_s": (CONTEXT + 2 * STACK * STEP) * DEFAULT_PARAMS.hop_length / SR,
        "hop_s": STEP * DEFAULT_PARAMS.hop_length / SR,
        "inputs": [{"name": INPUT, "dtype": "float32", "shape": ["N", n_inputs()],
                    "description": "streamer.presence.model_input: streamer.presence.step_features (of the 1 s of "
                                   f"log-mel frames around a step) of the steps j-{STACK} .. j+{STACK} side by side, "
                                   f"then the mean of the summary features over the steps j-{PAST} .. j-1",
                    "names": input_names()}],
        "latency_s": round(((CONTEXT // 2 + STACK * STEP) * DEFAULT_PARAMS.hop_length) / SR, 3),
        "outputs": [{"name": "presence", "dtype": "float32", "shape": ["N", 2], "labels": list(STEMS),
                     "activation": "probability"}],
        "input_versions": {INPUT: PRESENCE_VERSION},
        "features": DEFAULT_PARAMS.to_dict(),
        "architecture": f"StandardScaler -> {members}{' -> '.join(map(str, a.hidden))} ReLU, L2 alpha {a.alpha:g}, softmax over none/speech/"
                        f"music/both ({'/'.join(str(c.n_iter_) for c in clfs)} iterations){', mean of the members' if len(clfs) > 1 else ''} "
                        "-> sum into P(speech), P(music); scikit-learn, exported as an ONNX graph of standard operators",
        "training_data": {"speech": "RAVDESS actors 1-16 + TESS + EMOVO (each slot's corpus drawn with equal odds)",
                          "music": "4Q train artists (split seed "
                          f"{corpora.SPLIT_SEED}, sung) + EMOPIA official train (piano, rendered with fluidsynth)",
                          "programmes": {k: len(data[k]["settings"]) for k in ("train", "val")},
                          "train_programmes_by_music": {m: sum(st["music"] == m for st in data["train"]["settings"])
                                                        for m in ("4q", "emopia")},
                          "seconds_each": a.seconds, "steps": {k: int(len(data[k]["y"])) for k in ("train", "val")},
                          "mixing": "training.data.make_mix programmes, speech-to-music ratio -5/0/+5/+10 dB, half "
                                    "with 9 s without music after each piece, gain U[-20, +6] dB, half with white "
                                    "noise 60-70 dB under the programme"},
        "training": {"command": "python -m training.presence " + " ".join(sys.argv[1:] if argv is None else argv),
                     "seed": a.seed, "minutes": round((time.time() - t0) / 60, 1),
                     "date": _dt.date.today().isoformat(), "parity_max_abs_diff": diff},
        "protocol": "per 0.25 s step, presence >= 0.5 against the truth (active cover >= half the step); val: RAVDESS "
                    "actors 17-18 over 4Q val artists / EMOPIA val; test: RAVDESS actors 19-24 over 4Q test artists "
                    "/ EMOPIA test (held out); per second on replays: training.experiments.track_eval",
        "metrics": metrics,
        "licence": "code Apache-2.0; weights trained on " + "; ".join(LICENCES) + ": research / non-commercial use",
    })


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.presence", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=MODELS_DIR, help="folder for presence.onnx and its card")
    ap.add_argument("--programmes", type=int, default=32, help="training programmes (val and test: a quarter, "
                                                              "at least 2)")
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--hidden", type=hidden_layers, default=(64,), help="hidden ReLU layer sizes, comma-separated "
                                                                       "(default 64: one layer)")
    ap.add_argument("--alpha", type=float, default=1.0, help="L2 penalty of the MLP (1.0: chosen on val over 1e-3)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--members", type=int, default=1, help="MLPs (seeds SEED, SEED+1, ...) whose probabilities are "
                                                           "averaged (3 was tried: no held-out gain, docs/TRACKING.md)")
    ap.add_argument("--sung", type=int, default=0, help="this many more training programmes over 4Q training "
                                                       "artists (sung music: more singers)")
    ap.add_argument("--cache", type=Path, default=None, help="cache each programme's features here")
    a = ap.parse_args(argv)
    t0 = time.time()
    log = lambda *m: print(f"[{time.time() - t0:7.1f}s]", *m, file=sys.stderr, flush=True)
    n_eval = max(2, a.programmes // 4)
    data = {"train": dataset("train", a.programmes, a.seconds, a.seed, a.cache, log, extra_sung=a.sung),
            "val": dataset("val", n_eval, a.seconds, a.seed, a.cache, log),
            "test": dataset("test", n_eval, a.seconds, a.seed, a.cache, log)}
    est = fit_members(data["train"]["x"], data["train"]["y"], a.members, a.hidden, a.seed, alpha=a.alpha)
    metrics = {k: scores(predict(est, d["x"]), d["y"], d["music"]) for k, d in data.items()}
    log(json.dumps(metrics))
    path = export(est, a.out / "presence.onnx")
    diff = parity(est, path, data["test"]["x"][:2000])
    c = card(a, est, path, data, {"per_step_accuracy": metrics}, round(diff, 8), t0, argv)
    c.seal(path)
    c.write(path)
    log(f"wrote {path} (parity {diff:.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
