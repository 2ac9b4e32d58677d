"""The gated musicnn head (one expert per corpus, a logistic gate between them): fitted on real musicnn
embeddings of two real corpora, its one ONNX graph equals the numpy mixture."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from conftest import DATA
from streamer import musicnn as M, taxonomy

FOUR_Q, RAVDESS = DATA / "music_4q", DATA / "speech_ravdess"
needs_data = pytest.mark.skipif(not ((FOUR_Q / "manifest.csv").exists() and (RAVDESS / "manifest.csv").exists()),
                                reason="4Q or RAVDESS not staged")


def _embedded(root, rows, fe, seconds: float) -> np.ndarray:
    """Clip rows: the mean musicnn embedding of the grid patches of each clip's first ``seconds``."""
    import soundfile as sf

    out = []
    for r in rows:
        x, sr = sf.read(str(root / r["path"]), dtype="float32", always_2d=True, frames=int(seconds * 48000))
        x = x.mean(axis=1)
        if sr != M.SAMPLE_RATE:
            import librosa

            x = librosa.resample(x, orig_sr=sr, target_sr=M.SAMPLE_RATE)
        out.append(M.clip_patches(x[:int(seconds * M.SAMPLE_RATE)], fe).mean(0))
    return np.stack(out)


@needs_data
def test_gated_head_on_real_embeddings_exports_one_graph_equal_to_numpy(tmp_path):
    """Two real corpora as the experts' (40 4Q clips, their first 5 s; 40 RAVDESS clips with a quadrant),
    a gate between them: the gate tells held-out clips' corpus apart, and the exported graph (one ONNX
    file, the streamer's input and outputs) equals the numpy mixture on real held-out embeddings."""
    import onnx

    from training.musicnn_head import GatedHead, QUADRANT_VA, export_head, fit_gated, head_parity

    rng = np.random.default_rng(0)
    with open(FOUR_Q / "manifest.csv", newline="") as fh:
        q4 = list(csv.DictReader(fh))
    q4 = [q4[i] for i in rng.permutation(len(q4))[:52]]
    with open(RAVDESS / "manifest.csv", newline="") as fh:
        sp = [r for r in csv.DictReader(fh) if taxonomy.label_quadrant(r["emotion"])]
    sp = [sp[i] for i in rng.permutation(len(sp))[:52]]
    fe = M.default_front_end()
    Xm, Xs = _embedded(FOUR_Q, q4, fe, 5.0), _embedded(RAVDESS, sp, fe, 3.0)
    ym = np.array([taxonomy.QUADRANTS.index(r["quadrant"]) for r in q4])
    ys = np.array([taxonomy.QUADRANTS.index(taxonomy.label_quadrant(r["emotion"])) for r in sp])
    if len(set(ys[:40])) < 4 or len(set(ym[:40])) < 4:
        pytest.skip("the seeded draw lacks a quadrant")
    head = fit_gated([Xm[:40], Xs[:40]], [ym[:40], ys[:40]], "mlp alpha=10.0", gate_C=1.0,
                     corpora=("4Q", "RAVDESS"))
    assert isinstance(head, GatedHead) and len(head.experts) == 2 and head.kind == "gated mlp"
    held = np.concatenate([Xm[40:], Xs[40:]]).astype(np.float32)
    corpus = np.r_[np.zeros(12), np.ones(12)]
    assert np.mean(head.gate(held).argmax(1) == corpus) >= 0.9      # music vs speech: the gate sees it
    out = head.outputs(held)
    np.testing.assert_allclose(out["quadrant"].sum(1), 1.0, atol=1e-9)
    np.testing.assert_allclose(out["va"], out["quadrant"] @ QUADRANT_VA)
    p = export_head(head, tmp_path / "gated.onnx")
    m = onnx.load(str(p))
    assert [i.name for i in m.graph.input] == ["musicnn"]
    assert [o.name for o in m.graph.output] == ["quadrant", "va", "activity"]
    assert max(o.version for o in m.opset_import) <= 18
    assert head_parity(head, p, held) < 1e-4
    # the mixture is not one of its experts: on some held-out window the two experts disagree
    pe = [e.probs(held) for e in head.experts]
    assert np.abs(pe[0] - pe[1]).max() > 0.05


def test_speech_over_leaves_every_third_slot_to_the_music_at_the_ratio_asked():
    """Training mixtures as the programmes: one speech clip per 4.5 s slot, every third slot music alone, and
    speech-to-music ratio ``smr`` dB between the two sources' gains."""
    from training.musicnn_head import speech_over

    sr, slot = M.SAMPLE_RATE, int(4.5 * M.SAMPLE_RATE)
    rng = np.random.default_rng(0)
    music = (0.1 * rng.standard_normal(7 * slot)).astype(np.float32)
    speech = [(0.1 * rng.standard_normal(3 * sr)).astype(np.float32) for _ in range(3)]
    for smr in (0.0, 10.0):
        y = speech_over(music, speech, smr)
        assert y.shape == music.shape
        m_gain = 10 ** (-smr / 40)
        for k in range(7):
            seg = slice(k * slot, (k + 1) * slot)
            added = y[seg] - m_gain * music[seg]
            if k % 3 == 2:
                assert np.abs(added).max() < 1e-6          # music alone
            else:
                rms = np.sqrt(np.mean(added[added != 0] ** 2))
                assert abs(20 * np.log10(rms / 0.1) - smr / 2) < 0.5   # speech at +smr/2 dB, music at -smr/2


@needs_data
def test_training_mixtures_use_training_speakers_only():
    """No validation or test speaker (the programmes' and the held-out mixtures') is mixed into a training row;
    the draw is seeded per clip, so the same clip gets the same mixture whatever the list around it."""
    from training import musicnn_head as H

    speech = H._training_speech()
    assert speech and all(c.split == "train" for c in speech)
    assert not {c.group for c in speech} & {it.clip.group for it in H._items("ravdess") if it.clip.split != "train"}
    music = H._items("4q")[:6]
    a, b = H.training_mixture_items(music), H.training_mixture_items(music[3:])
    assert [m.key for m in a[3:]] == [m.key for m in b]
    assert len({m.key for m in a}) == 6 and all(m.clip is it.clip for m, it in zip(a, music))


def test_expert_also_teaches_one_expert_another_corpus():
    """``expert_also`` ({expert: [corpora]}) adds those corpora's rows to that expert's training: corpus B
    labels the mirror image of corpus A's clusters with the quadrants rotated, so B's expert alone misreads
    A's clusters, and the same expert taught A too reads them right; the gate is unchanged in kind."""
    from types import SimpleNamespace

    from streamer.taxonomy import QUADRANTS
    from training.musicnn_crosscorpus import gated_fit

    rng = np.random.default_rng(1)
    centres = rng.normal(0.0, 1.0, (4, 200)) * 3.0
    rows: dict = {}

    def corpus(name, sign, shift):
        items = []
        for k in range(4):
            for j in range(15):
                key = f"{name}{k}-{j}"
                rows[key] = (sign * centres[k] + rng.normal(0.0, 0.5, 200))[None, :]
                items.append(SimpleNamespace(key=key, clip=SimpleNamespace(quadrant=QUADRANTS[(k + shift) % 4])))
        return items

    a, b = corpus("a", 1.0, 0), corpus("b", -1.0, 1)
    data = SimpleNamespace(windows=lambda it: rows[it.key])
    probe_a = np.concatenate([centres[k][None, :] + rng.normal(0.0, 0.5, (5, 200)) for k in range(4)])
    truth = np.repeat(np.arange(4), 5)
    cfg = {"kind": "lr", "gate_C": 1.0}
    alone = gated_fit(data, [a, b], cfg).experts[1].probs(probe_a).argmax(1)
    taught = gated_fit(data, [a, b], {**cfg, "expert_also": {"1": [0]}}).experts[1].probs(probe_a).argmax(1)
    assert np.mean(alone == truth) < 0.5
    assert np.mean(taught == truth) >= 0.9
