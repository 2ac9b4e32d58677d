"""Real TensorFlow training on small subsets of the shared corpora, exported to
ONNX, checked against Keras, and run by the streamer like a shipped model."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, needs_data

pytest.importorskip("tensorflow", reason="training extra not installed (pip install -e '.[training]')")
pytestmark = [pytest.mark.training, needs_data("speech_ravdess", "speech_tess", "music_4q", "midi_emopia")]


@pytest.fixture(scope="module")
def quick_speech_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    proc = subprocess.run([sys.executable, "-m", "training.train", "speech", "--max-clips", "40", "--epochs", "1",
                           "--windows", "256", "--out", str(out), "--run-dir", str(out / "run")],
                          capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "speech.onnx"


def test_quick_training_exports_a_model_the_streamer_runs(quick_speech_model, tmp_path):
    from engines.runtime import load_model
    from streamer.features import DEFAULT_PARAMS

    card = json.loads(quick_speech_model.with_suffix(".json").read_text())
    assert card["features"] == DEFAULT_PARAMS.to_dict()
    for key in ("task", "training_data", "protocol", "metrics", "licence", "onnx_sha256"):
        assert card[key], key
    # the shipped model is a recipe like any other: the card carries it, and the run directory too
    assert card["recipe"]["name"] == "speech" and card["recipe"]["arch"]["name"] == "cnn"
    assert json.loads((quick_speech_model.parent / "run" / "resolved_config.json").read_text())["train"][
        "windows_per_epoch"] == 256
    m = load_model(quick_speech_model, "speech", backend="onnxruntime")
    x = np.random.default_rng(0).standard_normal((2, m.frames, 64, 3)).astype(np.float32)
    out = m.predict(x)
    assert out["quadrant"].shape == (2, 4) and np.allclose(out["quadrant"].sum(1), 1, atol=1e-5)

    proc = subprocess.run([sys.executable, "-m", "streamer.cli", "replay", str(REPO / "examples" / "heldout_mix.ogg"),
                           "--no-pub", "--sources", "speech", "--speech-model", str(quick_speech_model),
                           "--out", str(tmp_path / "o.jsonl"), "-q"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(ln) for ln in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert sum(ln["topic"] == "emotion.speech" for ln in lines) == 88
