"""The ``musicnn`` model input: pooled embeddings of a pretrained music tagger.

The front end is musicnn's MSD_musicnn (Pons & Serra 2019, ISC licence; trained on
Million Song Dataset tags), converted to ONNX by :mod:`training.musicnn_onnx` and
shipped as ``engines/models/musicnn_msd.onnx``.  It reads a 3 s patch of log-mel
(:func:`patch_mel`, the ONE definition of its front end, in numpy: musicnn computes
it with ``librosa.feature.melspectrogram(sr=16000, n_fft=512, hop_length=256,
n_mels=96)`` then ``log10(10000 x + 1)``) and gives a 200-d embedding.

Patches lie on a fixed grid of the stream: patch ``k`` is samples
``[k * GRID, k * GRID + PATCH_SAMPLES)`` (4 s apart, 3.008 s long).  A window's
``musicnn`` input [200] is the mean embedding of the grid patches that lie wholly
inside it (:func:`patches_in`; a 10 s window holds 2).  The grid is 4 s rather than
2 s for speed: the front end costs ~1.4 GMAC (~50 ms on one core) per patch, and a
4 s grid embeds 0.25 patches per second of audio.  When streaming, each patch
is embedded once (:class:`PatchEmbeddings`) however many overlapping windows
contain it; training computes the same means from the same grid
(:func:`clip_patches`, :func:`window_means`).

Every patch is loudness-normalised (EBU R128) to ``TARGET_LUFS`` before its
spectrogram, so separated or quiet music reaches the tagger at the level of the
commercial recordings it was trained on.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np

from . import dsp
from .errors import ModelError, ParameterError
from .features import FeatureParams, frames_of, mel_filterbank
from .loudness import integrated_loudness, normalisation_gain_db

MUSICNN_VERSION = 1
from .dsp import SAMPLE_RATE  # noqa: E402 - the one sample rate
N_FFT = 512
HOP = 256
N_MELS = 96
N_FRAMES = 187                     # musicnn's 3 s input: time_to_frames(3 s) + 1
PATCH_SAMPLES = (N_FRAMES - 1) * HOP + N_FFT   # 48128 samples, frames without centre padding
GRID = 4 * SAMPLE_RATE              # patch k starts at k * GRID
TARGET_LUFS = -14.0
MIN_GAIN_DB, MAX_GAIN_DB = -30.0, 30.0
EMBED_DIM = 200
FRONT_END_ONNX = "musicnn_msd.onnx"

#: the FFT/mel part, expressed in the feature module's parameters (same filterbank code)
MEL_PARAMS = FeatureParams(sample_rate=SAMPLE_RATE, n_fft=N_FFT, win_length=N_FFT, hop_length=HOP,
                           n_mels=N_MELS, fmin=0.0, fmax=SAMPLE_RATE / 2.0)


def mel_params() -> dict:
    """The front end's input: the log-mel of one patch (the front end's card records it)."""
    return {"version": MUSICNN_VERSION, "sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop_length": HOP,
            "n_mels": N_MELS, "mel": "slaney", "fmin": 0.0, "fmax": SAMPLE_RATE / 2.0, "power": 2.0,
            "compression": "log10(10000 x + 1)", "n_frames": N_FRAMES, "patch_samples": PATCH_SAMPLES,
            "target_lufs": TARGET_LUFS}


def front_end_params() -> dict:
    """What a head trained on ``musicnn`` embeddings depends on (its card records it; the streamer
    refuses a head whose card differs)."""
    return {**mel_params(), "grid_samples": GRID, "pool": "mean of the grid patches inside the window",
            "front_end": FRONT_END_ONNX}


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    w = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic, as librosa
    w.setflags(write=False)
    return w


def mel_power(x: np.ndarray) -> np.ndarray:
    """Mel power spectrogram [shape=(frames, 96)] of mono ``x`` (frames every 256 samples, no centre
    padding: frame t covers samples [256 t, 256 t + 512))."""
    spec = dsp.rfft(frames_of(x, MEL_PARAMS) * _hann(), n=N_FFT, axis=1)
    power = spec.real ** 2 + spec.imag ** 2
    return power.astype(np.float32) @ mel_filterbank(MEL_PARAMS).T


def log_compress(mel: np.ndarray) -> np.ndarray:
    """musicnn's ``log10(10000 x + 1)``."""
    return np.log10(10000.0 * mel + 1.0).astype(np.float32, copy=False)


def patch_gain(x: np.ndarray) -> float:
    """Linear gain that brings patch ``x`` to :data:`TARGET_LUFS` (clipped; 1 for silence)."""
    g = normalisation_gain_db(integrated_loudness(x, SAMPLE_RATE), TARGET_LUFS, MIN_GAIN_DB, MAX_GAIN_DB)
    return float(10.0 ** (g / 20.0))


def patch_mel(x: np.ndarray) -> np.ndarray:
    """Front-end input [shape=(187, 96)] of one patch of :data:`PATCH_SAMPLES` samples at 16 kHz,
    loudness-normalised first."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1 or x.size != PATCH_SAMPLES:
        raise ParameterError(f"a musicnn patch is {PATCH_SAMPLES} mono samples, got shape {x.shape}")
    return log_compress(mel_power(x * np.float32(patch_gain(x))))


def patch_starts(n_samples: int, grid: int = GRID) -> np.ndarray:
    """Starts of the grid patches inside a signal of ``n_samples`` (at least one: a shorter signal
    is zero-padded to one patch)."""
    n = 1 + max(0, n_samples - PATCH_SAMPLES) // grid
    return np.arange(n) * grid


def patches_in(start: int, end: int, grid: int = GRID) -> range:
    """Indices ``k`` of the grid patches wholly inside stream samples [start, end)."""
    first = -(-start // grid)
    last = (end - PATCH_SAMPLES) // grid
    return range(first, last + 1)


class FrontEnd:
    """The ONNX front end behind engines' backend interface; counts patches and calls."""

    def __init__(self, path: Optional[Path] = None, backend: str = "onnxruntime", threads: Optional[int] = None):
        from engines.backends import BackendError, select_backend
        from engines.cards import MODELS_DIR

        self.path = Path(path) if path else MODELS_DIR / FRONT_END_ONNX
        if not self.path.is_file():
            raise ModelError(f"musicnn front end not found: {self.path} (it ships in engines/models; "
                             "rebuild it with python -m training.musicnn_onnx)")
        try:
            self.backend = select_backend(backend, self.path, threads=threads)
        except BackendError as exc:
            raise ModelError(str(exc)) from None
        self.calls = 0
        self.patches = 0

    def embed_mels(self, mels: np.ndarray) -> np.ndarray:
        """Embeddings [N, 200] of log-mel patches [N, 187, 96]."""
        self.calls += 1
        self.patches += int(mels.shape[0])
        return np.asarray(self.backend.run({"mel": mels})["embedding"], np.float32)

    def embed(self, patches: list) -> np.ndarray:
        """Embeddings [N, 200] of raw patches (each :data:`PATCH_SAMPLES` samples)."""
        if not patches:
            return np.zeros((0, EMBED_DIM), np.float32)
        return self.embed_mels(np.stack([patch_mel(p) for p in patches]))

    def close(self) -> None:
        self.backend.close()


@lru_cache(maxsize=1)
def default_front_end() -> FrontEnd:
    """The shipped front end, on up to 2 intra-op threads (it is the costliest model of a stream)."""
    from engines.backends import default_threads

    return FrontEnd(threads=default_threads())


def clip_patches(x: np.ndarray, front_end: Optional[FrontEnd] = None, batch: int = 32,
                 grid: int = GRID) -> np.ndarray:
    """Embeddings [n_patches, 200] of the grid patches of a whole clip (zero-padded to one patch)."""
    fe = front_end or default_front_end()
    x = np.asarray(x, dtype=np.float32)
    if x.size < PATCH_SAMPLES:
        x = np.pad(x, (0, PATCH_SAMPLES - x.size))
    starts = patch_starts(x.size, grid)
    out = [fe.embed([x[s:s + PATCH_SAMPLES] for s in starts[i:i + batch]]) for i in range(0, len(starts), batch)]
    return np.concatenate(out)


def window_means(emb: np.ndarray, n_samples: int, window: int, hop: int, grid: int = GRID) -> np.ndarray:
    """The ``musicnn`` inputs [n_windows, 200] of the windows of ``window`` samples every ``hop`` over a
    clip of ``n_samples`` whose grid patches have embeddings ``emb`` (a clip shorter than a window
    gives one input: the mean of all its patches), as the streamer pools them."""
    if n_samples < window:
        return emb.mean(axis=0, keepdims=True)
    rows = []
    for s in range(0, n_samples - window + 1, hop):
        ks = [k for k in patches_in(s, s + window, grid) if k < len(emb)]
        rows.append(emb[ks].mean(axis=0) if ks else emb.mean(axis=0))
    return np.stack(rows)


def window_input(x: np.ndarray, front_end: Optional[FrontEnd] = None) -> np.ndarray:
    """The ``musicnn`` input [200] of one window on its own grid (offline; streams use
    :class:`PatchEmbeddings`)."""
    return clip_patches(x, front_end).mean(axis=0)


class PatchEmbeddings:
    """Embeddings of one stream's grid patches, each computed once.

    :meth:`window_input` embeds (in one front-end call) the patches of a window not yet
    embedded, reading them from the stream's ring, and keeps the recent ones for the
    overlapping windows that follow.
    """

    def __init__(self, front_end: FrontEnd, keep: int = 64):
        self.fe = front_end
        self.keep = keep
        self._emb: dict[int, np.ndarray] = {}
        #: eager mode (:meth:`eager`): patches being embedded on the worker, and the next one to send
        self._pending: dict[int, Future] = {}
        self._pool: Optional[ThreadPoolExecutor] = None
        self._next = 0

    def eager(self) -> None:
        """From now on embed every later grid patch on a worker thread as soon as :meth:`feed` sees
        its samples written (live streams: a patch is complete about a second before the first
        window holding it, so that window finds its embedding ready and the hop does not pay the
        front end; call it before the stream starts).  The embeddings are the same; only where they
        are computed changes."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emotrack-musicnn")
            self._next = max(self._emb, default=-1) + 1

    def feed(self, ring) -> None:
        """In eager mode, send the grid patches that ``ring`` now holds whole to the worker."""
        if self._pool is None:
            return
        while self._next * GRID + PATCH_SAMPLES <= ring.total:
            k = self._next
            self._next += 1
            if k in self._emb or k * GRID < ring.total - ring.capacity:
                continue
            patch = np.array(ring.view(k * GRID, PATCH_SAMPLES))   # a copy: the ring moves on
            self._pending[k] = self._pool.submit(lambda x: self.fe.embed([x])[0], patch)

    def close(self) -> None:
        """Stop the eager worker (patches not yet embedded are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self._pending.clear()

    def window_input(self, ring, start: int, end: int) -> Optional[np.ndarray]:
        """Mean embedding of the grid patches inside [start, end), or None when none lies inside
        (a window shorter than a patch)."""
        ks = list(patches_in(start, end))
        if not ks:
            return None
        for k in ks:   # eager mode: the worker's embeddings (its errors surface here, as inline ones)
            fut = self._pending.pop(k, None)
            if fut is not None:
                self._emb[k] = fut.result()
        for k in [k for k in self._pending if k < ks[0]]:   # a patch no window will read
            self._pending.pop(k).cancel()
        todo = [k for k in ks if k not in self._emb]
        if todo:
            embs = self.fe.embed([ring.view(k * GRID, PATCH_SAMPLES) for k in todo])
            self._emb.update(zip(todo, embs))
            for k in [k for k in self._emb if k < ks[0] - self.keep]:
                del self._emb[k]
        return np.mean([self._emb[k] for k in ks], axis=0)
