"""musicnn's MSD_musicnn (Pons & Serra 2019, ISC licence) to ONNX, checked against TensorFlow.

The ``musicnn`` wheel ships its TensorFlow 1 checkpoints; this module rebuilds the
graph with the wheel's own ``musicnn.models.define_model`` (inference mode:
BatchNorm with its moving statistics, no dropout), restores ``MSD_musicnn``, freezes
it and converts it with tf2onnx::

    input   mel        [N, 187, 96] float32   log10(10000 * mel power + 1) of a 3 s patch
                                             (:func:`streamer.musicnn.patch_mel`)
    output  embedding  [N, 200]               the penultimate layer (dense 200, ReLU, BatchNorm)
    output  tags       [N, 50]                sigmoid of the 50 MSD tag logits

Install the wheel with ``pip install --no-deps musicnn`` (it pins an old numpy).

    python -m training.musicnn_onnx engines/models/musicnn_msd.onnx
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .export import OPSET

MODEL = "MSD_musicnn"
#: max |ONNX Runtime - TensorFlow| allowed on the outputs
PARITY_TOL = 1e-4


def checkpoint_dir(model: str = MODEL) -> Path:
    import musicnn

    return Path(musicnn.__file__).resolve().parent / model


def tf_graph(model: str = MODEL):
    """(graph, session, mel placeholder, embedding tensor, tags tensor), weights restored."""
    import tensorflow as tf
    from musicnn import configuration as mconf
    from musicnn import models as mmodels
    from streamer.musicnn import N_FRAMES, N_MELS

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, N_FRAMES, N_MELS], name="mel")
        with tf.name_scope("model"):
            out = mmodels.define_model(x, False, model, len(mconf.MSD_LABELS))
        logits, penultimate = out[0], out[-1]
        emb = tf.identity(penultimate, name="embedding")
        tags = tf.identity(tf.nn.sigmoid(logits), name="tags")
        sess = tf.compat.v1.Session(graph=graph)
        tf.compat.v1.train.Saver().restore(sess, str(checkpoint_dir(model)) + "/")
    return graph, sess, x, emb, tags


def convert(out: Path, model: str = MODEL, opset: int = OPSET) -> dict:
    """Write ``out`` (ONNX) and return the parity/size facts for the card."""
    import tensorflow as tf
    import tf2onnx
    import onnx

    graph, sess, x, emb, tags = tf_graph(model)
    with graph.as_default():
        frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
            sess, graph.as_graph_def(), ["embedding", "tags"])
    proto, _ = tf2onnx.convert.from_graph_def(frozen, input_names=["mel:0"],
                                              output_names=["embedding:0", "tags:0"], opset=opset)
    # plain tensor names: mel, embedding, tags
    rename = {"mel:0": "mel", "embedding:0": "embedding", "tags:0": "tags"}
    for node in proto.graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    for v in list(proto.graph.input) + list(proto.graph.output):
        v.name = rename.get(v.name, v.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out))
    onnx.checker.check_model(str(out))
    diff = parity(out, sess, x, emb, tags)
    sess.close()
    return {"parity_max_abs_diff": diff, "opset": opset,
            "op_types": sorted({n.op_type for n in proto.graph.node})}


def probe_batch(n: int = 6, seed: int = 0) -> np.ndarray:
    """Log-mel patches of real-looking levels: seeded tones + noise through the numpy front end."""
    from streamer.musicnn import PATCH_SAMPLES, patch_mel

    rng = np.random.default_rng(seed)
    t = np.arange(PATCH_SAMPLES) / 16000.0
    xs = []
    for i in range(n):
        f = 110.0 * 2 ** (i / 2)
        y = 0.2 * np.sin(2 * np.pi * f * t) * (1 + np.sin(2 * np.pi * (i + 1) * t)) + 0.05 * rng.standard_normal(t.size)
        xs.append(patch_mel(y.astype(np.float32)))
    return np.stack(xs)


def parity(path: Path, sess, x, emb, tags, batch: "np.ndarray | None" = None) -> float:
    """Max abs difference TensorFlow vs onnxruntime on ``batch``; raises if >= :data:`PARITY_TOL`."""
    from engines.backends.onnxruntime import ort_session

    batch = probe_batch() if batch is None else batch
    want = sess.run([emb, tags], {x: batch})
    got = ort_session(path, providers=["CPUExecutionProvider"]).run(["embedding", "tags"], {"mel": batch})
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(want, got))
    if not diff < PARITY_TOL:
        raise RuntimeError(f"TensorFlow vs onnxruntime parity failed: max abs diff {diff:.3g} >= {PARITY_TOL}")
    return diff


def card(onnx_path: Path, facts: dict, command: str) -> dict:
    """The front end's card (not an emotion model: ``streamable`` false, ``kind`` front_end)."""
    from engines.cards import sha256_of
    from musicnn import configuration as mconf
    from streamer import musicnn as M

    ck = checkpoint_dir()
    return {
        "id": "musicnn-msd-1",
        "kind": "front_end",
        "streamable": False,
        "source": "music",
        "task": "music audio tagging front end: 200-d penultimate embedding and 50 MSD tag probabilities "
                "of a 3 s log-mel patch; emotion heads read the embedding (card input 'musicnn')",
        "onnx": onnx_path.name,
        "onnx_sha256": sha256_of(onnx_path),
        "onnx_bytes": onnx_path.stat().st_size,
        "onnx_opset": facts["opset"],
        "onnx_op_types": facts["op_types"],
        "inputs": [{"name": "mel", "dtype": "float32", "shape": ["N", M.N_FRAMES, M.N_MELS],
                    "description": "streamer.musicnn.patch_mel of 48128 samples at 16 kHz (187 frames, "
                                   "n_fft 512, hop 256, 96 Slaney mel bands, log10(10000 x + 1))"}],
        "outputs": [{"name": "embedding", "dtype": "float32", "shape": ["N", 200],
                     "description": "penultimate layer (dense 200 + ReLU + BatchNorm)"},
                    {"name": "tags", "dtype": "float32", "shape": ["N", 50], "activation": "sigmoid",
                     "labels": list(mconf.MSD_LABELS)}],
        "front_end": M.mel_params(),
        "architecture": "musicnn (Pons & Serra 2019): musically motivated timbral (7x38, 7x67) and temporal "
                        "(128/64/32 x 1) convolutions -> 3 dense 1-D conv layers with residuals (64 filters) "
                        "-> temporal max + mean pool -> dense 200 (penultimate) -> dense 50",
        "upstream": {"package": "musicnn", "version": _version(), "model": MODEL,
                     "checkpoint_sha256": sha256_of(ck / ".data-00000-of-00001"),
                     "authors": "Jordi Pons, Xavier Serra (Music Technology Group, Universitat Pompeu Fabra)",
                     "paper": "Pons & Serra, musicnn: pre-trained convolutional neural networks for music "
                              "audio tagging, ISMIR 2019 late-breaking/demo"},
        "training_data": {"corpora": ["Million Song Dataset (Last.fm top-50 tags), audio previews"],
                          "note": "trained by the musicnn authors; emotrack did not train or fine-tune it"},
        "licence": "front end: musicnn by Jordi Pons et al., ISC licence (Copyright (c) Music Technology "
                   "Group, Universitat Pompeu Fabra 2019; the licence text is in the musicnn wheel's "
                   "LICENSE.md: permission to use, copy, modify and/or distribute with or without fee, "
                   "provided the copyright and permission notice appear in all copies); weights trained "
                   "on Million Song Dataset tags",
        "parity": {"tensorflow_vs_onnxruntime_max_abs_diff": facts["parity_max_abs_diff"],
                   "tolerance": PARITY_TOL},
        "created": time.strftime("%Y-%m-%d"),
        "command": command,
    }


def _version() -> str:
    from importlib.metadata import version

    return version("musicnn")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--opset", type=int, default=OPSET)
    a = ap.parse_args(argv)
    facts = convert(a.out, opset=a.opset)
    c = card(a.out, facts, "python -m training.musicnn_onnx " + " ".join(argv or sys.argv[1:]))
    a.out.with_suffix(".json").write_text(json.dumps(c, indent=2) + "\n")
    print(f"wrote {a.out} ({a.out.stat().st_size} bytes), parity {facts['parity_max_abs_diff']:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
