"""ITU-R BS.1770 / EBU R128 loudness of a mono signal, and normalisation to it.

Seed 001 normalised every speech and music clip to equal R128 loudness before
mixing; emotrack does the same to every analysis window (see
:mod:`streamer.features`), so that a quiet microphone and a loud broadcast feed
reach the models at the same level.  Implemented here with numpy/scipy so the
streaming path needs no extra package; the tests compare it with pyloudnorm.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.signal import sosfilt

ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
BLOCK_S = 0.4
STEP_S = 0.1


def _biquad(kind: str, fs: float, fc: float, q: float, gain_db: float):
    """RBJ-cookbook biquad used by BS.1770's K-weighting (shelf, high-pass)."""
    a_lin = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * fc / fs
    cos_w0, alpha = np.cos(w0), np.sin(w0) / (2.0 * q)
    if kind == "high_shelf":
        sq = 2.0 * np.sqrt(a_lin) * alpha
        b = [a_lin * ((a_lin + 1) + (a_lin - 1) * cos_w0 + sq),
             -2.0 * a_lin * ((a_lin - 1) + (a_lin + 1) * cos_w0),
             a_lin * ((a_lin + 1) + (a_lin - 1) * cos_w0 - sq)]
        a = [(a_lin + 1) - (a_lin - 1) * cos_w0 + sq,
             2.0 * ((a_lin - 1) - (a_lin + 1) * cos_w0),
             (a_lin + 1) - (a_lin - 1) * cos_w0 - sq]
    elif kind == "high_pass":
        b = [(1 + cos_w0) / 2.0, -(1 + cos_w0), (1 + cos_w0) / 2.0]
        a = [1 + alpha, -2.0 * cos_w0, 1 - alpha]
    else:  # pragma: no cover - internal
        raise ValueError(kind)
    b, a = np.asarray(b), np.asarray(a)
    return b / a[0], a / a[0]


@lru_cache(maxsize=8)
def k_weighting(fs: float) -> np.ndarray:
    """The two K-weighting stages at sample rate ``fs`` as second-order sections."""
    stages = (_biquad("high_shelf", fs, 1500.0, 1.0 / np.sqrt(2.0), 4.0),
              _biquad("high_pass", fs, 38.0, 0.5, 0.0))
    sos = np.array([np.concatenate([b, a]) for b, a in stages])
    sos.setflags(write=False)
    return sos


def integrated_loudness(x: np.ndarray, fs: int) -> float:
    """Gated integrated loudness in LUFS of mono ``x`` [shape=(n,)].

    Returns ``-inf`` for silence (every 400 ms block under the -70 LUFS gate).
    A signal shorter than one block is measured ungated.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"integrated_loudness expects mono audio, got shape {x.shape}")
    z = sosfilt(k_weighting(float(fs)).copy(), x)
    block, step = int(round(BLOCK_S * fs)), int(round(STEP_S * fs))
    if z.size < block:
        ms = float(np.mean(z * z)) if z.size else 0.0
        return -0.691 + 10.0 * np.log10(ms) if ms > 0 else float("-inf")
    csum = np.concatenate(([0.0], np.cumsum(z * z)))
    starts = np.arange(0, z.size - block + 1, step)
    ms = (csum[starts + block] - csum[starts]) / block
    with np.errstate(divide="ignore"):
        lk = -0.691 + 10.0 * np.log10(ms)
    above = ms[lk > ABSOLUTE_GATE_LUFS]
    if above.size == 0:
        return float("-inf")
    rel_gate = -0.691 + 10.0 * np.log10(above.mean()) + RELATIVE_GATE_LU
    with np.errstate(divide="ignore"):
        gated = ms[(lk > ABSOLUTE_GATE_LUFS) & (lk > rel_gate)]
    return float(-0.691 + 10.0 * np.log10(gated.mean()))


def normalisation_gain_db(loudness: float, target: float, min_gain_db: float,
                          max_gain_db: float) -> float:
    """Gain that brings ``loudness`` to ``target``, clipped; 0 dB for silence."""
    if not np.isfinite(loudness):
        return 0.0
    return float(np.clip(target - loudness, min_gain_db, max_gain_db))
