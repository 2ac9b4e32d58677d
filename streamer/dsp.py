"""The signal-processing base every stage shares, each piece defined once: the sample rate,
windows, framing, the frame FFT, overlap-add, the mel scale, chroma maps and key profiles.

features (log-mel), descriptors, music descriptors, the built-in separator and the Spleeter
path build on these and keep only their own parameters.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: the one sample rate of the stream, the models and the features (Hz)
SAMPLE_RATE = 16000

# Krumhansl-Kessler key profiles (Krumhansl 1990), C major / C minor.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@lru_cache(maxsize=16)
def hann(n: int, periodic: bool = True, sqrt: bool = False) -> np.ndarray:
    """Hann window of ``n`` samples, float32, read-only.

    ``periodic`` (the STFT window, as ``tf.signal.hann_window(n, periodic=True)``):
    ``0.5 - 0.5 cos(2 pi k / n)``; else symmetric (``numpy.hanning``).  ``sqrt``: its square
    root (analysis and synthesis window whose product sums to one at 50 % overlap).
    """
    if periodic:
        w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    else:
        w = np.hanning(n)
    w = (np.sqrt(w) if sqrt else w).astype(np.float32)
    w.setflags(write=False)
    return w


def frames(x: np.ndarray, length: int, hop: int) -> np.ndarray:
    """Frames of ``length`` samples every ``hop`` [shape=(n, length)]: a view, no padding."""
    return np.lib.stride_tricks.sliding_window_view(x, length)[::hop]


@lru_cache(maxsize=1)
def _pocketfft():
    """scipy's pocketfft extension, the code ``scipy.fft.rfft``/``irfft`` run, loaded from its file by
    itself; None where it cannot be (another scipy layout), and :mod:`scipy.fft` serves then.

    ``import scipy.fft`` costs ~0.2 CPU s, two fifths of a command's start-up: its ``__init__``
    imports ``scipy.special``, ``scipy.linalg`` and ``scipy.sparse`` for the FFTLog transform, which
    emotrack does not use; the extension alone loads in ~2 ms.  Importing a package's submodule
    always runs the package's ``__init__``, hence the loader."""
    try:
        import importlib.machinery
        import importlib.util
        from pathlib import Path

        spec = importlib.util.find_spec("scipy")  # finds the package without importing it
        folder = Path(spec.origin).parent / "fft" / "_pocketfft"
        path = next(folder / f"pypocketfft{s}" for s in importlib.machinery.EXTENSION_SUFFIXES
                    if (folder / f"pypocketfft{s}").is_file())
        loader = importlib.machinery.ExtensionFileLoader("scipy.fft._pocketfft.pypocketfft", str(path))
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
        loader.exec_module(module)
        # the two calls made below, in the signature this module relies on
        if module.r2c(np.ones(4, np.float32), (0,), True, 0, None, 1).shape != (3,) or \
                module.c2r(np.ones(3, np.complex64), (0,), 4, False, 2, None, 1).shape != (4,):
            return None
        return module
    except Exception:  # any other scipy (layout, signature): scipy.fft itself
        return None


def _fast(x: np.ndarray, kinds: str, axis: int) -> bool:
    """Whether ``x`` goes to pocketfft as it is (what scipy.fft would hand it, unconverted), along a
    valid ``axis``."""
    return (x.dtype.kind in kinds and x.dtype.itemsize in ((4, 8) if x.dtype.kind == "f" else (8, 16))
            and x.dtype.isnative and x.flags.aligned and -x.ndim <= axis < x.ndim)


def _fit(x: np.ndarray, n: int, axis: int) -> np.ndarray:
    """``x`` cut or zero-padded to ``n`` samples along ``axis``, as scipy.fft does for its ``n``."""
    index = [slice(None)] * x.ndim
    if x.shape[axis] >= n:
        index[axis] = slice(0, n)
        return x[tuple(index)]
    shape = list(x.shape)
    shape[axis] = n
    z = np.zeros(shape, x.dtype)
    index[axis] = slice(0, x.shape[axis])
    z[tuple(index)] = x
    return z


def rfft(x: np.ndarray, n: int | None = None, axis: int = -1) -> np.ndarray:
    """``scipy.fft.rfft(x, n, axis)``: the same code and the same result (float32 in, complex64 out;
    float64 in, complex128 out), without importing :mod:`scipy.fft` (see :func:`_pocketfft`)."""
    x = np.asarray(x)
    pf = _pocketfft()
    if pf is None or not _fast(x, "f", axis) or (n is not None and n < 1) or (n is None and x.shape[axis] < 1):
        from scipy import fft as sp_fft   # any other input: scipy's own conversions and errors

        return sp_fft.rfft(x, n=n, axis=axis)
    return pf.r2c(x if n is None else _fit(x, n, axis), (axis,), True, 0, None, 1)


def irfft(x: np.ndarray, n: int | None = None, axis: int = -1) -> np.ndarray:
    """``scipy.fft.irfft(x, n, axis)``: the same code and the same result, without importing
    :mod:`scipy.fft` (see :func:`_pocketfft`)."""
    x = np.asarray(x)
    pf = _pocketfft()
    if pf is None or not _fast(x, "fc", axis) or (n is not None and n < 1) or (n is None and x.shape[axis] < 2):
        from scipy import fft as sp_fft

        return sp_fft.irfft(x, n=n, axis=axis)
    if x.dtype.kind == "f":
        x = x + 0.j   # as scipy.fft: a real input is the real part of the spectrum
    if n is None:
        n = (x.shape[axis] - 1) * 2
    else:
        x = _fit(x, n // 2 + 1, axis)
    return pf.c2r(x, (axis,), n, False, 2, None, 1)


def rfft_frames(fr: np.ndarray, window: np.ndarray, n_fft: int | None = None) -> np.ndarray:
    """Spectra of windowed frames [shape=(n, n_fft // 2 + 1)] (scipy's FFT, :func:`rfft`; float32
    frames give complex64)."""
    return rfft(fr * window, n=n_fft, axis=-1)


def magnitude_stft(x: np.ndarray, n_fft: int, hop: int, window: np.ndarray) -> np.ndarray:
    """|STFT| [frames, n_fft // 2 + 1] float32 of ``x``, zero-padded to at least one frame."""
    x = np.pad(x, (0, max(0, n_fft - x.size)))
    return np.abs(rfft_frames(frames(x, n_fft, hop), window)).astype(np.float32)


def overlap_add(y: np.ndarray, hop: int) -> np.ndarray:
    """y [..., n, L] (L a multiple of hop) -> [..., (n - 1) * hop + L], frames summed at hop."""
    n, L = y.shape[-2:]
    r = L // hop
    out = np.zeros(y.shape[:-2] + ((n + r - 1) * hop,), np.float32)
    for i in range(r):
        out[..., i * hop:i * hop + n * hop] += y[..., i * hop:(i + 1) * hop].reshape(y.shape[:-2] + (n * hop,))
    return out


def hz_to_mel(f):
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz, min_log_mel = 200.0 / 3, 1000.0, 15.0
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-9) / min_log_hz) / logstep,
                    f / f_sp)


def mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz, min_log_mel = 200.0 / 3, 1000.0, 15.0
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Slaney-normalised triangular filters [shape=(n_mels, n_fft // 2 + 1)], float32, read-only."""
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower = (fft_freqs[None, :] - hz[:-2, None]) / (hz[1:-1] - hz[:-2])[:, None]
    upper = (hz[2:, None] - fft_freqs[None, :]) / (hz[2:] - hz[1:-1])[:, None]
    fb = np.maximum(0.0, np.minimum(lower, upper))
    fb *= (2.0 / (hz[2:] - hz[:-2]))[:, None]
    fb = fb.astype(np.float32)
    fb.setflags(write=False)
    return fb


@lru_cache(maxsize=8)
def chroma_map(n_fft: int, fmin: float, fmax: float, bins: int | None = None) -> np.ndarray:
    """STFT bins between ``fmin`` and ``fmax`` Hz (of the first ``bins``) -> 12 pitch classes,
    C = 0 [shape=(12, bins)], float32."""
    f = np.fft.rfftfreq(n_fft, 1.0 / SAMPLE_RATE)[:bins]
    m = np.zeros((12, f.size), np.float32)
    ok = (f >= fmin) & (f <= fmax)
    pc = np.round(12.0 * np.log2(f[ok] / 440.0) + 9.0).astype(int) % 12  # A = 9
    m[pc, np.flatnonzero(ok)] = 1.0
    m.setflags(write=False)
    return m
