"""The presence detector (streamer.presence): its steps do not depend on how the stream is cut, it reads
the pipeline's log-mel frames without changing them, and the default replay uses it, so speech over
sung music is told from the singing."""

import json

import numpy as np
import pytest

from conftest import DATA, SR

from streamer.presence import STEP, PresenceDetector, StepFeatures, features_of, n_features, step_centre


def _speechy(rng, seconds):
    """Noise bursts at a syllable rate over a held tone: a signal with structure on every time scale."""
    t = np.arange(int(seconds * SR)) / SR
    env = (np.sin(2 * np.pi * 4 * t) > 0.3).astype(np.float32)
    x = 0.1 * np.sin(2 * np.pi * 220 * t) + 0.2 * env * rng.standard_normal(t.size)
    return x.astype(np.float32)


def test_steps_do_not_depend_on_blocks(rng):
    x = _speechy(rng, 7.3)
    centres, whole = features_of(x)
    assert whole.shape == (centres.size, n_features())
    # one step per STEP frames centred inside the signal
    assert centres[-1] < x.size <= centres[-1] + STEP * 160 and centres[0] == step_centre(0)
    sf, parts, pos = StepFeatures(), [], 0
    while pos < x.size:
        n = int(rng.integers(1, 6000))
        parts.append(sf.push(x[pos:pos + n]))
        pos += n
    parts.append(sf.flush())
    streamed = np.concatenate(parts)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=2e-3, rtol=1e-4)


def test_window_activity_does_not_depend_on_blocks(rng):
    """A window's activity asked as soon as the window is complete is the same live (small blocks)
    and replayed (one block): only steps computed by then are used."""
    from streamer.separation import NoneSeparator

    x = _speechy(rng, 9.0)
    small, big = NoneSeparator(presence=PresenceDetector()), NoneSeparator(presence=PresenceDetector())
    big.process(x)
    got_small, got_big, pos = [], [], 0
    for end in range(3 * SR, x.size + 1, SR):
        while pos < end:
            small.process(x[pos:pos + 1600])
            pos += 1600
        got_small.append(small.activity("speech", end - 3 * SR, end))
        got_big.append(big.activity("speech", end - 3 * SR, end))
    assert None not in got_small
    np.testing.assert_allclose(got_small, got_big, atol=1e-4)
    assert NoneSeparator().activity("speech", 0, SR) is None


def test_the_pipeline_frame_cache_feeds_the_detector(tiny_models, rng):
    """Beside --separator none the detector reads the pipeline's log-mel frames of the mix (no second
    spectrogram): its presence equals the detector's own on the same samples."""
    from streamer.pipeline import Pipeline
    from streamer.publish import Publisher
    from streamer.segments import Collector
    from streamer.separation import NoneSeparator
    from streamer.sources import ArraySource
    from engines.runtime import load_model

    x = _speechy(rng, 12.0)
    det = PresenceDetector()
    pub = Collector(Publisher("t", None, None))
    models = {s: load_model(tiny_models[s], s, backend="onnxruntime") for s in ("speech", "music")}
    Pipeline(models, pub, NoneSeparator(presence=det), smooth_s={"speech": 1.0, "music": 3.0}).run(ArraySource(x, block_size=1234))
    assert det._mel is not None
    alone = PresenceDetector()
    alone.process(x)
    alone.flush()
    (c1, p1), (c2, p2) = det.probabilities(), alone.probabilities()
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_allclose(p1, p2, atol=1e-4)
    emo = [b for b in pub.bodies if "activity" in b]
    assert emo and all(0.0 <= b["activity"] <= 1.0 and "tracked" in b for b in emo)


def test_a_card_of_other_features_is_refused(tmp_path):
    import shutil

    from streamer.errors import ModelError
    from streamer.presence import default_model_path

    src = default_model_path()
    shutil.copy(src, tmp_path / "p.onnx")
    card = json.loads(src.with_suffix(".json").read_text())
    card["input_versions"]["presence_features"] = 99
    (tmp_path / "p.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="presence_features version 99") as e:
        PresenceDetector(tmp_path / "p.onnx")
    assert "\n" not in str(e.value)


@pytest.mark.skipif(not (DATA / "music_4q").is_dir(), reason="corpora not present")
def test_default_replay_flags_speech_over_sung_music(tmp_path):
    """A held-out programme (RAVDESS actors 19-24 over 4Q test artists' songs, sung): with the default
    options the speech activity is high where they talk and low where only the singer sings; the
    separator's presence (the former default) calls the singing speech."""
    import soundfile as sf

    from training.data import make_mix
    from training.experiments import track_eval

    mix, truth = make_mix.build(60.0, 5.0, 11, "4q", 9.0)
    path = tmp_path / "p.flac"
    sf.write(path, mix, SR)
    default = track_eval.score(track_eval.replay(str(path)), truth, 59, "centre")["speech"]
    old = track_eval.score(track_eval.replay(str(path), activity="separator"), truth, 59, "centre")["speech"]
    for k, least in (("detection_raw", 0.7), ("detection_tracked", 0.8)):   # window mean; hop at its centre
        assert default[k]["accuracy"] >= least, default
        assert default[k]["specificity"] >= 0.65, default      # singing alone is not called speech
        assert default[k]["accuracy"] > old[k]["accuracy"] + 0.15, (default, old)


def _harmonic(f0, seconds):
    """A voice-like harmonic tone (10 harmonics, falling 6 dB an octave) of instantaneous pitch ``f0(t)``."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0(t)) / SR
    return (0.1 * sum(np.sin(k * phase) / k for k in range(1, 11))).astype(np.float32)


def test_voice_features_tell_held_notes_from_gliding_pitch():
    """A held note keeps the shape of the low harmonics (voice_held_* near 1); a voice whose pitch
    glides up and down four times a second (speech intonation) does not."""
    from streamer.presence import feature_names

    names = feature_names()
    held = features_of(_harmonic(lambda t: np.full_like(t, 220.0), 4.0))[1][4:12]
    glide = features_of(_harmonic(lambda t: 220.0 * 2 ** (0.5 * np.sin(2 * np.pi * 4 * t)), 4.0))[1][4:12]
    for name in ("voice_held_lag5_0.95", "voice_sim_lag10", "peak_band_held"):
        k = names.index(name)
        assert held[:, k].min() > glide[:, k].max(), (name, held[:, k], glide[:, k])
    k = names.index("centroid_flux")
    assert glide[:, k].mean() > 3 * held[:, k].mean()


def test_model_input_reads_no_step_after_the_stack():
    """The model input of a step depends on the steps up to STACK after it, not later (the past
    context is causal), so a stream's steps can be computed as soon as those have arrived."""
    from streamer.presence import PAST, STACK, model_input

    f = np.random.default_rng(1).standard_normal((60, n_features())).astype(np.float32)
    whole = model_input(f)
    for k in (1, PAST - 1, PAST + 3, 40):
        np.testing.assert_array_equal(model_input(f[:k + STACK])[:k], whole[:k])
    # step 5 is read by steps 5 - STACK .. 5 + PAST (its own stack, then the past mean), no other
    g = f.copy()
    g[5] += 1.0
    changed = np.flatnonzero(np.any(model_input(g) != whole, axis=1))
    assert changed.tolist() == list(range(5 - STACK, 5 + PAST + 1))
