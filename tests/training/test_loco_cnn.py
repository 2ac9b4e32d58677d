"""The log-mel CNN as a leave-one-corpus-out candidate (training.experiments.loco_cnn): its training and
scoring path on a tiny real subset (TESS, one speaker trained, the other held out), and the per-window band
normalisation that removes a channel's spectral envelope."""

import numpy as np
import pytest

from streamer.features import extract

from training.experiments import loco, loco_cnn

pytest.importorskip("tensorflow")


def _tess_subset(speaker: str, per_quadrant: int, seed: int = 0):
    from training.data.corpora import load_audio

    clips = [c for c in loco.speech_clips(("tess",)) if c.group == speaker and c.q_index >= 0]
    rng = np.random.default_rng(seed)
    pick = []
    for q in sorted({c.q_index for c in clips}):
        cs = [c for c in clips if c.q_index == q]
        pick += [cs[i] for i in rng.choice(len(cs), min(per_quadrant, len(cs)), replace=False)]
    load_audio(pick, use_cache=False)
    F = np.stack([extract(loco.variant_window(c, "clean")) for c in pick])
    return F, np.array([c.q_index for c in pick]), np.array([c.corpus for c in pick])


def test_a_tiny_cnn_candidate_trains_and_beats_chance_on_a_held_out_speaker():
    speakers = sorted({c.group for c in loco.speech_clips(("tess",))})
    assert len(speakers) == 2, speakers
    Ftr, ytr, ctr = _tess_subset(speakers[0], 40)
    Fte, yte, _ = _tess_subset(speakers[1], 20, seed=1)
    # the shipped model's 4-way softmax head; the per-axis head with the window's band normalisation; the
    # per-axis head with label smoothing and mixup
    for kw, margin in ((dict(heads="quadrant"), 0.05), (dict(heads="axes", band_norm=True), 0.1),
                       (dict(heads="axes", label_smoothing=0.1, mixup=0.2), 0.1)):
        s = loco_cnn.CnnSystem("t", "tiny", channels=(8, 12), dense=16, dropout=0.1, epochs=12, batch_size=8,
                               seed=3, **kw)
        model = loco_cnn.FittedCnn(s, Ftr, ytr, ctr, log=None)
        p = model.proba(Fte)
        assert p.shape == (len(yte), 4) and np.allclose(p.sum(1), 1.0, atol=1e-5)
        r, ch = loco.score(yte, p), loco.chance(yte)
        assert r["macro_f1"] > ch["macro_f1"] + margin, (kw, r, ch)


def test_band_normalisation_removes_a_fixed_channel_envelope_and_keeps_the_level():
    rng = np.random.default_rng(0)
    F = rng.normal(-40.0, 8.0, (3, 50, 64, 3)).astype(np.float32)
    F[:, :10, :, 0] = -120.0                      # padding: inactive frames
    eq = np.linspace(-12.0, 12.0, 64, dtype=np.float32)  # a microphone's tilt, dB per band
    G = F.copy()
    G[:, 10:, :, 0] += eq + 5.0                   # the same speech through another channel, 5 dB louder
    a, b = loco_cnn.band_normalise(F), loco_cnn.band_normalise(G)
    active = np.s_[:, 10:, :, 0]
    d = b[active] - a[active]
    assert np.allclose(d, d.mean(), atol=1e-3)    # only a level difference is left ...
    assert abs(d.mean() - 5.0) < 1e-3             # ... and it is kept
    assert np.array_equal(a[..., 1:], F[..., 1:])  # deltas untouched


def test_weights_balance_corpora_and_quadrants():
    y = np.array([0] * 30 + [1] * 10 + [0] * 5 + [2] * 5 + [-1] * 4)
    c = np.array(["a"] * 40 + ["b"] * 14)
    w = loco_cnn.balanced_weights(y, c)
    assert np.isclose(w[c == "a"][y[c == "a"] == 0].sum(), w[c == "a"][y[c == "a"] == 1].sum())
    assert np.isclose(w[(c == "a") & (y >= 0)].sum(), w[(c == "b") & (y >= 0)].sum())


def test_rows_read_the_variants_without_copying_them():
    a = np.arange(40, dtype=np.float16).reshape(10, 2, 2, 1)
    b = -a
    r = loco_cnn.Rows([a, b], np.array([3, 1, 4, 1, 5]), np.array([0, 1, 0, 1, 0]))
    ref = np.stack([a[3], b[1], a[4], b[1], a[5]])
    assert r.shape == ref.shape and list(r.group) == [3, 1, 4, 1, 5]
    assert np.array_equal(r[1:4], ref[1:4]) and np.array_equal(r[np.array([4, 0, 2])], ref[[4, 0, 2]])
