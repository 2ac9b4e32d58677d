"""Shared fixtures: synthetic signals, tiny real ONNX models, loopback ports."""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from streamer.dsp import SAMPLE_RATE
from streamer.features import DEFAULT_PARAMS

REPO = Path(__file__).resolve().parents[1]
# TensorRT engines built by tests on a GPU host go to a throwaway cache (subprocesses inherit it).
os.environ.setdefault("EMOTRACK_ENGINE_CACHE", tempfile.mkdtemp(prefix="emotrack-engines-"))
DATA = Path(os.environ.get("EMOTRACK_DATA", REPO.parent / "shared" / "data"))
SR = SAMPLE_RATE


#: mark -> (modules its stack needs, what to install); a marked test skips, with the reason, where one is missing
MARK_STACKS = {
    "training": (("tensorflow", "sklearn"), "the training extra (pip install -e '.[training]')"),
    "gpu": (("tensorrt", "pycuda"), "TensorRT and pycuda on an NVIDIA GPU host (pip install 'emotrack[gpu]')"),
}


def _missing(modules) -> list[str]:
    import importlib.util

    out = []
    for m in modules:
        try:
            if importlib.util.find_spec(m) is None:
                out.append(m)
        except (ImportError, ValueError):
            out.append(m)
    return out


def pytest_collection_modifyitems(config, items):
    """Tests marked ``training`` or ``gpu`` skip with a reason where their stack is not installed,
    instead of failing on the first import."""
    missing = {mark: _missing(mods) for mark, (mods, _) in MARK_STACKS.items()}
    for item in items:
        for mark, (_, need) in MARK_STACKS.items():
            if missing[mark] and item.get_closest_marker(mark):
                item.add_marker(pytest.mark.skip(reason=f"{', '.join(missing[mark])} not installed: needs {need}"))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def tone(freq: float, seconds: float, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def build_tiny_model(directory: Path, source: str, window_s: float, hop_s: float, seed: int = 0,
                     model_id: str | None = None, input_name: str = "features") -> Path:
    """A small real ONNX graph with the shipped models' I/O contract, and its card.

    features [N, T, 64, 3] -> mean over time -> [N, 64*3] -> three linear heads
    (softmax quadrant, tanh va, sigmoid activity).  Weights are seeded random,
    so outputs differ per window and are deterministic.  ``input_name="handcrafted"``
    (or ``"music_descriptors"``): the heads read the window's descriptors [N, D]
    (:mod:`streamer.descriptors`, :mod:`streamer.music_descriptors`) instead.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from engines.cards import ModelCard, sha256_of
    from streamer.inputs import input_versions

    frames = DEFAULT_PARAMS.n_frames(int(round(window_s * SR)))
    r = np.random.default_rng(seed)
    if input_name in ("handcrafted", "music_descriptors"):
        from streamer.inputs import input_shape

        d = input_shape(input_name, int(round(window_s * SR)))[0]
        in_shape = ["N", d]
        first = [helper.make_node("Mul", [input_name, "scale"], ["pooled"])]
        extra = [numpy_helper.from_array(np.array([0.01], np.float32), "scale")]
    else:
        d = 64 * 3
        in_shape = ["N", frames, 64, 3]
        first = [helper.make_node("ReduceMean", ["features", "axes"], ["pooled"], keepdims=0)]
        extra = [numpy_helper.from_array(np.array([1], np.int64), "axes")]
    inits = extra + [
        numpy_helper.from_array(np.array([-1, d], np.int64), "shape"),
        numpy_helper.from_array((r.standard_normal((d, 4)) * 0.002).astype(np.float32), "wq"),
        numpy_helper.from_array((r.standard_normal((d, 2)) * 0.002).astype(np.float32), "wv"),
        numpy_helper.from_array((r.standard_normal((d, 1)) * 0.002).astype(np.float32), "wa"),
    ]
    nodes = first + [
        helper.make_node("Reshape", ["pooled", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "wq"], ["lq"]),
        helper.make_node("Softmax", ["lq"], ["quadrant"], axis=-1),
        helper.make_node("MatMul", ["flat", "wv"], ["lv"]),
        helper.make_node("Tanh", ["lv"], ["va"]),
        helper.make_node("MatMul", ["flat", "wa"], ["la"]),
        helper.make_node("Sigmoid", ["la"], ["activity"]),
    ]
    graph = helper.make_graph(
        nodes, f"tiny_{source}",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("quadrant", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("va", TensorProto.FLOAT, ["N", 2]),
         helper.make_tensor_value_info("activity", TensorProto.FLOAT, ["N", 1])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{source}.onnx"
    onnx.save(model, path)
    card = {
        "id": model_id or f"tiny-{source}-{seed}", "source": source, "task": "test model (random weights)",
        "onnx": path.name, "onnx_sha256": sha256_of(path), "window_s": window_s, "hop_s": hop_s,
        "inputs": {input_name: {"shape": [None, *in_shape[1:]], "dtype": "float32"}},
        "input_versions": input_versions([input_name]),
        "outputs": {"quadrant": {"shape": [None, 4], "labels": ["Q1", "Q2", "Q3", "Q4"]},
                    "va": {"shape": [None, 2], "labels": ["valence", "arousal"]},
                    "activity": {"shape": [None, 1]}},
        "features": DEFAULT_PARAMS.to_dict(), "training_data": "none", "protocol": "none",
        "metrics": {}, "licence": "test fixture",
    }
    ModelCard(card).write(path, indent=1)
    return path


@pytest.fixture
def tiny_models(tmp_path):
    """Paths of a tiny speech (3 s / 1 s) and music (10 s / 2 s) model."""
    return {"speech": build_tiny_model(tmp_path / "m", "speech", 3.0, 1.0, seed=1),
            "music": build_tiny_model(tmp_path / "m", "music", 10.0, 2.0, seed=2)}


def free_tcp_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def endpoint():
    return free_tcp_endpoint()


def modules_after(code: str, roots) -> list[str]:
    """Sorted names of the modules under the top-level packages ``roots`` that a fresh interpreter
    has loaded after running ``code`` in the repository (import-cost and layering checks)."""
    probe = code + ("\nimport sys\nprint(sorted(m for m in sys.modules if m.split('.')[0] in %r))" % (tuple(roots),))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])


def emotrack_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamer.cli", *args]


def needs_data(*corpora: str):
    missing = [c for c in corpora if not (DATA / c / "manifest.csv").is_file()]
    return pytest.mark.skipif(bool(missing), reason=f"corpora not found under {DATA}: {missing}")
