"""Augmentation that imitates other corpora: what changes between two studios, microphones
and speakers, applied to a clean speech clip.

One seeded chain per clip (:func:`imitate`), each step drawn independently:

* loudness: gain U[-20, +6] dB before the noise floor is added (the descriptors see
  R128-normalised audio, so gain matters through the signal-to-noise ratio);
* EQ / channel: a random spectral tilt (+-6 dB per decade around 1 kHz) and, on a third of
  the clips, a telephone-like band (300-3400 Hz) or a small-loudspeaker band (150-7000 Hz);
* reverberation: exponentially decaying noise as the room response, RT60 U[0.15, 0.8] s,
  direct-to-reverberant ratio U[0, 12] dB;
* noise: white or pink (1/f) noise at an SNR of U[10, 35] dB;
* pitch and tempo: resampling by U[0.9, 1.1] (pitch and tempo together, as a tape speed
  change, :func:`training.mixing.speed_perturb`), and on half of the clips a tempo change
  without pitch change, U[0.85, 1.15], by overlap-add of 40 ms frames.

The result is R128-normalised (-23 LUFS), as every clip and streamer window is.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from streamer.features import loudness_normalise

SR = 16000


def _db(x: float) -> float:
    return float(10.0 ** (x / 20.0))


def _fft_filter(x: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """``x`` filtered by a zero-phase magnitude response ``gain`` given on the rfft grid of x."""
    X = np.fft.rfft(x)
    return np.fft.irfft(X * gain, n=x.size).astype(np.float32)


def eq_channel(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Random tilt, and on a third of the clips a band limit (telephone or small loudspeaker)."""
    f = np.fft.rfftfreq(x.size, 1.0 / SR)
    tilt = rng.uniform(-6.0, 6.0)  # dB per decade around 1 kHz
    g_db = tilt * np.log10(np.maximum(f, 50.0) / 1000.0)
    u = rng.random()
    if u < 1 / 6:
        lo, hi = 300.0, 3400.0
    elif u < 1 / 3:
        lo, hi = 150.0, 7000.0
    else:
        lo, hi = None, None
    g = 10.0 ** (g_db / 20.0)
    if lo is not None:
        g = g / np.sqrt(1.0 + (lo / np.maximum(f, 1.0)) ** 8) / np.sqrt(1.0 + (f / hi) ** 8)
    return _fft_filter(x, g)


def reverb(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Convolution with exponentially decaying noise (a synthetic room response)."""
    rt60 = rng.uniform(0.15, 0.8)
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # -60 dB at rt60
    tail[: int(0.002 * SR)] = 0.0
    tail /= np.sqrt(np.sum(tail ** 2)) + 1e-12
    drr = rng.uniform(0.0, 12.0)
    h = tail * _db(-drr)
    h[0] += 1.0
    y = signal.fftconvolve(x, h)[: x.size]
    return y.astype(np.float32)


def noise(rng: np.random.Generator, x: np.ndarray, snr_db: float) -> np.ndarray:
    """White or pink noise at ``snr_db`` re the clip's active-signal power."""
    w = rng.standard_normal(x.size)
    if rng.random() < 0.5:  # pink: 1/f power
        f = np.fft.rfftfreq(x.size, 1.0 / SR)
        w = np.fft.irfft(np.fft.rfft(w) / np.sqrt(np.maximum(f, 20.0)), n=x.size)
    w /= np.sqrt(np.mean(w ** 2)) + 1e-12
    e = x.astype(np.float64) ** 2
    p = np.mean(e[e > 1e-4 * e.max()]) if np.any(e > 0) else 0.0
    return (x + w * np.sqrt(p) * _db(-snr_db)).astype(np.float32)


def tempo(x: np.ndarray, rate: float, frame: int = 640) -> np.ndarray:
    """Tempo change by ``rate`` (> 1: faster) without pitch change: overlap-add of Hann frames
    read at ``rate`` times the hop they are written at."""
    hop = frame // 2
    win = np.hanning(frame).astype(np.float64)
    n_out = int(x.size / rate)
    out = np.zeros(n_out + frame)
    norm = np.zeros(n_out + frame)
    xp = np.pad(x.astype(np.float64), (0, frame))
    for k, o in enumerate(range(0, n_out, hop)):
        i = int(round(o * rate))
        if i >= x.size:
            break
        out[o:o + frame] += xp[i:i + frame] * win
        norm[o:o + frame] += win
    return (out[:n_out] / np.maximum(norm[:n_out], 1e-3)).astype(np.float32)


def speed(rng: np.random.Generator, x: np.ndarray, lo: float = 0.9, hi: float = 1.1) -> np.ndarray:
    """Resample by U[lo, hi]: pitch and tempo together."""
    f = rng.uniform(lo, hi)
    n = max(1, int(x.size / f))
    return np.interp(np.arange(n) * f, np.arange(x.size), x).astype(np.float32)


def imitate(x: np.ndarray, seed: int) -> np.ndarray:
    """One "other corpus" version of the clip ``x`` (16 kHz mono), seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    y = np.asarray(x, np.float32)
    y = speed(rng, y)
    if rng.random() < 0.5:
        y = tempo(y, rng.uniform(0.85, 1.15))
    y = eq_channel(rng, y)
    if rng.random() < 0.7:
        y = reverb(rng, y)
    y = y * _db(rng.uniform(-20.0, 6.0))
    y = noise(rng, y, rng.uniform(10.0, 35.0))
    return loudness_normalise(y)
