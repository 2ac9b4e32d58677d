import json

import numpy as np
import pytest

from engines.backends import BackendError, OnnxRuntimeBackend, select_backend
from engines.cards import MODELS_DIR, ModelCardError, load_card
from engines.runtime import load_model
from engines.backends.tensorrt import available as tensorrt_available
from streamer.features import DEFAULT_PARAMS
from streamer.inputs import input_shape, stack_inputs, window_inputs

from conftest import REPO, tone

no_tensorrt_here = pytest.mark.skipif(tensorrt_available()[0], reason="TensorRT is usable on this host "
                                      "(tests/test_tensorrt.py covers it)")


def test_onnxruntime_backend_runs_a_real_session(tiny_models):
    be = OnnxRuntimeBackend(tiny_models["speech"])
    x = np.random.default_rng(0).standard_normal((3, 298, 64, 3)).astype(np.float32)
    out = be.run({"features": x})
    assert out["quadrant"].shape == (3, 4) and out["va"].shape == (3, 2) and out["activity"].shape == (3, 1)
    np.testing.assert_allclose(out["quadrant"].sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(out["quadrant"][0], out["quadrant"][1])  # depends on the input


def test_multithreaded_sessions_do_not_spin(tiny_models):
    """Waiting intra-op threads sleep instead of spinning (a spinning pool burnt ~3.6 CPU seconds
    per 5-minute replay with the musicnn front end on 2 threads); the session still computes."""
    be = OnnxRuntimeBackend(tiny_models["speech"], threads=2)
    opts = be.session.get_session_options()
    assert opts.intra_op_num_threads == 2
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    x = np.random.default_rng(1).standard_normal((2, 298, 64, 3)).astype(np.float32)
    single = OnnxRuntimeBackend(tiny_models["speech"]).run({"features": x})["quadrant"]
    np.testing.assert_allclose(be.run({"features": x})["quadrant"], single, atol=1e-5)


@no_tensorrt_here
def test_tensorrt_without_gpu_is_one_clear_line(tiny_models):
    with pytest.raises(BackendError) as exc:
        select_backend("tensorrt", tiny_models["speech"])
    assert "tensorrt" in str(exc.value).lower() and "\n" not in str(exc.value)


@no_tensorrt_here
def test_auto_falls_back_to_onnxruntime_and_says_why(tiny_models):
    be = select_backend("auto", tiny_models["speech"])
    assert be.name == "onnxruntime" and "TensorRT is not usable" in be.description


def test_unknown_backend_is_refused(tiny_models):
    with pytest.raises(BackendError, match="unknown"):
        select_backend("cuda-magic", tiny_models["speech"])


def test_card_must_match_its_onnx_file(tiny_models):
    p = tiny_models["music"]
    card = json.loads(p.with_suffix(".json").read_text())
    card["onnx_sha256"] = "0" * 64
    p.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelCardError, match="sha256"):
        load_card(p)


@pytest.mark.parametrize("edit,message", [
    (lambda c: c["inputs"].update(spectrum={"dtype": "float32", "shape": ["N", 257]}), "not streamed"),
    (lambda c: c.update(streamable=False), "not streamed"),
    (lambda c: c["inputs"]["features"].update(shape=["N", 298, 64]), r"shape must be \[N, frames, n_mels, 3\]"),
    (lambda c: c["inputs"].update(handcrafted={"dtype": "float32", "shape": ["N", 4, 124]}),
     r"handcrafted.shape must be \[N, descriptors\]"),
])
def test_models_the_streamer_cannot_feed_are_refused(tiny_models, edit, message):
    """Inputs the streamer does not compute, cards that say so, and malformed input shapes."""
    p = tiny_models["speech"]
    card = json.loads(p.with_suffix(".json").read_text())
    edit(card)
    p.with_suffix(".json").write_text(json.dumps(card))
    from streamer.inputs import load_streamable

    with pytest.raises(ModelCardError, match=message):
        load_streamable(p, "speech")


def test_missing_card_or_model(tmp_path, tiny_models):
    tiny_models["speech"].with_suffix(".json").unlink()
    with pytest.raises(ModelCardError, match="card not found"):
        load_card(tiny_models["speech"])
    with pytest.raises(ModelCardError, match="model file not found"):
        load_card(tmp_path / "nope.onnx")


def test_wrong_source_is_refused(tiny_models):
    with pytest.raises(ModelCardError, match="not a speech model"):
        load_model(tiny_models["music"], "speech")


@pytest.mark.parametrize("stem, source", [("speech", "speech"), ("music", "music"), ("music_dnn", "music"),
                                          ("music_musicnn", "music")])
def test_shipped_models_have_complete_cards_and_run(stem, source):
    m = load_model(MODELS_DIR / f"{stem}.onnx", source, backend="onnxruntime")
    card = m.card
    for key in ("task", "training_data", "protocol", "metrics", "licence", "features", "onnx_sha256"):
        assert card[key], key
    assert card["features"] == DEFAULT_PARAMS.to_dict()
    assert "non-commercial" in card["licence"].lower()
    n = int(round(card["window_s"] * DEFAULT_PARAMS.sample_rate))
    for name in m.input_names:  # what the streamer computes for a window is what the model takes
        assert card["inputs"][name]["shape"][1:] == list(input_shape(name, n))
    rng = np.random.default_rng(0)
    wins = [tone(220.0 * (k + 1), card["window_s"]) + 0.01 * rng.standard_normal(n).astype(np.float32)
            for k in range(2)]
    out = m.predict(stack_inputs([window_inputs(w, m.input_names) for w in wins]))
    assert out["quadrant"].shape == (2, 4) and out["activity"].shape == (2,)
    np.testing.assert_allclose(out["quadrant"].sum(1), 1.0, atol=1e-5)
    assert (MODELS_DIR / f"{stem}.onnx").stat().st_size < 4 * 1024 * 1024


def test_the_default_music_model_is_the_musicnn_head_and_the_cnn_ships_by_path():
    from engines.cards import DEFAULT_MODELS, default_model_path

    assert default_model_path("music").name == DEFAULT_MODELS["music"] == "music_musicnn.onnx"
    m = load_model(None, "music", backend="onnxruntime")
    assert tuple(m.input_names) == ("musicnn",) and m.card["id"].startswith("emotrack-music-musicnn")
    cnn_model = load_model(MODELS_DIR / "music.onnx", "music", backend="onnxruntime")   # the fast profile
    assert tuple(cnn_model.input_names) == ("features",) and cnn_model.card["id"] == "emotrack-music-cnn-1"
    cv = m.card["metrics"]["4q_10fold"][m.card["metrics"]["selected"]]   # the 4Q artist-grouped 10-fold
    assert cv["pooled"]["macro_f1"] >= 0.73 and cv["fold_macro_f1_mean"] > 0.72
    assert "ece" in cv["calibration_clip"]
    # the gated mixture (4Q | EMOPIA) beats the default CNN on every held-out set, by the CNN's own card
    from training.musicnn_head import previous_from_cards

    cnn = previous_from_cards()
    ho = m.card["metrics"]["held_out"]
    assert set(ho) == {"4q_test_artists", "4q_test_artists_under_speech", "emopia_official_test",
                       "vgmidi_never_trained_on"}
    for name, got in ho.items():
        assert got["macro_f1"] > cnn[name]["music.onnx (previous shipped CNN)"]["macro_f1"], name
        assert got["macro_f1"] > got["chance"]["stratified"]["macro_f1"] + 0.1, name
        assert "ece" in got["calibration_clip"], name
    assert "ISC" in m.card["licence"] and "Million Song Dataset" in m.card["licence"]


def test_shipped_cards_record_the_input_versions_the_streamer_computes():
    from engines.cards import ModelCard
    from streamer.inputs import INPUT_VERSIONS

    for name in ("speech", "music", "music_dnn", "music_musicnn"):
        card = ModelCard.load(MODELS_DIR / f"{name}.onnx")
        assert card.input_versions, f"{name}.json records no input_versions"
        assert card.input_versions == {n: INPUT_VERSIONS[n] for n in card["inputs"]}


def test_model_card_writes_what_it_reads(tmp_path, tiny_models):
    from engines.cards import ModelCard

    card = ModelCard.read(tiny_models["speech"])
    card["id"] = "rewritten"
    path = card.write(tiny_models["speech"], indent=1)
    assert path == tiny_models["speech"].with_suffix(".json")
    again = ModelCard.load(tiny_models["speech"])
    assert again["id"] == "rewritten" and again.input_versions == card.input_versions


@pytest.mark.parametrize("versions", [{"features": 999}, {"features": 0}])
def test_streamer_refuses_a_card_of_other_input_versions(tiny_models, versions):
    """One line, exit code 4 (ModelError), naming the input and both versions; nothing streamed."""
    import subprocess
    import sys

    from engines.cards import ModelCard

    for source, path in tiny_models.items():
        card = ModelCard.read(path)
        card["input_versions"] = versions
        card.write(path, indent=1)
    cp = subprocess.run([sys.executable, "-m", "streamer.cli", "replay", str(REPO / "examples" / "heldout_mix.ogg"),
                         "--no-pub", "--speech-model", str(tiny_models["speech"]),
                         "--music-model", str(tiny_models["music"])],
                        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert cp.returncode == 4, cp.stderr
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in cp.stderr
    assert lines[0].startswith("emotrack: model tiny-") and f"features version {versions['features']}" in lines[0]
    assert "this emotrack computes version 1" in lines[0]
