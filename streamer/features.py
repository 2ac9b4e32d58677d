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
from typing import Optional

import numpy as np

from . import dsp
from .errors import ParameterError
from .loudness import integrated_loudness, normalisation_gain_db

FEATURE_VERSION = 1


@dataclass(frozen=True)
class FeatureParams:
    sample_rate: int = dsp.SAMPLE_RATE
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


def mel_filterbank(params: FeatureParams = DEFAULT_PARAMS) -> np.ndarray:
    """Slaney-normalised triangular filters [shape=(n_mels, n_fft // 2 + 1)] (:func:`streamer.dsp.mel_filterbank`)."""
    return dsp.mel_filterbank(params.sample_rate, params.n_fft, params.n_mels, params.fmin, params.fmax)


def window_gain_db(x: np.ndarray, params: FeatureParams = DEFAULT_PARAMS) -> float:
    """R128 gain of one window: to ``target_lufs``, clipped; 0 dB for silence."""
    return loudness_gain_db(integrated_loudness(x, params.sample_rate), params)


def loudness_gain_db(lufs: float, params: FeatureParams = DEFAULT_PARAMS) -> float:
    """The gain of a window whose integrated loudness is ``lufs`` (e.g. from a stream's
    :class:`streamer.loudness.KWeightedStream`)."""
    return normalisation_gain_db(lufs, params.target_lufs, params.min_gain_db, params.max_gain_db)


def loudness_normalise(x: np.ndarray, params: FeatureParams = DEFAULT_PARAMS) -> np.ndarray:
    """``x`` scaled to ``params.target_lufs`` (gain clipped; silence unchanged)."""
    gain_db = window_gain_db(x, params)
    return (x * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32, copy=False)


def _raw_floor(params: FeatureParams) -> float:
    """Floor of the un-normalised log-mel: low enough that after any allowed
    gain it still lies under ``amin``, so flooring before or after the gain
    gives the same result."""
    return params.amin * 10.0 ** (-(params.max_gain_db + 10.0) / 20.0)


def frame_log_mel(frames: np.ndarray, params: FeatureParams = DEFAULT_PARAMS) -> np.ndarray:
    """Un-normalised log-mel dB [shape=(n, n_mels)] of frames [shape=(n, win_length)]."""
    spec = np.abs(dsp.rfft_frames(frames, dsp.hann(params.win_length), params.n_fft))
    mel = spec @ mel_filterbank(params).T
    return (20.0 * np.log10(np.maximum(mel, _raw_floor(params)))).astype(np.float32, copy=False)


def frames_of(x: np.ndarray, params: FeatureParams = DEFAULT_PARAMS) -> np.ndarray:
    """Frames of win_length every hop_length [shape=(n_frames, win_length)] (a view)."""
    n = params.n_frames(x.size)
    return dsp.frames(x, params.win_length, params.hop_length)[:n]


def log_mel(x: np.ndarray, params: FeatureParams = DEFAULT_PARAMS) -> np.ndarray:
    """Log-mel energy in dB [shape=(frames, n_mels)] of mono ``x`` [shape=(n,)] (no normalisation)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ParameterError(f"features expect mono audio, got shape {x.shape}")
    floor = np.float32(20.0 * np.log10(params.amin))
    return np.maximum(frame_log_mel(frames_of(x, params), params), floor)


def delta(m: np.ndarray, width: int = 9) -> np.ndarray:
    """Regression delta along axis 0 over ``width`` frames, edges replicated."""
    if width < 3 or width % 2 == 0:
        raise ParameterError(f"delta width={width} must be an odd integer >= 3")
    n = width // 2
    t = m.shape[0]
    if t == 0:
        return np.zeros_like(m)
    padded = np.empty((t + 2 * n,) + m.shape[1:], m.dtype)   # edges replicated (np.pad "edge")
    padded[n:n + t] = m
    padded[:n] = m[0]
    padded[n + t:] = m[-1]
    out = padded[n + 1:n + 1 + t] - padded[n - 1:n - 1 + t]    # k = 1
    tmp = np.empty_like(out)
    for k in range(2, n + 1):      # the same arithmetic as out += k * (a - b), without temporaries
        np.subtract(padded[n + k:n + k + t], padded[n - k:n - k + t], out=tmp)
        tmp *= k
        out += tmp
    out /= 2.0 * sum(k * k for k in range(1, n + 1))
    return out


def assemble(raw_log_mel: np.ndarray, gain_db: float,
             params: FeatureParams = DEFAULT_PARAMS) -> np.ndarray:
    """Model input from a window's un-normalised log-mel frames and its R128 gain.

    ``20 log10(g * mel) = 20 log10(mel) + gain_db``: normalising the audio is a
    shift of the log-mel, so frames computed once per stream serve every
    window that contains them (see :class:`LogMelStream`).
    """
    floor = np.float32(20.0 * np.log10(params.amin))
    m = np.maximum(raw_log_mel + np.float32(gain_db), floor)
    d1 = delta(m, params.delta_width)
    out = np.empty(m.shape + (3,), np.float32)
    out[..., 0] = m
    out[..., 1] = d1
    out[..., 2] = delta(d1, params.delta_width)
    return out


def extract(x: np.ndarray, params: FeatureParams = DEFAULT_PARAMS) -> np.ndarray:
    """Model input of one window: [shape=(frames, n_mels, 3)], float32.

    Channels: log-mel dB, delta, delta-delta, of ``x`` after R128 normalisation.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ParameterError(f"features expect mono audio, got shape {x.shape}")
    return assemble(frame_log_mel(frames_of(x, params), params), window_gain_db(x, params), params)


N_MFCC = 13  # seed 002 section 4.1.1: 13 coefficients per frame, the offset c0 kept


@lru_cache(maxsize=8)
def dct_matrix(n_mels: int = DEFAULT_PARAMS.n_mels, n_mfcc: int = N_MFCC) -> np.ndarray:
    """Orthonormal DCT-II basis [shape=(n_mels, n_mfcc)]: ``log_mel @ dct_matrix`` are the MFCCs.

    The same matrix is the constant of the in-graph MFCC layer of the MFCC
    models (``training.archs``), so an exported model computes exactly this.
    """
    if not 1 <= n_mfcc <= n_mels:
        raise ParameterError(f"n_mfcc={n_mfcc} must be between 1 and n_mels={n_mels}")
    from scipy import fft as sp_fft   # here, not on every command's start-up path (streamer.dsp.rfft)

    m = sp_fft.dct(np.eye(n_mels), type=2, norm="ortho", axis=0)[:n_mfcc].T
    m = np.ascontiguousarray(m, dtype=np.float32)
    m.setflags(write=False)
    return m


def mfcc_from_logmel(log_mel_db: np.ndarray, n_mfcc: int = N_MFCC) -> np.ndarray:
    """MFCCs [shape=(..., frames, n_mfcc)] of log-mel dB [shape=(..., frames, n_mels)]
    (e.g. channel 0 of :func:`extract`): DCT-II (orthonormal) along the mel axis, as
    ``librosa.feature.mfcc`` does to its dB mel spectrogram."""
    log_mel_db = np.asarray(log_mel_db, dtype=np.float32)
    return log_mel_db @ dct_matrix(log_mel_db.shape[-1], n_mfcc)


class LogMelStream:
    """Un-normalised log-mel frames of a stream, each computed once.

    Windows that start on the frame grid (a multiple of ``hop_length``) take
    their frames from here instead of recomputing the spectrogram of every
    overlapping window; :meth:`window_features` equals :func:`extract` on the
    same samples (tested).  Frames live in a mirrored ring like the audio.
    """

    def __init__(self, capacity_samples: int, params: FeatureParams = DEFAULT_PARAMS):
        self.params = params
        self.cap = capacity_samples // params.hop_length + 2
        self._buf = np.zeros((2 * self.cap, params.n_mels), np.float32)
        self.done = 0  # frames computed so far

    def update(self, ring) -> None:
        """Compute every frame whose samples are now in ``ring``."""
        p = self.params
        if ring.total < p.win_length:
            return
        last = (ring.total - p.win_length) // p.hop_length  # last complete frame
        if last < self.done:
            return
        first = max(self.done, last - self.cap + 1)
        start = first * p.hop_length
        span = ring.view(start, (last - first) * p.hop_length + p.win_length)
        frames = dsp.frames(span, p.win_length, p.hop_length)
        lm = frame_log_mel(frames, p)
        j = first % self.cap            # frame k at k % cap and k % cap + cap (n <= cap frames)
        a = min(lm.shape[0], self.cap - j)
        self._buf[j:j + a] = lm[:a]
        self._buf[j + self.cap:j + self.cap + a] = lm[:a]
        if a < lm.shape[0]:            # wrapped: the rest from slot 0
            self._buf[:lm.shape[0] - a] = lm[a:]
            self._buf[self.cap:self.cap + lm.shape[0] - a] = lm[a:]
        self.done = last + 1

    def frames(self, k0: int, k1: int) -> np.ndarray:
        """A copy of frames ``[k0, k1)`` (un-normalised log-mel dB), all still held."""
        if k0 < self.done - self.cap or k1 > self.done or k1 < k0:
            raise ParameterError(f"frames [{k0}, {k1}) not held (have [{max(0, self.done - self.cap)}, {self.done}))")
        j = k0 % self.cap
        return self._buf[j:j + k1 - k0].copy()

    def covers(self, start: int, n_frames: int) -> bool:
        p = self.params
        if start % p.hop_length:
            return False
        k0 = start // p.hop_length
        return k0 >= self.done - self.cap and k0 + n_frames <= self.done

    def window_features(self, samples: np.ndarray, start: int, n_frames: int,
                        gain_db: Optional[float] = None) -> np.ndarray:
        """Features of the window ``samples`` that starts at stream sample ``start``; ``gain_db``:
        its R128 gain when already known (else :func:`window_gain_db` of ``samples``)."""
        k0 = (start // self.params.hop_length) % self.cap
        if gain_db is None:
            gain_db = window_gain_db(samples, self.params)
        return assemble(self._buf[k0:k0 + n_frames], gain_db, self.params)
