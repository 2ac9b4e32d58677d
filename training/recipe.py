"""Train, export and evaluate the seeds' architectures from recipe files.

    python -m training.recipe train RECIPE [--out DIR] [--resume] [--max-clips N] [--epochs N]
                                    [--max-minutes M] [--set key=value ...] [--threads T]
    python -m training.recipe export RUN_DIR_OR_CKPT OUT.onnx [--last]
    python -m training.recipe evaluate MODEL.onnx [--split test] [--max-clips N] [--out FILE]
    python -m training.recipe list

(also ``emotrack train RECIPE``, ``emotrack export``, ``emotrack evaluate``).

RECIPE is a TOML file or the name of one in ``training/recipes/``.  The recipe is
resolved (:data:`DEFAULTS` < file < ``--set`` overrides, e.g. ``--set
train.learning_rate=1e-3 --set arch.dense=64``) and written to
``OUT/resolved_config.json`` before training, seeds are fixed (numpy, Python and
TensorFlow; windows of epoch e come from a generator seeded by (seed, e), so a
resumed run sees the windows an uninterrupted one would), and then per epoch:

* ``windows_per_epoch`` fresh training windows from the TRAIN split (clean: the
  target clip alone; mixed: :mod:`training.data.mixing`'s recipe with the other source
  from the same split), with the inputs the architecture takes;
* one pass of Keras ``fit`` with a progress bar on stderr;
* validation on fixed windows of the VAL split: loss and macro-F1 of the
  classification head (``emotion`` with ``classes = "emotion8"``, else
  ``quadrant``; neutral and empty windows left out);
* a checkpoint in ``OUT/ckpt`` (weights + optimiser state + loop state), so
  ``--resume`` continues after the last finished epoch;
* early stopping on ``train.early_stopping`` (``val_macro_f1`` or ``val_loss``;
  never accuracy: seed 000 stopped on accuracy and ended up predicting the
  majority class) with ``train.patience``; the best epoch's weights are kept.

Then the best weights are exported to ``OUT/<name>.onnx`` (tf2onnx, opset 17),
compared with Keras on real validation windows (max abs diff < 1e-4 or the run
fails), evaluated clip-level on the TEST split (:func:`evaluate_model`) and
described in ``OUT/<name>.json``, a model card in the format of
``engines/models/speech.json`` with the resolved recipe in it.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import hashlib
import json
import os
import sys
import time
import tomllib
from dataclasses import fields as dc_fields, replace
from pathlib import Path
from typing import Optional

import numpy as np

from streamer import adapt, taxonomy
from streamer.errors import EmotrackError, ParameterError
from streamer.features import DEFAULT_PARAMS, mfcc_from_logmel
from streamer.inputs import INPUT_KINDS, input_shape, window_inputs

from . import evaluate
from .data import corpora, handcrafted, mixing
from .experiments import protocols
from .nets import archs
from .export import OPSET, op_types, time_forward
from .train import LICENCES

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
EMOTIONS8 = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
_EMOTION_ALIAS = {"fear": "fearful", "ps": "surprised", "pleasant_surprise": "surprised"}
SPLITS = ("train", "val", "test")

DEFAULTS: dict = {
    "name": None,
    "description": "",
    "task": "speech",            # speech | music: which curve the model gives
    "seed": 1,
    "data": {
        "corpora": None,         # target corpora (default: ravdess+tess / 4q+emopia)
        "split": "standard",     # training.data.corpora's splits (see PROTOCOLS)
        "classes": "quadrant",   # quadrant | emotion8 (adds the 8-class `emotion` head)
        "max_clips": 0,          # at most N clips per corpus and split (0: all)
        "corpus_share": {},      # sampling share per corpus (default: equal)
    },
    "features": {"window_s": None, "hop_s": None},  # default: training.data.mixing's per task
    "mixing": {"mode": "mixed", "others": None},    # + any training.data.mixing.MixConfig field
    "arch": {"name": "dcnn"},                        # + the builder's parameters
    "train": {
        "optimizer": "adam",     # adam | sgd
        "learning_rate": 1e-3,
        "batch_size": 32,
        "epochs": 30,
        "windows_per_epoch": 2000,
        "resample_windows": True,  # fresh windows every epoch (false: epoch 1's windows every epoch)
        "val_windows": 0,        # 0: max(64, 2 per validation clip)
        "early_stopping": "val_macro_f1",  # val_macro_f1 | val_loss
        "patience": 6,
        "lr_halve_patience": 0,  # halve the learning rate after N epochs without gain (0: never)
        "spec_augment": True,    # SpecAugment masks on the log-mel input (training.train.spec_augment)
        "class_weights": True,   # balance the classification losses
        "run_eagerly": False,    # Keras eager mode: no graph tracing (faster for a few steps, e.g. tests)
    },
    "loss_weights": {"quadrant": 1.0, "va": 0.5, "activity": 0.5, "emotion": 1.0},
    # per-stream adaptation (streamer.adapt): "causal_standardise" z-scores the handcrafted input per
    # speaker with running statistics, in training (each speaker's windows in drawn order) as in a stream
    "adaptation": {"method": "none", "prior_n": 5.0, "min_activity": 0.5},
}

PROTOCOLS = {
    "speech": ("TEST = RAVDESS actors 19-24 (speaker-independent), VAL = RAVDESS actors 17-18, "
               "TRAIN = RAVDESS actors 1-16 (+ all TESS when it is a recipe corpus: TESS has 2 "
               "speakers only, none held out)"),
    "music": ("4Q grouped by artist (training.data.corpora.split_4q_artists: seeded artist shuffle, 20 % "
              "TEST, 10 % VAL, rest TRAIN); EMOPIA official_split"),
}


class RecipeError(ParameterError):
    """A recipe file, name or override is wrong."""


# ----------------------------------------------------------------------------- recipes

def recipe_path(recipe: str) -> Path:
    """A recipe file path, or ``training/recipes/<recipe>.toml``."""
    p = Path(recipe)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise RecipeError(f"recipe file not found: {recipe}")
        return p
    q = RECIPES_DIR / f"{recipe}.toml"
    if not q.is_file():
        raise RecipeError(f"unknown recipe {recipe!r}: give a .toml file or one of {list_recipes()}")
    return q


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(out.get(k), dict) and isinstance(v, dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(cfg: dict, sets: list[str]) -> dict:
    """``key.sub=value`` overrides (values in TOML syntax; bare words are strings)."""
    cfg = copy.deepcopy(cfg)
    for s in sets or []:
        if "=" not in s:
            raise RecipeError(f"--set {s!r}: use key=value, e.g. train.learning_rate=1e-4")
        key, val = s.split("=", 1)
        node, parts = cfg, key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise RecipeError(f"--set {s!r}: {p} is not a table")
        node[parts[-1]] = _parse_value(val.strip())
    return cfg


def resolve(recipe: str, sets: Optional[list[str]] = None) -> dict:
    """DEFAULTS < recipe file < overrides, checked (arch parameters against the builder's)."""
    path = recipe_path(recipe)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not valid TOML ({exc})") from None
    cfg = apply_overrides(_merge(DEFAULTS, raw), sets or [])
    cfg["name"] = cfg.get("name") or path.stem
    cfg["recipe_file"] = str(path.name)
    return check(cfg)


def saved_config(d: dict) -> dict:
    """A resolved config read back (resolved_config.json, a card's ``recipe``): keys added to
    :data:`DEFAULTS` since it was written take their defaults."""
    return _merge(DEFAULTS, d)


def check(cfg: dict) -> dict:
    """Validate a resolved config and fill the task defaults."""
    unknown = sorted(set(cfg) - set(DEFAULTS) - {"recipe_file"})
    if unknown:
        raise RecipeError(f"unknown recipe keys {unknown}")
    for sec in ("data", "features", "train", "loss_weights", "adaptation"):
        bad = sorted(set(cfg[sec]) - set(DEFAULTS[sec]))
        if bad:
            raise RecipeError(f"unknown keys in [{sec}]: {bad} (known: {sorted(DEFAULTS[sec])})")
    task = cfg["task"]
    if task not in ("speech", "music"):
        raise RecipeError(f"task = {task!r}: use 'speech' or 'music'")
    d = cfg["data"]
    d["corpora"] = list(d["corpora"] or (["ravdess", "tess"] if task == "speech" else ["4q", "emopia"]))
    allowed = {"speech": {"ravdess", "tess"}, "music": {"4q", "emopia"}}[task]
    if set(d["corpora"]) - allowed:
        raise RecipeError(f"data.corpora {d['corpora']}: a {task} recipe trains on {sorted(allowed)}")
    if d["classes"] not in ("quadrant", "emotion8"):
        raise RecipeError(f"data.classes = {d['classes']!r}: use 'quadrant' or 'emotion8'")
    if d["classes"] == "emotion8" and task != "speech":
        raise RecipeError("data.classes = 'emotion8' needs task = 'speech' (RAVDESS labels)")
    if d["split"] != "standard":
        raise RecipeError(f"data.split = {d['split']!r}: only 'standard' ({PROTOCOLS[task]})")
    base = mixing.CONFIGS[task]
    f = cfg["features"]
    f["window_s"] = float(f["window_s"] or base.window_s)
    f["hop_s"] = float(f["hop_s"] or base.hop_s)
    m = cfg["mixing"]
    if m["mode"] not in ("clean", "mixed"):
        raise RecipeError(f"mixing.mode = {m['mode']!r}: use 'clean' or 'mixed'")
    m["others"] = list(m["others"] or (["4q"] if task == "speech" else ["ravdess"]))
    mix_fields = {x.name for x in dc_fields(mixing.MixConfig)} - {"source", "window_s", "hop_s"}
    bad = sorted(set(m) - mix_fields - {"mode", "others"})
    if bad:
        raise RecipeError(f"unknown keys in [mixing]: {bad} (MixConfig fields: {sorted(mix_fields)})")
    a = dict(cfg["arch"])
    name = a.pop("name", None)
    try:
        cfg["arch"] = {"name": name, **archs.resolve_params(name, a)}
    except ValueError as exc:
        raise RecipeError(f"[arch]: {exc}") from None
    t = cfg["train"]
    if t["early_stopping"] not in ("val_macro_f1", "val_loss"):
        raise RecipeError(f"train.early_stopping = {t['early_stopping']!r}: use 'val_macro_f1' or 'val_loss' "
                          "(not accuracy: seed 000's lesson)")
    if t["optimizer"] not in ("adam", "sgd"):
        raise RecipeError(f"train.optimizer = {t['optimizer']!r}: use 'adam' or 'sgd'")
    ad = cfg["adaptation"]
    if ad["method"] not in ("none", adapt.METHOD):
        raise RecipeError(f"adaptation.method = {ad['method']!r}: use 'none' or {adapt.METHOD!r}")
    if adapting(cfg) and "handcrafted" not in input_names(cfg):
        raise RecipeError(f"adaptation.method = {adapt.METHOD!r} standardises the handcrafted input, and arch "
                          f"{cfg['arch']['name']!r} takes {list(input_names(cfg))}")
    if not float(ad["prior_n"]) > 0:
        raise RecipeError(f"adaptation.prior_n = {ad['prior_n']!r}: must be > 0")
    return cfg


def adapting(cfg: dict) -> bool:
    """Whether the recipe's model standardises its input per stream (:mod:`streamer.adapt`)."""
    return cfg["adaptation"]["method"] == adapt.METHOD


def mix_config(cfg: dict) -> mixing.MixConfig:
    """The recipe's window recipe: training.data.mixing's config of the task, overridden."""
    m = {k: v for k, v in cfg["mixing"].items() if k not in ("mode", "others")}
    mc = replace(mixing.CONFIGS[cfg["task"]], window_s=cfg["features"]["window_s"],
                 hop_s=cfg["features"]["hop_s"], **m)
    if cfg["mixing"]["mode"] == "clean":
        mc = replace(mc, p_clean=1.0)
    return mc


def input_shapes(cfg: dict) -> dict:
    mc = mix_config(cfg)
    return {n: input_shape(n, mc.n_samples) for n in INPUT_KINDS}


def input_names(cfg: dict) -> tuple:
    return archs.INPUTS[cfg["arch"]["name"]]


def n_emotions(cfg: dict) -> int:
    return len(EMOTIONS8) if cfg["data"]["classes"] == "emotion8" else 0


def emotion_index(label: str) -> int:
    lab = _EMOTION_ALIAS.get(label.strip().lower(), label.strip().lower())
    return EMOTIONS8.index(lab) if lab in EMOTIONS8 else -1


# ----------------------------------------------------------------------------- data

def clips(cfg: dict, max_clips: Optional[int] = None, splits=SPLITS) -> dict:
    """{"targets": {split: [Clip]}, "others": {split: [Clip]}} with audio loaded."""
    task = cfg["task"]
    max_clips = max_clips if max_clips is not None else (cfg["data"]["max_clips"] or None)
    t_index = corpora.speech_index() if task == "speech" else corpora.music_index()
    targets = [c for c in t_index if c.corpus in cfg["data"]["corpora"] and c.split in splits]
    targets = corpora.subset(targets, max_clips, seed=cfg["seed"])
    others = []
    if cfg["mixing"]["mode"] == "mixed":
        o_index = corpora.music_index() if task == "speech" else corpora.speech_index()
        others = [c for c in o_index if c.corpus in cfg["mixing"]["others"] and c.split in splits]
        others = corpora.subset(others, max_clips, seed=cfg["seed"])
    full = not max_clips
    corpora.load_audio(targets, use_cache=full)
    corpora.load_audio(others, use_cache=full)
    return {"targets": {s: [c for c in targets if c.split == s] for s in splits},
            "others": {s: [c for c in others if c.split == s] for s in splits}}


def _window(rng: np.random.Generator, mc: mixing.MixConfig, mode: str, targets, others, p):
    """(audio, clip or None, activity) of one window (the clip None: no target source)."""
    n = mc.n_samples
    if rng.random() < mc.p_empty:
        if mode == "mixed" and others and rng.random() < 0.7:
            if mc.source == "speech":
                o, _ = mixing.place(rng, others[int(rng.integers(len(others)))], n)
            else:
                o, _ = mixing.speech_slots(rng, others, n, mc.slot_s)
            x = o * mixing.db(rng.uniform(-10, 5))
        else:
            x = np.zeros(n, dtype=np.float32)
        return mixing.finish(rng, x, mc), None, 0.0
    c = targets[int(rng.choice(len(targets), p=p))]
    x, act = mixing.place(rng, c, n, mc.p_speed)
    if mode == "mixed" and others and rng.random() >= mc.p_clean:
        smr = rng.uniform(mc.smr_lo, mc.smr_hi)
        if mc.source == "speech":
            o, _ = mixing.place(rng, others[int(rng.integers(len(others)))], n)
            x = x + o * mixing.db(-smr)
        else:
            o, _ = mixing.speech_slots(rng, others, n, mc.slot_s)
            x = x + o * mixing.db(smr)
    return mixing.finish(rng, x, mc), c, float(act.mean())


def va_target(c) -> tuple[float, float]:
    """Graded (valence, arousal) where the corpus has them, else the quadrant's sign pair
    (:func:`streamer.taxonomy.va_target`; neutral and no clip: the origin)."""
    if c is not None and getattr(c, "valence", None) is not None and getattr(c, "arousal", None) is not None:
        return (float(c.valence), float(c.arousal))
    return taxonomy.va_target(None if c is None else c.quadrant)


def make_windows(seed: int, n: int, cfg: dict, targets, others, p=None) -> dict:
    """``n`` seeded windows: inputs by name plus targets q, emo, va, va_mask, activity."""
    rng = np.random.default_rng(seed)
    mc, mode, names = mix_config(cfg), cfg["mixing"]["mode"], input_names(cfg)
    cols = {k: [] for k in (*names, "q", "emo", "va", "va_mask", "activity")}
    group = []
    for _ in range(n):
        x, c, act = _window(rng, mc, mode, targets, others, p)
        for k, v in window_inputs(x, names).items():
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


def adaptation_section(cfg: dict, state: dict) -> Optional[dict]:
    """The model card's ``adaptation`` (None when the recipe does not adapt)."""
    if not adapting(cfg):
        return None
    mean, var = state["adapt_prior"]["mean"], state["adapt_prior"]["var"]
    return adapt.card_section(mean, var, cfg["adaptation"]["prior_n"],
                              min_activity=cfg["adaptation"]["min_activity"])


def clip_streams(clip_list, adaptation: Optional[dict], seed: int = protocols.SEED, per_clip: bool = False):
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

    Quadrants: :func:`training.train.sampling_probs` (corpus shares, square-root
    rebalancing, weights for the rest).  Emotions: inverse of their sampled share.
    """
    from .train import sampling_probs

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


def primary(cfg: dict) -> str:
    """The classification head early stopping and the headline metric use."""
    return "emotion" if n_emotions(cfg) else "quadrant"


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
    f1 = evaluate.macro_f1(y[keep], out[head].argmax(1)[keep], n=out[head].shape[1]) if keep.any() else 0.0
    loss = weighted_loss(out, yv, swv, cfg, model)
    return {"val_loss": round(float(loss), 4), "val_macro_f1": round(float(f1), 4)}


# ----------------------------------------------------------------------------- export

def export_model(model, cfg: dict, path: Path) -> Path:
    """tf2onnx export of ``model`` with the recipe's named inputs (dynamic batch)."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    shapes = input_shapes(cfg)
    spec = tuple(tf.TensorSpec((None, *shapes[n]), tf.float32, name=n) for n in input_names(cfg))
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET)
    want = sorted(["quadrant", "va", "activity"] + (["emotion"] if n_emotions(cfg) else []))
    got = sorted(o.name for o in proto.graph.output)
    if got != want:
        raise RuntimeError(f"unexpected ONNX outputs {got}, expected {want}")
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))
    return path


def session(path: Path, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def parity(model, path: Path, feed: dict, tol: float = 1e-4) -> float:
    """Max abs difference of Keras vs ONNX Runtime over all outputs; raises if >= ``tol``."""
    k = model(feed if len(feed) > 1 else next(iter(feed.values())), training=False)
    s = session(path)
    names = [o.name for o in s.get_outputs()]
    o = dict(zip(names, s.run(names, feed)))
    diff = max(float(np.max(np.abs(np.asarray(k[n]) - o[n]))) for n in names)
    if not diff < tol:
        raise RuntimeError(f"Keras vs ONNX Runtime parity failed: max abs diff {diff:.3g} >= {tol}")
    return diff


# ----------------------------------------------------------------------------- evaluation

def _uar(y: np.ndarray, p: np.ndarray, n: int) -> float:
    rec = [float(np.mean(p[y == c] == c)) for c in range(n) if (y == c).any()]
    return float(np.mean(rec)) if rec else 0.0


def _ccc(a: np.ndarray, b: np.ndarray) -> float:
    va, vb = a.var(), b.var()
    den = va + vb + (a.mean() - b.mean()) ** 2
    return float(2 * np.mean((a - a.mean()) * (b - b.mean())) / den) if den > 0 else 0.0


def clip_outputs(sess, x: np.ndarray, cfg: dict, batch: int = 16,
                 stream: Optional[adapt.StreamStandardiser] = None) -> dict:
    """Mean ONNX outputs over the clip's sliding windows (as ``emotrack predict``); ``stream``: the
    speaker's adaptation state (:func:`clip_streams`), updated with every window of the clip."""
    from streamer.predict import clip_windows

    mc = mix_config(cfg)
    wins = clip_windows(np.asarray(x, np.float32), mc.n_samples, int(round(mc.hop_s * corpora.SR)))
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
    m = evaluate.metrics(q[keep], probs[keep], va[keep]) if keep.any() else {"n_clips": 0}
    if keep.any():
        m["quadrant_uar"] = round(_uar(q[keep], probs[keep].argmax(1), 4), 4)
    tgt = np.array([va_target(c) for c in clip_list])
    m["va_vs_sign_targets"] = {
        "n_clips": int(len(clip_list)),
        "ccc_valence": round(_ccc(va[:, 0], tgt[:, 0]), 4), "ccc_arousal": round(_ccc(va[:, 1], tgt[:, 1]), 4),
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
            "macro_f1": round(evaluate.macro_f1(e[ke], pe[ke], len(EMOTIONS8)), 4),
            "uar": round(_uar(e[ke], pe[ke], len(EMOTIONS8)), 4),
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
    (:func:`training.train.finish`): ``cross_corpus``, clip-level metrics on target corpora the
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
    out["activity"] = evaluate.activity_report(sess, mc, [c.audio for c in data["targets"]["test"]][:60], others, rng,
                                               with_text="the first 60 held-out test clips (clean)",
                                               adaptation=adaptation)
    return out


# ----------------------------------------------------------------------------- training

def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train(cfg: dict, out: Path, resume: bool = False, max_minutes: Optional[float] = None,
          threads: int = 2, max_clips: Optional[int] = None, command: str = "") -> dict:
    """Train the resolved recipe ``cfg`` into ``out``; returns the model card."""
    t_start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out / "ckpt"
    state_path = ckpt_dir / "state.json"
    if resume:
        if not state_path.is_file():
            raise RecipeError(f"--resume: no checkpoint in {ckpt_dir} (train without --resume first)")
        saved = saved_config(json.loads((out / "resolved_config.json").read_text()))
        saved["train"]["epochs"] = cfg["train"]["epochs"]  # the one thing a resume may change
        cfg = saved
        state = json.loads(state_path.read_text())
    else:
        state = None
    (out / "resolved_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    names, t = input_names(cfg), cfg["train"]
    seed = int(cfg["seed"])
    data = clips(cfg, max_clips)
    tr, va_ = data["targets"]["train"], data["targets"]["val"]
    if n_emotions(cfg):
        tr = [c for c in tr if emotion_index(c.label) >= 0]
    for s in ("train", "val"):
        if not data["targets"][s]:
            raise RecipeError(f"the {s} split of {cfg['data']['corpora']} is empty")
    _log(f"{cfg['name']}: {len(tr)} train / {len(va_)} val / {len(data['targets']['test'])} test clips "
         f"loaded in {time.time() - t_start:.1f} s; inputs {names}, {cfg['mixing']['mode']} windows of "
         f"{cfg['features']['window_s']:g} s")
    p, qw, ew = class_weights(tr, cfg["data"]["corpus_share"])
    n_val = t["val_windows"] or max(64, 2 * len(va_))
    val = make_windows(seed * 7 + 99_991, n_val, cfg, va_, data["others"]["val"])
    epoch_seed = lambda e: seed * 1_000_003 + e * 1009
    e0 = state["epoch"] if state and t["resample_windows"] else 0
    first = make_windows(epoch_seed(e0), t["windows_per_epoch"], cfg, tr, data["others"]["train"], p)
    prior = None
    if adapting(cfg):  # the training speakers' average, from the first epoch's windows (kept for a resume)
        prior = ((np.asarray(state["adapt_prior"]["mean"]), np.asarray(state["adapt_prior"]["var"])) if state
                 else adaptation_prior(first))
        val = adapt_windows(val, cfg, prior, seed * 7 + 99_992)
        first = adapt_windows(first, cfg, prior, epoch_seed(e0) + 31)
    norm = _norm_from_json(state["norm"]) if state else standardisation(first, names)
    fixed = None if t["resample_windows"] else {k: v.copy() for k, v in first.items()}

    tf = _tf(threads)
    tf.keras.utils.set_random_seed(seed)
    model = build_model(cfg, norm)
    ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    manager = tf.train.CheckpointManager(ckpt, str(ckpt_dir / "last"), max_to_keep=1)
    if state:
        model.optimizer.build(model.trainable_variables)
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        model.optimizer.learning_rate.assign(state["lr"])
        _log(f"resumed after epoch {state['epoch']} (optimiser step {int(model.optimizer.iterations.numpy())})")
    else:
        state = {"epoch": 0, "history": [], "best_epoch": 0, "best": None, "since_best": 0,
                 "lr": t["learning_rate"], "norm": _norm_to_json(norm), "train_seconds": 0.0}
        if prior is not None:
            state["adapt_prior"] = {"mean": prior[0].tolist(), "var": prior[1].tolist()}
    yv, swv = targets_of(val, cfg, qw, ew)
    metric, sign = t["early_stopping"], (1 if t["early_stopping"] == "val_macro_f1" else -1)
    batch = first
    t_loop = time.time()
    stopped = "epochs"
    for e in range(state["epoch"], t["epochs"]):
        if state["epoch"] - state["best_epoch"] >= t["patience"] and state["best_epoch"]:
            stopped = "early stop"
            break
        if batch is None and fixed is not None:
            batch = {k: v.copy() for k, v in fixed.items()}
        if batch is None:
            batch = make_windows(epoch_seed(e), t["windows_per_epoch"], cfg, tr, data["others"]["train"], p)
            if prior is not None:
                batch = adapt_windows(batch, cfg, prior, epoch_seed(e) + 31)
        if t["spec_augment"] and "features" in names:
            from .train import spec_augment

            spec_augment(np.random.default_rng(epoch_seed(e) + 17), batch["features"],
                         norm["features"][0].astype(np.float32))
        y, sw = targets_of(batch, cfg, qw, ew)
        order = np.random.default_rng(epoch_seed(e) + 29).permutation(len(batch["q"]))  # the epoch's shuffle
        feed = {k: v[order] for k, v in _feed(batch, names).items()}
        y, sw = {k: v[order] for k, v in y.items()}, {k: v[order] for k, v in sw.items()}
        tf.keras.utils.set_random_seed(epoch_seed(e))  # dropout of this epoch
        steps = -(-len(order) // t["batch_size"])
        h = model.fit(feed, y, sample_weight=sw, batch_size=t["batch_size"], epochs=1, verbose=0,
                      shuffle=False, callbacks=[_Bar(e + 1, t["epochs"], steps)])
        v = validate(model, val, yv, swv, cfg)
        rec = {"epoch": e + 1, "lr": float(state["lr"]), "train_loss": round(float(h.history["loss"][-1]), 4), **v}
        state["history"].append(rec)
        state["epoch"] = e + 1
        better = state["best"] is None or sign * v[metric] > sign * state["best"]
        if better:
            state.update(best=v[metric], best_epoch=e + 1, since_best=0)
            model.save_weights(str(ckpt_dir / "best" / "weights"))
        else:
            state["since_best"] += 1
            if t["lr_halve_patience"] and state["since_best"] % t["lr_halve_patience"] == 0:
                state["lr"] = float(state["lr"]) * 0.5
                model.optimizer.learning_rate.assign(state["lr"])
        state["train_seconds"] = round(state["train_seconds"] + time.time() - t_loop, 1)
        t_loop = time.time()
        manager.save()
        state_path.write_text(json.dumps(state, indent=1) + "\n")
        _log(f"epoch {e + 1}: {rec}{'  (best)' if better else ''}")
        batch = None
        if state["epoch"] - state["best_epoch"] >= t["patience"]:
            stopped = "early stop"
            break
        if max_minutes and time.time() - t_start > 60 * max_minutes:
            stopped = "time budget"
            break
    _log(f"{stopped}: best epoch {state['best_epoch']} {metric} {state['best']} "
         f"({time.time() - t_start:.1f} s so far)")
    np.savez(ckpt_dir / "probe.npz", **{n: val[n][:8] for n in names})
    model.load_weights(str(ckpt_dir / "best" / "weights"))
    card = finish(model, cfg, out, state, probe={n: val[n][:8] for n in names}, data=data,
                  threads=threads, command=command, t_start=t_start, stopped=stopped)
    return card


def finish(model, cfg: dict, out: Path, state: dict, probe: dict, data: Optional[dict], threads: int,
           command: str, t_start: float, stopped: str = "", onnx_path: Optional[Path] = None) -> dict:
    """Export + parity + (with ``data``) test evaluation + model card."""
    onnx_path = onnx_path or out / f"{cfg['name']}.onnx"
    export_model(model, cfg, onnx_path)
    diff = parity(model, onnx_path, probe)
    _log(f"exported {onnx_path}: Keras vs ONNX Runtime max abs diff {diff:.3g} "
         f"({time.time() - t_start:.1f} s so far)")
    metrics = {}
    if data is not None and data["targets"]["test"]:
        metrics = evaluate_model(onnx_path, cfg, "test", data=data, threads=threads,
                                 adaptation=adaptation_section(cfg, state))
        for k, m in metrics.items():
            e8 = m.get("emotion8")
            _log(f"{k}: quadrant acc {m.get('quadrant_accuracy')} macro-F1 {m.get('quadrant_macro_f1')} "
                 f"(majority {m.get('chance_quadrant_majority')})"
                 + (f"; 8-class acc {e8['accuracy']} (majority {e8['chance_majority']})" if e8 else ""))
    timing = time_forward(onnx_path, probe, repeats=30)
    card = model_card(model, cfg, onnx_path, state, metrics, diff, timing, command, t_start, stopped)
    onnx_path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    _log(f"wrote {onnx_path.with_suffix('.json')}")
    return card


def corpora_used(cfg: dict) -> list[str]:
    """Every corpus whose audio is in the training windows: the targets and the mixed-in others."""
    return list(cfg["data"]["corpora"]) + (list(cfg["mixing"]["others"]) if cfg["mixing"]["mode"] == "mixed" else [])


def licence(cfg: dict) -> str:
    return ("trained on " + ", ".join(LICENCES[c] for c in corpora_used(cfg))
            + ": research / non-commercial use only")


def model_card(model, cfg: dict, onnx_path: Path, state: dict, metrics: dict, diff: float, timing: dict,
               command: str, t_start: float, stopped: str = "") -> dict:
    """A card in the format of engines/models/speech.json, plus the resolved recipe."""
    from engines.models import sha256_of

    mc, shapes, names = mix_config(cfg), input_shapes(cfg), input_names(cfg)
    desc = {"features": ("streamer.features.extract of a 16 kHz mono window (log-mel dB, delta, "
                         "delta-delta after R128 normalisation); standardisation is inside the graph"),
            "waveform": "the 16 kHz mono window after R128 loudness normalisation (-23 LUFS)",
            "handcrafted": (f"streamer.descriptors.features of the window ({len(handcrafted.feature_names())} "
                            "descriptors, names in streamer.descriptors.feature_names()); "
                            + ("standardised per stream first (the card's adaptation), then "
                               if adapting(cfg) else "") + "standardised in the graph")}
    outputs = [{"name": "quadrant", "dtype": "float32", "shape": ["N", 4], "activation": "softmax",
                "labels": list(taxonomy.QUADRANTS)},
               {"name": "va", "dtype": "float32", "shape": ["N", 2], "activation": "tanh",
                "labels": ["valence", "arousal"]},
               {"name": "activity", "dtype": "float32", "shape": ["N", 1], "activation": "sigmoid",
                "labels": [f"{cfg['task']}_activity"]}]
    if n_emotions(cfg):
        outputs.append({"name": "emotion", "dtype": "float32", "shape": ["N", len(EMOTIONS8)],
                        "activation": "softmax", "labels": list(EMOTIONS8)})
    a = dict(cfg["arch"])
    arch = a.pop("name")
    t = cfg["train"]
    used = corpora_used(cfg)
    return {
        "id": f"emotrack-{cfg['name']}",
        "source": cfg["task"],
        "task": (f"{cfg['task']} emotion ({arch}, recipe {cfg['name']}): Russell quadrant probabilities, "
                 "valence/arousal (tanh, trained on quadrant sign targets), activity"
                 + (", and the 8 RAVDESS emotions" if n_emotions(cfg) else "")
                 + f" per {mc.window_s:g} s window"),
        "onnx": onnx_path.name,
        "onnx_sha256": sha256_of(onnx_path),
        "onnx_bytes": onnx_path.stat().st_size,
        "onnx_opset": OPSET,
        "onnx_op_types": op_types(onnx_path),
        "window_s": mc.window_s,
        "hop_s": mc.hop_s,
        "inputs": [{"name": n, "dtype": "float32", "shape": ["N", *shapes[n]], "description": desc[n]}
                   for n in names],
        "outputs": outputs,
        "streamable": all(n in INPUT_KINDS for n in names),
        "features": DEFAULT_PARAMS.to_dict(),
        "standardisation": state["norm"],
        "architecture": archs.describe(arch, a, model),
        "parameters": int(model.count_params()),
        "training_data": {
            "corpora": [LICENCES[c] for c in used],
            "classes": cfg["data"]["classes"],
            "windows_per_epoch": t["windows_per_epoch"],
            "epochs_run": len(state["history"]),
            "best_epoch": state["best_epoch"],
            "stopped": stopped,
            "mixing": cfg["mixing"],
            "loss": ("categorical CE quadrant (masked for neutral/empty windows" +
                     (", class-weighted" if t["class_weights"] else "") + ") + MSE va (masked) + BCE activity"
                     + (" + categorical CE emotion" if n_emotions(cfg) else "")
                     + f"; weights {cfg['loss_weights']}"),
            "optimiser": (f"{t['optimizer']} lr {t['learning_rate']}, batch {t['batch_size']}, early stopping "
                          f"on {t['early_stopping']} with patience {t['patience']}"),
            "history": state["history"],
        },
        "protocol": {
            cfg["task"]: PROTOCOLS[cfg["task"]],
            "early_stopping": f"{t['early_stopping']} on fixed validation windows (window level)",
            "clip_level_evaluation": evaluate.__doc__.strip(),
        },
        "metrics": metrics,
        "speed": {"forward_pass": timing, "keras_onnx_max_abs_diff": diff},
        "licence": licence(cfg),
        "seed": cfg["seed"],
        "training_seconds": state.get("train_seconds"),
        "total_seconds": round(time.time() - t_start, 1),
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
        "command": command,
        "recipe": cfg,
        **({"adaptation": adaptation_section(cfg, state)} if adapting(cfg) else {}),
    }


# ----------------------------------------------------------------------------- CLI

def _run_dir(path: Path) -> Path:
    """A run directory from a run dir or its ckpt dir."""
    for d in (path, path.parent):
        if (d / "resolved_config.json").is_file() and (d / "ckpt" / "state.json").is_file():
            return d
    raise RecipeError(f"{path}: not a training run (no resolved_config.json and ckpt/state.json)")


def cmd_export(a) -> int:
    run = _run_dir(Path(a.run))
    cfg = saved_config(json.loads((run / "resolved_config.json").read_text()))
    state = json.loads((run / "ckpt" / "state.json").read_text())
    tf = _tf(a.threads)
    model = build_model(cfg, _norm_from_json(state["norm"]))
    if a.last:
        tf.train.Checkpoint(model=model).restore(
            tf.train.latest_checkpoint(str(run / "ckpt" / "last"))).expect_partial()
    else:
        model.load_weights(str(run / "ckpt" / "best" / "weights"))
    z = np.load(run / "ckpt" / "probe.npz")
    finish(model, cfg, run, state, {n: z[n] for n in input_names(cfg)}, None, a.threads,
           "emotrack export " + " ".join(a.argv), time.time(), onnx_path=Path(a.output))
    return 0


def cmd_evaluate(a) -> int:
    from engines.models import ModelCardError, read_card

    p = Path(a.model)
    try:
        card = read_card(p)
    except ModelCardError as exc:
        raise RecipeError(f"{exc} (emotrack evaluate needs the ONNX file and its card beside it)") from None
    if "recipe" not in card:
        raise RecipeError(f"{p.with_suffix('.json')} has no recipe (not made by a recipe run); "
                          "use python -m training.train --eval-only for the shipped models")
    res = evaluate_model(p, saved_config(card["recipe"]), a.split, a.max_clips, threads=a.threads,
                         adaptation=card.get("adaptation"))
    text = json.dumps({"model": str(p), "split": a.split, "max_clips": a.max_clips, "metrics": res}, indent=1)
    if a.out:
        Path(a.out).write_text(text + "\n")
    else:
        print(text)
    if a.write_card:
        from engines.models import sha256_of

        card["metrics"] = res
        if a.split == "test" and not a.max_clips:
            cfg = saved_config(card["recipe"])
            card.update(held_out_extras(p, cfg, a.threads, card.get("adaptation")), licence=licence(cfg))
        card["onnx_sha256"] = sha256_of(p)
        p.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return 0


def cmd_train(a) -> int:
    if a.resume and not a.recipe:
        raise RecipeError("--resume needs the RECIPE too")
    sets = list(a.set or [])
    cfg = resolve(a.recipe, sets)
    if a.epochs:
        cfg["train"]["epochs"] = a.epochs
    if a.max_clips:
        cfg["data"]["max_clips"] = a.max_clips
    out = Path(a.out or Path("runs") / cfg["name"])
    train(cfg, out, resume=a.resume, max_minutes=a.max_minutes, threads=a.threads,
          command="emotrack train " + " ".join(a.argv))
    return 0


def cmd_list(a) -> int:
    for name in list_recipes():
        cfg = resolve(name)
        print(f"{name:16s} {cfg['task']:6s} {cfg['arch']['name']:10s} {cfg['description']}")
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (as the emotrack CLI)
        self.exit(2, f"emotrack: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="emotrack", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    t = sub.add_parser("train", help="train a recipe",
                       description="Train RECIPE (a .toml file or a name in training/recipes: "
                                   + ", ".join(list_recipes()) + "), export it to ONNX with a parity check "
                                   "and write its model card. `emotrack train speech|music` runs the "
                                   "shipped models' trainer instead (python -m training.train).")
    t.add_argument("recipe", metavar="RECIPE")
    t.add_argument("--out", help="run directory (default: runs/<recipe name>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out after its last epoch")
    t.add_argument("--max-clips", type=int, default=None, help="at most N clips per corpus and split")
    t.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    t.add_argument("--max-minutes", type=float, default=None, help="stop (keeping the best epoch) after M minutes")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe value (repeatable)")
    t.add_argument("--threads", type=int, default=2, help="TensorFlow threads (default 2)")
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("export", help="export a training run's best (or last) weights to ONNX",
                       description="Export RUN (a run directory or its ckpt/) to OUT.onnx with the Keras vs "
                                   "ONNX Runtime parity check and a model card beside it (no metrics: run "
                                   "evaluate --write-card).")
    e.add_argument("run", metavar="RUN_DIR_OR_CKPT")
    e.add_argument("output", metavar="OUT.onnx")
    e.add_argument("--last", action="store_true", help="the last epoch's weights instead of the best")
    e.add_argument("--threads", type=int, default=2)
    e.set_defaults(func=cmd_export)
    v = sub.add_parser("evaluate", help="clip-level metrics of a recipe model on a split",
                       description="Clip-level metrics of MODEL.onnx (made by a recipe run; its card beside "
                                   "it) on a split of its recipe's corpora: quadrant accuracy, macro-F1, UAR, "
                                   "arousal/valence halves, chance levels, VA CCC/RMSE, and 8-class metrics "
                                   "with an emotion head.")
    v.add_argument("model", metavar="MODEL.onnx")
    v.add_argument("--split", choices=SPLITS, default="test")
    v.add_argument("--max-clips", type=int, default=None)
    v.add_argument("--out", help="write the JSON here (default: stdout)")
    v.add_argument("--write-card", action="store_true",
                   help="store the metrics in the model card (on the whole test split also cross-corpus "
                        "metrics, the activity head's means and the licence of every corpus used)")
    v.add_argument("--threads", type=int, default=1)
    v.set_defaults(func=cmd_evaluate)
    ls = sub.add_parser("list", help="list the recipes in training/recipes")
    ls.set_defaults(func=cmd_list)
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    a.argv = argv[1:]
    try:
        return int(a.func(a) or 0)
    except EmotrackError as exc:
        print(f"emotrack: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
