"""Export: ONNX (tf2onnx, opset 17), the Keras vs ONNX Runtime parity check, timing, and the model
card (written through engines.cards.ModelCard)."""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path

import numpy as np

from engines.cards import sha256_of
from streamer import taxonomy
from streamer.features import DEFAULT_PARAMS
from streamer.inputs import INPUT_KINDS, input_versions

from . import evaluate
from .config import (EMOTIONS8, LICENCES, PROTOCOLS, adapting, adaptation_section, corpora_used, input_names,
                     input_shapes, licence, mix_config, n_emotions)
from .data import handcrafted
from .evaluate import session
from .nets import archs

OPSET = 17


def export_onnx(model, path: Path, inputs: dict, outputs: list[str]) -> Path:
    """tf2onnx export of the Keras ``model`` to ``path`` (opset :data:`OPSET`, dynamic batch):
    ``inputs`` {name: shape without N}, in the model's input order; the graph's outputs must be
    ``outputs`` (a dict-output Keras model's keys)."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    spec = tuple(tf.TensorSpec((None, *shape), tf.float32, name=n) for n, shape in inputs.items())
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET)
    got = sorted(o.name for o in proto.graph.output)
    if got != sorted(outputs):
        raise RuntimeError(f"unexpected ONNX outputs {got}, expected {sorted(outputs)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))
    return path


def save_graph(graph, path: Path, producer: str) -> Path:
    """Save a hand-built ONNX ``graph`` (``onnx.helper.make_graph``) as a model at opset :data:`OPSET`
    (IR version 8, which this project's ONNX Runtime and TensorRT read), checked, to ``path``."""
    import onnx
    from onnx import helper

    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=producer)
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path


def export_model(model, cfg: dict, path: Path) -> Path:
    """:func:`export_onnx` of a recipe's model: its named inputs, heads quadrant, va, activity
    (and emotion)."""
    shapes = input_shapes(cfg)
    outputs = ["quadrant", "va", "activity"] + (["emotion"] if n_emotions(cfg) else [])
    return export_onnx(model, path, {n: shapes[n] for n in input_names(cfg)}, outputs)


def op_types(path: Path) -> list[str]:
    """Sorted distinct op types of an ONNX graph."""
    import onnx

    return sorted({n.op_type for n in onnx.load(str(path)).graph.node})


def check_parity(model, path: Path, feed: "dict | np.ndarray", tol: "float | None" = 1e-4) -> float:
    """Max abs difference of Keras vs ONNX Runtime over every output of the exported model, on
    ``feed`` (inputs by name; a bare array is the ``features`` input); raises if >= ``tol``
    (None: only measures).  The one parity check of every export (models, recipes, separator)."""
    if not isinstance(feed, dict):
        feed = {"features": feed}
    k = model(feed if len(feed) > 1 else next(iter(feed.values())), training=False)
    s = session(path)
    names = [o.name for o in s.get_outputs()]
    o = dict(zip(names, s.run(names, feed)))
    diff = max(float(np.max(np.abs(np.asarray(k[n]) - o[n]))) for n in names)
    if tol is not None and not diff < tol:
        raise RuntimeError(f"Keras vs ONNX Runtime parity failed: max abs diff {diff:.3g} >= {tol}")
    return diff


def time_forward(path: Path, inputs: "int | dict", repeats: int = 50) -> dict:
    """Median / p90 ms of one-window forward passes on one CPU thread; ``inputs``: a batch of
    model inputs by name (the first window is timed), or the frame count of a ``features`` model."""
    s = session(path, threads=1)
    if isinstance(inputs, dict):
        one = {k: np.asarray(v[:1], np.float32) for k, v in inputs.items()}
    else:
        one = {"features": np.random.default_rng(0).standard_normal((1, inputs, 64, 3)).astype(np.float32)}
    for _ in range(5):
        s.run(None, one)
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        s.run(None, one)
        t.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": round(float(np.median(t)), 3), "p90_ms": round(float(np.percentile(t, 90)), 3),
            "threads": 1, "batch": 1, "runtime": "onnxruntime CPUExecutionProvider"}


def card_io(cfg: dict) -> dict:
    """The card's ``inputs`` and ``outputs`` of a recipe's model."""
    shapes, names = input_shapes(cfg), input_names(cfg)
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
    return {"inputs": [{"name": n, "dtype": "float32", "shape": ["N", *shapes[n]], "description": desc[n]}
                       for n in names],
            "outputs": outputs}


def model_card(model, cfg: dict, onnx_path: Path, state: dict, metrics: dict, diff: float, timing: dict,
               command: str, t_start: float, stopped: str = "") -> dict:
    """A card in the format of engines/models/speech.json, plus the resolved recipe."""
    mc = mix_config(cfg)
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
        **card_io(cfg),
        "input_versions": input_versions([n for n in input_names(cfg) if n in INPUT_KINDS]),
        "streamable": all(n in INPUT_KINDS for n in input_names(cfg)),
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
        **({"separator": separator_record(cfg)} if cfg["mixing"].get("separator", "none") != "none" else {}),
    }


def separator_record(cfg: dict) -> dict:
    """Which separator's stem the model was trained on (the streamer must run the same one)."""
    from streamer.separation import DEFAULT_SEPARATOR_MODEL

    m = cfg["mixing"]
    path = Path(m["separator_model"]) if m.get("separator_model") else DEFAULT_SEPARATOR_MODEL
    return {"name": m["separator"], "model": path.name, "onnx_sha256": sha256_of(path)}
