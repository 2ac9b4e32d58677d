"""A model ready to run: its checked card and the backend that runs its ONNX file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .backends import Backend, select_backend
from .cards import OUTPUTS, default_model_path, load_card
from .errors import ModelError


@dataclass
class LoadedModel:
    """An emotion model ready to run: card + backend."""

    path: Path
    card: dict
    backend: Backend

    @property
    def id(self) -> str:
        return self.card["id"]

    @property
    def source(self) -> str:
        return self.card["source"]

    @property
    def input_names(self) -> tuple[str, ...]:
        """The inputs this model takes, in card order."""
        return tuple(self.card["inputs"])

    @property
    def frames(self) -> int:
        """Log-mel frames per window of the ``features`` input (0 for a model without it)."""
        if "features" not in self.card["inputs"]:
            return 0
        return int(self.card["inputs"]["features"]["shape"][1])

    def predict(self, inputs: "dict[str, np.ndarray] | np.ndarray") -> dict[str, np.ndarray]:
        """Run a batch of inputs by name (a bare array: the ``features`` input,
        [shape=(n, frames, n_mels, 3)]); returns quadrant, va, activity."""
        if not isinstance(inputs, dict):
            inputs = {"features": inputs}
        out = self.backend.run(inputs)
        missing = [k for k in OUTPUTS if k not in out]
        if missing:
            raise ModelError(f"model {self.id} lacks outputs {missing}")
        return {"quadrant": np.asarray(out["quadrant"], np.float32),
                "va": np.asarray(out["va"], np.float32),
                "activity": np.asarray(out["activity"], np.float32).reshape(-1)}

    def close(self) -> None:
        self.backend.close()


def load_model(path: Optional[str | Path], source: str, backend: str = "auto", threads: Optional[int] = None,
               check: Optional[Callable[[dict, Path], None]] = None) -> LoadedModel:
    """Load the model at ``path`` (default: the shipped one for ``source``); ``check(card, path)``,
    when given, vets the card before a backend is made (the streamer: the inputs it computes)."""
    p = Path(path) if path else default_model_path(source)
    card = load_card(p)
    if card["source"] != source:
        raise ModelError(f"{p} is a {card['source']} model, not a {source} model")
    if check is not None:
        check(card, p)
    be = select_backend(backend, p, threads=threads)
    return LoadedModel(p, card, be)
