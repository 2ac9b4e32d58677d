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
    """No separation: both stems are the mix."""

    name = "none"
    identity = True

    def process(self, block: np.ndarray) -> dict[str, np.ndarray]:
        return {"speech": block, "music": block}


def separate(x: np.ndarray, separator: Separator) -> dict[str, np.ndarray]:
    """Whole-signal separation with a streaming separator (one block, then flush; a separator
    with ``reset`` is reset first, so it can be reused for many signals)."""
    if hasattr(separator, "reset"):
        separator.reset()
    a = separator.process(np.asarray(x, np.float32))
    b = separator.flush()
    return {s: np.concatenate([a[s], b[s]]) for s in STEMS}
