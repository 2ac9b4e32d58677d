"""Spleeter 2stems U-Nets to ONNX (tf2onnx), checked against TensorFlow, with a card.

The cut is the one TensorRT can build: the two U-Nets on magnitude patches, as
Spleeter feeds them (``EstimatorSpecBuilder``: ``|STFT|`` cut into segments of T
frames, the first F bins, both channels).  STFT, ratio masks and inverse STFT stay
outside (numpy in :mod:`streamer.separation.spleeter`, ``runtime="onnx"``)::

    input   mix_spectrogram       [N, T, F, 2] float32  (N segments; T = 512, F = 1024)
    output  vocals_logits         [N, T, F, 2] float32  (the U-Net's last conv, before its sigmoid)
    output  accompaniment_logits  [N, T, F, 2] float32

Spleeter's model output is ``sigmoid(logits) * mix_spectrogram`` per stem, and its
masks the ratio (v^2 + eps/2) / (v^2 + a^2 + eps), extended with zeros to
frame_length/2 + 1 bins.  The cut is before the sigmoid because runtimes
approximate it where it saturates (ONNX Runtime's is 0 below -18, TensorRT's FP16
worse), and two saturated stems make the ratio mask ill-conditioned; from the
logits the host computes it as TensorFlow does.  Dropout and BatchNorm are in
inference mode (Keras learning phase 0), as in Spleeter's PREDICT graph, so the
ONNX graph has no control flow; BatchNorm is folded by tf2onnx's optimiser.

The card (``OUT.json`` beside ``OUT.onnx``) records the I/O, Spleeter's STFT
parameters, the source checkpoint (with the sha256 of its data file), the ONNX
Runtime vs TensorFlow parity measured at export, and whether the weights are the
random test ones.

    python -m training.spleeter_onnx MODEL_DIR OUT.onnx [--frames 512] [--opset 17]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from .export import OPSET

INPUT = "mix_spectrogram"
#: max |ONNX Runtime - TensorFlow| allowed, relative to the largest TF output value
PARITY_TOL = 1e-4


def _logits(spectrogram):
    """The pre-sigmoid tensor of a Spleeter U-Net output ``sigmoid(conv(...)) * input``."""
    mul = spectrogram.op
    sig = [t for t in mul.inputs if t.op.type == "Sigmoid"]
    if mul.type != "Mul" or len(sig) != 1:
        raise RuntimeError(f"{spectrogram.name} is not Spleeter's sigmoid mask x input ({mul.type})")
    return sig[0].op.inputs[0]


def _graph(params: dict, frames: int):
    """(graph, input placeholder, {"<instrument>_logits": tensor}) of Spleeter's U-Nets, inference mode."""
    import tensorflow as tf
    from spleeter.model import EstimatorSpecBuilder

    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.keras.backend.learning_phase_scope(0):
        x = tf.compat.v1.placeholder(tf.float32, (None, frames, params["F"], params["n_channels"]), name=INPUT)
        builder = EstimatorSpecBuilder({f"{params['mix_name']}_spectrogram": x}, params)
        outputs = {f"{i}_logits": _logits(builder.model_outputs[f"{i}_spectrogram"]) for i in builder.instruments}
    return graph, x, outputs


def _rename(model, mapping: dict) -> None:
    """Rename ONNX tensors in place (graph I/O, node inputs and outputs)."""
    for node in model.graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for v in list(model.graph.input) + list(model.graph.output):
        v.name = mapping.get(v.name, v.name)
        dim = v.type.tensor_type.shape.dim[0]
        if not dim.dim_value:
            dim.dim_param = "segments"


def _is_random(model_dir: Path) -> bool:
    from training.spleeter_checkpoint import RANDOM_MARKER

    return (model_dir / RANDOM_MARKER).is_file()


def export_onnx(model_dir, out_path, frames: int = 512, *, opset: int = OPSET, check_batch: int = 2,
                seed: int = 0) -> dict:
    """Export the 2stems U-Nets of the checkpoint in ``model_dir`` to ``out_path``.

    ``frames``: T of the patches (a multiple of 64; Spleeter's is 512).  The ONNX
    graph has a dynamic batch (segments) axis.  The export is verified: ONNX
    Runtime and TensorFlow run the same ``check_batch`` patches (the magnitude STFT
    of seeded noise and tones), and the max abs difference relative to the largest
    output must be below :data:`PARITY_TOL`.  Writes ``out_path`` and its card
    (same name, ``.json``) and returns the card.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import onnx
    import tensorflow as tf
    import tf2onnx

    from streamer.errors import ModelError, ParameterError
    from streamer.separation.spleeter import MODEL_NAME, checkpoint_prefix, load_params, stft

    tf.get_logger().setLevel("ERROR")
    if frames <= 0 or frames % 64:
        raise ParameterError(f"frames={frames} must be a positive multiple of 64 (the U-Net halves T six times)")
    if not 13 <= opset <= 18:
        raise ParameterError(f"opset={opset} must be between 13 and 18")
    model_dir = Path(model_dir).absolute()
    prefix = checkpoint_prefix(model_dir)
    params = load_params(MODEL_NAME)
    out_path = Path(out_path)

    graph, x, outputs = _graph(params, frames)
    names = list(outputs)  # Spleeter's instrument order
    with graph.as_default():
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as sess:
            try:
                saver.restore(sess, str(prefix))
            except Exception as exc:
                raise ModelError(f"checkpoint {prefix} does not fit Spleeter's {MODEL_NAME} U-Nets: "
                                 f"{str(exc).splitlines()[0]}") from None
            # parity input: Spleeter's own magnitude patches of a seeded signal
            rng = np.random.default_rng(seed)
            n = check_batch * frames * params["frame_step"]
            t = np.arange(n) / params["sample_rate"]
            sig = 0.05 * rng.standard_normal(n) + 0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.3 * t))
            mag = np.abs(stft(sig.astype(np.float32), params["frame_length"], params["frame_step"]))
            patches = mag[:check_batch * frames, :params["F"]].reshape(check_batch, frames, params["F"], 1)
            patches = np.repeat(patches, params["n_channels"], axis=3).astype(np.float32)
            tf_out = sess.run([outputs[k] for k in names], {x: patches})
            out_nodes = [outputs[k].op.name for k in names]
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), out_nodes)

    model_proto, _ = tf2onnx.convert.from_graph_def(
        frozen, input_names=[x.name], output_names=[outputs[k].name for k in names], opset=opset)
    _rename(model_proto, {x.name: INPUT, **{outputs[k].name: k for k in names}})
    onnx.checker.check_model(model_proto)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model_proto, str(out_path))

    from engines.backends import ort_session

    sess = ort_session(out_path, None, ["CPUExecutionProvider"])
    ort_out = sess.run(names, {INPUT: patches})
    scale = max(float(np.abs(o).max()) for o in tf_out)  # the logits' range
    diff = max(float(np.abs(a - b).max()) for a, b in zip(tf_out, ort_out))
    rel = diff / scale if scale > 0 else diff
    if not rel < PARITY_TOL:
        out_path.unlink()
        raise ModelError(f"ONNX Runtime vs TensorFlow parity failed for {out_path.name}: max abs diff {diff:.3g} "
                         f"({rel:.3g} of the largest output) >= {PARITY_TOL}")

    from engines.cards import ModelCard, sha256_of

    data_files = sorted(prefix.parent.glob(f"{prefix.name}.data-*"))
    random = _is_random(model_dir)
    shape = [None, frames, params["F"], params["n_channels"]]
    card = {
        "id": f"spleeter-{MODEL_NAME}-unet" + ("-random" if random else ""),
        "task": "separation: Spleeter 2stems U-Nets (magnitude patches -> vocals and accompaniment mask logits)",
        "onnx": out_path.name,
        "onnx_sha256": sha256_of(out_path),
        "opset": opset,
        "inputs": {INPUT: {"shape": shape, "dtype": "float32",
                           "meaning": "|STFT| of the 44.1 kHz stereo mix, segments of T frames, first F bins"}},
        "outputs": {k: {"shape": shape, "dtype": "float32",
                        "meaning": f"{k.replace('_logits', '')} mask logits: Spleeter's "
                                   f"{k.replace('_logits', '_spectrogram')} = sigmoid(logits) * {INPUT}"}
                    for k in names},
        "masks": "out_i = sigmoid(logits_i) * mix_spectrogram (float32); mask_i = (out_i^e + eps/n) / "
                 "(sum_j out_j^e + eps), e = separation_exponent, eps = 1e-10, n = 2; bins above F zero "
                 "(mask_extension 'zeros'); stems = inverse STFT of mask_i * STFT, times 2/3",
        "spleeter": {k: params[k] for k in ("sample_rate", "frame_length", "frame_step", "T", "F", "n_channels",
                                            "separation_exponent", "mask_extension", "instrument_list")},
        "source_checkpoint": {"dir": model_dir.name, "prefix": prefix.name,
                              "data_sha256": {p.name: sha256_of(p) for p in data_files}},
        "weights": "random weights: for speed/parity only" if random else "from the checkpoint (Spleeter pretrained)",
        "parity": {"against": "TensorFlow (Spleeter's graph, same checkpoint), on the logits",
                   "inputs": list(patches.shape),
                   "max_abs_diff": diff, "max_abs_diff_relative": rel, "tolerance_relative": PARITY_TOL},
        "licence": "Spleeter code and pretrained models: MIT (Deezer); random weights: test fixture",
    }
    ModelCard(card).write(out_path, indent=1)
    return card


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.spleeter_onnx",
                                description="Export Spleeter's 2stems U-Nets to ONNX and verify against TensorFlow.")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="Spleeter 2stems folder (checkpoint, model.index, .probe)")
    p.add_argument("out", metavar="OUT.onnx")
    p.add_argument("--frames", type=int, default=512, help="T, frames per patch (multiple of 64; default 512)")
    p.add_argument("--opset", type=int, default=OPSET)
    args = p.parse_args(argv)
    from streamer.errors import EmotrackError

    try:
        card = export_onnx(args.model_dir, args.out, frames=args.frames, opset=args.opset)
    except EmotrackError as exc:
        print(f"emotrack: {exc}", file=sys.stderr)
        return exc.exit_code
    par = card["parity"]
    print(f"{args.out}: ONNX Runtime vs TensorFlow max abs diff {par['max_abs_diff']:.3g} "
          f"({par['max_abs_diff_relative']:.3g} relative, tolerance {par['tolerance_relative']:g}); card "
          f"{Path(args.out).with_suffix('.json')}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
