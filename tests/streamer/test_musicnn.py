"""The musicnn front end (numpy log-mel, ONNX graph), its patch grid in streams, and the emotion head."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, REPO, tone
from streamer import musicnn as M, taxonomy

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
    assert M.PATCH_SAMPLES == 48128 and M.GRID == 64000
    assert list(M.patches_in(0, 160000)) == [0, 1]                # a 10 s window holds 2 patches
    assert list(M.patches_in(32000, 192000)) == [1, 2]
    assert list(M.patches_in(16000, 176000)) == [1]               # only whole patches count
    assert list(M.patches_in(0, 40000)) == []
    assert list(M.patches_in(0, 160000, grid=32000)) == [0, 1, 2, 3]
    assert list(M.patch_starts(30 * 16000)) == list(range(0, 7 * 64000, 64000))


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
    from engines.cards import sha256_of

    p = REPO / "engines" / "models" / M.FRONT_END_ONNX
    card = json.loads(p.with_suffix(".json").read_text())
    assert card["onnx_sha256"] == sha256_of(p)
    assert "ISC" in card["licence"] and "Jordi Pons" in card["licence"]
    assert "Million Song Dataset" in " ".join(card["training_data"]["corpora"])
    assert card["front_end"] == M.mel_params()


def test_window_means_pool_the_grid_patches_inside_each_window():
    emb = np.arange(14, dtype=np.float32)[:, None] * np.ones((1, 200), np.float32)
    w = M.window_means(emb, 30 * 16000, 160000, 32000, grid=32000)
    assert w.shape == (11, 200)
    np.testing.assert_allclose(w[:, 0], [np.mean(range(k, k + 4)) for k in range(11)])
    w = M.window_means(emb[:7], 30 * 16000, 160000, 32000)        # the 4 s grid: 2 patches per window
    np.testing.assert_allclose(w[:, 0], [np.mean(list(M.patches_in(s, s + 160000))) for s in range(0, 320001, 32000)])


def _head(seed: int = 0):
    from training.musicnn_head import Head

    r = np.random.default_rng(seed)
    return Head(mean=r.standard_normal(200) * 0.1, std=0.5 + r.random(200), coef=r.standard_normal((4, 200)) * 0.3,
                intercept=r.standard_normal(4) * 0.1, act_coef=r.standard_normal(200) * 0.1, act_intercept=0.5, C=1.0)


def test_head_onnx_matches_numpy(tmp_path, rng):
    from training.musicnn_head import export_head, head_parity

    head = _head()
    p = export_head(head, tmp_path / "head.onnx")
    X = rng.standard_normal((16, 200)).astype(np.float32)
    assert head_parity(head, p, X) < 1e-4
    out = head.outputs(X)
    np.testing.assert_allclose(out["quadrant"].sum(1), 1.0, atol=1e-9)
    assert len(set(out["quadrant"].argmax(1))) > 1  # the windows differ


def test_mlp_head_onnx_matches_numpy(tmp_path, rng):
    """The shipped kind of head: seeded MLP members averaged, fitted for real on separable rows."""
    from training.musicnn_head import export_head, fit_head, head_parity

    y = np.arange(200) % 4
    X = rng.standard_normal((200, 200)) + 2.0 * np.eye(4)[y] @ rng.standard_normal((4, 200))
    head = fit_head(X, y, kind="mlp", members=3, hidden=16, alpha=1.0, Xneg=rng.standard_normal((40, 200)) - 1.0)
    assert head.kind == "mlp" and len(head.mlp) == 3
    assert np.mean(head.probs(X).argmax(1) == y) > 0.9
    p = export_head(head, tmp_path / "mlp_head.onnx")
    assert head_parity(head, p, X[:64].astype(np.float32)) < 1e-4
    with pytest.raises(ValueError, match="all 4 quadrants"):
        fit_head(X[y < 3], y[y < 3], kind="mlp")


def _write_head_model(tmp_path) -> Path:
    from engines.cards import ModelCard
    from training.musicnn_head import export_head, head_card

    head = _head(1)
    p = export_head(head, tmp_path / "music_head.onnx")
    card = head_card(head, p, training_data={"corpora": ["none (random test weights)"]}, protocol="test",
                     metrics={}, parity=0.0, command="tests")
    ModelCard(card).write(p)
    return p


def test_streaming_embeds_each_grid_patch_once(tmp_path, rng):
    from engines.runtime import load_model
    from streamer.pipeline import Pipeline
    from streamer.publish import Publisher
    from streamer.separation import make_separator
    from streamer.sources import ArraySource

    model = load_model(_write_head_model(tmp_path), "music", backend="onnxruntime")
    x = np.concatenate([tone(220.0 * (1 + k % 5), 2.0, amp=0.05 + 0.05 * (k % 3)) for k in range(15)])  # 30 s
    x = x + (rng.standard_normal(x.size) * 0.01).astype(np.float32)
    fe = M.default_front_end()
    before = fe.patches
    out = tmp_path / "m.jsonl"
    pub = Publisher("t", None, str(out))
    Pipeline({"music": model}, pub, make_separator("none")).run(ArraySource(x, block_size=SR_BLOCK))
    pub.close()
    msgs = [m for m in map(json.loads, out.read_text().splitlines()) if m["topic"] == "emotion.music"]
    assert [m["t_start"] for m in msgs] == [float(s) for s in range(0, 21, 2)]  # 11 windows of 10 s
    # 11 windows x 2 patches each, but only the 7 patches of the grid are embedded, once each
    assert fe.patches - before == len(M.patch_starts(x.size)) == 7
    # what streamed equals the offline definition (mean of the clip's grid patches per window)
    emb = M.clip_patches(x, fe)
    want = model.predict({"musicnn": M.window_means(emb, x.size, 160000, 32000)})
    published = [taxonomy.agreeing(p)["probs"] for p in want["quadrant"]]  # the one published relation
    np.testing.assert_allclose([[m["probs"][q] for q in ("Q1", "Q2", "Q3", "Q4")] for m in msgs],
                               [[p[q] for q in ("Q1", "Q2", "Q3", "Q4")] for p in published], atol=1e-4)


SR_BLOCK = 16000 // 2 + 123  # blocks off the grid


def test_a_live_stream_embeds_patches_on_a_worker_with_the_same_results(tmp_path, rng):
    """Live, each grid patch is embedded on a worker thread as soon as it is written (the hop of its
    first window does not pay the front end): the same messages as a replay, each patch still
    embedded once, and the worker gone when the stream ends."""
    import threading

    from engines.runtime import load_model
    from streamer.pipeline import Pipeline
    from streamer.publish import Publisher
    from streamer.separation import make_separator
    from streamer.sources import ArraySource

    class LiveArray(ArraySource):
        live = True   # the live path (per hop, eager patches), unpaced

    model = load_model(_write_head_model(tmp_path), "music", backend="onnxruntime")
    x = np.concatenate([tone(220.0 * (1 + k % 5), 2.0, amp=0.05 + 0.05 * (k % 3)) for k in range(15)])
    x = x + (rng.standard_normal(x.size) * 0.01).astype(np.float32)
    fe = M.default_front_end()
    fe_threads = set()
    embed = fe.embed

    def spy(patches):
        fe_threads.add(threading.current_thread().name)
        return embed(patches)

    fe.embed = spy
    try:
        probs, counts = {}, {}
        for name, cls in (("replay", ArraySource), ("live", LiveArray)):
            before = fe.patches
            out = tmp_path / f"{name}.jsonl"
            pub = Publisher("t", None, str(out))
            Pipeline({"music": model}, pub, make_separator("none")).run(cls(x, block_size=SR_BLOCK))
            pub.close()
            counts[name] = fe.patches - before
            probs[name] = [[m["probs"][q] for q in ("Q1", "Q2", "Q3", "Q4")]
                           for m in map(json.loads, out.read_text().splitlines()) if m["topic"] == "emotion.music"]
    finally:
        del fe.embed
    assert counts == {"replay": 7, "live": 7}
    assert len(probs["live"]) == len(probs["replay"]) == 11
    np.testing.assert_allclose(probs["live"], probs["replay"], atol=1e-5)
    assert any(t.startswith("emotrack-musicnn") for t in fe_threads)   # the live patches went to the worker
    assert not any(t.name.startswith("emotrack-musicnn") for t in threading.enumerate())


def test_a_card_with_another_front_end_is_refused(tmp_path):
    from engines.runtime import load_model
    from streamer.errors import ModelError
    from streamer.pipeline import check_model_features

    p = _write_head_model(tmp_path)
    card = json.loads(p.with_suffix(".json").read_text())
    card["inputs"][0]["front_end"]["target_lufs"] = -23.0
    p.with_suffix(".json").write_text(json.dumps(card))
    model = load_model(p, "music", backend="onnxruntime")
    with pytest.raises(ModelError, match="another front end"):
        check_model_features(model)


@needs_4q
@pytest.mark.parametrize("kind", ["lr", "mlp"])
def test_tiny_head_recipe_beats_chance_on_held_out_artists(kind):
    """The head recipe on a real subset: 120 4Q clips (their first 5 s: two grid patches), artist-grouped;
    trained on two thirds of the artists, scored on the others."""
    import soundfile as sf
    from training.musicnn_head import chance_metrics, fit_head, quadrant_metrics
    from training.experiments.protocols import stratified_group_folds

    with open(FOUR_Q / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))[:120]]
    fe = M.default_front_end()
    n = M.GRID + M.PATCH_SAMPLES
    X = np.stack([M.clip_patches(sf.read(str(FOUR_Q / r["path"]), dtype="float32", frames=n)[0], fe).mean(0)
                  for r in rows])
    y = np.array([("Q1", "Q2", "Q3", "Q4").index(r["quadrant"]) for r in rows])
    fold = stratified_group_folds(y, [r["artist"] for r in rows], 3)
    tr, te = fold != 0, fold == 0
    assert not {r["artist"] for r, t in zip(rows, te) if t} & {r["artist"] for r, t in zip(rows, tr) if t}
    head = fit_head(X[tr], y[tr], C=0.05, kind=kind, members=2)
    got = quadrant_metrics(y[te], head.probs(X[te]).argmax(1))
    chance = chance_metrics(y[tr], y[te])
    assert got["macro_f1"] > max(chance["majority"]["macro_f1"], chance["stratified"]["macro_f1"]) + 0.15
    assert got["arousal_uar"] > 0.6
