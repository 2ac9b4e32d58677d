"""The presence detector's training (training.presence): a tiny detector trained on programmes of training
speakers and music tells speech from singing on programmes of held-out speakers and artists better than
chance, and its ONNX export (one MLP or several averaged) runs in ONNX Runtime as scikit-learn does."""

import numpy as np
import pytest

from conftest import DATA

pytestmark = [pytest.mark.training,
              pytest.mark.skipif(not (DATA / "music_4q").is_dir(), reason="corpora not present")]


def test_tiny_detector_beats_chance_on_held_out_speakers_and_artists(tmp_path):
    from streamer.presence import PresenceDetector
    from training import presence

    train = presence.dataset("train", 6, 60.0, seed0=3, cache=None, log=lambda *a: None)
    test = presence.dataset("test", 2, 60.0, seed0=3, cache=None, log=lambda *a: None)
    est = presence.fit_members(train["x"], train["y"], members=2, hidden=16, seed=0, max_iter=60)
    p = presence.predict(est, test["x"])
    # the detector averages its members' probabilities
    one = [presence.presence_of(m.predict_proba(test["x"]), m.steps[-1][1].classes_) for m in est]
    assert not np.allclose(one[0], one[1]) and np.allclose(p, (one[0] + one[1]) / 2)
    for col in range(2):   # speech, music: balanced accuracy of the held-out steps above chance (0.5)
        y, pred = test["y"][:, col], p[:, col] >= 0.5
        balanced = (np.mean(pred[y]) + np.mean(~pred[~y])) / 2
        assert balanced > 0.6, (col, balanced)
    # over sung music (4Q test artists) the speech steps are told from the singing ones
    sung = test["music"] == 0
    y, s = test["y"][sung, 0], p[sung, 0]
    assert s[y].mean() > s[~y].mean() + 0.2
    path = presence.export(est, tmp_path / "presence.onnx")
    assert presence.parity(est, path, test["x"]) < 1e-5
    assert presence.parity(est[0], presence.export(est[0], tmp_path / "one.onnx"), test["x"]) < 1e-5
    # two hidden layers (--hidden 16,8) export as two ReLU MatMuls, the same probabilities
    deep = presence.fit(train["x"], train["y"], hidden="16,8", seed=0, max_iter=30)
    assert [w.shape[1] for w in deep.steps[-1][1].coefs_] == [16, 8, 4]
    deep_path = presence.export(deep, tmp_path / "deep.onnx")
    assert presence.parity(deep, deep_path, test["x"]) < 1e-5
    assert sum(n.op_type == "Relu" for n in onnx_nodes(deep_path)) == 2
    import onnx
    assert {o.domain for o in onnx.load(str(path)).opset_import} <= {"", "ai.onnx"}   # standard operators only
    # the exported graph with a card streams through the detector
    from engines.cards import ModelCard
    from streamer.features import DEFAULT_PARAMS
    ModelCard({"input_versions": {"presence_features": presence.PRESENCE_VERSION},
               "features": DEFAULT_PARAMS.to_dict(), "id": "tiny"}).write(path)
    det = PresenceDetector(path)
    x = np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32) * 0.1
    det.process(x)
    det.flush()
    assert det.probabilities()[1].shape == (12, 2)


def onnx_nodes(path):
    import onnx
    return onnx.load(str(path)).graph.node


def test_hidden_layer_sizes_parse_or_fail_clearly():
    from training.presence import hidden_layers

    assert hidden_layers(64) == (64,) and hidden_layers("64,32") == (64, 32) and hidden_layers((8, 4)) == (8, 4)
    for bad in ("", "64,0", (0,)):
        with pytest.raises(ValueError, match="positive integers"):
            hidden_layers(bad)


def test_more_sung_programmes_are_new_programmes_over_4q():
    """``--sung K``: K programmes after the first N, each over 4Q (sung) music, none a repeat."""
    from training import presence

    idx = presence.sung_indices(5, 3)
    assert idx[:5] == [0, 1, 2, 3, 4] and len(idx) == 8 == len(set(idx))
    extra = [presence.programme("train", i, 8.0, 1) for i in idx[5:]]
    assert [st["music"] for _, _, st in extra] == ["4q"] * 3
    assert len({st["seed"] for _, _, st in extra}) == 3
    songs = [{s["path"] for s in truth["songs"]} for _, truth, _ in extra]
    assert all(p.startswith("music_4q/") for ss in songs for p in ss)
    assert presence.sung_indices(4, 0) == [0, 1, 2, 3]


def test_training_programmes_draw_every_speech_corpus():
    """``more_speech`` (the detector's training programmes): RAVDESS, TESS and EMOVO all speak, and
    only in training programmes."""
    from training.data import make_mix

    _, truth = make_mix.build(90.0, 5.0, 3, "4q", 0.0, split="train", more_speech=True)
    said = [sp["path"].split("/")[0] for sp in truth["speech"]]
    assert set(said) == {"speech_ravdess", "speech_tess", "speech_emovo"}, said
    assert all(sp["active"] for sp in truth["speech"])
    _, plain = make_mix.build(90.0, 5.0, 3, "4q", 0.0, split="train")
    assert "speech_emovo" not in {sp["path"].split("/")[0] for sp in plain["speech"]}
    with pytest.raises(SystemExit, match="training programmes only"):
        make_mix.build(10.0, 5.0, 3, "4q", 0.0, split="val", more_speech=True)
