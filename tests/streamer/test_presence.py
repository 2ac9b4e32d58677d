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
