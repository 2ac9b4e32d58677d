"""A random-weight Spleeter 2stems checkpoint in Spleeter's own layout.

Spleeter's pretrained weights cannot be downloaded on our machines, so tests and
benchmarks run the real code path on a checkpoint made here: the graph is the one
``spleeter.model.model_fn`` builds in PREDICT mode (the 2stems U-Nets, named as in
the released checkpoint), plus the estimator's ``global_step``; the weights are
seeded random, and each BatchNorm's moving statistics are set from one pass over
a synthetic spectrogram so that activations stay in range and the masks vary over
time and frequency instead of saturating.  The folder holds what Spleeter's own
loader wants (``checkpoint``, ``model.index``, ``model.data-00000-of-00001``,
``model.meta`` and the ``.probe`` that ``ModelProvider`` treats as proof that the
model is complete), plus a ``RANDOM_WEIGHTS`` note that model cards pick up.

Random weights separate nothing: use them for speed and parity checks only.

    python -m training.spleeter_checkpoint DEST [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

CHECKPOINT_NAME = "model"
#: marker file: the weights are random (the ONNX card says so); Spleeter ignores it
RANDOM_MARKER = "RANDOM_WEIGHTS"


def _calibration_input(rng: np.random.Generator, params: dict) -> np.ndarray:
    """Magnitude patch [1, T, F, 2] of a synthetic signal (tones, noise)."""
    from streamer.separation.spleeter import stft

    sr, hop = params["sample_rate"], params["frame_step"]
    n = params["T"] * hop
    t = np.arange(n) / sr
    x = 0.05 * rng.standard_normal(n)
    for f0 in (110.0, 220.0, 330.0, 523.0):
        x += 0.1 * np.sin(2 * np.pi * f0 * t) * (1 + np.sin(2 * np.pi * rng.uniform(0.5, 3) * t)) / 2
    spec = np.abs(stft(x.astype(np.float32), params["frame_length"], hop))
    spec = spec[:params["T"], : params["F"]]
    return np.repeat(spec[None, :, :, None], 2, axis=3).astype(np.float32)


def make_random_checkpoint(dest_dir, seed: int = 0, *, model_type: str = "2stems") -> Path:
    """Write a random-weight Spleeter checkpoint into ``dest_dir`` and return it.

    ``model_type``: the embedded Spleeter configuration (``spleeter:<model_type>``).
    The files are saved with a TF1 ``Saver`` with relative paths, so the folder can
    be moved; ``.probe`` is written last with Spleeter's own ``ModelProvider.writeProbe``.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    from spleeter.model import model_fn
    from spleeter.model.provider import ModelProvider
    from spleeter.utils.configuration import load_configuration

    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    params = load_configuration(f"spleeter:{model_type}")
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.keras.backend.learning_phase_scope(0):
        features = {"waveform": tf.compat.v1.placeholder(tf.float32, (None, params["n_channels"]), name="waveform"),
                    "audio_id": tf.compat.v1.placeholder(tf.string, name="audio_id")}
        model_fn(features, None, tf.estimator.ModeKeys.PREDICT, params)
        tf.compat.v1.train.get_or_create_global_step()
        variables = {v.op.name: v for v in tf.compat.v1.global_variables()}
        saver = tf.compat.v1.train.Saver(save_relative_paths=True)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            # seeded weights, in name order so the seed alone fixes them
            for name in sorted(variables):
                v = variables[name]
                shape = tuple(v.shape.as_list())
                if name.endswith("/kernel"):
                    fan_in = int(np.prod(shape[:2])) * shape[2] if "transpose" not in name \
                        else int(np.prod(shape[:2])) * shape[3]
                    lim = np.sqrt(6.0 / fan_in)
                    value = rng.uniform(-lim, lim, shape)
                elif name.endswith("/bias") or name.endswith("/beta"):
                    value = 0.05 * rng.standard_normal(shape)
                elif name.endswith("/gamma"):
                    value = rng.uniform(0.8, 1.2, shape)
                else:  # moving statistics (set below) and global_step
                    continue
                v.load(value.astype(np.float32), sess)
            # BatchNorm moving statistics from a synthetic spectrogram, layer by layer
            x = _calibration_input(rng, params)
            mix_spec = [op for op in graph.get_operations() if op.type in ("Abs", "ComplexAbs")]
            if len(mix_spec) != 1:
                raise RuntimeError(f"expected one Abs (the mix spectrogram) in Spleeter's graph, got {len(mix_spec)}")
            # the U-Net input is the cropped magnitude |STFT|[:, :, :F]: feed it directly
            spectrogram = next(c for c in mix_spec[0].outputs[0].consumers()).outputs[0]
            if spectrogram.shape.as_list()[2:] != [params["F"], params["n_channels"]]:
                raise RuntimeError(f"unexpected spectrogram tensor {spectrogram}")
            for bn in (op for op in graph.get_operations() if op.type.startswith("FusedBatchNorm")):
                mean_var, var_var = (variables[_variable_of(bn.inputs[i]).rsplit(":", 1)[0]] for i in (3, 4))
                act = sess.run(bn.inputs[0], {spectrogram: x})
                mean_var.load(act.mean(axis=(0, 1, 2)).astype(np.float32), sess)
                var_var.load((act.var(axis=(0, 1, 2)) + 1e-3).astype(np.float32), sess)
            saver.save(sess, str(dest / CHECKPOINT_NAME))
    (dest / RANDOM_MARKER).write_text(f"seeded random weights (seed {seed}) from training.spleeter_checkpoint: "
                                      "for speed and parity tests only, they separate nothing\n")
    ModelProvider.writeProbe(str(dest))
    return dest


def _variable_of(tensor) -> str:
    """Name of the variable a (ReadVariableOp of a) resource handle reads."""
    op = tensor.op
    while op.type in ("ReadVariableOp", "Identity"):
        op = op.inputs[0].op
    if op.type not in ("VarHandleOp", "VariableV2"):
        raise RuntimeError(f"{tensor.name} does not read a variable ({op.type})")
    return op.name


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.spleeter_checkpoint", description=__doc__.split("\n\n")[0])
    p.add_argument("dest", metavar="DEST", help="folder to write (e.g. $MODEL_PATH/2stems for a test install)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    dest = make_random_checkpoint(args.dest, seed=args.seed)
    print(f"random-weight Spleeter 2stems checkpoint written to {dest} (for speed/parity tests only)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
