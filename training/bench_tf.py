"""Keras (TensorFlow) vs ONNX Runtime on one model built and exported in this run.

``emotrack bench`` runs :func:`bench_tf` in a child process (TensorFlow stays out of the
runtime's process, and the runtime never imports training): ``python -c "from
training.bench_tf import bench_tf; ..."``.
"""

from __future__ import annotations

from pathlib import Path

from streamer.ops.bench import elapsed, repeat


def bench_tf(reps: int, tmp: Path) -> dict:
    """Keras (TensorFlow) vs ONNX Runtime on one model built and exported in this run."""
    try:
        import tensorflow as tf  # noqa: F401
    except Exception as exc:  # absent or broken
        return {"skipped": f"TensorFlow not importable: {type(exc).__name__}: {exc}"}
    import numpy as np

    from training.evaluate import session
    from training.export import export_onnx
    from training.nets.archs import build

    frames = 298
    names = ["quadrant", "va", "activity"]
    shape = {"features": (frames, 64, 3)}
    model = build("cnn", shape, {"features": (np.zeros(3), np.ones(3))})
    path = export_onnx(model, tmp / "tf_compare.onnx", shape, names)
    sess = session(path, threads=1)
    x = np.random.default_rng(0).standard_normal((8, frames, 64, 3)).astype(np.float32)
    res: dict = {"model": "the shipped models' CNN (training.nets.archs cnn, 298 frames), random weights, "
                          "exported with training.export.export_onnx",
                 "tensorflow": tf.__version__}
    model(x[:1], training=False)
    sess.run(names, {"features": x[:1]})
    n = 20
    for bs in (1, 8):
        xb = x[:bs]
        k = repeat(reps, lambda: elapsed(lambda: [model(xb, training=False) for _ in range(n)]) / n / bs * 1e3)
        o = repeat(reps, lambda: elapsed(lambda: [sess.run(names, {"features": xb}) for _ in range(n)]) / n / bs * 1e3)
        res[f"batch{bs}"] = {"tensorflow_ms_per_window": k, "onnxruntime_ms_per_window": o,
                             "ratio_tf_over_ort": round(k["median"] / o["median"], 2)}
    ko = model(x, training=False)
    oo = dict(zip(names, sess.run(names, {"features": x})))
    res["max_abs_diff"] = float(max(np.max(np.abs(np.asarray(ko[k]) - oo[k])) for k in names))
    return res
