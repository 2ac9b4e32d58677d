"""Recipes: a TOML file (``training/recipes/<name>.toml``) resolved into the config that the one
training loop (:mod:`training.loop`) runs: :data:`DEFAULTS` < the file < ``--set`` overrides,
checked against the architectures' parameters and :class:`training.data.mixing.MixConfig`; and
the clips a recipe trains and tests on."""

from __future__ import annotations

import copy
import tomllib
from dataclasses import fields as dc_fields, replace
from pathlib import Path
from typing import Optional

from streamer import adapt, taxonomy
from streamer.errors import ParameterError
from streamer.inputs import INPUT_KINDS, input_shape

from .data import corpora, mixing
from .nets import archs

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
    "mixing": {"mode": "mixed", "others": None},    # + any training.data.mixing.MixConfig field, and
    #   separator = "builtin" (+ separator_model): train and evaluate on that separator's stem of every window
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

LICENCES = {
    "ravdess": "RAVDESS (CC BY-NC-SA 4.0)", "tess": "TESS (CC BY-NC-ND 4.0)",
    "4q": "4Q Audio Emotion Dataset (Panda, Malheiro & Paiva 2018; AllMusic 30 s previews, research use)",
    "emopia": "EMOPIA 1.0 (CC BY-NC-SA 4.0)",
}


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
    bad = sorted(set(m) - mix_fields - {"mode", "others", "separator", "separator_model"})
    if bad:
        raise RecipeError(f"unknown keys in [mixing]: {bad} (MixConfig fields: {sorted(mix_fields)})")
    if m.get("separator", "none") not in ("none", "builtin"):
        raise RecipeError(f"mixing.separator = {m['separator']!r}: use 'none' (the mix) or 'builtin' (its stem)")
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
    m = {k: v for k, v in cfg["mixing"].items() if k not in ("mode", "others", "separator", "separator_model")}
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


def va_target(c) -> tuple[float, float]:
    """Graded (valence, arousal) where the corpus has them, else the quadrant's sign pair
    (:func:`streamer.taxonomy.va_target`; neutral and no clip: the origin)."""
    if c is not None and getattr(c, "valence", None) is not None and getattr(c, "arousal", None) is not None:
        return (float(c.valence), float(c.arousal))
    return taxonomy.va_target(None if c is None else c.quadrant)


def primary(cfg: dict) -> str:
    """The classification head early stopping and the headline metric use."""
    return "emotion" if n_emotions(cfg) else "quadrant"


def corpora_used(cfg: dict) -> list[str]:
    """Every corpus whose audio is in the training windows: the targets and the mixed-in others."""
    return list(cfg["data"]["corpora"]) + (list(cfg["mixing"]["others"]) if cfg["mixing"]["mode"] == "mixed" else [])


def licence(cfg: dict) -> str:
    return ("trained on " + ", ".join(LICENCES[c] for c in corpora_used(cfg))
            + ": research / non-commercial use only")


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


def adaptation_section(cfg: dict, state: dict) -> Optional[dict]:
    """The model card's ``adaptation`` (None when the recipe does not adapt)."""
    if not adapting(cfg):
        return None
    mean, var = state["adapt_prior"]["mean"], state["adapt_prior"]["var"]
    return adapt.card_section(mean, var, cfg["adaptation"]["prior_n"],
                              min_activity=cfg["adaptation"]["min_activity"])


def use_separator(cfg: dict) -> None:
    """Train and evaluate on the recipe's separator stem (``mixing.separator``; default none: the mix)."""
    m = cfg["mixing"]
    mixing.use_separator(m.get("separator", "none"), m.get("separator_model"))
