import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from streamer.errors import ParameterError
from streamer.window import RingBuffer, WindowStream


def _whole(x, length, hop):
    starts = range(0, x.size - length + 1, hop)
    return [(s, x[s:s + length]) for s in starts]


def _collect(x, chunks, specs, block_max=4000):
    ws = WindowStream(specs, block_max)
    got = {k: [] for k in specs}
    i = 0
    for n in chunks:
        for wins in ws.push({stem: x[i:i + n] for stem in ws.rings}):
            for w in wins:
                got[w.key].append((w.start, w.samples.copy()))
        i += n
    return ws, got


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=9000), min_size=1, max_size=40),
       st.integers(min_value=50, max_value=3000), st.integers(min_value=1, max_value=1500))
def test_chunked_windows_equal_whole_signal_windows(chunks, length, hop):
    x = np.arange(sum(chunks), dtype=np.float32)
    _, got = _collect(x, chunks, {"a": ("mix", length, hop), "b": ("mix", 2 * length, 3 * hop)})
    for key, (ln, hp) in {"a": (length, hop), "b": (2 * length, 3 * hop)}.items():
        want = _whole(x, ln, hp)
        assert [s for s, _ in got[key]] == [s for s, _ in want]
        for (_, a), (_, b) in zip(got[key], want):
            np.testing.assert_array_equal(a, b)


def test_windows_are_views_not_copies():
    ws = WindowStream({"speech": ("mix", 480, 160)}, 1000)
    wins = [w for batch in ws.push({"mix": np.ones(1000, np.float32)}) for w in batch]
    ring = ws.rings["mix"]
    assert wins and all(np.shares_memory(w.samples, ring._buf) for w in wins)
    assert not wins[0].samples.flags.writeable


def test_tail_covers_the_end_and_pads_short_streams():
    ws, got = _collect(np.arange(2500, dtype=np.float32), [2500], {"s": ("mix", 1000, 1000)})
    assert [s for s, _ in got["s"]] == [0, 1000]
    (tail,) = ws.flush()
    assert (tail.start, tail.end) == (1500, 2500)
    np.testing.assert_array_equal(tail.samples, np.arange(1500, 2500))
    assert ws.flush() == []  # nothing new since

    short = WindowStream({"s": ("mix", 1000, 500)}, 1000)
    assert list(short.push({"mix": np.ones(300, np.float32)})) == []
    (t,) = short.flush()
    assert (t.start, t.end) == (0, 300) and t.samples.size == 1000 and t.samples[300:].sum() == 0


def test_separate_rings_per_stem():
    ws = WindowStream({"speech": ("speech", 100, 100), "music": ("music", 200, 100)}, 500)
    batches = list(ws.push({"speech": np.zeros(300, np.float32), "music": np.ones(300, np.float32)}))
    wins = [w for b in batches for w in b]
    assert all(w.samples.sum() == 0 for w in wins if w.key == "speech")
    assert all(w.samples.sum() == 200 for w in wins if w.key == "music")


def test_ring_refuses_overwritten_or_future_samples():
    r = RingBuffer(100)
    r.write(np.arange(80, dtype=np.float32))
    r.write(np.arange(80, 160, dtype=np.float32))
    np.testing.assert_array_equal(r.view(60, 100), np.arange(60, 160))
    with pytest.raises(ParameterError):
        r.view(59, 10)
    with pytest.raises(ParameterError):
        r.view(150, 20)
    with pytest.raises(ParameterError):
        r.write(np.zeros(101, np.float32))


def test_cached_frame_features_equal_per_window_extraction(rng):
    from streamer.features import DEFAULT_PARAMS, extract

    x = (rng.standard_normal(16000 * 9) * np.linspace(0.001, 0.3, 16000 * 9)).astype(np.float32)
    x[40000:60000] = 0.0  # silence inside, to exercise the floor
    from streamer.inputs import InputWindowStream

    ws = InputWindowStream({"speech": ("mix", 48000, 16000), "music": ("mix", 80000, 24000)}, 7000, DEFAULT_PARAMS)
    n = 0
    i = 0
    for size in rng.integers(500, 7000, 100):
        for wins in ws.push({"mix": x[i:i + size]}):
            for w in wins:
                got = ws.features(w)
                assert ws.mels["mix"].covers(w.start, got.shape[0])
                np.testing.assert_allclose(got, extract(x[w.start:w.end]), atol=2e-3)
                n += 1
        i += size
        if i >= x.size:
            break
    assert n >= 8
    for w in ws.flush():  # tail windows are off the frame grid: computed directly
        np.testing.assert_allclose(ws.features(w), extract(w.samples), atol=1e-5)


def test_window_plan_from_card_and_override():
    from streamer.window import WindowPlan, window_plans

    card = {"window_s": 3.0, "hop_s": 1.0}
    assert WindowPlan.from_card(card) == WindowPlan(48000, 16000, 1.0)
    assert WindowPlan.from_card(card, 0.5, "speech") == WindowPlan(48000, 8000, 0.5)
    plans = window_plans({"speech": card, "music": {"window_s": 10.0, "hop_s": 2.0}}, {"music": 2.5})
    assert (plans["speech"].length, plans["speech"].hop) == (48000, 16000)
    assert (plans["music"].length, plans["music"].hop) == (160000, 40000)
    from streamer.errors import EmotrackError

    with pytest.raises(EmotrackError, match="--speech-hop -1.0 must be > 0"):
        WindowPlan.from_card(card, -1.0, "speech")


def test_caches_derived_ahead_equal_the_written_ones(rng):
    """InputWindowStream.derive (the separator's thread, ahead of push) fills the log-mel frames and
    K-weighted energies with the numbers push would, also when it takes over mid-stream."""
    from streamer.features import DEFAULT_PARAMS
    from streamer.inputs import InputWindowStream

    x = (rng.standard_normal(16000 * 30) * np.linspace(0.001, 0.3, 16000 * 30)).astype(np.float32)
    spec = {"speech": ("speech", 48000, 16000), "music": ("music", 160000, 32000)}
    here = InputWindowStream(spec, 7000, DEFAULT_PARAMS)
    ahead = InputWindowStream(spec, 7000, DEFAULT_PARAMS, lead_samples=64000)
    feats_here, feats_ahead, i = [], [], 0
    for n, size in enumerate(rng.integers(300, 9000, 200)):
        stems = {"speech": x[i:i + size], "music": x[i:i + size][::-1].copy()}
        if n == 5:
            ahead.derive_elsewhere = True
        if ahead.derive_elsewhere:
            ahead.derive(stems)
        for wins in here.push(stems):
            feats_here += [here.features(w) for w in wins]
        for wins in ahead.push(stems):
            feats_ahead += [ahead.features(w) for w in wins]
        i += size
        if i >= x.size:
            break
    assert len(feats_here) > 20 and all(np.array_equal(a, b) for a, b in zip(feats_here, feats_ahead))
    for stem in ("speech", "music"):
        assert here.mels[stem].done == ahead.mels[stem].done and here.loudness[stem].done == ahead.loudness[stem].done
        k = here.mels[stem].done
        np.testing.assert_array_equal(here.mels[stem].frames(k - 500, k), ahead.mels[stem].frames(k - 500, k))
