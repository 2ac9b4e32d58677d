"""Cross-channel batching: several streams, one batched inference, real ONNX Runtime."""

import json
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf

from engines.runtime import load_model
from streamer import schema
from streamer.batching import BatchedInference, BatchWorker, StreamPublisher, run_batched, run_live
from streamer.errors import InputError
from streamer.pipeline import Pipeline
from streamer.publish import Publisher
from streamer.separation import make_separator
from streamer.sources import ArraySource, PacedSource, Source

from conftest import REPO, SR, emotrack_cmd, tone

HEARTBEAT = 1e6  # no heartbeats: they depend on wall time, not on the audio


def _models(paths):
    return {s: load_model(p, s, backend="onnxruntime") for s, p in paths.items()}


def _signal(seed, seconds):
    r = np.random.default_rng(seed)
    x = np.concatenate([tone(150 + 90 * ((i * (seed + 1)) % 7), 1.0, amp=0.03 + 0.05 * ((i + seed) % 5))
                        for i in range(int(seconds))])
    return x + (r.standard_normal(x.size) * 0.02).astype(np.float32)


def _lines(path):
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def _single(models, name, source, tmp_path):
    out = tmp_path / f"single-{name}.jsonl"
    pub = Publisher(name, None, str(out))
    try:
        Pipeline(models, pub, make_separator("none"), heartbeat_s=HEARTBEAT).run(source)
    except InputError:
        pass
    pub.close()
    return _lines(out)


def _batched(models, named_sources, tmp_path, max_batch=16, live=False, budget_ms=20.0):
    out = tmp_path / "multi.jsonl"
    pub = Publisher("multi", None, str(out))
    engine = BatchedInference(models, max_batch=max_batch)
    streams = [(n, s, Pipeline(models, StreamPublisher(pub, n), make_separator("none"), heartbeat_s=HEARTBEAT,
                               block_max_s=0.1 if s.live else 4.0))
               for n, s in named_sources]
    if live:
        worker = BatchWorker(engine, latency_budget_ms=budget_ms)
        try:
            results = run_live(streams, worker)
        finally:
            worker.close()
    else:
        worker = None
        results = run_batched(streams, engine)
    pub.close()
    return results, engine, worker, _lines(out)


def assert_same_messages(single, multi, tol=1.01e-4):
    """Per topic, in order: same seq, times, fields; values within tol."""
    for topic in schema.TOPICS:
        a = [m for m in single if m["topic"] == topic]
        b = [m for m in multi if m["topic"] == topic]
        assert len(a) == len(b), topic
        for ma, mb in zip(a, b):
            assert ma["seq"] == mb["seq"] and ma["stream"] == mb["stream"]
            if topic == "status":
                assert ma["event"] == mb["event"]
                if ma["event"] == "end":
                    assert ma["reason"] == mb["reason"]
                    for k in ("windows", "published", "stream_time", "samples_in"):
                        assert ma["counters"][k] == mb["counters"][k], k
                if ma["event"] == "start":
                    assert {k: ma[k] for k in ("models", "windows", "separator")} == \
                           {k: mb[k] for k in ("models", "windows", "separator")}
                continue
            assert (ma["t_start"], ma["t_end"], ma["model"], ma["source"]) == \
                   (mb["t_start"], mb["t_end"], mb["model"], mb["source"])
            for k in ("valence", "arousal", "activity"):
                assert ma[k] == pytest.approx(mb[k], abs=tol), k
            assert ma["probs"] == pytest.approx(mb["probs"], abs=tol)
        seqs = [m["seq"] for m in b]
        assert seqs == list(range(len(seqs)))


def _by_stream(lines, name):
    return [m for m in lines if m["stream"] == name]


def test_n_streams_batched_equal_n_single_runs(tiny_models, tmp_path):
    models = _models(tiny_models)
    lengths = {"a": 25.0, "b": 13.5, "c": 4.2, "d": 31.0}  # different lengths: streams end at different rounds
    sigs = {n: _signal(i, 40)[:int(s * SR)] for i, (n, s) in enumerate(lengths.items())}
    results, engine, _, multi = _batched(models, [(n, ArraySource(x, name=n, block_size=SR // 2))
                                                  for n, x in sigs.items()], tmp_path)
    assert all(r.error is None for r in results)
    for n, x in sigs.items():
        single = _single(models, n, ArraySource(x, name=n, block_size=SR // 2), tmp_path)
        assert len(single) > 3
        assert_same_messages(single, _by_stream(multi, n))
    for ln in multi:
        topic = ln.pop("topic")
        schema.validate(topic, ln)
    # batches really mix streams, and every window ran exactly once
    assert max(k for _, _, k in engine.batches) == 4
    n_windows = sum(r.stats.windows["speech"] + r.stats.windows["music"] for r in results)
    assert sum(n for _, n, _ in engine.batches) == n_windows


def test_max_batch_is_respected_and_changes_nothing(tiny_models, tmp_path):
    models = _models(tiny_models)
    sigs = {f"s{i}": _signal(i, 12) for i in range(5)}
    results, engine, _, multi = _batched(models, [(n, ArraySource(x, name=n, block_size=SR)) for n, x in sigs.items()],
                                         tmp_path, max_batch=2)
    sizes = [n for _, n, _ in engine.batches]
    assert max(sizes) == 2 and all(1 <= n <= 2 for n in sizes)
    assert any(k == 2 for _, _, k in engine.batches)  # a batch of 2 holds two streams
    for n, x in sigs.items():
        assert_same_messages(_single(models, n, ArraySource(x, name=n, block_size=SR), tmp_path),
                             _by_stream(multi, n))


class _Dying(Source):
    """Yields 5 s of audio, then fails like a dead stream."""

    def blocks(self):
        yield tone(300, 5.0)
        raise InputError("stream died")


def test_a_dying_stream_among_good_ones(tiny_models, tmp_path):
    models = _models(tiny_models)
    sigs = {"good1": _signal(1, 20), "good2": _signal(2, 9)}
    named = [("good1", ArraySource(sigs["good1"], name="good1")), ("bad", _Dying("bad")),
             ("good2", ArraySource(sigs["good2"], name="good2"))]
    results, engine, _, multi = _batched(models, named, tmp_path)
    by = {r.name: r for r in results}
    assert isinstance(by["bad"].error, InputError) and by["bad"].stats.reason == "error: stream died"
    assert by["good1"].error is None and by["good2"].error is None
    bad = _by_stream(multi, "bad")
    assert bad[-1]["event"] == "end" and bad[-1]["reason"] == "error: stream died"
    assert sum(m["topic"] == "emotion.speech" for m in bad) == 3  # what it produced before dying is kept
    assert_same_messages(_single(models, "bad", _Dying("bad"), tmp_path), bad)
    for n, x in sigs.items():
        assert_same_messages(_single(models, n, ArraySource(x, name=n), tmp_path), _by_stream(multi, n))


def test_cli_several_inputs_one_bad(tmp_path, tiny_models):
    d1, d2 = tmp_path / "x", tmp_path / "y"
    d1.mkdir(), d2.mkdir()
    sf.write(d1 / "a.wav", _signal(3, 6), SR)
    sf.write(d2 / "a.wav", _signal(4, 5), SR)  # same stem: named a-2
    bad = tmp_path / "broken.wav"
    bad.write_text("definitely not audio " * 100)
    out = tmp_path / "o.jsonl"
    tiny = ["--speech-model", str(tiny_models["speech"]), "--music-model", str(tiny_models["music"])]
    proc = subprocess.run(emotrack_cmd("replay", str(d1 / "a.wav"), str(bad), str(d2 / "a.wav"),
                                       str(tmp_path / "missing.wav"), "--no-pub", "--out", str(out), "-q", *tiny),
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 3, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert err[0].startswith("emotrack: broken: ") and "cannot decode" in err[0]
    assert err[1].startswith("emotrack: missing: ") and "no such file" in err[1]
    lines = _lines(out)
    ends = {m["stream"]: m for m in lines if m.get("event") == "end"}
    assert set(ends) == {"a", "a-2", "broken", "missing"}
    assert ends["a"]["reason"] == ends["a-2"]["reason"] == "end of input"
    assert ends["broken"]["reason"].startswith("error: ") and ends["missing"]["reason"].startswith("error: ")
    assert sum(m["stream"] == "a-2" and m["topic"] == "emotion.speech" for m in lines) == 3
    # single-input runs give the same messages
    single = subprocess.run(emotrack_cmd("replay", str(d2 / "a.wav"), "--name", "a-2", "--no-pub", "--heartbeat", "1000",
                                         "--out", str(tmp_path / "s.jsonl"), "-q", *tiny),
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert single.returncode == 0, single.stderr
    emo = [m for m in lines if m["stream"] == "a-2" and m["topic"] != "status"]
    assert_same_messages([m for m in _lines(tmp_path / "s.jsonl") if m["topic"] != "status"], emo)


def test_cli_name_needs_one_input(tmp_path):
    proc = subprocess.run(emotrack_cmd("replay", "a.wav", "b.wav", "--name", "x", "--no-pub"),
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2 and "--name works with one INPUT only" in proc.stderr


def test_worker_respects_max_batch_and_latency_budget(tiny_models):
    models = _models(tiny_models)
    engine = BatchedInference(models, max_batch=3)
    worker = BatchWorker(engine, latency_budget_ms=300.0)
    frames = models["speech"].frames
    x = np.random.default_rng(0).standard_normal((8, frames, 64, 3)).astype(np.float32)
    try:
        # a lone window is not held forever: it runs when the budget is spent, alone
        t0 = time.monotonic()
        lone = worker.submit("speech", {"features": x[0]})
        out = lone.result(timeout=30)
        assert time.monotonic() - t0 >= 0.25
        assert engine.batches == [("speech", 1, 1)]
        ref = models["speech"].predict(x[:1])
        assert out["va"] == pytest.approx(ref["va"], abs=1e-5)
        # a burst is cut at max_batch, well before the budget
        engine.batches.clear()
        got = []
        futs = [worker.submit("speech", {"features": x[i]}, tag=i % 2, callback=lambda f: got.append(f)) for i in range(7)]
        outs = [f.result(timeout=30) for f in futs]
        assert len(got) == 7
        sizes = [n for _, n, _ in engine.batches]
        assert sum(sizes) == 7 and max(sizes) == 3 and all(n <= 3 for n in sizes)
        full = models["speech"].predict(x[:7])
        for i, o in enumerate(outs):
            assert o["va"][0] == pytest.approx(full["va"][i], abs=1e-5)
        assert worker.gathers[1][0] < 0.25  # the first full gather did not wait for the budget
    finally:
        worker.close()


def test_live_channels_share_one_worker(tiny_models, tmp_path):
    models = _models(tiny_models)
    sigs = {f"ch{i}": _signal(i, 12)[:int((11 + i * 0.7) * SR)] for i in range(3)}
    named = [(n, PacedSource(ArraySource(x, name=n), block_s=0.1, speed=8.0)) for n, x in sigs.items()]
    try:
        results, engine, worker, multi = _batched(models, named, tmp_path, max_batch=4, live=True, budget_ms=50.0)
    finally:
        for _, s in named:
            s.close()
    assert all(r.error is None for r in results)
    assert all(r.stats.hop_latency_ms for r in results)
    for n, x in sigs.items():
        single = _single(models, n, ArraySource(x, name=n, block_size=SR // 10), tmp_path)
        assert_same_messages([m for m in single if m["topic"] != "status"],
                             [m for m in _by_stream(multi, n) if m["topic"] != "status"])
        ends = [m for m in _by_stream(multi, n) if m.get("event") == "end"]
        assert len(ends) == 1 and ends[0]["reason"] == "end of input" and "hop_latency_ms" in ends[0]
    sizes = [n for _, n, _ in engine.batches]
    assert all(n <= 4 for n in sizes)
    assert max(k for _, _, k in engine.batches) > 1  # windows of several channels in one batch


def test_any_backend_and_its_profile_limit(tiny_models, tmp_path):
    """BatchedInference only uses Backend.run; a backend with a largest batch (a TensorRT profile) caps it."""
    from engines.backends import Backend
    from engines.runtime import LoadedModel

    class Profiled(Backend):
        name, description, max_batch = "profiled", "stand-in with a batch-3 profile", 3

        def __init__(self, inner):
            self.inner, self.seen = inner, []

        def run(self, inputs):
            self.seen.append(inputs["features"].shape[0])
            assert inputs["features"].shape[0] <= self.max_batch
            return self.inner.run(inputs)

    ort = _models(tiny_models)
    models = {s: LoadedModel(m.path, m.card, Profiled(m.backend)) for s, m in ort.items()}
    sigs = {f"p{i}": _signal(i, 8) for i in range(5)}
    results, engine, _, multi = _batched(models, [(n, ArraySource(x, name=n, block_size=SR)) for n, x in sigs.items()],
                                         tmp_path, max_batch=16)
    assert engine.max_batch == {"speech": 3, "music": 3}
    assert max(models["speech"].backend.seen) == 3
    for n, x in sigs.items():
        assert_same_messages(_single(ort, n, ArraySource(x, name=n, block_size=SR), tmp_path), _by_stream(multi, n))


def test_cli_several_inputs_realtime_uses_the_live_worker(tmp_path, tiny_models):
    for i, sec in enumerate((3.5, 3.0)):
        sf.write(tmp_path / f"r{i}.wav", _signal(i, 4)[:int(sec * SR)], SR)
    out = tmp_path / "o.jsonl"
    proc = subprocess.run(emotrack_cmd("replay", str(tmp_path / "r0.wav"), str(tmp_path / "r1.wav"), "--realtime",
                                       "--latency-budget", "30", "--no-pub", "--out", str(out),
                                       "--speech-model", str(tiny_models["speech"]),
                                       "--music-model", str(tiny_models["music"])),
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    lines = _lines(out)
    for name, n_speech in (("r0", 2), ("r1", 1)):
        msgs = _by_stream(lines, name)
        assert sum(m["topic"] == "emotion.speech" for m in msgs) == n_speech
        assert msgs[0]["event"] == "start" and msgs[0]["live"] is True
        assert msgs[-1]["event"] == "end" and msgs[-1]["reason"] == "end of input" and "hop_latency_ms" in msgs[-1]
