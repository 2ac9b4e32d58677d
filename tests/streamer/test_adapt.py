"""Per-stream adaptation (streamer.adapt): the causal standardiser that training and the
streamer share, a model card's adaptation section, and a real adapting model trained by its
recipe on RAVDESS, then streamed by `emotrack replay` and `emotrack predict`."""

import copy
import json
import shutil
import subprocess

import numpy as np
import pytest

from conftest import REPO, emotrack_cmd, needs_data
from streamer import adapt
from streamer.errors import ModelError


def _prior(d=6):
    return np.zeros(d), np.ones(d)


def test_the_protocols_causal_normalisation_is_the_streamers():
    """training.results' `*_spknorm_online` systems and the streamer run the same code: item i of a
    group comes out as the streamer's StreamStandardiser gives it after hearing items 0..i."""
    from training.experiments.systems import online_group_standardise

    rng = np.random.default_rng(0)
    X = rng.normal(2.0, 3.0, (90, 6))
    groups = np.array(["a", "b", "c"])[rng.integers(0, 3, 90)]
    keys = [f"clip{i}" for i in range(90)]
    prior = (rng.normal(size=6), rng.uniform(0.5, 2.0, 6))
    Z, pos = online_group_standardise(X, groups, keys, prior, prior_n=5.0)
    for g in "abc":
        idx = np.flatnonzero(groups == g)
        order = idx[np.argsort(pos[idx])]
        st = adapt.StreamStandardiser(*prior, prior_n=5.0)
        for i in order:
            np.testing.assert_allclose(st(X[i]), Z[i], rtol=1e-12, atol=1e-12)
        # by hand: the shrunk running mean and variance of what was heard, itself included
        Xg = X[order]
        n = len(order)
        m = (5.0 * prior[0] + Xg.sum(0)) / (n + 5.0)
        v = (5.0 * (prior[1] + prior[0] ** 2) + (Xg ** 2).sum(0)) / (n + 5.0) - m ** 2
        np.testing.assert_allclose(Z[order[-1]], (Xg[-1] - m) / (np.sqrt(v) + adapt.EPS), rtol=1e-9)


def test_a_stream_forgets_its_speakers_offset_and_scale_as_it_is_heard():
    """Two streams of the same utterances, one through another 'voice' (every descriptor shifted and
    scaled): the first windows differ as the raw inputs do, later ones converge to the same values."""
    rng = np.random.default_rng(1)
    X = rng.normal(0.0, 1.0, (400, 8))
    Y = 3.0 * X + 5.0
    a, b = adapt.StreamStandardiser(*_prior(8)), adapt.StreamStandardiser(*_prior(8))
    za, zb = np.array([a(x) for x in X]), np.array([b(y) for y in Y])
    early = np.abs(za[:5] - zb[:5]).mean()
    late = np.abs(za[-50:] - zb[-50:]).mean()
    assert early > 1.0 and late < 0.1 * early, (early, late)
    # a fresh stream is the training speakers' average: its first window is scored against the prior
    c = adapt.StreamStandardiser(np.full(8, 5.0), np.full(8, 9.0), prior_n=1e9)
    np.testing.assert_allclose(c(Y[0]), (Y[0] - 5.0) / 3.0, rtol=1e-6)


def test_gated_and_non_finite_windows_do_not_move_the_statistics():
    st = adapt.StreamStandardiser(*_prior(3))
    before = st.mean_std()
    st(np.array([100.0, 100.0, 100.0]), update=False)
    st.update(np.array([np.nan, 1.0, 1.0]))
    assert st.updates == 0
    np.testing.assert_array_equal(st.mean_std()[0], before[0])
    out = st(np.array([1.0, 2.0, 3.0]))
    assert st.updates == 1 and out.dtype == np.float64 and np.all(np.isfinite(out))
    ad = adapt.Adaptation(adapt.card_section(*_prior(3), prior_n=5.0, min_activity=0.4), {"handcrafted": 3})
    assert ad.wants_update(None) and ad.wants_update(0.4) and not ad.wants_update(0.39)


def test_a_stream_standardises_the_input_its_card_names_and_no_other():
    """The card's ``adaptation.input`` decides which of a window's inputs is adapted, in the streamer
    and in training's evaluators alike (they all go through ``adapt_inputs``)."""
    section = adapt.card_section(*_prior(3), prior_n=5.0, input_name="mfcc_stats")
    st = adapt.Adaptation(section, {"mfcc_stats": 3, "features": 2}).new_stream()
    window = {"mfcc_stats": np.array([4.0, 5.0, 6.0]), "features": np.array([7.0, 8.0])}
    out = st.adapt_inputs(window)
    np.testing.assert_array_equal(out["features"], window["features"])
    assert not np.allclose(out["mfcc_stats"], window["mfcc_stats"]) and st.updates == 1
    st.adapt_inputs(window, update=False)
    assert st.updates == 1
    with pytest.raises(ValueError, match="without the name"):
        adapt.StreamStandardiser(*_prior(3)).adapt_inputs(window)


def test_a_bad_adaptation_section_is_a_one_line_model_error():
    good = {"id": "m", "inputs": [{"name": "handcrafted", "shape": ["N", 4]}],
            "adaptation": adapt.card_section(*_prior(4), prior_n=5.0)}
    assert adapt.from_card(good).input == "handcrafted"
    assert adapt.from_card({k: v for k, v in good.items() if k != "adaptation"}) is None
    bad = [("method", "zscore", "method"), ("input", "features", "not one of its inputs"),
           ("prior_mean", [0.0] * 3, "4 finite means"), ("prior_var", [-1.0] * 4, "variances >= 0"),
           ("prior_n", 0.0, "prior_n must be > 0")]
    for key, value, match in bad:
        card = copy.deepcopy(good)
        card["adaptation"][key] = value
        with pytest.raises(ModelError, match=match) as err:
            adapt.from_card(card)
        assert "\n" not in str(err.value)


@pytest.mark.training
@needs_data("speech_ravdess", "music_4q")
def test_an_adapting_model_trains_and_the_streamer_adapts_its_input(tmp_path):
    """The dnn_speech_adapt recipe on a RAVDESS subset: its card carries the prior and its test
    metrics were measured per speaker stream; `emotrack replay` announces the adaptation and runs it
    (the same model without the card's section gives other outputs); `emotrack predict` hears a file
    as one stream; a broken section is a one-line error."""
    pytest.importorskip("tensorflow", reason="training extra not installed")
    from streamer import descriptors
    from training import config as C, evaluate as E, export as X, loop as R, recipe  # noqa: F401
    from training.nets import archs  # noqa: F401

    R._tf(1)
    cfg = C.resolve("dnn_speech_adapt", [
        "data.corpora=['ravdess']", "data.max_clips=24", "arch.dense=[16, 8]", "train.epochs=2",
        "train.windows_per_epoch=96", "train.val_windows=24", "train.run_eagerly=true"])
    card = R.train(cfg, tmp_path, threads=1)
    sec = card["adaptation"]
    assert sec["method"] == adapt.METHOD and sec["input"] == "handcrafted"
    assert len(sec["prior_mean"]) == len(sec["prior_var"]) == len(descriptors.feature_names())
    m = card["metrics"]["ravdess_test_clean"]
    assert m["n_clips"] > 0 and "per-speaker" in m["adaptation"]
    alone = card["metrics"]["ravdess_test_clean_each_clip_alone"]  # the cold start, reported beside it
    assert alone["n_clips"] == m["n_clips"] and "of its own" in alone["adaptation"]

    onnx_path = tmp_path / "dnn_speech_adapt.onnx"
    mix = str(REPO / "examples" / "heldout_mix.ogg")

    def replay(model, out):
        proc = subprocess.run(emotrack_cmd("replay", mix, "--speech-model", str(model), "--sources", "speech",
                                           "--out", str(out)), capture_output=True, text=True, timeout=600, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        start = next(r for r in rows if r.get("event") == "start")
        return start, [r for r in rows if r["topic"] == "emotion.speech"]

    start, adapted = replay(onnx_path, tmp_path / "adapted.jsonl")
    assert start["adaptation"]["speech"]["input"] == "handcrafted"
    assert len(adapted) >= 20
    end = [json.loads(x) for x in (tmp_path / "adapted.jsonl").read_text().splitlines()][-1]
    assert end["event"] == "end" and end["counters"]["adapt_updates"]["speech"] == len(adapted)  # no gate: all

    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    shutil.copy(onnx_path, plain_dir / onnx_path.name)
    plain_card = {k: v for k, v in card.items() if k != "adaptation"}
    (plain_dir / "dnn_speech_adapt.json").write_text(json.dumps(plain_card))
    start2, plain = replay(plain_dir / onnx_path.name, tmp_path / "plain.jsonl")
    assert "adaptation" not in start2
    # with the built-in separator, windows its presence estimate finds without speech do not update
    proc = subprocess.run(emotrack_cmd("replay", mix, "--speech-model", str(onnx_path), "--sources", "speech",
                                       "--separator", "builtin", "--out", str(tmp_path / "sep.jsonl")),
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sep_rows = [json.loads(x) for x in (tmp_path / "sep.jsonl").read_text().splitlines()]
    n_sep = sum(r["topic"] == "emotion.speech" for r in sep_rows)
    updates = sep_rows[-1]["counters"]["adapt_updates"]["speech"]
    quiet = sum(r["topic"] == "emotion.speech" and r["activity"] < 0.5 for r in sep_rows)
    assert 0 < updates < n_sep and updates == n_sep - quiet, (updates, n_sep, quiet)
    assert [r["t_start"] for r in plain] == [r["t_start"] for r in adapted]
    diff = np.abs(np.array([[r["probs"][q] for q in "Q1 Q2 Q3 Q4".split()] for r in adapted])
                  - np.array([[r["probs"][q] for q in "Q1 Q2 Q3 Q4".split()] for r in plain]))
    assert diff.max() > 1e-3

    # `emotrack predict`: one file is one stream (deterministic)
    outs = []
    for _ in range(2):
        proc = subprocess.run(emotrack_cmd("predict", mix, "--source", "speech", "--model", str(onnx_path)),
                              capture_output=True, text=True, timeout=300, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs.append(proc.stdout)
    assert outs[0] == outs[1] and json.loads(outs[0].splitlines()[0])["model"] == card["id"]

    # a broken section is a one-line error before any audio is read
    bad = dict(card, adaptation=dict(sec, prior_mean=sec["prior_mean"][:3]))
    (plain_dir / "dnn_speech_adapt.json").write_text(json.dumps(bad))
    proc = subprocess.run(emotrack_cmd("replay", mix, "--speech-model", str(plain_dir / onnx_path.name),
                                       "--sources", "speech", "--out", str(tmp_path / "bad.jsonl")),
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == ModelError.exit_code and "adaptation prior" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
