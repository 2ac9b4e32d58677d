"""The seeds' architectures (training/nets/archs.py) trained from their recipes (training/recipe.py)
on tiny real subsets, exported with tf2onnx and checked against ONNX Runtime; one small
recipe must learn (better than chance on held-out speakers); a run resumes from its checkpoint."""

import json
import subprocess

import numpy as np
import pytest

from conftest import REPO, emotrack_cmd, needs_data

pytest.importorskip("tensorflow", reason="training extra not installed (pip install -e '.[training]')")
pytestmark = [pytest.mark.training, needs_data("speech_ravdess", "music_4q")]

# tiny widths; every other value comes from the recipe file
TINY = {
    "dcnn_speech": ["arch.conv_filters=6", "arch.dilated_filters=6", "arch.dense=8", "arch.head='avgmax'"],
    "adcrnn_speech": ["arch.conv_filters=6", "arch.dilated_filters=6", "arch.proj=8", "arch.bilstm=6",
                      "arch.dilated_lstm=6", "arch.dense=8"],
    "cnn_mfcc_va": ["arch.conv_filters=[4, 8]", "arch.dense=[16, 16, 8]"],
    "lstm_mfcc_va": ["arch.lstm=12", "arch.dense=[16, 16, 8]"],
    "ensemble_music": ["arch.cnn_filters=[4, 8]", "arch.cnn_dense=8", "arch.dnn=[16]", "arch.fusion_dense=8",
                       "train.batch_size=16"],
    "dnn_music": ["arch.dense=[16, 8]"],
    "music": ["arch.channels=[4, 4, 4, 4]", "arch.dense=8"],  # the shipped music model's recipe
    "dnn_speech_adapt": ["arch.dense=[16, 8]", "data.corpora=['ravdess']"],
    "sincnet_music": ["arch.sinc_filters=8", "arch.sinc_len=65", "arch.conv_filters=[8, 8]",
                      "arch.dense=[32, 32]", "arch.chunk_s=0.25", "train.run_eagerly=false"],
}
QUICK = ["train.epochs=1", "train.windows_per_epoch=24", "train.val_windows=12", "data.max_clips=3",
         "train.learning_rate=1e-3", "train.run_eagerly=true"]  # eager: no graph tracing for 2 steps
SPEECH_QUICK = ["features.window_s=2.0"]
MUSIC_QUICK = ["data.corpora=['4q']", "features.window_s=4.0", "features.hop_s=2.0", "mixing.others=['ravdess']"]


def _threads():
    from training.loop import _tf

    return _tf(1)


@pytest.mark.parametrize("case", sorted(TINY))
def test_architecture_trains_exports_and_matches_onnxruntime(case, tmp_path):
    from engines.cards import REQUIRED_CARD_FIELDS
    from training import config as C, evaluate as E, export as X, loop as R, recipe  # noqa: F401
    from training.nets import archs  # noqa: F401

    tf = _threads()
    sets = TINY[case] + QUICK + (MUSIC_QUICK if "music" in case or "va" in case else SPEECH_QUICK)
    cfg = C.resolve(case, sets)
    card = R.train(cfg, tmp_path, threads=1)

    onnx_path = tmp_path / f"{cfg['name']}.onnx"
    assert onnx_path.is_file() and (tmp_path / "resolved_config.json").is_file()
    for key in REQUIRED_CARD_FIELDS:
        assert card[key] not in (None, "", []), key
    names = C.input_names(cfg)
    assert [i["name"] for i in card["inputs"]] == list(names)
    assert card["speed"]["keras_onnx_max_abs_diff"] < 1e-4
    assert len(card["training_data"]["history"]) == 1

    # independent check: rebuild from the checkpoint, run both on fresh real windows of test clips
    state = json.loads((tmp_path / "ckpt" / "state.json").read_text())
    model = R.build_model(cfg, R._norm_from_json(state["norm"]))
    model.load_weights(str(tmp_path / "ckpt" / "best" / "weights")).expect_partial()
    data = C.clips(cfg, 2, splits=("test",))
    feed = R.make_windows(777, 5, cfg, data["targets"]["test"], data["others"]["test"])
    feed = {n: feed[n] for n in names}
    sess = E.session(onnx_path)
    outs = [o.name for o in sess.get_outputs()]
    got = dict(zip(outs, sess.run(outs, feed)))
    want = model(feed if len(feed) > 1 else feed[names[0]], training=False)
    diffs = {n: float(np.max(np.abs(np.asarray(want[n]) - got[n]))) for n in outs}
    assert max(diffs.values()) < 1e-4, diffs
    assert sorted(outs) == sorted(["quadrant", "va", "activity"] + (["emotion"] if C.n_emotions(cfg) else []))
    np.testing.assert_allclose(got["quadrant"].sum(1), 1.0, atol=1e-5)
    assert np.all(np.abs(got["va"]) <= 1.0) and np.all((got["activity"] >= 0) & (got["activity"] <= 1))
    assert np.ptp(got["quadrant"][:, 0]) > 0  # real inputs give different outputs

    if card["streamable"]:  # the streamer's loader runs it as it runs the shipped models
        from engines.runtime import load_model

        m = load_model(onnx_path, cfg["task"], backend="onnxruntime")
        o = m.predict(feed)
        np.testing.assert_allclose(o["quadrant"], got["quadrant"], atol=1e-6)

    if cfg["arch"]["name"] == "ensemble":  # the other fusion: mean of the two branches' heads
        avg = C.resolve(case, sets + ["arch.fusion='average'"])
        m2 = R.build_model(avg, R._norm_from_json(state["norm"]))
        X.export_model(m2, avg, tmp_path / "average.onnx")
        assert X.check_parity(m2, tmp_path / "average.onnx", feed) < 1e-4
        o2 = m2(feed, training=False)
        for k in ("quadrant", "va"):  # the output is the mean of the branch heads
            branches = [m2.get_layer(f"{k}_{b}").output for b in ("dnn", "cnn")]
            sub = tf.keras.Model(m2.inputs, branches)(feed, training=False)
            np.testing.assert_allclose(np.asarray(o2[k]), (np.asarray(sub[0]) + np.asarray(sub[1])) / 2, atol=1e-6)
    tf.keras.backend.clear_session()


def test_a_tiny_recipe_learns_quadrants_of_held_out_speakers(tmp_path):
    """Seed 002's CNN on in-graph MFCCs, RAVDESS quadrants, 100 clips per split (actors 1-16
    train, 17-18 validation, 19-24 test), 10 epochs of the same 768 clean windows: clip-level
    test accuracy above the majority class and balanced recall above 0.25 (chance), each
    with a margin."""
    from training import config as C, evaluate as E, export as X, loop as R, recipe  # noqa: F401
    from training.nets import archs  # noqa: F401

    _threads()
    cfg = C.resolve("cnn_mfcc_va", [
        "task='speech'", "data.corpora=['ravdess']", "data.max_clips=100", "features.window_s=3.0",
        "features.hop_s=1.0", "mixing.p_speed=0.0", "arch.conv_filters=[8, 16]", "arch.dense=[32, 32, 16]",
        "train.epochs=10", "train.windows_per_epoch=768", "train.resample_windows=false",
        "train.val_windows=200", "train.early_stopping='val_macro_f1'", "train.patience=4",
        "loss_weights.quadrant=1.0", "loss_weights.va=0.5"])
    card = R.train(cfg, tmp_path, threads=1)
    m = card["metrics"]["ravdess_test_clean"]
    msg = json.dumps({k: m[k] for k in ("n_clips", "class_counts", "quadrant_accuracy", "chance_quadrant_majority",
                                        "quadrant_uar", "quadrant_macro_f1", "arousal_half_accuracy",
                                        "chance_arousal_majority")})
    assert m["n_clips"] >= 80, msg
    assert m["quadrant_accuracy"] > m["chance_quadrant_majority"] + 0.04, msg
    assert m["quadrant_uar"] > 0.25 + 0.08, msg


def test_training_resumes_from_its_checkpoint(tmp_path):
    from training import config as C, evaluate as E, export as X, loop as R, recipe  # noqa: F401
    from training.nets import archs  # noqa: F401

    tf = _threads()
    sets = TINY["dcnn_speech"] + QUICK + ["train.epochs=1"]
    card1 = R.train(C.resolve("dcnn_speech", sets), tmp_path, threads=1)
    saved = json.loads((tmp_path / "resolved_config.json").read_text())
    assert saved["arch"]["conv_filters"] == 6 and saved["data"]["max_clips"] == 3
    assert saved["train"]["early_stopping"] == "val_macro_f1" and saved["seed"] == 1
    steps = -(-saved["train"]["windows_per_epoch"] // saved["train"]["batch_size"])

    # a resume takes the saved config (the recipe's own widths would not fit the checkpoint)
    card2 = R.train(C.resolve("dcnn_speech", ["train.epochs=2"]), tmp_path, resume=True, threads=1)
    hist = card2["training_data"]["history"]
    assert [h["epoch"] for h in hist] == [1, 2]
    assert hist[0] == card1["training_data"]["history"][0]
    assert json.loads((tmp_path / "resolved_config.json").read_text())["arch"] == saved["arch"]
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / "ckpt" / "last")))
    it = [k for k in reader.get_variable_to_shape_map() if k.startswith("optimizer/") and "iter" in k]
    assert it and int(reader.get_tensor(it[0])) == 2 * steps  # the optimiser's step count continued
    with pytest.raises(C.RecipeError, match="no checkpoint"):
        R.train(C.resolve("dcnn_speech", sets), tmp_path / "fresh", resume=True, threads=1)

    # export of the run's best weights (the probe windows kept in ckpt/ give the parity check)
    assert recipe.main(["export", str(tmp_path / "ckpt"), str(tmp_path / "again.onnx"), "--threads", "1"]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["speed"]["keras_onnx_max_abs_diff"] < 1e-4 and again["metrics"] == {}
    assert again["training_data"]["history"] == hist

    # the CLI: evaluate the exported model on 3 held-out clips per corpus (no TensorFlow needed)
    onnx_path = tmp_path / "dcnn_speech.onnx"
    proc = subprocess.run(emotrack_cmd("evaluate", str(onnx_path), "--split", "test", "--max-clips", "3"),
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)["metrics"]["ravdess_test_clean"]
    assert res["emotion8"]["n_clips"] == 3 and len(res["emotion8"]["confusion_rows_true_cols_pred"]) == 8


def test_recipes_resolve_and_bad_values_are_one_line_errors(tmp_path):
    from training import config as C, evaluate as E, export as X, loop as R, recipe  # noqa: F401
    from training.nets import archs  # noqa: F401

    for name in C.list_recipes():
        cfg = C.resolve(name)
        assert cfg["name"] == name and cfg["arch"]["name"] in archs.BUILDERS
        assert cfg["train"]["early_stopping"] in ("val_macro_f1", "val_loss")
    assert {C.resolve(n)["arch"]["name"] for n in C.list_recipes()} == set(archs.BUILDERS)
    assert C.resolve("dcnn_speech", ["train.learning_rate=3e-4"])["train"]["learning_rate"] == 3e-4
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model")
    corrupt.with_suffix(".json").write_text('{"id": "half a card",')
    for args, match in ((["train", "no_such_recipe"], "unknown recipe"),
                        (["train", "dcnn_speech", "--set", "arch.bogus=1"], "unknown parameters"),
                        (["train", "dcnn_speech", "--set", "train.early_stopping=val_accuracy"], "not accuracy"),
                        (["evaluate", str(tmp_path / "absent.onnx")], "model file not found"),
                        (["evaluate", str(corrupt)], "cannot read model card")):
        proc = subprocess.run(emotrack_cmd(*args), capture_output=True, text=True, timeout=120, cwd=REPO)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and match in proc.stderr, proc.stderr


def test_dilated_lstm_runs_one_lstm_per_interleaved_subsequence():
    from training.nets.archs import custom_layers

    tf = _threads()
    x = np.random.default_rng(0).standard_normal((2, 11, 5)).astype(np.float32)  # odd T: padded inside
    layer = custom_layers()["DilatedLSTM"](7, 3)
    y = np.asarray(layer(x))
    assert y.shape == (2, 11, 7)
    for i in range(3):  # steps i, i+3, i+6, ... form one ordinary LSTM sequence
        np.testing.assert_allclose(y[:, i::3], np.asarray(layer.lstm(x[:, i::3])), atol=1e-5)
    # so step t depends on step t-3, not on t-1
    x2 = x.copy()
    x2[:, 4] += 1.0
    d = np.abs(np.asarray(layer(x2)) - y).max(axis=(0, 2))
    assert d[4] > 0 and d[7] > 0 and d[10] > 0 and np.all(d[[5, 6, 8, 9]] == 0), d
    tf.keras.backend.clear_session()


def test_sinc_filters_are_band_passes_between_their_cut_offs():
    from training.nets.archs import custom_layers

    _threads()
    layer = custom_layers()["SincConv"](6, 251, 16000, 50.0, 50.0)
    layer.build((None, 16000, 1))
    k = np.asarray(layer.kernels())[:, 0, :]                 # [taps, filters]
    low = 50.0 + np.abs(np.asarray(layer.low_hz))
    high = np.minimum(low + 50.0 + np.abs(np.asarray(layer.band_hz)), 8000.0)
    resp = np.abs(np.fft.rfft(k, n=8192, axis=0))
    freqs = np.fft.rfftfreq(8192, 1 / 16000)
    for f in range(k.shape[1]):
        inside = (freqs > low[f]) & (freqs < high[f])
        outside = (freqs < low[f] * 0.5) | (freqs > high[f] * 1.5 + 200)
        assert resp[inside, f].mean() > 5 * resp[outside, f].mean(), (f, low[f], high[f])
