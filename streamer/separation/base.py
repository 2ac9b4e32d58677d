"""What every separator is: blocks of the mix in, one block per stem out (see :mod:`streamer.separation`)."""

from __future__ import annotations

from typing import Optional

import numpy as np

STEMS = ("speech", "music")


class Separator:
    name = "base"
    #: True when every stem is the input itself: the pipeline keeps one ring.
    identity = False
    latency_samples = 0

    def process(self, block: np.ndarray) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def flush(self) -> dict[str, np.ndarray]:
        """Samples still held at end of stream (none for stateless separators)."""
        return {s: np.zeros(0, np.float32) for s in STEMS}

    def activity(self, stem: str, start: int, end: int) -> Optional[float]:
        """Presence (0..1) of ``stem`` in output samples ``[start, end)``, or None when this
        separator does not estimate it (the emotion model's activity head is used then)."""
        return None

    def close(self) -> None:
        pass


class NoneSeparator(Separator):
    """No separation: both stems are the mix.

    ``presence``: a separator run beside, on the same mix, only for its per-frame
    presence (``activity``); its stems are discarded.  ``emotrack replay`` and
    ``stream`` give the built-in one by default (``--activity separator``), so
    activity is the best presence estimate even when the emotion models read the
    mix.  Its latency adds nothing: a window's activity is the mean presence of
    its frames up to ``latency_samples`` before its end, the ones computed by
    the time the window is complete however the input was cut into blocks (so
    the activity does not depend on the block size, live or replayed)."""

    name = "none"
    identity = True

    def __init__(self, presence: Optional[Separator] = None):
        self.presence = presence

    def process(self, block: np.ndarray) -> dict[str, np.ndarray]:
        if self.presence is not None:
            self.presence.process(block)
        return {"speech": block, "music": block}

    def flush(self) -> dict[str, np.ndarray]:
        if self.presence is not None:
            self.presence.flush()
        return super().flush()

    def activity(self, stem: str, start: int, end: int) -> Optional[float]:
        if self.presence is None:
            return None
        return self.presence.activity(stem, start, max(start + 1, end - self.presence.latency_samples))

    def close(self) -> None:
        if self.presence is not None:
            self.presence.close()


def separate(x: np.ndarray, separator: Separator) -> dict[str, np.ndarray]:
    """Whole-signal separation with a streaming separator (one block, then flush; a separator
    with ``reset`` is reset first, so it can be reused for many signals)."""
    if hasattr(separator, "reset"):
        separator.reset()
    a = separator.process(np.asarray(x, np.float32))
    b = separator.flush()
    return {s: np.concatenate([a[s], b[s]]) for s in STEMS}
