"""The one training loop: every model, the shipped speech and music models included, is trained
from a resolved recipe (:mod:`training.config`); ``python -m training.recipe`` and
``python -m training.train`` (``emotrack train``) are its command lines.

Seeds are fixed (numpy, Python and TensorFlow; windows of epoch e come from a generator seeded by
(seed, e), so a resumed run sees the windows an uninterrupted one would), and then per epoch:

* ``windows_per_epoch`` fresh training windows from the TRAIN split (clean: the target clip alone;
  mixed: :mod:`training.data.mixing`'s recipe with the other source from the same split), with the
  inputs the architecture takes;
* one pass of Keras ``fit`` with a progress bar on stderr;
* validation on fixed windows of the VAL split: loss and macro-F1 of the classification head
  (``emotion`` with ``classes = "emotion8"``, else ``quadrant``; neutral and empty windows left out);
* a checkpoint in ``OUT/ckpt`` (weights + optimiser state + loop state), so ``--resume`` continues
  after the last finished epoch;
* early stopping on ``train.early_stopping`` (``val_macro_f1`` or ``val_loss``; never accuracy: seed
  000 stopped on accuracy and ended up predicting the majority class) with ``train.patience``; the
  best epoch's weights are kept.

Then the best weights are exported (:mod:`training.export`), checked against Keras, evaluated
clip-level on the TEST split (:mod:`training.evaluate`) and described in a model card.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from engines.cards import ModelCard

from streamer import adapt
from streamer.features import mfcc_from_logmel
from streamer.inputs import window_inputs

from . import evaluate
from .config import (EMOTIONS8, RecipeError, adaptation_section, adapting, clips, emotion_index, input_names,
                     input_shapes, mix_config, n_emotions, primary, saved_config, use_separator, va_target)
from .data import mixing
from .export import check_parity, export_model, model_card, time_forward
from .metrics import macro_f1
from .nets import archs

# ----------------------------------------------------------------------------- windows

def make_windows(seed: int, n: int, cfg: dict, targets, others, p=None) -> dict:
    """``n`` seeded windows: inputs by name plus targets q, emo, va, va_mask, activity."""
    rng = np.random.default_rng(seed)
    mc, mode, names = mix_config(cfg), cfg["mixing"]["mode"], input_names(cfg)
    cols = {k: [] for k in (*names, "q", "emo", "va", "va_mask", "activity")}
    group = []
    for _ in range(n):
        x, c, act = mixing.make_window(rng, mc, mode, targets, others, p)
        for k, v in window_inputs(mixing.model_input(x, mc.source), names).items():
            cols[k].append(v)
        group.append("" if c is None else f"{c.corpus}:{c.group}")
        cols["q"].append(-1 if c is None else c.q_index)
        cols["emo"].append(-1 if c is None else emotion_index(c.label))
        cols["va"].append(va_target(c))
        cols["va_mask"].append(0.0 if c is None else 1.0)
        cols["activity"].append(act)
    out = {k: np.asarray(v, dtype=np.int64 if k in ("q", "emo") else np.float32) for k, v in cols.items()}
    out["group"] = np.asarray(group, dtype=object)  # the window's speaker/artist ("" without a target clip)
    return out


def adaptation_prior(batch: dict) -> tuple[np.ndarray, np.ndarray]:
    """The training speakers' average handcrafted statistics (:func:`streamer.adapt.group_prior`)
    over the windows that have a target clip."""
    keep = batch["group"] != ""
    return adapt.group_prior(batch["handcrafted"][keep], batch["group"][keep])


def adapt_windows(batch: dict, cfg: dict, prior: tuple[np.ndarray, np.ndarray], seed: int) -> dict:
    """``batch`` with its handcrafted input standardised causally per speaker, as the streamer does it:
    each speaker's windows in drawn order are one stream.  A window without a target clip (no
    speech in it) is standardised with a random speaker's statistics so far and does not update them,
    as a stream's windows below the activity gate."""
    rng = np.random.default_rng(seed)
    groups = batch["group"]
    known = sorted(set(groups) - {""}) or ["-"]
    streams = [g or known[int(rng.integers(len(known)))] for g in groups]
    x = batch["handcrafted"]
    out = adapt.standardise_groups(x, streams, prior, cfg["adaptation"]["prior_n"], update=groups != "")
    return {**batch, "handcrafted": out.astype(x.dtype)}


def standardisation(batch: dict, names) -> dict:
    """(mean, std) per input kind on training windows (features: per channel)."""
    norm = {}
    if "features" in names:
        f = batch["features"]
        norm["features"] = (f.mean(axis=(0, 1, 2)), f.std(axis=(0, 1, 2)))
        m = mfcc_from_logmel(f[..., 0])
        norm["mfcc"] = (m.mean(axis=(0, 1)), m.std(axis=(0, 1)))
    if "handcrafted" in names:
        h = batch["handcrafted"]
        norm["handcrafted"] = (h.mean(axis=0), h.std(axis=0))
    return {k: (np.asarray(a, np.float64), np.asarray(b, np.float64)) for k, (a, b) in norm.items()}


def class_weights(targets, share: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip sampling probabilities, quadrant and emotion loss weights.

    Quadrants: :func:`sampling_probs` (corpus shares, square-root
    rebalancing, weights for the rest).  Emotions: inverse of their sampled share.
    """
    share = share or {c: 1.0 for c in sorted({c.corpus for c in targets})}
    p, qw = sampling_probs(targets, share)
    e = np.array([emotion_index(c.label) for c in targets])
    eff = np.array([p[e == k].sum() for k in range(len(EMOTIONS8))])
    ew = np.where(eff > 0, 1.0 / np.maximum(eff, 1e-12), 0.0)
    ew = ew / max((ew * eff).sum(), 1e-12) * eff[eff > 0].sum()
    return p, qw, ew


def targets_of(batch: dict, cfg: dict, qw: np.ndarray, ew: np.ndarray):
    """Keras targets and sample weights by output name."""
    q, e = batch["q"], batch["emo"]
    n = len(q)
    if not cfg["train"]["class_weights"]:
        qw, ew = np.ones(4), np.ones(len(EMOTIONS8))
    y = {"quadrant": np.zeros((n, 4), np.float32), "va": batch["va"],
         "activity": batch["activity"][:, None]}
    y["quadrant"][q >= 0, q[q >= 0]] = 1.0
    sw = {"quadrant": np.where(q >= 0, qw[np.maximum(q, 0)], 0.0).astype(np.float32),
          "va": batch["va_mask"].astype(np.float32), "activity": np.ones(n, np.float32)}
    if n_emotions(cfg):
        y["emotion"] = np.zeros((n, len(EMOTIONS8)), np.float32)
        y["emotion"][e >= 0, e[e >= 0]] = 1.0
        sw["emotion"] = np.where(e >= 0, ew[np.maximum(e, 0)], 0.0).astype(np.float32)
    return y, sw


def sampling_probs(clips, share: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Clip sampling probabilities and quadrant loss weights (the mixing recipe).

    Corpus shares are fixed (``share``); inside that, each quadrant (and neutral)
    is sampled in proportion to the square root of its frequency (partial
    rebalancing, so that the rare RAVDESS calm = Q4 is not repeated too often);
    the quadrant loss weights then balance the remaining imbalance (mean 1 over
    the sampled non-neutral windows).
    """
    corp = np.array([c.corpus for c in clips])
    q = np.array([c.q_index for c in clips])
    p = np.zeros(len(clips))
    present = {k: v for k, v in share.items() if (corp == k).any()}
    tot = sum(present.values())
    for k, v in present.items():
        p[corp == k] = v / tot / (corp == k).sum()
    mass = {c: p[q == c].sum() for c in range(-1, 4) if (q == c).any()}
    for c, m in mass.items():
        p[q == c] *= np.sqrt(m) / m
    p /= p.sum()
    eff = np.array([p[q == c].sum() for c in range(4)])
    w = np.where(eff > 0, 1.0 / np.maximum(eff, 1e-12), 0.0)
    w = w / (w * eff).sum() * eff[eff > 0].sum()
    return p, w


def spec_augment(rng: np.random.Generator, x: np.ndarray, fill: np.ndarray, n_time: int = 2,
                 max_time: float = 0.1, n_freq: int = 2, max_freq: int = 8) -> np.ndarray:
    """SpecAugment-style masks (in place) on training features [N, T, F, 3]: ``n_time`` time
    masks of up to ``max_time`` of the frames and ``n_freq`` masks of up to ``max_freq`` mel
    bands, filled with the per-channel training mean ``fill`` (0 after standardisation)."""
    n, t, f, _ = x.shape
    for i in range(n):
        for _ in range(n_time):
            w = int(rng.integers(0, int(max_time * t) + 1))
            s = int(rng.integers(0, t - w + 1))
            x[i, s:s + w] = fill
        for _ in range(n_freq):
            w = int(rng.integers(0, max_freq + 1))
            s = int(rng.integers(0, f - w + 1))
            x[i, :, s:s + w] = fill
    return x


# ----------------------------------------------------------------------------- model


def _tf(threads: int):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # already initialised in this process
    return tf


def _norm_to_json(norm: dict) -> dict:
    return {k: {"mean": [float(x) for x in m], "std": [float(x) for x in s]} for k, (m, s) in norm.items()}


def _norm_from_json(d: dict) -> dict:
    return {k: (np.asarray(v["mean"]), np.asarray(v["std"])) for k, v in d.items()}


def build_model(cfg: dict, norm: dict):
    """Compiled Keras model of the recipe."""
    import tensorflow as tf

    a = dict(cfg["arch"])
    name = a.pop("name")
    model = archs.build(name, input_shapes(cfg), norm, a, n_emotions(cfg), seed=cfg["seed"])
    t = cfg["train"]
    opt = (tf.keras.optimizers.Adam(t["learning_rate"]) if t["optimizer"] == "adam"
           else tf.keras.optimizers.SGD(t["learning_rate"], momentum=0.9))
    losses = {"quadrant": "categorical_crossentropy", "va": "mse", "activity": "binary_crossentropy"}
    if n_emotions(cfg):
        losses["emotion"] = "categorical_crossentropy"
    lw = {k: float(cfg["loss_weights"].get(k, 1.0)) for k in losses}
    model.compile(optimizer=opt, loss=losses, loss_weights=lw, run_eagerly=bool(t["run_eagerly"]))
    return model


def _feed(batch: dict, names) -> dict:
    return {n: batch[n] for n in names}


class _Bar:
    """Keras callback: a one-line progress bar on stderr."""

    def __new__(cls, epoch: int, epochs: int, steps: int):
        import tensorflow as tf

        class Bar(tf.keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.t0, self.last = time.time(), 0.0

            def on_train_batch_end(self, batch, logs=None):
                now = time.time()
                if now - self.last < 0.5 and batch + 1 < steps:
                    return
                self.last = now
                k = int(30 * (batch + 1) / steps)
                sys.stderr.write(f"\repoch {epoch}/{epochs} [{'#' * k}{'-' * (30 - k)}] {batch + 1}/{steps} "
                                 f"loss {logs.get('loss', float('nan')):.4f} {now - self.t0:6.1f}s")
                sys.stderr.flush()

            def on_train_end(self, logs=None):
                sys.stderr.write("\n")
                sys.stderr.flush()

        return Bar()


def weighted_loss(out: dict, y: dict, sw: dict, cfg: dict, model=None) -> float:
    """The training loss as Keras computes it (per output: sample-weighted mean over the
    windows, then the recipe's loss weights; plus the regularisation terms), in numpy, so
    validation needs no second traced Keras function."""
    eps = 1e-7
    total = 0.0
    for k, t in y.items():
        p = np.asarray(out[k], np.float64)
        if k in ("quadrant", "emotion"):
            p = np.clip(p / p.sum(1, keepdims=True), eps, 1 - eps)
            per = -(t * np.log(p)).sum(1)
        elif k == "va":
            per = ((p - t) ** 2).mean(1)
        else:
            p = np.clip(p, eps, 1 - eps)
            per = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean(1)
        total += float(cfg["loss_weights"].get(k, 1.0)) * float(np.mean(per * sw[k]))
    if model is not None and model.losses:
        total += float(sum(float(v) for v in model.losses))
    return total


def validate(model, val: dict, yv, swv, cfg: dict) -> dict:
    """Window-level validation loss and macro-F1 of the primary head."""
    names = input_names(cfg)
    out = model.predict(_feed(val, names), batch_size=64, verbose=0)
    head = primary(cfg)
    y = val["emo"] if head == "emotion" else val["q"]
    keep = y >= 0
    f1 = macro_f1(y[keep], out[head].argmax(1)[keep], out[head].shape[1]) if keep.any() else 0.0
    loss = weighted_loss(out, yv, swv, cfg, model)
    return {"val_loss": round(float(loss), 4), "val_macro_f1": round(float(f1), 4)}


# ----------------------------------------------------------------------------- training


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _epoch_seed(seed: int, e: int) -> int:
    """The seed of epoch ``e``'s windows (a resumed run sees the windows an uninterrupted one would)."""
    return seed * 1_000_003 + e * 1009


def _open_run(cfg: dict, out: Path, resume: bool) -> tuple[dict, Optional[dict]]:
    """(config, saved loop state or None) of the run in ``out``; writes ``resolved_config.json``."""
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "ckpt" / "state.json"
    state = None
    if resume:
        if not state_path.is_file():
            raise RecipeError(f"--resume: no checkpoint in {out / 'ckpt'} (train without --resume first)")
        saved = saved_config(json.loads((out / "resolved_config.json").read_text()))
        saved["train"]["epochs"] = cfg["train"]["epochs"]  # the one thing a resume may change
        cfg = saved
        state = json.loads(state_path.read_text())
    (out / "resolved_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return cfg, state


def _load(cfg: dict, max_clips: Optional[int], t_start: float) -> tuple[dict, list, list]:
    """The recipe's clips with audio: (all, the training targets, the validation targets)."""
    data = clips(cfg, max_clips)
    tr, va_ = data["targets"]["train"], data["targets"]["val"]
    if n_emotions(cfg):
        tr = [c for c in tr if emotion_index(c.label) >= 0]
    for s in ("train", "val"):
        if not data["targets"][s]:
            raise RecipeError(f"the {s} split of {cfg['data']['corpora']} is empty")
    _log(f"{cfg['name']}: {len(tr)} train / {len(va_)} val / {len(data['targets']['test'])} test clips "
         f"loaded in {time.time() - t_start:.1f} s; inputs {input_names(cfg)}, {cfg['mixing']['mode']} windows of "
         f"{cfg['features']['window_s']:g} s")
    return data, tr, va_


def _first_windows(cfg: dict, state: Optional[dict], data: dict, tr: list, va_: list, p) -> dict:
    """Validation windows, the first epoch's training windows, the adaptation prior and the input
    standardisation (the saved ones on a resume)."""
    t, seed = cfg["train"], int(cfg["seed"])
    n_val = t["val_windows"] or max(64, 2 * len(va_))
    val = make_windows(seed * 7 + 99_991, n_val, cfg, va_, data["others"]["val"])
    e0 = state["epoch"] if state and t["resample_windows"] else 0
    first = make_windows(_epoch_seed(seed, e0), t["windows_per_epoch"], cfg, tr, data["others"]["train"], p)
    prior = None
    if adapting(cfg):  # the training speakers' average, from the first epoch's windows (kept for a resume)
        prior = ((np.asarray(state["adapt_prior"]["mean"]), np.asarray(state["adapt_prior"]["var"])) if state
                 else adaptation_prior(first))
        val = adapt_windows(val, cfg, prior, seed * 7 + 99_992)
        first = adapt_windows(first, cfg, prior, _epoch_seed(seed, e0) + 31)
    norm = _norm_from_json(state["norm"]) if state else standardisation(first, input_names(cfg))
    return {"val": val, "first": first, "prior": prior, "norm": norm,
            "fixed": None if t["resample_windows"] else {k: v.copy() for k, v in first.items()}}


def _model_and_state(cfg: dict, w: dict, state: Optional[dict], ckpt_dir: Path, threads: int):
    """(tf, compiled model, checkpoint manager, loop state): a fresh one, or restored from ``ckpt_dir``."""
    tf = _tf(threads)
    tf.keras.utils.set_random_seed(int(cfg["seed"]))
    model = build_model(cfg, w["norm"])
    ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    manager = tf.train.CheckpointManager(ckpt, str(ckpt_dir / "last"), max_to_keep=1)
    if state:
        model.optimizer.build(model.trainable_variables)
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        model.optimizer.learning_rate.assign(state["lr"])
        _log(f"resumed after epoch {state['epoch']} (optimiser step {int(model.optimizer.iterations.numpy())})")
        return tf, model, manager, state
    state = {"epoch": 0, "history": [], "best_epoch": 0, "best": None, "since_best": 0,
             "lr": cfg["train"]["learning_rate"], "norm": _norm_to_json(w["norm"]), "train_seconds": 0.0}
    if w["prior"] is not None:
        state["adapt_prior"] = {"mean": w["prior"][0].tolist(), "var": w["prior"][1].tolist()}
    return tf, model, manager, state


def _fit_epoch(tf, model, batch: dict, cfg: dict, e: int, norm: dict, qw, ew) -> float:
    """One pass of ``fit`` over the epoch's windows (SpecAugment, seeded shuffle and dropout); the loss."""
    t, names, es = cfg["train"], input_names(cfg), _epoch_seed(int(cfg["seed"]), e)
    if t["spec_augment"] and "features" in names:
        spec_augment(np.random.default_rng(es + 17), batch["features"], norm["features"][0].astype(np.float32))
    y, sw = targets_of(batch, cfg, qw, ew)
    order = np.random.default_rng(es + 29).permutation(len(batch["q"]))  # the epoch's shuffle
    feed = {k: v[order] for k, v in _feed(batch, names).items()}
    y, sw = {k: v[order] for k, v in y.items()}, {k: v[order] for k, v in sw.items()}
    tf.keras.utils.set_random_seed(es)  # dropout of this epoch
    steps = -(-len(order) // t["batch_size"])
    h = model.fit(feed, y, sample_weight=sw, batch_size=t["batch_size"], epochs=1, verbose=0,
                  shuffle=False, callbacks=[_Bar(e + 1, t["epochs"], steps)])
    return float(h.history["loss"][-1])


def _keep_best(model, state: dict, v: dict, cfg: dict, ckpt_dir: Path) -> bool:
    """Record a validation result: save the weights when it is the best so far, else count the epoch
    without gain (halving the learning rate every ``lr_halve_patience`` of them)."""
    t = cfg["train"]
    metric, sign = t["early_stopping"], (1 if t["early_stopping"] == "val_macro_f1" else -1)
    if state["best"] is None or sign * v[metric] > sign * state["best"]:
        state.update(best=v[metric], best_epoch=state["epoch"], since_best=0)
        model.save_weights(str(ckpt_dir / "best" / "weights"))
        return True
    state["since_best"] += 1
    if t["lr_halve_patience"] and state["since_best"] % t["lr_halve_patience"] == 0:
        state["lr"] = float(state["lr"]) * 0.5
        model.optimizer.learning_rate.assign(state["lr"])
    return False


def train(cfg: dict, out: Path, resume: bool = False, max_minutes: Optional[float] = None,
          threads: int = 2, max_clips: Optional[int] = None, command: str = "",
          onnx_path: Optional[Path] = None) -> dict:
    """Train the resolved recipe ``cfg`` into the run directory ``out`` (checkpoints, resolved
    config) and export it to ``onnx_path`` (default ``out/<name>.onnx``) with its card; returns the card."""
    t_start = time.time()
    cfg, state = _open_run(cfg, out, resume)
    ckpt_dir, t, names = out / "ckpt", cfg["train"], input_names(cfg)
    use_separator(cfg)
    data, tr, va_ = _load(cfg, max_clips, t_start)
    p, qw, ew = class_weights(tr, cfg["data"]["corpus_share"])
    w = _first_windows(cfg, state, data, tr, va_, p)
    tf, model, manager, state = _model_and_state(cfg, w, state, ckpt_dir, threads)
    yv, swv = targets_of(w["val"], cfg, qw, ew)
    batch, t_loop, stopped = w["first"], time.time(), "epochs"
    for e in range(state["epoch"], t["epochs"]):
        if state["epoch"] - state["best_epoch"] >= t["patience"] and state["best_epoch"]:
            stopped = "early stop"
            break
        if batch is None and w["fixed"] is not None:
            batch = {k: v.copy() for k, v in w["fixed"].items()}
        if batch is None:
            es = _epoch_seed(int(cfg["seed"]), e)
            batch = make_windows(es, t["windows_per_epoch"], cfg, tr, data["others"]["train"], p)
            if w["prior"] is not None:
                batch = adapt_windows(batch, cfg, w["prior"], es + 31)
        loss = _fit_epoch(tf, model, batch, cfg, e, w["norm"], qw, ew)
        v = validate(model, w["val"], yv, swv, cfg)
        rec = {"epoch": e + 1, "lr": float(state["lr"]), "train_loss": round(loss, 4), **v}
        state["history"].append(rec)
        state["epoch"] = e + 1
        better = _keep_best(model, state, v, cfg, ckpt_dir)
        state["train_seconds"] = round(state["train_seconds"] + time.time() - t_loop, 1)
        t_loop = time.time()
        manager.save()
        (ckpt_dir / "state.json").write_text(json.dumps(state, indent=1) + "\n")
        _log(f"epoch {e + 1}: {rec}{'  (best)' if better else ''}")
        batch = None
        if state["epoch"] - state["best_epoch"] >= t["patience"]:
            stopped = "early stop"
            break
        if max_minutes and time.time() - t_start > 60 * max_minutes:
            stopped = "time budget"
            break
    _log(f"{stopped}: best epoch {state['best_epoch']} {t['early_stopping']} {state['best']} "
         f"({time.time() - t_start:.1f} s so far)")
    probe = {n: w["val"][n][:8] for n in names}
    np.savez(ckpt_dir / "probe.npz", **probe)
    model.load_weights(str(ckpt_dir / "best" / "weights"))
    return finish(model, cfg, out, state, probe=probe, data=data, threads=threads, command=command,
                  t_start=t_start, stopped=stopped, onnx_path=onnx_path)



def finish(model, cfg: dict, out: Path, state: dict, probe: dict, data: Optional[dict], threads: int,
           command: str, t_start: float, stopped: str = "", onnx_path: Optional[Path] = None) -> dict:
    """Export + parity + (with ``data``) test evaluation + model card."""
    onnx_path = onnx_path or out / f"{cfg['name']}.onnx"
    export_model(model, cfg, onnx_path)
    diff = check_parity(model, onnx_path, probe)
    _log(f"exported {onnx_path}: Keras vs ONNX Runtime max abs diff {diff:.3g} "
         f"({time.time() - t_start:.1f} s so far)")
    metrics = {}
    if data is not None and data["targets"]["test"]:
        metrics = evaluate.evaluate_model(onnx_path, cfg, "test", data=data, threads=threads,
                                          adaptation=adaptation_section(cfg, state))
        for k, m in metrics.items():
            e8 = m.get("emotion8")
            _log(f"{k}: quadrant acc {m.get('quadrant_accuracy')} macro-F1 {m.get('quadrant_macro_f1')} "
                 f"(majority {m.get('chance_quadrant_majority')})"
                 + (f"; 8-class acc {e8['accuracy']} (majority {e8['chance_majority']})" if e8 else ""))
    timing = time_forward(onnx_path, probe, repeats=30)
    card = model_card(model, cfg, onnx_path, state, metrics, diff, timing, command, t_start, stopped)
    _log(f"wrote {ModelCard(card).write(onnx_path)}")
    return card
