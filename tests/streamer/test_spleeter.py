"""The Spleeter 2stems backend on the real code path, with a random-weight checkpoint.

The checkpoint is built once for the module in Spleeter's layout
(training.spleeter_checkpoint: spleeter.model.model_fn, a TF1 Saver, .probe); its
weights are seeded random, so the separation is meaningless but deterministic and
every mask varies over time and frequency.  Tolerances, max abs difference relative
to the reference's peak (measured on this checkpoint in brackets): streaming in any
blocks vs the whole signal in one block 1e-5 (0: the segments are the same);
ours vs Spleeter's own TensorFlow path (its STFT and inverse in TF, ours in numpy)
1e-4 (1.3e-5); Spleeter's public Estimator path vs its graph built once 1e-5 (0);
ONNX Runtime vs TensorFlow on the U-Net logits 1e-4 (5e-7), on the separated audio
1e-4 (1.2e-6).
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

pytest.importorskip("spleeter", reason="spleeter is not installed (pip install 'emotrack[separation]')")

import soundfile as sf  # noqa: E402
import soxr  # noqa: E402

from streamer.errors import ModelError  # noqa: E402
from streamer.separation import STEMS, make_separator  # noqa: E402
from streamer.separation import spleeter as sb  # noqa: E402

from conftest import REPO, emotrack_cmd  # noqa: E402

SR = 16000
SR44 = 44100
#: 14 s: two of Spleeter's 512-frame segments (11.9 s each), so one segment border and an end
SECONDS = 14.0


def _signal(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """Tones with slow amplitude modulation, a chirp and noise: masks vary in time and frequency."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.15 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.4 * t))
    x += 0.1 * np.sin(2 * np.pi * (500 + 150 * t) * t)
    x += 0.03 * rng.standard_normal(len(t))
    return x.astype(np.float32)


def _stream(sep, x: np.ndarray, rng, max_block: int):
    """Feed ``x`` in random blocks; return the stems and the largest (input - output) seen."""
    got = {s: [] for s in STEMS}
    i = n_out = lag = 0
    while i < len(x):
        b = int(rng.integers(1, max_block + 1))
        out = sep.process(x[i:i + b])
        i = min(i + b, len(x))
        assert len(out["speech"]) == len(out["music"])
        n_out += len(out["speech"])
        lag = max(lag, i - n_out)
        for s in STEMS:
            got[s].append(out[s])
    tail = sep.flush()
    assert len(tail["speech"]) == len(tail["music"])
    for s in STEMS:
        got[s].append(tail[s])
    return {s: np.concatenate(v) for s, v in got.items()}, lag


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# --------------------------------------------------------------------------- fixtures (built once)

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from training.spleeter_checkpoint import make_random_checkpoint

    return make_random_checkpoint(tmp_path_factory.mktemp("models") / "2stems", seed=0)


@pytest.fixture(scope="module")
def sep(model_dir):
    s = sb.SpleeterSeparator(model_dir)
    yield s
    s.close()


@pytest.fixture(scope="module")
def own(model_dir):
    return sb.SpleeterOwn(model_dir)


@pytest.fixture(scope="module")
def x16():
    return _signal(SECONDS, SR)


@pytest.fixture(scope="module")
def reference16(x16, own):
    """Spleeter's own separation of the whole signal: resampled whole to 44.1 kHz, duplicated
    to stereo, its graph, downmixed, resampled whole back to 16 kHz."""
    up = soxr.resample(x16, SR, SR44, sb.RESAMPLE_QUALITY)
    out = own(np.stack([up, up], axis=1))
    return {stem: soxr.resample(out[inst].mean(axis=1), SR44, SR, sb.RESAMPLE_QUALITY)[:len(x16)]
            for inst, stem in sb.STEM_OF.items()}


@pytest.fixture(scope="module")
def onnx_path(model_dir, tmp_path_factory):
    pytest.importorskip("tf2onnx", reason="tf2onnx is not installed (pip install 'emotrack[training]')")
    from training.spleeter_onnx import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "unet.onnx"
    export_onnx(model_dir, path)
    return path


# --------------------------------------------------------------------------- the model folder

def _fake_model(d, files):
    d.mkdir(parents=True, exist_ok=True)
    for name in files:
        content = 'model_checkpoint_path: "model"\n' if name == "checkpoint" else "x"
        (d / name).write_text(content)
    return d


COMPLETE = [".probe", "checkpoint", "model.index", "model.data-00000-of-00001"]


@pytest.mark.parametrize("files, match", [
    ([], ".probe"),                                           # what a failed download leaves
    ([f for f in COMPLETE if f != ".probe"], ".probe"),
    ([f for f in COMPLETE if f != "checkpoint"], "'checkpoint'"),
    ([f for f in COMPLETE if f != "model.index"], "model.index"),
    ([f for f in COMPLETE if not f.startswith("model.data")], "model.data-00000-of-00001"),
    (COMPLETE[:3] + ["model.data-00000-of-00002"], "model.data-00001-of-00002"),
])
def test_incomplete_model_folders_are_refused_in_one_line(tmp_path, monkeypatch, files, match):
    monkeypatch.setenv("MODEL_PATH", str(tmp_path))
    _fake_model(tmp_path / "2stems", files)
    with pytest.raises(ModelError) as err:
        sb.find_model_dir()
    msg = str(err.value)
    assert "\n" not in msg and match in msg
    assert "MODEL_PATH" in msg and "2stems.tar.gz" in msg and ".probe" in msg
    with pytest.raises(ModelError):  # the separator refuses it before building anything
        sb.SpleeterSeparator()


def test_missing_model_folder_is_refused_and_nothing_is_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_PATH", str(tmp_path))
    with pytest.raises(ModelError, match="no such folder.*MODEL_PATH="):
        sb.find_model_dir()
    # Spleeter's own provider would create the folder and download into it: ours never gets there
    with pytest.raises(ModelError):
        sb.spleeter_own_separate(np.zeros((SR44, 2), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_model_folder_is_found_where_spleeter_looks(model_dir, monkeypatch):
    monkeypatch.setenv("MODEL_PATH", str(model_dir.parent))
    assert sb.find_model_dir() == model_dir
    assert sb.checkpoint_prefix(model_dir) == model_dir / "model"
    monkeypatch.delenv("MODEL_PATH")
    monkeypatch.chdir(model_dir.parent.parent)
    with pytest.raises(ModelError, match="MODEL_PATH is unset"):
        sb.find_model_dir()


def test_random_checkpoint_has_spleeters_layout(model_dir):
    names = {p.name for p in model_dir.iterdir()}
    assert {".probe", "checkpoint", "model.index", "model.data-00000-of-00001", "model.meta"} <= names
    assert 'model_checkpoint_path: "model"' in (model_dir / "checkpoint").read_text()  # relative: movable


# --------------------------------------------------------------------------- the real graph

def test_stems_have_the_input_length_and_are_separated(sep, x16, reference16):
    out, _ = _stream(sep, x16, np.random.default_rng(0), SR)
    for s in STEMS:
        assert out[s].shape == x16.shape and out[s].dtype == np.float32 and np.isfinite(out[s]).all()
    # a separator that did nothing would hand the mix to both stems
    assert min(_rel(out[s], x16) for s in STEMS) > 0.05
    assert _rel(out["speech"], out["music"]) > 0.05
    # the masks are a partition of unity (up to eps) below 11 kHz and zero above: away from the
    # abrupt start and end (broadband clicks), the stems add up to the mix as it comes through
    # the 16 -> 44.1 -> 16 kHz resampling (which drops the band next to 8 kHz)
    round_trip = soxr.resample(soxr.resample(x16, SR, SR44, sb.RESAMPLE_QUALITY), SR44, SR, sb.RESAMPLE_QUALITY)
    inner = slice(SR // 10, len(x16) - SR // 10)
    assert _rel((out["speech"] + out["music"])[inner], round_trip[inner]) < 1e-4


@pytest.mark.parametrize("seed, max_block", [(1, 700), (2, 3 * SR)])
def test_streaming_in_any_blocks_equals_spleeter_on_the_whole_signal(sep, x16, reference16, seed, max_block):
    out, lag = _stream(sep, x16, np.random.default_rng(seed), max_block)
    for s in STEMS:
        assert _rel(out[s], reference16[s]) < 1e-4, s
    # latency_samples is an honest bound: never exceeded, and within 2 % of what happens with small
    # blocks already in the first segment (whose wait lacks the 4096-sample frame of later ones)
    assert lag <= sep.latency_samples
    if max_block < 1000:
        assert lag > 0.98 * sep.latency_samples


def test_whole_signal_in_one_block_equals_streaming(sep, x16):
    a, _ = _stream(sep, x16, np.random.default_rng(3), 5000)
    whole = sep.process(x16)
    tail = sep.flush()
    for s in STEMS:
        b = np.concatenate([whole[s], tail[s]])
        assert len(b) == len(x16)
        assert _rel(a[s], b) < 1e-5


def test_core_at_44k_equals_spleeters_own_separation(sep, own):
    x = _signal(13.0, SR44, seed=4)
    core = sb.SpleeterStream(sep._masks, sep.params)
    rng = np.random.default_rng(4)
    parts, i = [], 0
    while i < len(x):
        b = int(rng.integers(1, 3 * SR44))
        parts.append(core.push(x[i:i + b]))
        i += b
    parts.append(core.finish())
    got = np.concatenate(parts, axis=1)
    ref = own(np.stack([x, x], axis=1))
    assert got.shape == (2, len(x))
    for k, inst in enumerate(sep._masks.instruments):
        assert _rel(got[k], ref[inst].mean(axis=1)) < 1e-4, inst


def test_graph_is_built_once(sep, x16):
    graph = sep.graph
    n_ops = len(graph.get_operations())
    session = sep._masks.session
    runs = sep.session_runs
    for seed in (5, 6):  # two streams, many blocks each
        _stream(sep, x16, np.random.default_rng(seed), SR // 2)
    assert sep.graph is graph and graph.finalized and len(graph.get_operations()) == n_ops
    assert sep._masks.session is session and sep._masks.graph_builds == 1
    # one session run per complete 512-frame segment, plus one at each stream's end
    frames = -(-(int(round(len(x16) * SR44 / SR)) + 4096) // 1024)
    assert sep.session_runs - runs == 2 * (frames // 512 + (frames % 512 > 0))


def test_empty_stream_and_tiny_blocks(sep):
    tail = sep.flush()
    assert all(len(tail[s]) == 0 for s in STEMS)
    out = {s: [] for s in STEMS}
    for _ in range(30):
        r = sep.process(np.full(1, 0.1, np.float32))
        for s in STEMS:
            out[s].append(r[s])
    r = sep.process(np.zeros(0, np.float32))
    assert all(len(r[s]) == 0 for s in STEMS)
    tail = sep.flush()
    assert all(sum(map(len, out[s])) + len(tail[s]) == 30 for s in STEMS)


def test_make_separator_builds_the_spleeter_backend(model_dir):
    s = make_separator("spleeter", model_dir=model_dir)
    try:
        assert isinstance(s, sb.SpleeterSeparator) and s.name == "spleeter" and not s.identity
        assert s.latency_samples > 11.9 * SR
    finally:
        s.close()


def test_spleeters_public_separate_loads_the_checkpoint_as_we_do(model_dir, own):
    # Spleeter's Estimator path silently initialises random weights when it finds no
    # checkpoint: equal outputs prove it loaded ours, and that our layout is its own.
    x = _signal(3.0, SR44, seed=7)
    w = np.stack([x, 0.5 * x], axis=1)
    theirs = sb.spleeter_estimator_separate(w, model_dir)
    ours = own(w)
    for inst in ("vocals", "accompaniment"):
        assert theirs[inst].shape == w.shape
        assert _rel(ours[inst], theirs[inst]) < 1e-5


# --------------------------------------------------------------------------- ONNX

def test_onnx_export_matches_tensorflow(onnx_path, model_dir):
    import onnx

    card = json.loads(onnx_path.with_suffix(".json").read_text())
    assert card["parity"]["max_abs_diff_relative"] < 1e-4
    assert card["weights"].startswith("random weights")
    assert card["inputs"]["mix_spectrogram"]["shape"] == [None, 512, 1024, 2]
    assert list(card["outputs"]) == ["vocals_logits", "accompaniment_logits"]
    m = onnx.load(str(onnx_path))
    assert m.opset_import[0].version <= 18
    ops = {n.op_type for n in m.graph.node}
    assert ops <= {"Conv", "ConvTranspose", "BatchNormalization", "Relu", "LeakyRelu", "Concat",
                   "Reshape", "Transpose", "Identity", "Add", "Mul"}, ops  # no control flow, no sigmoid
    # the runtime="onnx" separator (ONNX Runtime U-Nets, numpy masks) against TensorFlow's
    x = _signal(SECONDS, SR, seed=8)
    tf_sep = sb.SpleeterSeparator(model_dir, runtime="tf")
    onnx_sep = sb.SpleeterSeparator(model_dir, runtime="onnx", onnx_path=onnx_path)
    a, _ = _stream(tf_sep, x, np.random.default_rng(8), 2 * SR)
    b, _ = _stream(onnx_sep, x, np.random.default_rng(9), 2 * SR)
    tf_sep.close()
    for s in STEMS:
        assert len(b[s]) == len(x) and _rel(b[s], a[s]) < 1e-4, s


def test_onnx_runtime_needs_its_file(model_dir):
    with pytest.raises(ModelError, match="training.spleeter_onnx"):
        sb.SpleeterSeparator(model_dir, runtime="onnx")


# --------------------------------------------------------------------------- the command line

def _wav(path, seconds=2.0):
    sf.write(str(path), _signal(seconds, SR), SR)
    return path


def test_cli_with_an_empty_model_folder_exits_4_in_one_line(tmp_path):
    env = dict(os.environ, MODEL_PATH=str(tmp_path / "models"))
    (tmp_path / "models").mkdir()
    proc = subprocess.run(emotrack_cmd("replay", str(_wav(tmp_path / "a.wav")), "--separator", "spleeter",
                                       "--no-pub", "-q"),
                          capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert proc.returncode == 4, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("emotrack: "), err
    assert "MODEL_PATH" in err and "Traceback" not in proc.stderr


def test_cli_replays_through_spleeter(tmp_path, model_dir, tiny_models):
    out = tmp_path / "out.jsonl"
    env = dict(os.environ, MODEL_PATH=str(model_dir.parent))
    proc = subprocess.run(emotrack_cmd("replay", str(_wav(tmp_path / "a.wav", 4.0)), "--separator", "spleeter",
                                       "--no-pub", "-q", "--out", str(out),
                                       "--speech-model", str(tiny_models["speech"]),
                                       "--music-model", str(tiny_models["music"])),
                          capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    topics = {l["topic"] for l in lines}
    assert {"emotion.speech", "emotion.music"} <= topics
    start = next(l for l in lines if l["topic"] == "status" and l["event"] == "start")
    assert start["separator"] == "spleeter"
    end = next(l for l in lines if l["topic"] == "status" and l["event"] == "end")
    assert end["reason"] == "end of input"
