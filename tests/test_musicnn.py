"""The musicnn front end (numpy log-mel, ONNX graph), its patch grid in streams, and the emotion head."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, REPO, tone
from streamer import musicnn as M

FOUR_Q = DATA / "music_4q"
needs_4q = pytest.mark.skipif(not (FOUR_Q / "manifest.csv").exists(), reason="4Q corpus not staged")


def _real_music(n: int, k: int = 0) -> np.ndarray:
    """``n`` samples of the ``k``-th 4Q clip (16 kHz mono)."""
    import soundfile as sf

    with open(FOUR_Q / "manifest.csv", newline="") as fh:
        row = list(csv.DictReader(fh))[k]
    x, sr = sf.read(str(FOUR_Q / row["path"]), dtype="float32", always_2d=True)
    assert sr == M.SAMPLE_RATE
    return x.mean(axis=1)[:n]


@needs_4q
def test_log_mel_matches_librosa_on_real_music():
    librosa = pytest.importorskip("librosa")
    x = _real_music(10 * M.SAMPLE_RATE)
    ref = librosa.feature.melspectrogram(y=x, sr=M.SAMPLE_RATE, n_fft=M.N_FFT, hop_length=M.HOP,
                                         n_mels=M.N_MELS, center=False).T
    got = M.mel_power(x)
    assert got.shape == ref.shape
    np.testing.assert_allclose(M.log_compress(got), np.log10(10000 * ref + 1), atol=2e-4)
    # musicnn's own call centres its frames: frame t+1 of librosa's centred spectrogram is our frame t
    cen = librosa.feature.melspectrogram(y=x, sr=M.SAMPLE_RATE, n_fft=M.N_FFT, hop_length=M.HOP,
                                         n_mels=M.N_MELS).T
    np.testing.assert_allclose(M.log_compress(got[:50]), np.log10(10000 * cen[1:51] + 1), atol=2e-4)


def test_patch_mel_is_level_independent_and_checks_its_length():
    x = tone(440.0, 4.0, amp=0.3)[:M.PATCH_SAMPLES] + tone(1320.0, 4.0, amp=0.05)[:M.PATCH_SAMPLES]
    a, b = M.patch_mel(x), M.patch_mel(0.05 * x)
    assert a.shape == (M.N_FRAMES, M.N_MELS)
    np.testing.assert_allclose(a, b, atol=1e-3)
    with pytest.raises(M.ParameterError, match="48128"):
        M.patch_mel(x[:1000])


def test_patch_grid_geometry():
    assert M.PATCH_SAMPLES == 48128 and M.GRID == 32000
    assert list(M.patches_in(0, 160000)) == [0, 1, 2, 3]          # a 10 s window holds 4 patches
    assert list(M.patches_in(32000, 192000)) == [1, 2, 3, 4]
    assert list(M.patches_in(16000, 176000)) == [1, 2, 3]         # off the grid: only whole patches
    assert list(M.patches_in(0, 40000)) == []
    assert list(M.patch_starts(30 * 16000)) == list(range(0, 14 * 32000, 32000))


@pytest.mark.training
def test_front_end_onnx_matches_tensorflow_on_real_music(tmp_path):
    pytest.importorskip("musicnn")
    from training import musicnn_onnx as C

    x = _real_music(12 * M.SAMPLE_RATE, k=3) if (FOUR_Q / "manifest.csv").exists() else \
        tone(220.0, 12.0) + tone(331.0, 12.0, amp=0.1)
    batch = np.stack([M.patch_mel(x[s:s + M.PATCH_SAMPLES]) for s in M.patch_starts(x.size)])
    graph, sess, ph, emb, tags = C.tf_graph()
    shipped = REPO / "engines" / "models" / M.FRONT_END_ONNX
    assert C.parity(shipped, sess, ph, emb, tags, batch) < 1e-4
    # and the converter reproduces it
    out = tmp_path / "fe.onnx"
    facts = C.convert(out)
    assert facts["parity_max_abs_diff"] < 1e-4 and facts["opset"] <= 18
    assert C.parity(out, sess, ph, emb, tags, batch) < 1e-4
    sess.close()


def test_shipped_front_end_card_names_licence_and_data():
    from engines.models import sha256_of

    p = REPO / "engines" / "models" / M.FRONT_END_ONNX
    card = json.loads(p.with_suffix(".json").read_text())
    assert card["onnx_sha256"] == sha256_of(p)
    assert "ISC" in card["licence"] and "Jordi Pons" in card["licence"]
    assert "Million Song Dataset" in " ".join(card["training_data"]["corpora"])
    assert card["front_end"] == M.front_end_params()


def test_window_means_pool_the_grid_patches_inside_each_window():
    emb = np.arange(14, dtype=np.float32)[:, None] * np.ones((1, 200), np.float32)
    w = M.window_means(emb, 30 * 16000, 160000, 32000)
    assert w.shape == (11, 200)
    np.testing.assert_allclose(w[:, 0], [np.mean(range(k, k + 4)) for k in range(11)])
