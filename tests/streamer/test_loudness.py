"""The numpy K-weighting (truncated impulse response, FFT convolution) against the recursive
filter it replaces (``scipy.signal.sosfilt``, imported here only), per window and per stream."""

import numpy as np
import pytest

from streamer import loudness as L
from streamer.features import DEFAULT_PARAMS, extract
from streamer.inputs import InputWindowStream
from streamer.sources import open_source
from streamer.window import RingBuffer

from conftest import REPO, SR

EXAMPLE = REPO / "examples" / "heldout_mix.ogg"
#: bound on |new - sosfilt| in LU (the truncated tail and float64 rounding give ~1e-11)
TOL_LU = 1e-6


def sosfilt_loudness(x: np.ndarray, fs: int = SR) -> float:
    """The former definition: the two biquads run recursively from rest over the window."""
    from scipy.signal import sosfilt

    z = sosfilt(L.k_weighting(float(fs)).copy(), np.asarray(x, np.float64))
    block, step = int(round(L.BLOCK_S * fs)), int(round(L.STEP_S * fs))
    if z.size < block:
        ms = float(np.mean(z * z))
        return -0.691 + 10.0 * np.log10(ms) if ms > 0 else float("-inf")
    csum = np.concatenate(([0.0], np.cumsum(z * z)))
    starts = np.arange(0, z.size - block + 1, step)
    return L.gated_loudness((csum[starts + block] - csum[starts]) / block)


@pytest.fixture(scope="module")
def programme() -> np.ndarray:
    with open_source(str(EXAMPLE)) as src:
        return np.concatenate(list(src.blocks()))


def test_impulse_response_is_the_recursive_filter():
    from scipy.signal import sosfilt

    h = L.k_weighting_ir(float(SR))
    imp = np.zeros(4 * h.size)
    imp[0] = 1.0
    ref = sosfilt(L.k_weighting(float(SR)).copy(), imp)
    np.testing.assert_allclose(h, ref[:h.size], rtol=0, atol=1e-12)
    assert np.abs(ref[h.size:]).sum() < L.IR_TAIL


@pytest.mark.parametrize("n", [3000, 6400, 48128, 3 * SR, 10 * SR])
def test_window_loudness_equals_sosfilt(programme, n):
    starts = range(0, programme.size - n, 7 * SR + 123)
    got = np.array([L.integrated_loudness(programme[s:s + n], SR) for s in starts])
    want = np.array([sosfilt_loudness(programme[s:s + n]) for s in starts])
    assert np.isfinite(want).all()
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL_LU)
    # a K-weighted signal: a long output of the FFT convolution equals the recursive filter
    from scipy.signal import sosfilt
    x = programme[:n].astype(np.float64)
    np.testing.assert_allclose(L.k_weight(x, SR), sosfilt(L.k_weighting(float(SR)).copy(), x), rtol=0, atol=1e-9)


@pytest.mark.parametrize("block", [1600, 8000, 64000])
def test_stream_loudness_equals_each_window_alone(programme, block):
    """Windows on the stream's grid take their loudness from the once-filtered stream, whatever
    the block size, and it equals the window measured alone (the former per-window sosfilt)."""
    n, hop = 10 * SR, 2 * SR
    ring = RingBuffer(n + 64000)
    kw = L.KWeightedStream(ring.capacity, SR, L.stream_grid(1600, [hop, SR]))
    got, want = [], []
    for i in range(0, programme.size, block):
        ring.write(programme[i:i + block])
        kw.update(ring)
        while len(got) * hop + n <= ring.total:
            s = len(got) * hop
            got.append(kw.window_loudness(ring.view(s, n), s))
            want.append(sosfilt_loudness(ring.view(s, n)))
    assert len(got) == (programme.size - n) // hop + 1 and None not in got
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL_LU)
    # off the grid, or gone from the ring: not measured from the stream
    assert kw.window_loudness(ring.view(ring.total - n - 1, n), ring.total - n - 1) is None
    assert kw.window_loudness(programme[:n], 0) is None


def test_silence_and_quiet_stream():
    ring = RingBuffer(5 * SR)
    kw = L.KWeightedStream(ring.capacity, SR, 1600)
    ring.write(np.zeros(3 * SR, np.float32))
    kw.update(ring)
    assert kw.window_loudness(ring.view(0, 3 * SR), 0) == float("-inf") == L.integrated_loudness(np.zeros(3 * SR), SR)
    with pytest.raises(ValueError):
        L.KWeightedStream(SR, SR, 1000)  # does not divide the 100 ms step


def test_stream_features_equal_extract(programme):
    """The pipeline's window features (frames and loudness from the stream) equal extract()."""
    ws = InputWindowStream({"speech": ("mix", 3 * SR, SR), "music": ("mix", 10 * SR, 2 * SR)}, 8000, DEFAULT_PARAMS)
    seen = 0
    for wins in ws.push({"mix": programme[:40 * SR]}):
        for w in wins:
            assert ws.gain_db(w) is not None
            np.testing.assert_allclose(ws.features(w), extract(w.samples), rtol=0, atol=1e-4)
            seen += 1
    assert seen == 38 + 16
