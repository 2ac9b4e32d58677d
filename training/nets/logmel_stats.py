"""Summary statistics of a window's log-mel input, defined once in numpy and once as an ONNX graph.

A speech model on these statistics reads the streamer's ``features`` input (the log-mel, delta
and delta-delta of the R128-normalised window, :func:`streamer.features.extract`), which the
pipeline already computes for the speech CNN: the statistics are computed inside the model's
graph, so the model costs the streamer nothing beyond what the CNN's input costs.

The statistics of one window ``F`` [frames, n_mels, 3] (:func:`stats`):

* the active frames: frames whose mean log-mel (over bands) lies within ``ACTIVE_DB`` of the
  window's loudest frame (a clip shorter than the window is zero-padded: its padding is not
  heard as speech);
* over the active frames, per band and channel: mean and standard deviation (channel-major:
  log-mel means, delta means, delta-delta means, then the three standard deviations), 2 x 3 x
  n_mels values;
* the share of active frames and the standard deviation of the active frames' mean log-mel
  (how much the loudness moves).

:func:`graph` builds the same computation as an ONNX model (input ``features``, output
``stats``) to be put in front of a classifier (:func:`onnx.compose.merge_models`); the
parity test compares it with :func:`stats`.
"""

from __future__ import annotations

import numpy as np

#: bump when :func:`stats` changes (renames the training caches; cards record it)
STATS_VERSION = 1
ACTIVE_DB = 40.0
CHANNELS = ("logmel", "delta", "delta2")


def n_stats(n_mels: int = 64) -> int:
    return 2 * len(CHANNELS) * n_mels + 2


def names(n_mels: int = 64) -> list[str]:
    out = [f"{ch}{b}_{s}" for s in ("mean", "std") for ch in CHANNELS for b in range(n_mels)]
    return out + ["active_share", "active_loudness_std"]


def stats(F: np.ndarray) -> np.ndarray:
    """Statistics [n_stats] of one window's ``features`` [frames, n_mels, 3] (or [N, ...] -> [N, n_stats])."""
    F = np.asarray(F, np.float64)
    if F.ndim == 4:
        return np.stack([stats(f) for f in F]).astype(np.float32)
    e = F[..., 0].mean(1)                                   # [T] mean log-mel per frame
    w = (e > e.max() - ACTIVE_DB).astype(np.float64)        # the loudest frame is always active
    n = w.sum()
    mu = (F * w[:, None, None]).sum(0) / n                  # [n_mels, 3]
    sd = np.sqrt(((F - mu) ** 2 * w[:, None, None]).sum(0) / n)
    em = (e * w).sum() / n
    esd = np.sqrt(((e - em) ** 2 * w).sum() / n)
    return np.concatenate([mu.T.ravel(), sd.T.ravel(), [n / len(e), esd]]).astype(np.float32)


def graph(frames: int, n_mels: int = 64, opset: int = 17, input_name: str = "features", output: str = "stats"):
    """ONNX model: ``input_name`` [N, frames, n_mels, 3] float32 -> ``output`` [N, n_stats] (:func:`stats`)."""
    from onnx import TensorProto, helper, numpy_helper

    def N(op, ins, outs, **kw):  # internal names get a prefix: the graph is merged in front of others
        def nm(t):
            return t if t in (input_name, output) else f"lms_{t}"
        return helper.make_node(op, [nm(t) for t in ins], [nm(t) for t in outs], **kw)
    c = {"ch0": np.array([0], np.int64), "ch1": np.array([1], np.int64), "ax3": np.array([3], np.int64),
         "ax1": np.array([1], np.int64), "thr": np.array(ACTIVE_DB, np.float32),
         "shape2": np.array([0, -1], np.int64)}
    nodes = [
        N("Slice", [input_name, "ch0", "ch1", "ax3"], ["lm4"]),                 # [N, T, M, 1]
        N("ReduceMean", ["lm4"], ["e4"], axes=[2], keepdims=1),                # [N, T, 1, 1]
        N("ReduceMax", ["e4"], ["emax"], axes=[1], keepdims=1),                # [N, 1, 1, 1]
        N("Sub", ["emax", "thr"], ["ethr"]),
        N("Greater", ["e4", "ethr"], ["act_b"]),
        N("Cast", ["act_b"], ["w"], to=TensorProto.FLOAT),                     # [N, T, 1, 1]
        N("ReduceSum", ["w", "ax1"], ["n"], keepdims=1),                       # [N, 1, 1, 1]
        N("Mul", [input_name, "w"], ["wF"]),
        N("ReduceSum", ["wF", "ax1"], ["sF"], keepdims=1),
        N("Div", ["sF", "n"], ["mu"]),                                         # [N, 1, M, 3]
        N("Sub", [input_name, "mu"], ["dF"]),
        N("Mul", ["dF", "dF"], ["dF2"]),
        N("Mul", ["dF2", "w"], ["wdF2"]),
        N("ReduceSum", ["wdF2", "ax1"], ["sdF2"], keepdims=1),
        N("Div", ["sdF2", "n"], ["var"]),
        N("Sqrt", ["var"], ["sd"]),
        N("Transpose", ["mu"], ["muT"], perm=[0, 1, 3, 2]),                    # [N, 1, 3, M]: channel-major
        N("Transpose", ["sd"], ["sdT"], perm=[0, 1, 3, 2]),
        N("Reshape", ["muT", "shape2"], ["mu_f"]),
        N("Reshape", ["sdT", "shape2"], ["sd_f"]),
        N("ReduceMean", ["w"], ["share4"], axes=[1], keepdims=1),
        N("Mul", ["e4", "w"], ["we"]),
        N("ReduceSum", ["we", "ax1"], ["se"], keepdims=1),
        N("Div", ["se", "n"], ["em"]),
        N("Sub", ["e4", "em"], ["de"]),
        N("Mul", ["de", "de"], ["de2"]),
        N("Mul", ["de2", "w"], ["wde2"]),
        N("ReduceSum", ["wde2", "ax1"], ["sde2"], keepdims=1),
        N("Div", ["sde2", "n"], ["evar"]),
        N("Sqrt", ["evar"], ["esd4"]),
        N("Reshape", ["share4", "shape2"], ["share"]),
        N("Reshape", ["esd4", "shape2"], ["esd"]),
        N("Concat", ["mu_f", "sd_f", "share", "esd"], [output], axis=1),
    ]
    g = helper.make_graph(
        nodes, "logmel_stats",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", frames, n_mels, 3])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", n_stats(n_mels)])],
        [numpy_helper.from_array(v, f"lms_{k}") for k, v in c.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
