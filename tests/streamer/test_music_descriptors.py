"""streamer.music_descriptors on synthetic music whose harmony, roughness and melody are known."""

import numpy as np
import pytest
from streamer import music_descriptors as md

SR = md.SR


def _f(x):
    return dict(zip(md.feature_names(), md.features(x)))


def _note(freqs, seconds, vib_hz=0.0, vib_cents=0.0, harmonics=5):
    """A sum of harmonic tones (one per frequency in ``freqs``), 10 ms fades, optional vibrato."""
    t = np.arange(int(seconds * SR)) / SR
    out = np.zeros(t.size)
    for f in freqs:
        inst = f * 2 ** (vib_cents * np.sin(2 * np.pi * vib_hz * t) / 1200)
        ph = 2 * np.pi * np.cumsum(inst) / SR
        out += sum(0.7 ** (h - 1) * np.sin(h * ph) for h in range(1, harmonics + 1))
    fade = np.minimum(1, np.minimum(t, t[::-1]) / 0.01)
    return out * fade


def _midi(m):
    return 440.0 * 2 ** ((m - 69) / 12)


def _chords(roots, minor, seconds=1.0):
    third = 3 if minor else 4
    return np.concatenate([_note([_midi(r), _midi(r + third), _midi(r + 7)], seconds) for r in roots]) * 0.05


def test_names_shape_and_finite_on_silence_short_and_nan_input():
    n = len(md.feature_names())
    assert n == len(set(md.feature_names())) == 53
    for x in (np.zeros(SR, np.float32), np.zeros(100, np.float32), np.full(3 * SR, np.nan, np.float32)):
        v = md.features(x)
        assert v.shape == (n,) and v.dtype == np.float32 and np.isfinite(v).all()
        assert _f(x)["mel_voiced"] == 0.0          # no melody in silence
    with pytest.raises(ValueError, match="mono"):
        md.features(np.zeros((2, SR), np.float32))


def test_major_chords_read_major_and_minor_chords_minor():
    major = _f(_chords([60, 65, 67, 60, 65, 67], minor=False))  # C F G
    minor = _f(_chords([57, 62, 64, 57, 62, 64], minor=True))   # Am Dm Em
    assert major["chord_major_frac"] > 0.9 and minor["chord_major_frac"] < 0.1
    assert major["chord_dmm_mean"] > 0.05 > -0.05 > minor["chord_dmm_mean"]
    assert major["lkey_dmm_mean"] > 0 > minor["lkey_dmm_mean"]
    assert 0.5 < major["chord_change_rate"] < 2.5      # one chord a second
    assert major["chord_fit_mean"] > 0.8


def test_a_semitone_is_rougher_than_an_octave():
    t = np.arange(3 * SR) / SR
    semitone = 0.1 * (np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 466.2 * t))
    octave = 0.1 * (np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 880 * t))
    assert _f(semitone)["diss_mean"] > 5 * _f(octave)["diss_mean"]


def test_sustained_tones_are_harmonic_and_clicks_percussive():
    rng = np.random.default_rng(0)
    clicks = np.zeros(4 * SR)
    clicks[::SR // 4] = 1.0
    clicks = np.convolve(clicks, rng.standard_normal(64) * np.exp(-np.arange(64) / 8))[:4 * SR]
    assert _f(_chords([60, 65], minor=False, seconds=2.0))["hp_ratio_mean"] > 10 > _f(clicks)["hp_ratio_mean"]


def test_the_melody_is_tracked_with_its_notes_register_and_vibrato():
    scale = [57, 59, 60, 62, 64, 65, 67, 69, 67, 65, 64, 62, 60, 59]     # steps of 1-2 semitones, 2 notes/s
    plain = np.concatenate([_note([_midi(m)], 0.5) for m in scale]) * 0.1
    vib = np.concatenate([_note([_midi(m)], 1.0, vib_hz=5.5, vib_cents=60) for m in scale[:7]]) * 0.1
    p, v = _f(plain), _f(vib)
    assert p["mel_voiced"] > 0.8
    assert 1.5 < p["note_rate"] < 2.5 and p["iv_step_frac"] > 0.8 and p["iv_leap_frac"] < 0.2
    register = np.mean([12 * np.log2(_midi(m) / 55.0) for m in scale])   # semitones above 55 Hz
    assert abs(p["mel_st_mean"] - register) < 1.0
    up = _f(np.concatenate([_note([2 * _midi(m)], 0.5) for m in scale]) * 0.1)
    assert abs(up["mel_st_mean"] - p["mel_st_mean"] - 12) < 1.0
    assert p["vib_frac"] == 0.0
    assert v["vib_frac"] > 0.5 and abs(v["vib_rate"] - 5.5) < 0.6 and v["vib_ext"] > 60


def test_descriptors_do_not_depend_on_the_level():
    x = _chords([60, 65, 67], minor=False) + 0.02 * _note([_midi(72)], 3.0)
    np.testing.assert_allclose(md.features(x * 0.05), md.features(x), rtol=1e-3, atol=1e-4)
