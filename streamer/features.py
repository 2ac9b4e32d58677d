"""The ONE feature definition, shared by training and streaming.

A window of mono audio at 16 kHz becomes a 3-channel log-mel image
[shape=(frames, n_mels, 3)]: log-mel energy, its delta and its delta-delta,
the "3D log mel-spectrogram" of seed 000 (after Truong Pham et al. 2021).

Parameters differ from seed 000 where the seed itself says its choice hurt:
it used fmin=300 Hz ("a bit too strict and cuts off much valuable emotional
information ... 150 Hz would have been a better trade-off") and 40 mel bands
(it "suspected that the resolution was too low").  Here: fmin=60 Hz (keeps the
fundamental of low male voices and bass lines), 64 mel bands, 25 ms frames
(400 samples, as the seed), a 10 ms hop (160 samples; the seed's 240 skipped
audio between frames) and energy (power=1) in dB with a fixed reference of 1,
as the seed, so levels compare across clips.

Before the spectrogram every window is loudness-normalised to -23 LUFS (EBU
R128, as seed 001 did to every clip before mixing; gain clipped to
[-30, +30] dB, silence left alone).  Users' microphones and broadcast levels
vary by tens of dB; per-window R128 makes the models see the same level in
training and in the field.  Standardisation (mean/std per channel) is part of
each exported model, computed on its training set; never per window.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from .errors import ParameterError
from .loudness import integrated_loudness, normalisation_gain_db

FEATURE_VERSION = 1


@dataclass(frozen=True)
class FeatureParams:
    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 64
    fmin: float = 60.0
    fmax: float = 8000.0
    amin: float = 1e-5
    delta_width: int = 9
    target_lufs: float = -23.0
    min_gain_db: float = -30.0
    max_gain_db: float = 30.0
    version: int = FEATURE_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureParams":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ParameterError(f"unknown feature parameters {sorted(unknown)}")
        return cls(**d)

    def n_frames(self, n_samples: int) -> int:
        """Frames of a window of ``n_samples`` (no centre padding)."""
        if n_samples < self.win_length:
            raise ParameterError(
                f"window of {n_samples} samples is shorter than one frame ({self.win_length})")
        return 1 + (n_samples - self.win_length) // self.hop_length


DEFAULT_PARAMS = FeatureParams()


def _hz_to_mel(f):
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz, min_log_mel = 200.0 / 3, 1000.0, 15.0
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-9) / min_log_hz) / logstep,
                    f / f_sp)


def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz, min_log_mel = 200.0 / 3, 1000.0, 15.0
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@lru_cache(maxsize=8)
def mel_filterbank(params: FeatureParams = DEFAULT_PARAMS) -> np.ndarray:
    """Slaney-normalised triangular filters [shape=(n_mels, n_fft // 2 + 1)]."""
    fft_freqs = np.linspace(0.0, params.sample_rate / 2.0, params.n_fft // 2 + 1)
    hz = _mel_to_hz(np.linspace(_hz_to_mel(params.fmin), _hz_to_mel(params.fmax), params.n_mels + 2))
    lower = (fft_freqs[None, :] - hz[:-2, None]) / (hz[1:-1] - hz[:-2])[:, None]
    upper = (hz[2:, None] - fft_freqs[None, :]) / (hz[2:] - hz[1:-1])[:, None]
    fb = np.maximum(0.0, np.minimum(lower, upper))
    fb *= (2.0 / (hz[2:] - hz[:-2]))[:, None]
    fb = fb.astype(np.float32)
    fb.setflags(write=False)
    return fb


@lru_cache(maxsize=8)
def _window(params: FeatureParams) -> np.ndarray:
    """Periodic Hann of win_length, centred in n_fft."""
    n = params.win_length
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    pad = (params.n_fft - n) // 2
    out = np.zeros(params.n_fft, dtype=np.float32)
    out[pad:pad + n] = w
    out.setflags(write=False)
    return out


def loudness_normalise(x: np.ndarray, params: FeatureParams = DEFAULT_PARAMS) -> np.ndarray:
    """``x`` scaled to ``params.target_lufs`` (gain clipped; silence unchanged)."""
    gain_db = normalisation_gain_db(integrated_loudness(x, params.sample_rate), params.target_lufs,
                                    params.min_gain_db, params.max_gain_db)
    return (x * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32, copy=False)


def log_mel(x: np.ndarray, params: FeatureParams = DEFAULT_PARAMS) -> np.ndarray:
    """Log-mel energy in dB [shape=(frames, n_mels)] of mono ``x`` [shape=(n,)]."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ParameterError(f"features expect mono audio, got shape {x.shape}")
    n_frames = params.n_frames(x.size)
    pad = (params.n_fft - params.win_length) // 2
    # Frames of n_fft samples starting ``pad`` before each win_length frame; the
    # window is zero outside the win_length span, so edges are padded with zeros.
    xp = np.pad(x, (pad, params.n_fft))
    frames = np.lib.stride_tricks.sliding_window_view(xp, params.n_fft)[::params.hop_length][:n_frames]
    spec = np.abs(np.fft.rfft(frames * _window(params), axis=1)).astype(np.float32)
    mel = spec @ mel_filterbank(params).T
    return 20.0 * np.log10(np.maximum(mel, params.amin))


def delta(m: np.ndarray, width: int = 9) -> np.ndarray:
    """Regression delta along axis 0 over ``width`` frames, edges replicated."""
    if width < 3 or width % 2 == 0:
        raise ParameterError(f"delta width={width} must be an odd integer >= 3")
    n = width // 2
    padded = np.pad(m, [(n, n)] + [(0, 0)] * (m.ndim - 1), mode="edge")
    t = m.shape[0]
    out = np.zeros_like(m)
    for k in range(1, n + 1):
        out += k * (padded[n + k:n + k + t] - padded[n - k:n - k + t])
    return out / (2.0 * sum(k * k for k in range(1, n + 1)))


def extract(x: np.ndarray, params: FeatureParams = DEFAULT_PARAMS) -> np.ndarray:
    """Model input of one window: [shape=(frames, n_mels, 3)], float32.

    Channels: log-mel dB, delta, delta-delta, after R128 normalisation of ``x``.
    """
    m = log_mel(loudness_normalise(np.asarray(x, dtype=np.float32), params), params)
    d1 = delta(m, params.delta_width)
    d2 = delta(d1, params.delta_width)
    return np.stack([m, d1, d2], axis=-1).astype(np.float32, copy=False)
