"""ONNX export (tf2onnx, opset 17), parity check, timing and the model card."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

OPSET = 17


def export_onnx(model, n_frames: int, path: Path, n_mels: int = 64) -> Path:
    """Export the Keras ``model`` to ``path``: input ``features`` [N, T, 64, 3], outputs
    ``quadrant``, ``va``, ``activity`` (BatchNorm folded by tf2onnx's optimiser)."""
    import tensorflow as tf
    import tf2onnx
    import onnx

    spec = (tf.TensorSpec((None, n_frames, n_mels, 3), tf.float32, name="features"),)
    model_proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET)
    # the output names of a dict-output Keras model are its keys; make sure
    names = [o.name for o in model_proto.graph.output]
    if sorted(names) != ["activity", "quadrant", "va"]:
        raise RuntimeError(f"unexpected ONNX outputs {names}")
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model_proto, str(path))
    onnx.checker.check_model(str(path))
    return path


def op_types(path: Path) -> list[str]:
    """Sorted distinct op types of an ONNX graph."""
    import onnx

    return sorted({n.op_type for n in onnx.load(str(path)).graph.node})


def session(path: Path, threads: int = 1):
    """onnxruntime CPU session with ``threads`` intra-op threads."""
    from engines.backends import ort_session

    return ort_session(path, threads, ["CPUExecutionProvider"])


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


