"""Sliding windows over a stream without copies: a mirrored ring buffer.

Every sample is written twice, at ``i`` and ``i + capacity``, so any run of up
to ``capacity`` recent samples is one contiguous slice: windows are handed out
as read-only numpy views, valid until the next write.  Several windowers (one
per source: speech and music windows differ) read the same ring.

Chunking does not matter: pushing a signal in blocks of any sizes yields exactly
the windows sliced from the whole signal (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np

from .errors import ParameterError
from .features import FeatureParams, LogMelStream, extract
from .inputs import window_inputs


class RingBuffer:
    """Mirrored ring buffer of ``capacity`` float32 samples."""

    def __init__(self, capacity: int):
        if capacity <= 0:
            raise ParameterError(f"capacity={capacity} must be a positive integer")
        self.capacity = int(capacity)
        self._buf = np.zeros(2 * self.capacity, dtype=np.float32)
        self.total = 0  # samples ever written

    def write(self, x: np.ndarray) -> None:
        n = x.shape[0]
        if n > self.capacity:
            raise ParameterError(f"block of {n} samples exceeds ring capacity {self.capacity}")
        cap, p = self.capacity, self.total % self.capacity
        k = min(n, cap - p)
        self._buf[p:p + k] = x[:k]
        self._buf[p + cap:p + cap + k] = x[:k]
        if n > k:
            self._buf[:n - k] = x[k:]
            self._buf[cap:cap + n - k] = x[k:]
        self.total += n

    def view(self, start: int, length: int) -> np.ndarray:
        """Read-only view of samples [start, start + length) of the stream."""
        if length > self.capacity or start < self.total - self.capacity or start + length > self.total:
            raise ParameterError(
                f"samples [{start}, {start + length}) not in ring (have [{max(0, self.total - self.capacity)}, {self.total}))")
        p = start % self.capacity
        v = self._buf[p:p + length]
        v = v.view()
        v.flags.writeable = False
        return v


@dataclass
class Window:
    key: str           # which windower ("speech", "music")
    start: int         # first sample (stream position)
    end: int           # one past the last real sample (< start + length only for padded tails)
    samples: np.ndarray


class Windower:
    """Windows of ``length`` samples every ``hop`` samples over one ring."""

    def __init__(self, key: str, length: int, hop: int):
        if length <= 0 or hop <= 0:
            raise ParameterError(f"window length={length} and hop={hop} must be positive")
        self.key, self.length, self.hop = key, int(length), int(hop)
        self.next_start = 0
        self.emitted = 0
        self.last_end = 0

    def ready(self, ring: RingBuffer) -> Iterator[Window]:
        while self.next_start + self.length <= ring.total:
            s = self.next_start
            self.next_start += self.hop
            self.emitted += 1
            self.last_end = s + self.length
            yield Window(self.key, s, s + self.length, ring.view(s, self.length))

    def tail(self, ring: RingBuffer) -> Optional[Window]:
        """At end of stream: one last window covering unseen samples, if any.

        If the stream is shorter than one window, the window is zero-padded at
        the end (``end`` marks the real samples); otherwise it is the last
        ``length`` samples, so the end of the stream is never left out.
        """
        total = ring.total
        if total == 0 or total <= self.last_end:
            return None
        self.emitted += 1
        self.last_end = total
        if total < self.length:
            pad = np.zeros(self.length, np.float32)
            pad[:total] = ring.view(0, total)
            return Window(self.key, 0, total, pad)
        s = total - self.length
        return Window(self.key, s, total, ring.view(s, self.length))


class WindowStream:
    """Feeds blocks into per-stem rings and yields the windows that completed.

    ``specs`` maps a windower key to (stem, length, hop); stems that share a ring
    (no separation) are written once.
    """

    def __init__(self, specs: dict[str, tuple[str, int, int]], block_max: int,
                 params: Optional[FeatureParams] = None):
        self.max_length = max(length for _, length, _ in specs.values())
        self._piece = max(1, int(block_max))
        cap = self.max_length + self._piece
        self.rings = {stem: RingBuffer(cap) for stem, _, _ in specs.values()}
        self.windowers = {key: (stem, Windower(key, length, hop)) for key, (stem, length, hop) in specs.items()}
        #: per-stem log-mel frames, computed once (when feature params are given)
        self.mels = {stem: LogMelStream(cap, params) for stem in self.rings} if params else {}
        self.params = params
        #: per-stem musicnn patch embeddings (streamer.musicnn), made when a model first asks for them
        self.patches: dict = {}

    def features(self, w: Window) -> np.ndarray:
        """Model input of window ``w``: cached frames when on the frame grid, else computed."""
        stem = self.windowers[w.key][0]
        mel = self.mels.get(stem)
        n = self.params.n_frames(w.samples.size)
        if mel is not None and w.end - w.start == w.samples.size and mel.covers(w.start, n):
            return mel.window_features(w.samples, w.start, n)
        return extract(w.samples, self.params)

    def inputs(self, w: Window, names) -> dict[str, np.ndarray]:
        """Model inputs ``names`` of window ``w`` (:func:`streamer.inputs.window_inputs`), the
        log-mel ``features`` from the frame cache where it covers the window."""
        feats = self.features(w) if "features" in names else None
        emb = self.embedding(w) if "musicnn" in names else None
        return window_inputs(w.samples, names, self.params, features=feats, embedding=emb)

    def embedding(self, w: Window):
        """``musicnn`` input of window ``w``: the mean of its grid patches' embeddings, each patch
        embedded once per stream (None for a window that holds no whole grid patch; a padded tail
        gets :func:`streamer.musicnn.window_input` of its real samples)."""
        from . import musicnn

        stem = self.windowers[w.key][0]
        pe = self.patches.get(stem)
        if pe is None:
            pe = self.patches[stem] = musicnn.PatchEmbeddings(musicnn.default_front_end())
        if w.end - w.start != w.samples.size:  # a stream shorter than a window: its real samples only
            return musicnn.window_input(w.samples[:w.end - w.start], pe.fe)
        return pe.window_input(self.rings[stem], w.start, w.end)

    def push(self, stems: dict[str, np.ndarray]) -> Iterator[list[Window]]:
        """Write one block per stem (equal lengths); yield the completed windows.

        Blocks longer than ``block_max`` are written in pieces; one list of
        windows is yielded per piece.  The windows are views into the rings:
        consume each list before advancing the generator.
        """
        n = next(iter(stems.values())).shape[0]
        for i in range(0, n, self._piece):
            for stem, ring in self.rings.items():
                ring.write(stems[stem][i:i + self._piece])
                if stem in self.mels:
                    self.mels[stem].update(ring)
            done = [win for stem, w in self.windowers.values() for win in w.ready(self.rings[stem])]
            if done:
                yield done

    def flush(self) -> list[Window]:
        """The tail windows at end of stream (see :meth:`Windower.tail`)."""
        tails = (w.tail(self.rings[stem]) for stem, w in self.windowers.values())
        return [t for t in tails if t is not None]

    @property
    def total(self) -> int:
        return next(iter(self.rings.values())).total
