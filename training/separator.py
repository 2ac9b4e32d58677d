"""Train, export, evaluate and describe the built-in speech/music separator.

    python -m training.separator [--out engines/models] [--segments N] [--epochs N]
                                 [--max-minutes M] [--max-clips N] [--eval-only]

The network (``build``) is a stack of "valid" dilated 1-D convolutions over STFT
frames (:data:`streamer.separation.STFT`: 16 kHz, 512-point frames every 256
samples), so it consumes ``context`` frames on each side and can be run on any
number of frames; streaming feeds it fixed chunks.  Outputs: a soft speech mask
per frequency bin (music gets ``1 - mask``) and per-frame speech / music
presence.

Training mixtures (``make_segments``, seeded): a random 2 s of a music clip
(4Q, mostly sung popular music: its vocals belong to the MUSIC stem; EMOPIA
rendered piano) plus a speech clip (RAVDESS actors 1-16, TESS) at a random
offset, speech-to-music ratio U[-10, +15] dB (both R128-normalised first),
15 % without speech, 15 % without music, overall gain U[-30, +5] dB and faint
white noise.  Validation: RAVDESS actors 17-18 over 4Q/EMOPIA validation songs.
Test: RAVDESS actors 19-24 over 4Q test artists and EMOPIA test songs, never
seen in training.

Loss: L1 between power-0.3 compressed magnitudes of each estimated stem (mask
times the mixture) and of the true stem, plus binary cross-entropy of the
presence outputs against the sources' 10 ms activity (frame RMS above -40 dB re
the clip's loudest frame).

Evaluation (``evaluate``): SI-SDR improvement of speech and of music over the
mixture on held-out 4 s mixtures at 0, +5 and +10 dB speech-to-music ratio,
through the real streaming separator (ONNX Runtime), plus presence accuracy.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from engines.cards import ModelCard
from streamer.separation import STEMS, STFT, BuiltinSeparator, StftParams, log_power, separate, stft

from .data import corpora
from .data.corpora import FRAME, SR, Clip
from .data.mixing import db, place

SEGMENT_FRAMES = 96          # centre frames per training segment (plus 2 * context)
WIDTH = 96
DILATIONS = (1, 2, 4, 8, 1)  # kernel 3 each: 16 frames of context on each side
LICENCES = ["RAVDESS (CC BY-NC-SA 4.0)", "TESS (CC BY-NC-ND 4.0)",
            "4Q Audio Emotion Dataset (Panda, Malheiro & Paiva 2018; AllMusic 30 s previews, research use)",
            "EMOPIA 1.0 (CC BY-NC-SA 4.0)"]


# -- data ----------------------------------------------------------------------------------
def _frame_activity(act10: np.ndarray, n_frames: int, p: StftParams = STFT) -> np.ndarray:
    """10 ms activity flags -> per STFT frame (frame k centred at sample k*hop)."""
    centres = np.arange(n_frames) * p.hop
    idx = np.minimum(centres // FRAME, max(act10.size - 1, 0))
    return act10[idx].astype(np.float32) if act10.size else np.zeros(n_frames, np.float32)


def mixture(rng: np.random.Generator, speech: Sequence[Clip], music: Sequence[Clip], n: int,
            smr_db: Optional[float] = None, p_no_speech: float = 0.15, p_no_music: float = 0.15,
            gain: bool = True):
    """One mixture of ``n`` samples: (mix, speech, music, speech_active10, music_active10)."""
    s = np.zeros(n, np.float32)
    m = np.zeros(n, np.float32)
    sa = np.zeros(n // FRAME, bool)
    ma = np.zeros(n // FRAME, bool)
    has_s = smr_db is not None or rng.random() >= p_no_speech
    has_m = smr_db is not None or not has_s or rng.random() >= p_no_music
    if has_s:
        s, sa = place(rng, speech[int(rng.integers(len(speech)))], n)
    if has_m:
        m, ma = place(rng, music[int(rng.integers(len(music)))], n)
    if has_s and has_m:
        ratio = rng.uniform(-10.0, 15.0) if smr_db is None else smr_db
        m = m * db(-ratio)
    if gain:
        g = db(rng.uniform(-30.0, 5.0))
        s, m = s * g, m * g
    noise = rng.standard_normal(n).astype(np.float32) * db(rng.uniform(-90.0, -60.0)) if gain else 0.0
    mix = (s + m + noise).astype(np.float32)
    return mix, s.astype(np.float32), m.astype(np.float32), sa, ma


def make_segments(seed: int, n: int, speech: Sequence[Clip], music: Sequence[Clip],
                  frames: int = SEGMENT_FRAMES, p: StftParams = STFT) -> dict[str, np.ndarray]:
    """``n`` training segments: network input (log power, ``frames + 2*context`` frames)
    and, for the centre ``frames``, the magnitudes of mixture, speech and music and the
    presence targets."""
    rng = np.random.default_rng(seed)
    total = frames + 2 * p.context
    n_samples = (total - 1) * p.hop  # stft() then gives `total` frames
    X = np.empty((n, total, p.bins), np.float32)
    mags = np.empty((n, frames, p.bins, 3), np.float16)
    pres = np.empty((n, frames, 2), np.float32)
    c = slice(p.context, p.context + frames)
    for i in range(n):
        mix, s, m, sa, ma = mixture(rng, speech, music, n_samples)
        Xm, Xs, Xn = stft(mix, p), stft(s, p), stft(m, p)
        X[i] = log_power(Xm, p)
        mags[i, ..., 0] = np.abs(Xm[c])
        mags[i, ..., 1] = np.abs(Xs[c])
        mags[i, ..., 2] = np.abs(Xn[c])
        pres[i, :, 0] = _frame_activity(sa, total, p)[c]
        pres[i, :, 1] = _frame_activity(ma, total, p)[c]
    return {"x": X, "mags": mags, "presence": pres}


def splits(data: dict) -> dict[str, tuple[list, list]]:
    """(speech, music) clips per split; VGMIDI is left out (cross-corpus emotion test only)."""
    out = {}
    for sp in ("train", "val", "test"):
        out[sp] = ([c for c in data["speech"] if c.split == sp],
                   [c for c in data["music"] if c.split == sp and c.corpus in ("4q", "emopia")])
    return out


# -- model ---------------------------------------------------------------------------------
def build(mean: np.ndarray, std: np.ndarray, width: int = WIDTH, dilations=DILATIONS,
          p: StftParams = STFT, seed: int = 1):
    """Keras model: ``features`` [N, T, bins] -> ``speech_mask`` [N, T - 2*context, bins],
    ``presence`` [N, T - 2*context, 2]."""
    import tensorflow as tf
    from tensorflow.keras import layers

    if sum(dilations) != p.context:
        raise ValueError(f"dilations {dilations} consume {sum(dilations)} frames per side, "
                         f"the STFT params say {p.context}")
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((None, p.bins), name="features")
    scale = tf.constant((1.0 / np.asarray(std)).astype(np.float32).reshape(1, 1, -1))
    shift = tf.constant((-np.asarray(mean) / np.asarray(std)).astype(np.float32).reshape(1, 1, -1))
    z = layers.Lambda(lambda t: t * scale + shift, name="standardise")(inp)
    x = z
    for i, d in enumerate(dilations):
        x = layers.Conv1D(width, 3, dilation_rate=d, padding="valid", activation="relu", name=f"conv{i}")(x)
    centre = layers.Cropping1D(p.context, name="centre")(z)
    h = layers.Concatenate(name="skip")([x, centre])
    mask = layers.Conv1D(p.bins, 1, activation="sigmoid", name="speech_mask")(h)
    presence = layers.Conv1D(2, 1, activation="sigmoid", name="presence")(x)
    return tf.keras.Model(inp, {"speech_mask": mask, "presence": presence}, name="emotrack_separator")


def describe(model, width: int = WIDTH) -> str:
    return (f"standardise (per-bin constants) -> {len(DILATIONS)} x Conv1D({width}, k=3, valid, ReLU) "
            f"with dilations {'-'.join(map(str, DILATIONS))} -> [hidden, centre input] -> "
            f"Conv1D(257, 1, sigmoid) speech mask; Conv1D(2, 1, sigmoid) presence from the hidden "
            f"layer; {model.count_params()} parameters")


def _loss_fn(p: StftParams = STFT):
    import tensorflow as tf

    def mask_loss(y_true, y_pred):
        mags = tf.cast(y_true, tf.float32)
        mix, s, m = mags[..., 0], mags[..., 1], mags[..., 2]
        c = 0.3
        es = tf.pow(y_pred * mix + 1e-8, c)
        em = tf.pow((1.0 - y_pred) * mix + 1e-8, c)
        return (tf.reduce_mean(tf.abs(es - tf.pow(s + 1e-8, c)), axis=-1)
                + tf.reduce_mean(tf.abs(em - tf.pow(m + 1e-8, c)), axis=-1))
    return mask_loss


def _epoch(model, seg: dict, batch: int, rng: Optional[np.random.Generator], train: bool) -> float:
    """One pass over ``seg`` in mini-batches (``train_on_batch``/``test_on_batch``: no dataset
    copies of the whole arrays, whose memory Keras' ``fit`` on NumPy input does not give back)."""
    n = seg["x"].shape[0]
    order = rng.permutation(n) if rng is not None else np.arange(n)
    losses, weights = [], []
    for b in range(0, n, batch):
        j = np.sort(order[b:b + batch])
        y = {"speech_mask": seg["mags"][j], "presence": seg["presence"][j]}
        step = model.train_on_batch if train else model.test_on_batch
        out = step(seg["x"][j], y, return_dict=True)
        losses.append(float(out["loss"]))
        weights.append(len(j))
    return float(np.average(losses, weights=weights))


# -- export / evaluation ---------------------------------------------------------------------
def export(model, path: Path, p: StftParams = STFT) -> Path:
    """ONNX with a fixed chunk (``chunk + 2*context`` frames), dynamic batch: the shape the
    streaming separator runs and a TensorRT engine can be built for."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, p.chunk + 2 * p.context, p.bins), tf.float32, name="features"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    names = sorted(o.name for o in proto.graph.output)
    if names != ["presence", "speech_mask"]:
        raise RuntimeError(f"unexpected ONNX outputs {names}")
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))
    return path


def si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), zero-mean signals."""
    est = est.astype(np.float64) - est.mean()
    ref = ref.astype(np.float64) - ref.mean()
    a = np.dot(est, ref) / max(np.dot(ref, ref), 1e-12)
    t = a * ref
    e = est - t
    return float(10.0 * np.log10(max(np.dot(t, t), 1e-12) / max(np.dot(e, e), 1e-12)))


def evaluate(onnx_path: Path, speech: Sequence[Clip], music: Sequence[Clip], n: int = 60,
             seconds: float = 4.0, ratios=(0.0, 5.0, 10.0), seed: int = 7) -> dict:
    """SI-SDR improvement (dB, mean and median) per speech-to-music ratio through the real
    streaming separator, and presence accuracy on the same mixtures."""
    res = {}
    n_samples = int(seconds * SR)
    hits, total = np.zeros(2), 0
    for r in ratios:
        rng = np.random.default_rng(seed + int(r * 10))
        di = {"speech": [], "music": []}
        for _ in range(n):
            mix, s, m, sa, ma = mixture(rng, speech, music, n_samples, smr_db=r, gain=False)
            sep = BuiltinSeparator(onnx_path)
            out = separate(mix, sep)
            for stem, ref in (("speech", s), ("music", m)):
                di[stem].append(si_sdr(out[stem], ref) - si_sdr(mix, ref))
            nf = n_samples // STFT.hop
            for j, (stem, a10) in enumerate((("speech", sa), ("music", ma))):
                truth = _frame_activity(a10, nf)
                est = np.array([sep.activity(stem, k * STFT.hop, (k + 1) * STFT.hop) or 0.0 for k in range(nf)])
                hits[j] += float(((est >= 0.5) == (truth >= 0.5)).mean())
            total += 1
            sep.close()
        res[f"{r:+.0f} dB"] = {stem: {"si_sdr_improvement_db_mean": round(float(np.mean(v)), 2),
                                      "si_sdr_improvement_db_median": round(float(np.median(v)), 2)}
                               for stem, v in di.items()}
    res["presence_frame_accuracy"] = {"speech": round(hits[0] / total, 3), "music": round(hits[1] / total, 3)}
    res["mixtures_per_ratio"] = n
    res["seconds"] = seconds
    return res


def time_separator(onnx_path: Path, seconds: float = 60.0) -> dict:
    """Real-time factor of the streaming separator on noise-like audio, 1 s blocks."""
    x = np.random.default_rng(0).standard_normal(int(seconds * SR)).astype(np.float32) * 0.05
    sep = BuiltinSeparator(onnx_path, threads=1)
    t0 = time.perf_counter()
    for i in range(0, x.size, SR):
        sep.process(x[i:i + SR])
    sep.flush()
    dt = time.perf_counter() - t0
    return {"realtime_factor": round(seconds / dt, 1), "seconds": seconds, "block_s": 1.0, "threads": 1}


# -- main ------------------------------------------------------------------------------------
def parse(argv):
    ap = argparse.ArgumentParser(prog="python -m training.separator", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="engines/models")
    ap.add_argument("--segments", type=int, default=4000, help="training segments per data round")
    ap.add_argument("--rounds", type=int, default=3, help="fresh training segments this many times")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=WIDTH)
    ap.add_argument("--max-clips", type=int, default=None, help="quick run: at most N clips per corpus/split")
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--eval-mixtures", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--name", default="separator")
    ap.add_argument("--eval-only", action="store_true", help="evaluate OUT/NAME.onnx and rewrite its card")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--resume", action="store_true",
                    help="start from OUT/NAME.weights.h5 (saved by every run) and its card's history")
    return ap.parse_args(argv)


def _card(a, model, onnx_path: Path, sp: dict, history: list, best: float, mean, std, diff: float,
          t_start: float, argv) -> dict:
    """The separator's model card (metrics are added by :func:`_finish`)."""
    return {
        "id": f"emotrack-{a.name}-1",
        "task": "speech/music separation at 16 kHz: soft speech mask per STFT bin (music = 1 - mask) "
                "and per-frame speech / music presence",
        "onnx": onnx_path.name,
        "stft": STFT.to_dict(),
        "inputs": [{"name": "features", "dtype": "float32",
                    "shape": ["N", STFT.chunk + 2 * STFT.context, STFT.bins],
                    "description": "streamer.separation.log_power of STFT frames (chunk + 2 x context)"}],
        "outputs": [{"name": "speech_mask", "dtype": "float32", "shape": ["N", STFT.chunk, STFT.bins],
                     "activation": "sigmoid"},
                    {"name": "presence", "dtype": "float32", "shape": ["N", STFT.chunk, 2],
                     "activation": "sigmoid", "labels": ["speech", "music"]}],
        "architecture": describe(model, a.width),
        "training_data": {
            "speech": "RAVDESS actors 1-16 + TESS", "music": "4Q train artists (split seed "
            f"{corpora.SPLIT_SEED}) + EMOPIA official train, rendered with fluidsynth",
            "mixing": "random 2 s segments, speech-to-music ratio U[-10, +15] dB after R128 "
                      "normalisation, 15 % without speech, 15 % without music, gain U[-30, +5] dB",
            "segments_per_round": a.segments, "rounds": a.rounds,
            "clips": {k: {"speech": len(s), "music": len(m)} for k, (s, m) in sp.items()}},
        "training": {"epochs_run": len(history), "history": history, "best_val_loss": round(float(best), 4),
                     "standardisation": {"mean": [round(float(v), 6) for v in mean],
                                         "std": [round(float(v), 6) for v in std]},
                     "learning_rate": a.lr, "resumed": bool(a.resume),
                     "seed": a.seed, "minutes": round((time.time() - t_start) / 60.0, 1),
                     "command": "python -m training.separator " + " ".join(sys.argv[1:] if argv is None else argv),
                     "date": _dt.date.today().isoformat(), "parity_max_abs_diff": diff},
        "protocol": "held-out speakers (RAVDESS actors 19-24) over held-out songs (4Q test artists, "
                    "EMOPIA official test), 4 s mixtures at fixed speech-to-music ratios; SI-SDR "
                    "improvement over the unprocessed mixture, through the streaming separator",
        "licence": "code Apache-2.0; weights trained on " + "; ".join(LICENCES) + ": research / non-commercial use",
    }


def main(argv: Optional[list[str]] = None) -> int:
    a = parse(sys.argv[1:] if argv is None else argv)
    t_start = time.time()
    log = lambda *m: print(f"[{time.time() - t_start:7.1f}s]", *m, flush=True)
    data = corpora.load("speech", a.max_clips)
    sp = splits(data)
    for k, (s, m) in sp.items():
        if not s or not m:
            raise SystemExit(f"empty {k} split")
        log(f"{k}: {len(s)} speech, {len(m)} music clips")
    out_dir = Path(a.out)
    onnx_path = out_dir / f"{a.name}.onnx"
    if a.eval_only:
        card = _read_card(onnx_path)
        return _finish(a, card, onnx_path, sp, log)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    train = make_segments(a.seed * 1000, a.segments, *sp["train"])
    val = make_segments(a.seed * 1000 + 999_999, max(64, a.segments // 10), *sp["val"])
    log(f"segments: train {train['x'].shape}, val {val['x'].shape}")
    mean = train["x"].mean(axis=(0, 1)).astype(np.float64)
    std = np.maximum(train["x"].std(axis=(0, 1)), 1e-3).astype(np.float64)
    model = build(mean, std, width=a.width, seed=a.seed)
    prior: list = []
    weights_path = out_dir / f"{a.name}.weights.h5"
    if a.resume:
        prev = _read_card(onnx_path)
        prior = prev["training"]["history"]
        mean = np.asarray(prev["training"]["standardisation"]["mean"])
        std = np.asarray(prev["training"]["standardisation"]["std"])
        model = build(mean, std, width=a.width, seed=a.seed)
        model.load_weights(str(weights_path))
        log(f"resumed from {weights_path} after {len(prior)} epochs")
    model.compile(optimizer=tf.keras.optimizers.Adam(a.lr),
                  loss={"speech_mask": _loss_fn(), "presence": "binary_crossentropy"},
                  loss_weights={"speech_mask": 1.0, "presence": 0.3})
    best, best_w, history, bad = np.inf, None, [], 0
    per_round = max(1, a.epochs // max(1, a.rounds))
    for epoch in range(a.epochs):
        if epoch and epoch % per_round == 0 and epoch // per_round < a.rounds:
            del train
            train = make_segments(a.seed * 1000 + epoch, a.segments, *sp["train"])
            log(f"fresh training segments (round {epoch // per_round + 1})")
        loss = _epoch(model, train, a.batch, np.random.default_rng(a.seed + epoch), train=True)
        v = {"loss": _epoch(model, val, 64, None, train=False)}
        history.append({"epoch": epoch + 1, "loss": round(loss, 4), "val_loss": round(float(v["loss"]), 4)})
        log(f"epoch {epoch + 1}: loss {history[-1]['loss']} val_loss {history[-1]['val_loss']}")
        if v["loss"] < best - 1e-4:
            best, best_w, bad = v["loss"], model.get_weights(), 0
        else:
            bad += 1
            if bad % 2 == 0:  # halve the learning rate after 2 epochs without gain
                lr = float(model.optimizer.learning_rate.numpy()) * 0.5
                model.optimizer.learning_rate.assign(lr)
                log(f"learning rate -> {lr:g}")
            if bad >= 6:
                log("early stop (val loss did not improve for 6 epochs)")
                break
        if a.max_minutes and (time.time() - t_start) / 60.0 > a.max_minutes:
            log("time budget reached")
            break
    model.set_weights(best_w)
    model.save_weights(str(weights_path))
    history = prior + [dict(h, epoch=h["epoch"] + len(prior)) for h in history]
    export(model, onnx_path)
    from .export import check_parity

    diff = check_parity(model, onnx_path, val["x"][:8, :STFT.chunk + 2 * STFT.context], tol=None)
    if not diff < 1e-4:
        raise SystemExit(f"Keras vs ONNX Runtime parity failed: {diff:.3g}")
    log(f"exported {onnx_path} ({onnx_path.stat().st_size} bytes), parity max abs diff {diff:.2e}")
    card = _card(a, model, onnx_path, sp, history, best, mean, std, diff, t_start, argv)
    return _finish(a, card, onnx_path, sp, log)


def _read_card(onnx_path: Path) -> dict:
    """The card of a separator this module trained (``--eval-only``, ``--resume``); one line when it cannot."""
    from engines.cards import ModelCardError, read_card

    try:
        return read_card(onnx_path)
    except ModelCardError as exc:
        raise SystemExit(f"separator: {exc}") from None


def _finish(a, card: dict, onnx_path: Path, sp: dict, log) -> int:
    from engines.cards import sha256_of

    ModelCard(card).write(onnx_path)
    card["metrics"] = {"test": evaluate(onnx_path, *sp["test"], n=a.eval_mixtures),
                       "speed": time_separator(onnx_path)}
    card["onnx_sha256"] = sha256_of(onnx_path)
    card["onnx_bytes"] = onnx_path.stat().st_size
    ModelCard(card).write(onnx_path)
    log(json.dumps(card["metrics"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
