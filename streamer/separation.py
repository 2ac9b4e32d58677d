"""The separation stage: mix in, one stream per stem (speech, music) out.

A separator works on the stream, block by block, so stems feed their own
window rings; real separators (Spleeter, the built-in mask network) keep their
own overlap state and add latency, reported by ``latency_samples``.

``none`` passes the mix to both stems: the speech and music models then see
mixed audio, which is what they were trained on (seed 001: train on what you
will hear).  The activity of each source in a window comes from the emotion
models' activity heads, trained on such mixtures.
"""

from __future__ import annotations

import numpy as np

from .errors import ParameterError

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

    def close(self) -> None:
        pass


class NoneSeparator(Separator):
    """No separation: both stems are the mix."""

    name = "none"
    identity = True

    def process(self, block: np.ndarray) -> dict[str, np.ndarray]:
        return {"speech": block, "music": block}


SEPARATORS = {"none": NoneSeparator}


def make_separator(name: str) -> Separator:
    try:
        return SEPARATORS[name]()
    except KeyError:
        raise ParameterError(f"separator={name!r} unknown; available: {', '.join(SEPARATORS)}") from None
