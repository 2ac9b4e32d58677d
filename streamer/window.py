"""Sliding windows over a stream without copies: a mirrored ring buffer.

Every sample is written twice, at ``i`` and ``i + capacity``, so any run of up
to ``capacity`` recent samples is one contiguous slice: windows are handed out
as read-only numpy views, valid until the next write.  Several windowers (one
per source: speech and music windows differ) read the same ring.

Chunking does not matter: pushing a signal in blocks of any sizes yields exactly
the windows sliced from the whole signal (tested).

:class:`WindowPlan` says where windows lie (length and hop in samples, from a
model card and the user's hop override); the rings here know nothing of
features: :class:`streamer.inputs.InputWindowStream` adds the model inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np

from .dsp import SAMPLE_RATE
from .errors import EmotrackError, ParameterError


@dataclass(frozen=True)
class WindowPlan:
    """Where one source's windows lie: ``length`` and ``hop`` in samples (16 kHz); ``hop_s``
    is the hop as given in seconds."""

    length: int
    hop: int
    hop_s: float

    @classmethod
    def from_card(cls, card: dict, hop_s: Optional[float] = None, source: str = "") -> "WindowPlan":
        """The card's ``window_s``, and its ``hop_s`` unless ``hop_s`` (``--<source>-hop``) overrides it."""
        hop = float(hop_s or card["hop_s"])
        if hop <= 0:
            raise EmotrackError(f"--{source}-hop {hop} must be > 0")
        return cls(int(round(float(card["window_s"]) * SAMPLE_RATE)), int(round(hop * SAMPLE_RATE)), hop)


def window_plans(cards: dict, hops_s: Optional[dict] = None) -> dict[str, WindowPlan]:
    """:class:`WindowPlan` per source of ``cards`` ({source: model card}), with ``hops_s`` overrides."""
    return {src: WindowPlan.from_card(card, (hops_s or {}).get(src), src) for src, card in cards.items()}


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

    def __init__(self, specs: dict[str, tuple[str, int, int]], block_max: int):
        self.max_length = max(length for _, length, _ in specs.values())
        self._piece = max(1, int(block_max))
        self.capacity = self.max_length + self._piece
        self.rings = {stem: RingBuffer(self.capacity) for stem, _, _ in specs.values()}
        self.windowers = {key: (stem, Windower(key, length, hop)) for key, (stem, length, hop) in specs.items()}

    def written(self, stem: str, ring: RingBuffer) -> None:
        """Called after every write into ``stem``'s ring (a subclass caches what it derives)."""

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
                self.written(stem, ring)
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
