"""The built-in separator: a small mask network on a 16 kHz STFT (see :mod:`streamer.separation`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from engines.cards import MODELS_DIR

from .. import dsp
from ..errors import ModelError
from .base import STEMS, Separator

DEFAULT_SEPARATOR_MODEL = MODELS_DIR / "separator.onnx"


@dataclass(frozen=True)
class StftParams:
    """The built-in separator's STFT and network framing (shared with training)."""

    sample_rate: int = dsp.SAMPLE_RATE
    n_fft: int = 512
    hop: int = 256
    context: int = 16   # frames each side the network consumes ("valid" convolutions)
    chunk: int = 16     # output frames per network call
    floor: float = 1e-8

    def __post_init__(self):
        if self.n_fft != 2 * self.hop:
            raise ValueError("the separator's STFT needs n_fft == 2 * hop (50 % overlap)")

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def lead(self) -> int:
        """Zeros before the signal so that every sample is covered by two frames."""
        return self.n_fft - self.hop

    @property
    def latency_samples(self) -> int:
        return (self.chunk + self.context) * self.hop + self.lead

    def window(self) -> np.ndarray:
        return dsp.hann(self.n_fft, sqrt=True)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("sample_rate", "n_fft", "hop", "context", "chunk", "floor")}


STFT = StftParams()


def stft(x: np.ndarray, p: StftParams = STFT) -> np.ndarray:
    """Complex STFT [frames, bins] of a signal (the ``lead`` zeros are added here);
    frame ``k`` covers samples ``[(k-1)*hop, (k+1)*hop)``; ``ceil(len/hop)`` frames, the
    last ones zero-padded."""
    n_frames = -(-x.size // p.hop)
    padded = np.zeros(n_frames * p.hop + p.n_fft, np.float32)
    padded[p.lead:p.lead + x.size] = x
    return _frames_stft(padded, n_frames + 1, p)[:n_frames + 1]


def _frames_stft(buf: np.ndarray, n: int, p: StftParams, start: int = 0) -> np.ndarray:
    fr = dsp.frames(buf[start:start + (n - 1) * p.hop + p.n_fft], p.n_fft, p.hop)
    return np.fft.rfft(fr * p.window(), axis=1).astype(np.complex64)


def log_power(spec: np.ndarray, p: StftParams = STFT) -> np.ndarray:
    """Network input of complex frames: ``log10(|X|^2 + floor)`` (float32)."""
    return np.log10(spec.real ** 2 + spec.imag ** 2 + p.floor).astype(np.float32)


def istft(spec: np.ndarray, n: int, p: StftParams = STFT) -> np.ndarray:
    """Inverse of :func:`stft` (overlap-add), cut to ``n`` samples."""
    frames = np.fft.irfft(spec, n=p.n_fft, axis=1).astype(np.float32) * p.window()
    return _overlap_add(frames, p)[p.lead:p.lead + n]


def _overlap_add(frames: np.ndarray, p: StftParams) -> np.ndarray:
    """Sum of windowed frames placed every ``hop`` samples (``n_fft == 2 * hop``)."""
    return dsp.overlap_add(frames, p.hop)


class BuiltinSeparator(Separator):
    """The shipped mask network (ONNX), streamed in fixed chunks of STFT frames."""

    name = "builtin"
    #: a replay may run it on its own thread ahead of the windows (:class:`streamer.separation.Ahead`)
    runs_ahead = True

    def __init__(self, model_path: Optional[str | Path] = None, backend: str = "onnxruntime",
                 threads: Optional[int] = None, max_chunks: int = 64, history_s: float = 120.0,
                 presence_only: bool = False):
        from engines.backends import select_backend
        from engines.cards import read_card

        path = Path(model_path) if model_path else DEFAULT_SEPARATOR_MODEL
        card_path = path.with_suffix(".json")
        if not path.is_file() or not card_path.is_file():
            raise ModelError(f"separator model not found: {path} (and its card {card_path.name}); "
                             "train one with `python -m training.separator` or use --separator none")
        try:
            self.card = read_card(path)
            self.p = StftParams(**self.card["stft"])
        except ModelError as exc:
            raise ModelError(f"separator: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"separator card {card_path} has no usable 'stft' section: {exc!r}") from None
        if self.p.sample_rate != dsp.SAMPLE_RATE:
            raise ModelError(f"separator {path.name} works at {self.p.sample_rate} Hz; emotrack streams 16 kHz")
        self.backend = select_backend(backend, path, threads=threads)
        self.id = self.card.get("id", path.stem)
        self.latency_samples = self.p.latency_samples
        self.max_chunks = max_chunks
        # only the per-frame presence (NoneSeparator's activity): no stems are synthesised, and
        # process/flush hand back empty arrays
        self.presence_only = presence_only
        self._history = int(history_s * self.p.sample_rate / self.p.hop)
        self._win = self.p.window()
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next block starts a new one (the network stays loaded)."""
        p = self.p
        # input samples, in "padded" coordinates (the lead zeros come first)
        self._buf = np.zeros(p.lead, np.float32)
        self._buf0 = 0                 # padded coordinate of _buf[0]
        self._n_in = 0                 # input samples received
        # log-power frames not yet consumed as context: starts with `context` silent frames
        self._feat = np.full((p.context, p.bins), np.log10(p.floor), np.float32)
        self._spec = np.zeros((0, p.bins), np.complex64)  # frames waiting for their mask
        self._frames = 0               # STFT frames computed so far
        self._ola = np.zeros(p.n_fft, np.float32)   # speech overlap-add tail
        self._delay = np.zeros(0, np.float32)         # input samples not yet handed out
        self._emitted = 0              # output samples handed out
        self._presence: list[np.ndarray] = []   # per synthesised frame: [speech, music]
        self._presence0 = 0            # frame index of _presence[0]
        self._n_presence = 0           # frames held in _presence

    # -- stream ---------------------------------------------------------------------------
    def process(self, block: np.ndarray) -> dict[str, np.ndarray]:
        block = np.asarray(block, np.float32).reshape(-1)
        self._n_in += block.size
        self._buf = np.concatenate([self._buf, block])
        if not self.presence_only:
            self._delay = np.concatenate([self._delay, block])
        self._analyse()
        return self._run(final=False)

    def flush(self) -> dict[str, np.ndarray]:
        p = self.p
        # the frames covering the last samples, then `context` frames of silence after them
        need = -(-self._n_in // p.hop) + 1
        missing = (need - 1) * p.hop + p.n_fft - (self._buf0 + self._buf.size)
        if missing > 0:
            self._buf = np.concatenate([self._buf, np.zeros(missing, np.float32)])
        self._analyse(limit=need)
        return self._run(final=True)

    def activity(self, stem: str, start: int, end: int, done: Optional[int] = None,
                 fed: Optional[int] = None) -> Optional[float]:
        p = self.p
        if not self._presence:
            return None
        pres = np.concatenate(self._presence) if len(self._presence) > 1 else self._presence[0]
        self._presence = [pres]
        # frames whose centre (k*hop - lead/2 ... ) falls in [start, end): frame k is centred at k*hop
        k0 = max(-(-start // p.hop) - self._presence0, 0)
        k1 = min(-(-end // p.hop) - self._presence0, pres.shape[0])
        if k1 <= k0:
            return None
        return float(pres[k0:k1, STEMS.index(stem)].mean())

    # -- internals ------------------------------------------------------------------------
    def _analyse(self, limit: Optional[int] = None) -> None:
        """STFT of every frame whose samples are all in the buffer."""
        p = self.p
        avail = (self._buf0 + self._buf.size - p.n_fft) // p.hop + 1 - self._frames
        if limit is not None:
            avail = min(avail, limit - self._frames)
        if avail <= 0:
            return
        start = self._frames * p.hop - self._buf0
        spec = _frames_stft(self._buf, avail, p, start=start)
        self._frames += avail
        self._spec = np.concatenate([self._spec, spec])
        self._feat = np.concatenate([self._feat, log_power(spec, p)])
        drop = self._frames * p.hop - self._buf0   # samples no later frame needs
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf0 += drop

    def _run(self, final: bool) -> dict[str, np.ndarray]:
        p = self.p
        if final:  # silent context after the last frame, then chunks padded with silence
            rest = self._spec.shape[0]
            n_chunks = -(-rest // p.chunk)
            pad = n_chunks * p.chunk + 2 * p.context - self._feat.shape[0]
            if pad > 0:
                self._feat = np.concatenate([self._feat, np.full((pad, p.bins), np.log10(p.floor), np.float32)])
        else:
            n_chunks = max(0, (self._feat.shape[0] - 2 * p.context) // p.chunk)
            n_chunks = min(n_chunks, self._spec.shape[0] // p.chunk)
        pieces = []
        done = 0
        while done < n_chunks:
            n = min(self.max_chunks, n_chunks - done)
            L = p.chunk + 2 * p.context
            x = np.stack([self._feat[i * p.chunk:i * p.chunk + L] for i in range(n)])
            out = self.backend.run({"features": x})
            mask = np.asarray(out["speech_mask"], np.float32).reshape(n * p.chunk, p.bins)
            pres = np.asarray(out["presence"], np.float32).reshape(n * p.chunk, 2)
            m = min(n * p.chunk, self._spec.shape[0])
            if not self.presence_only:
                pieces.append(self._synth(self._spec[:m], mask[:m]))
            self._add_presence(pres[:m])
            self._spec = self._spec[m:]
            self._feat = self._feat[n * p.chunk:]
            done += n
        if self.presence_only:
            empty = np.zeros(0, np.float32)
            return {"speech": empty, "music": empty}
        if final:
            pieces.append(self._ola[:p.n_fft - p.hop].copy())
        speech = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        # drop the lead zeros, and never hand out more than was put in
        skip = max(0, p.lead - self._emitted)
        n_total = speech.size
        speech = speech[min(skip, n_total):]
        self._emitted += n_total
        over = (self._emitted - p.lead) - self._n_in
        if final and over > 0:
            speech = speech[:speech.size - over]
        # music = the input (same time line) minus speech: one inverse STFT instead of two, and
        # the stems add up to the mix exactly
        music = self._delay[:speech.size] - speech
        self._delay = self._delay[speech.size:]
        return {"speech": speech, "music": music}

    def _synth(self, spec: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Overlap-add the speech frames (mask x mixture); returns the samples no later frame
        touches."""
        p = self.p
        n = spec.shape[0]
        frames = np.fft.irfft(spec * mask, n=p.n_fft, axis=1).astype(np.float32) * self._win
        acc = _overlap_add(frames, p)
        acc[:p.hop] += self._ola[:p.hop]
        self._ola = np.zeros(p.n_fft, np.float32)
        self._ola[:p.hop] = acc[n * p.hop:]
        return acc[:n * p.hop]

    def _add_presence(self, pres: np.ndarray) -> None:
        self._presence.append(pres.astype(np.float32))
        self._n_presence += pres.shape[0]
        if self._n_presence > 2 * self._history:
            allp = np.concatenate(self._presence)
            cut = allp.shape[0] - self._history
            self._presence = [allp[cut:]]
            self._presence0 += cut
            self._n_presence = self._history

    def close(self) -> None:
        self.backend.close()
