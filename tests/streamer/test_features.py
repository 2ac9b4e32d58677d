import numpy as np
import pytest

from streamer import features as F
from streamer.errors import ParameterError
from streamer.loudness import integrated_loudness

from conftest import SR, tone


def test_shape_and_dtype():
    x = tone(440, 3.0)
    f = F.extract(x)
    assert f.shape == (F.DEFAULT_PARAMS.n_frames(x.size), 64, 3) == (298, 64, 3)
    assert f.dtype == np.float32 and np.isfinite(f).all()


def test_tone_energy_lands_in_the_right_mel_band():
    fb = F.mel_filterbank()
    freqs = np.linspace(0, SR / 2, fb.shape[1])
    for hz in (200.0, 1000.0, 4000.0):
        m = F.log_mel(tone(hz, 1.0))
        band = int(np.argmax(m.mean(axis=0)))
        centre = freqs[int(np.argmax(fb[band]))]
        assert abs(centre - hz) / hz < 0.12, (hz, centre)


def test_filterbank_covers_fmin_to_fmax():
    fb = F.mel_filterbank()
    freqs = np.linspace(0, SR / 2, fb.shape[1])
    covered = freqs[fb.sum(axis=0) > 0]
    assert covered.min() >= F.DEFAULT_PARAMS.fmin - 40 and covered.max() <= F.DEFAULT_PARAMS.fmax


def test_delta_of_a_ramp_is_its_slope():
    m = np.tile(np.arange(50, dtype=np.float32)[:, None] * 0.5, (1, 4))
    d = F.delta(m, 9)
    np.testing.assert_allclose(d[4:-4], 0.5, atol=1e-6)
    with pytest.raises(ParameterError):
        F.delta(m, 4)


def test_delta_is_the_regression_formula_to_the_bit(rng):
    """delta (in place, without temporaries) is sum_k k (m[t+k] - m[t-k]) / (2 sum_k k^2) with the
    edges replicated, computed in the same order: the same float32 numbers as the plain formula."""
    for shape in [(298, 64), (7, 3), (1, 64), (5,)]:
        m = (rng.standard_normal(shape) * 30).astype(np.float32)
        for width in (3, 9):
            n, t = width // 2, m.shape[0]
            p = np.pad(m, [(n, n)] + [(0, 0)] * (m.ndim - 1), mode="edge")
            want = np.zeros_like(m)
            for k in range(1, n + 1):
                want += k * (p[n + k:n + k + t] - p[n - k:n - k + t])
            want = want / (2.0 * sum(k * k for k in range(1, n + 1)))
            got = F.delta(m, width)
            assert got.dtype == np.float32 and np.array_equal(got, want)


def test_loudness_normalisation_makes_features_gain_invariant(rng):
    x = (rng.standard_normal(48000) * 0.05).astype(np.float32) + tone(300, 3.0, amp=0.1)
    a, b = F.extract(x), F.extract(x * 0.05)  # 26 dB quieter
    np.testing.assert_allclose(a, b, atol=0.05)


def test_silence_is_finite_and_not_amplified():
    f = F.extract(np.zeros(48000, np.float32))
    assert np.isfinite(f).all()
    assert f[..., 0].max() == pytest.approx(20 * np.log10(F.DEFAULT_PARAMS.amin))


def test_too_short_window_is_a_parameter_error():
    with pytest.raises(ParameterError, match="shorter than one frame"):
        F.extract(np.zeros(100, np.float32))


def test_bs1770_matches_pyloudnorm(rng):
    pyln = pytest.importorskip("pyloudnorm")
    meter = pyln.Meter(SR)
    for x in (tone(1000, 5.0, amp=0.1), (rng.standard_normal(SR * 4) * 0.02),
              np.concatenate([tone(200, 2.0, amp=0.5), np.zeros(SR * 2), tone(3000, 2.0, amp=0.01)])):
        ours = integrated_loudness(np.asarray(x, np.float32), SR)
        assert ours == pytest.approx(meter.integrated_loudness(np.asarray(x, np.float64)), abs=0.1)


def test_silence_has_minus_infinite_loudness():
    assert integrated_loudness(np.zeros(SR * 2), SR) == float("-inf")


def test_params_roundtrip_and_reject_unknown():
    d = F.DEFAULT_PARAMS.to_dict()
    assert F.FeatureParams.from_dict(d) == F.DEFAULT_PARAMS
    with pytest.raises(ParameterError):
        F.FeatureParams.from_dict({**d, "bogus": 1})


def test_mfcc_is_the_orthonormal_dct_of_the_log_mel(rng):
    from scipy.fft import dct, idct

    m = F.extract(tone(440, 3.0) + (rng.standard_normal(48000) * 0.01).astype(np.float32))[..., 0]
    c = F.mfcc_from_logmel(m)
    assert c.shape == (m.shape[0], F.N_MFCC) == (298, 13)
    np.testing.assert_allclose(c, dct(m, type=2, norm="ortho", axis=-1)[:, :13], rtol=1e-4, atol=1e-2)
    full = F.mfcc_from_logmel(m, n_mfcc=64)  # all coefficients: invertible
    np.testing.assert_allclose(idct(full, type=2, norm="ortho", axis=-1), m, atol=1e-2)
    # c0 is the mean level: sqrt(n_mels) * mean over bands
    np.testing.assert_allclose(c[:, 0], m.mean(axis=1) * np.sqrt(64), rtol=1e-4)
    with pytest.raises(ParameterError):
        F.dct_matrix(64, 65)

