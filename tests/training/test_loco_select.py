"""Leave-one-corpus-out candidates of the third round (training.experiments.loco): corpus-normalised training
with causal shrinkage at test time, late fusion with the unadapted model, and the inner leave-one-corpus-out
that chooses their test-time settings.  On descriptor-like arrays with a corpus "channel" (every corpus's
descriptors shifted and scaled as a whole): what could go wrong is leakage of the held-out corpus into a
choice, a stream's answer depending on windows not yet heard, and adaptation that does not adapt."""

import numpy as np
import pytest

pytest.importorskip("sklearn")

from training.experiments import loco  # noqa: E402

CORPORA = ("ravdess", "tess", "emovo")
LABELS = ("happy", "angry", "sad", "calm")  # Q1..Q4


def _data(seed=0, n_per=40, d=12) -> "loco.Data":
    """Three corpora x 3 speakers x 4 quadrants: descriptors = class signal + speaker offset, then a
    corpus channel (shift and scale of every descriptor); clean and 'mix' (= clean plus noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (4, d))
    X, y, corpus, spk, lab, keys = [], [], [], [], [], []
    for ci, c in enumerate(CORPORA):
        shift, scale = rng.normal(0.0, 3.0, d), rng.uniform(0.5, 2.0, d)
        for s in range(3):
            off = rng.normal(0.0, 0.3, d)
            for q in range(4):
                Z = centres[q] + off + rng.normal(0.0, 0.7, (n_per, d))
                X.append(Z * scale + shift)
                y += [q] * n_per
                corpus += [c] * n_per
                spk += [f"{c}:s{s}"] * n_per
                lab += [LABELS[q]] * n_per
                keys += [f"{c}:s{s}/{LABELS[q]}{i}.wav" for i in range(n_per)]
    X = np.concatenate(X)
    data = object.__new__(loco.Data)
    data.inputs = {"handcrafted": {"clean": X, "mix": X + rng.normal(0.0, 0.5, X.shape)}}
    data.X = data.inputs["handcrafted"]
    data.y, data.corpus, data.speaker = np.array(y), np.array(corpus), np.array(spk)
    data.label, data.keys = np.array(lab), keys
    return data


LR = loco.System("t_lr", "train", ("clean",), C=0.1, kind="lr")
CS = loco.System("t_cs", "corpus_stream", ("clean",), prior_n=10.0, C=0.1, kind="lr", select=True)


def test_corpus_normalised_training_with_causal_shrinkage_adapts_to_an_unseen_channel():
    """Held out: a corpus whose channel no training corpus has; the unadapted model is lost, the
    causally adapted one recovers most of the class signal on natural (one speaker each) streams."""
    data = _data()
    tr, te = np.flatnonzero(data.corpus != "emovo"), np.flatnonzero(data.corpus == "emovo")
    keys = [data.keys[i] for i in te]
    plain = loco.score(data.y[te], data.fit(LR, tr).proba(data.X["clean"][te], keys, data.speaker[te]))
    adapted = loco.score(data.y[te], data.fit(CS, tr).proba(data.X["clean"][te], keys, data.speaker[te]))
    assert adapted["macro_f1"] > 0.8 and adapted["macro_f1"] > plain["macro_f1"] + 0.2, (plain, adapted)


def test_a_streams_answers_depend_only_on_what_it_has_heard():
    data = _data()
    tr, te = np.flatnonzero(data.corpus != "tess"), np.flatnonzero(data.corpus == "tess")
    model = data.fit(CS, tr)
    keys = [data.keys[i] for i in te]
    order = loco.stream_order(keys, data.speaker[te])
    stream0 = order[: len(order) // 3]  # the first speaker's stream (3 equal streams), in hearing order
    first = stream0[: len(stream0) // 2]  # what that stream has heard half-way
    X = data.X["clean"][te].copy()
    p = model.proba(X, keys, data.speaker[te])
    later = np.setdiff1d(np.arange(len(te)), first)
    X[later] += 100.0  # what comes later (other windows, other streams) changes wildly
    q = model.proba(X, keys, data.speaker[te])
    np.testing.assert_allclose(p[first], q[first], rtol=1e-9, atol=1e-12)
    assert np.abs(p[later] - q[later]).max() > 0.01


def test_inner_selection_never_sees_the_held_out_corpus():
    """The choice of n0 and the blend weight comes from the training corpora alone: replacing the
    held-out corpus by noise does not change it; a blend's published probabilities are the weighted mean."""
    blend = loco.System("t_bl", "corpus_stream", ("clean",), prior_n=10.0, C=0.1, kind="lr",
                        blend=("lr", 0.5), select=True)
    data = _data(1)
    tr = np.flatnonzero(data.corpus != "ravdess")
    a = loco.inner_select(data, blend, tr, log=None)
    noisy = _data(1)
    held = noisy.corpus == "ravdess"
    for v in ("clean", "mix"):
        noisy.inputs["handcrafted"][v][held] = np.random.default_rng(5).normal(size=(held.sum(), 12))
    assert loco.inner_select(noisy, blend, tr, log=None) == a
    assert a["prior_n"] in loco.SELECT_PRIOR_N and a["weight"] in loco.SELECT_WEIGHT
    assert len(a["grid"]) == len(loco.SELECT_PRIOR_N) * len(loco.SELECT_WEIGHT)
    te = np.flatnonzero(held)
    keys = [data.keys[i] for i in te]
    m = data.fit(blend, tr)
    m.prior_n, m.weight = 30.0, 0.7
    X = data.X["clean"][te]
    pb = m.proba(X, keys, data.speaker[te])
    m.weight = 1.0
    pa = m.proba(X, keys, data.speaker[te])
    np.testing.assert_allclose(pb, 0.7 * pa + 0.3 * m.partner.proba(X, keys, data.speaker[te]), atol=1e-12)


def test_per_axis_model_can_name_a_quadrant_its_training_corpora_lack():
    """TESS and EMOVO have no Q4 (calm): a 4-way model trained on them never says Q4; the per-axis model
    (P(V+) and P(A+), neutral clips as low arousal) says it where positive valence meets low arousal."""
    rng = np.random.default_rng(3)
    d = 6
    v_dir, a_dir = np.eye(d)[0], np.eye(d)[1]
    data = _data(2, d=d)
    # valence on descriptor 0, arousal on descriptor 1, no corpus channel; Q4 clips only in "ravdess"
    sign = {0: (1, 1), 1: (-1, 1), 2: (-1, -1), 3: (1, -1)}
    X = np.stack([2.0 * (sign[q][0] * v_dir + sign[q][1] * a_dir) for q in data.y]) + rng.normal(0, 1.0, (len(data.y), d))
    tr = np.flatnonzero((data.corpus != "ravdess") & (data.y != 3))
    neutral = rng.choice(tr, 60, replace=False)  # some training clips are neutral: no quadrant, low arousal
    data.y = data.y.copy()
    data.y[neutral] = -1
    X[neutral] = -2.0 * a_dir + rng.normal(0, 1.0, (60, d))
    data.inputs["handcrafted"] = {"clean": X, "mix": X}
    te = np.flatnonzero((data.corpus == "ravdess") & (data.y == 3))
    keys = [data.keys[i] for i in te]
    four = data.fit(loco.System("t4", "train", ("clean",), C=0.1, kind="lr"), tr).proba(X[te], keys, data.speaker[te])
    axes = data.fit(loco.System("tav", "train", ("clean",), C=0.1, kind="lr_av"), tr).proba(X[te], keys, data.speaker[te])
    q4, qav = loco.published(four)[0], loco.published(axes)[0]
    assert np.mean(q4 == 3) < 0.2 and np.mean(qav == 3) > 0.7, (np.mean(q4 == 3), np.mean(qav == 3))
    np.testing.assert_allclose(axes.sum(1), 1.0, atol=1e-12)
