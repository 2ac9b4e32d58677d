import json
import threading

import numpy as np
import pytest

from engines.runtime import load_model
from streamer import schema
from streamer.errors import InputError
from streamer.pipeline import Pipeline
from streamer.publish import Publisher
from streamer.separation import make_separator
from streamer.sources import ArraySource, PacedSource, Source

from conftest import REPO as ROOT, SR, tone


def _models(paths):
    return {s: load_model(p, s, backend="onnxruntime") for s, p in paths.items()}


def _run(paths, source, tmp_path, name="out.jsonl", **kw):
    out = tmp_path / name
    pub = Publisher("t", None, str(out))
    stats = Pipeline(_models(paths), pub, make_separator("none"), **kw).run(source)
    pub.close()
    return stats, [json.loads(ln) for ln in out.read_text().splitlines()]


def _signal(rng, seconds):
    x = np.concatenate([tone(220 * (1 + i % 3), 1.0, amp=0.05 + 0.1 * (i % 4)) for i in range(int(seconds))])
    return x + (rng.standard_normal(x.size) * 0.01).astype(np.float32)


def test_windows_times_and_seq(tiny_models, tmp_path, rng):
    x = _signal(rng, 25)
    stats, lines = _run(tiny_models, ArraySource(x, block_size=SR // 2), tmp_path)
    speech = [ln for ln in lines if ln["topic"] == "emotion.speech"]
    music = [ln for ln in lines if ln["topic"] == "emotion.music"]
    # 3 s windows every 1 s over 25 s: starts 0..22 (23 windows), no tail needed
    assert [m["t_start"] for m in speech] == [float(i) for i in range(23)]
    # 10 s every 2 s: starts 0..14 (8 windows) + one tail window ending at 25 s
    assert [m["t_start"] for m in music] == [float(i) for i in range(0, 16, 2)] + [15.0]
    assert music[-1]["t_end"] == 25.0
    for topic in ("emotion.speech", "emotion.music", "status"):
        seqs = [ln["seq"] for ln in lines if ln["topic"] == topic]
        assert seqs == list(range(len(seqs)))
    for ln in lines:
        topic = ln.pop("topic")
        schema.validate(topic, ln)
    status = [ln for ln in lines if "event" in ln]
    assert status[0]["event"] == "start" and status[-1]["event"] == "end"
    assert status[-1]["counters"]["windows"] == {"speech": 23, "music": 9}
    assert stats.stream_seconds == pytest.approx(25.0)


def test_chunking_does_not_change_results(tiny_models, tmp_path, rng):
    x = _signal(rng, 14)
    _, a = _run(tiny_models, ArraySource(x, block_size=x.size), tmp_path, "a.jsonl")
    sizes = rng.integers(1, 9000, 200)
    chunks, i = [], 0
    for n in sizes:
        chunks.append(x[i:i + n])
        i += n
    chunks.append(x[i:])
    _, b = _run(tiny_models, ArraySource(iter(chunks)), tmp_path, "b.jsonl")

    def emo(lines):
        keys = ("topic", "seq", "t_start", "t_end", "valence", "arousal", "activity", "quadrant", "probs")
        rows = [{k: ln[k] for k in keys} for ln in lines if ln["topic"].startswith("emotion")]
        return sorted(rows, key=lambda r: (r["topic"], r["seq"]))  # batching may interleave topics
    ea, eb = emo(a), emo(b)
    assert len(ea) == len(eb) > 10
    for ra, rb in zip(ea, eb):
        # frames are computed in different groupings: equal up to float rounding
        assert {k: ra[k] for k in ("topic", "seq", "t_start", "t_end")} == {k: rb[k] for k in ("topic", "seq", "t_start", "t_end")}
        for k in ("valence", "arousal", "activity"):
            assert ra[k] == pytest.approx(rb[k], abs=3e-4)
        assert ra["probs"] == pytest.approx(rb["probs"], abs=3e-4)


def test_hop_override(tiny_models, tmp_path, rng):
    _, lines = _run(tiny_models, ArraySource(_signal(rng, 6)), tmp_path, hops_s={"speech": 0.5})
    starts = [ln["t_start"] for ln in lines if ln["topic"] == "emotion.speech"]
    assert starts[:4] == [0.0, 0.5, 1.0, 1.5]


def test_live_paced_path_measures_hop_latency(tiny_models, tmp_path, rng):
    src = PacedSource(ArraySource(_signal(rng, 4)), block_s=0.1)
    stats, lines = _run(tiny_models, src, tmp_path, block_max_s=0.1)
    assert stats.hop_latency_ms and all(0 <= v < 5000 for v in stats.hop_latency_ms)
    end = [ln for ln in lines if ln.get("event") == "end"][0]
    assert set(end["hop_latency_ms"]) == {"p50", "p95", "p99"}


class _Dying(Source):
    """Yields 5 s of audio, then fails like a dead stream."""

    def blocks(self):
        yield tone(300, 5.0)
        raise InputError("stream died")


def test_a_dying_source_keeps_what_was_produced(tiny_models, tmp_path):
    out = tmp_path / "d.jsonl"
    pub = Publisher("t", None, str(out))
    with pytest.raises(InputError, match="stream died"):
        Pipeline(_models(tiny_models), pub, make_separator("none")).run(_Dying("d"))
    pub.close()
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert sum(ln["topic"] == "emotion.speech" for ln in lines) == 3  # 0,1,2 full + tail at 2 -> 3 windows
    end = lines[-1]
    assert end["event"] == "end" and end["reason"] == "error: stream died"


class _DyingBlocks(Source):
    """Yields 0.5 s blocks of ``x``, then fails like a dead stream."""

    def __init__(self, x):
        super().__init__("d")
        self.x = x

    def blocks(self):
        for i in range(0, self.x.size, SR // 2):
            yield self.x[i:i + SR // 2]
        raise InputError("stream died")


def test_a_separator_running_ahead_keeps_what_was_produced(tiny_models, tmp_path, rng):
    """Replay runs the separator beside a presence estimate on a second thread, blocks ahead: when the
    source dies, the blocks in flight are still published (the same messages as block by block); when
    the separator fails, the windows before are published, the error is the run's, no thread is left."""
    from streamer.errors import BackendError
    from streamer.presence import PresenceDetector
    from streamer.separation import Beside, BuiltinSeparator

    class Failing(BuiltinSeparator):
        calls = 0

        def process(self, block):
            Failing.calls += 1
            if Failing.calls == 15:
                raise BackendError("separator failed")
            return super().process(block)

    x = _signal(rng, 12)
    runs = {}
    for name, batch, sep in (("per-hop", 1, BuiltinSeparator), ("ahead", 8, BuiltinSeparator),
                             ("failing", 8, Failing)):
        out = tmp_path / f"{name}.jsonl"
        pub = Publisher("t", None, str(out))
        with pytest.raises((InputError, BackendError)) as e:
            Pipeline(_models(tiny_models), pub, Beside(sep(backend="onnxruntime"), PresenceDetector()),
                     replay_batch=batch).run(_DyingBlocks(x))
        pub.close()
        lines = [json.loads(ln) for ln in out.read_text().splitlines()]
        for ln in lines:
            ln.pop("wall_time", None)
        runs[name] = ([ln for ln in lines if ln["topic"].startswith("emotion")], lines[-1], str(e.value))
    assert runs["per-hop"][2] == runs["ahead"][2] == "stream died"
    assert runs["ahead"][0] == runs["per-hop"][0] and len(runs["ahead"][0]) >= 10
    assert runs["ahead"][1]["reason"] == "error: stream died"
    failed, end, msg = runs["failing"]
    assert msg == "separator failed" and end["event"] == "end" and end["reason"] == "error: separator failed"
    # 14 blocks (7 s) separated: the windows complete by then, the tail flushed after the error
    assert 0 < len(failed) < len(runs["ahead"][0]) and failed[:3] == runs["ahead"][0][:3]
    assert not [t for t in threading.enumerate() if t.name.startswith("emotrack-separator")]
    # a block longer than the separator may run ahead (12 s > 8 s) is separated on the caller's thread
    whole = []
    for batch in (1, 8):
        out = tmp_path / f"whole{batch}.jsonl"
        pub = Publisher("t", None, str(out))
        Pipeline(_models(tiny_models), pub, Beside(BuiltinSeparator(backend="onnxruntime"), PresenceDetector()),
                 replay_batch=batch).run(ArraySource(x, block_size=x.size))
        pub.close()
        whole.append([{k: v for k, v in json.loads(ln).items() if k != "wall_time"}
                      for ln in out.read_text().splitlines() if '"emotion.' in ln])
    assert whole[0] == whole[1] and len(whole[0]) >= 10


def test_stop_event_ends_cleanly(tiny_models, tmp_path, rng):
    stop = threading.Event()
    stop.set()
    out = tmp_path / "s.jsonl"
    pub = Publisher("t", None, str(out))
    st = Pipeline(_models(tiny_models), pub, make_separator("none")).run(ArraySource(_signal(rng, 20), block_size=SR), stop=stop)
    pub.close()
    assert st.reason == "interrupted"
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert lines[-1]["event"] == "end" and lines[-1]["reason"] == "interrupted"


@pytest.mark.parametrize("kind", ["handcrafted", "music_descriptors"])
def test_a_descriptor_model_streams_on_the_descriptors_of_each_window(tmp_path, rng, kind):
    """A model whose card asks for ``handcrafted`` (``music_descriptors``) gets streamer.descriptors.features
    (streamer.music_descriptors.features) of each window."""
    from conftest import build_tiny_model
    from streamer import descriptors, music_descriptors

    describe = {"handcrafted": descriptors.features, "music_descriptors": music_descriptors.features}[kind]
    path = build_tiny_model(tmp_path / "hc", "speech", 3.0, 1.0, seed=4, input_name=kind)
    model = load_model(path, "speech", backend="onnxruntime")
    assert model.input_names == (kind,) and model.frames == 0
    x = _signal(rng, 8)
    out = tmp_path / "hc.jsonl"
    pub = Publisher("t", None, str(out))
    Pipeline({"speech": model}, pub, make_separator("none")).run(ArraySource(x, block_size=SR // 2))
    pub.close()
    msgs = [m for m in map(json.loads, out.read_text().splitlines()) if m["topic"] == "emotion.speech"]
    assert [m["t_start"] for m in msgs] == [float(s) for s in range(6)]
    want = model.predict({kind: np.stack([describe(x[s * SR:(s + 3) * SR]) for s in range(6)])})
    # what is published follows from the model's quadrant probabilities (streamer.taxonomy.agreeing)
    pv = want["quadrant"][:, 0] + want["quadrant"][:, 3]
    pa = want["quadrant"][:, 0] + want["quadrant"][:, 1]
    np.testing.assert_allclose([m["valence"] for m in msgs], 2 * pv - 1, atol=1e-4)
    np.testing.assert_allclose([m["arousal"] for m in msgs], 2 * pa - 1, atol=1e-4)
    np.testing.assert_allclose([[m["probs"][q] for q in schema.QUADRANTS] for m in msgs],
                               np.stack([pv * pa, (1 - pv) * pa, (1 - pv) * (1 - pa), pv * (1 - pa)], 1), atol=1e-4)
    assert len({m["quadrant"] for m in msgs} | {round(m["valence"], 3) for m in msgs}) > 2  # windows differ


@pytest.mark.parametrize("separated", [False, True, "detector"])
def test_replay_batches_equal_per_hop_processing(tmp_path, separated):
    """Replay defers inference and the windows' activity until 16 windows per model wait (one runtime
    call for them, the presence estimate many steps at once): the messages equal per-hop processing
    (batch 1), field for field and in the same order, with the shipped models, the built-in separator
    (or its presence beside the mix, or the presence detector beside it, which per hop computes its
    steps at every block as it did before holding them) and tracking."""
    from engines.cards import MODELS_DIR
    from streamer.presence import PresenceDetector
    from streamer.separation import Beside, BuiltinSeparator, NoneSeparator
    from streamer.sources import open_source

    with open_source(str(ROOT / "examples" / "heldout_mix.ogg")) as src:
        x = np.concatenate(list(src.blocks()))[:45 * SR]
    runs = []
    for batch in (1, 16):
        if separated == "detector":
            det = PresenceDetector(backend="onnxruntime")
            if batch == 1:
                det.HOLD_SAMPLES = 1   # steps at every block
            sep = Beside(BuiltinSeparator(backend="onnxruntime"), det)
        else:
            sep = (BuiltinSeparator(backend="onnxruntime") if separated
                   else NoneSeparator(presence=BuiltinSeparator(backend="onnxruntime", presence_only=True)))
        out = tmp_path / f"b{batch}.jsonl"
        pub = Publisher("t", None, str(out))
        models = _models({s: MODELS_DIR / f"{s}.onnx" for s in ("speech", "music")})
        Pipeline(models, pub, sep, smooth_s={"speech": 4.0, "music": 8.0}, replay_batch=batch,
                 heartbeat_s=1e9).run(ArraySource(x, block_size=SR // 2))
        pub.close()
        lines = [json.loads(ln) for ln in out.read_text().splitlines()]
        for ln in lines:
            ln.pop("wall_time", None)
            ln.pop("realtime_factor", None)
        runs.append([ln for ln in lines if ln["topic"].startswith("emotion")])
    assert len(runs[0]) == 43 + 18 + 1 and "tracked" in runs[0][-1]
    assert runs[0] == runs[1]


def test_a_replays_first_window_is_published_without_waiting_for_a_batch(tiny_models, tmp_path, rng):
    """Replay batches inference (8 windows per call in emotrack replay), but its first windows go out
    as soon as they are complete: the first message is part of the start-up a user waits for."""
    x = _signal(rng, 25)
    pub = Publisher("t", None, str(tmp_path / "out.jsonl"))
    pipe = Pipeline(_models(tiny_models), pub, make_separator("none"), replay_batch=8)
    at = []
    emotion = pub.emotion

    def record(*a, **kw):
        at.append(pipe.windows.total / SR)   # stream time when the message went out
        return emotion(*a, **kw)
    pub.emotion = record
    pipe.run(ArraySource(x, block_size=SR // 2))
    pub.close()
    assert at[0] == 3.0             # the first speech window (0-3 s), once its last block is in
    assert at[1] > 3.0 + 1.0        # later windows wait for their batch (per hop: 4.0 s)
    assert len(at) == 23 + 9
