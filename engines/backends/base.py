"""The interface every inference backend implements (see :mod:`engines.backends`).

``backend.run({"features": x}) -> {"quadrant": ..., "va": ..., "activity": ...}``
"""

from __future__ import annotations

from typing import Mapping

import numpy as np


class Backend:
    name = "base"
    description = ""

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
