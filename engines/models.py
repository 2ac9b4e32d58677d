"""Model artifacts: an ONNX file with its model card (JSON) beside it.

The shipped defaults live in ``engines/models/{speech,music}.onnx`` with
``{speech,music}.json``.  A card names the task, inputs, outputs (with labels),
feature parameters, window and hop, training data, protocol, metrics and the
licence of the data; ``onnx_sha256`` ties it to its ONNX file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .backends import Backend, BackendError, select_backend

MODELS_DIR = Path(__file__).resolve().parent / "models"
REQUIRED_CARD_FIELDS = ("id", "source", "task", "onnx", "window_s", "hop_s", "inputs", "outputs",
                        "features", "training_data", "protocol", "metrics", "licence")
OUTPUTS = ("quadrant", "va", "activity")
#: inputs the streamer computes for a window (:mod:`streamer.inputs`), and their shapes
INPUT_KINDS = ("features", "handcrafted", "music_descriptors", "waveform", "musicnn")
INPUT_SHAPE_DOC = {"features": "[N, frames, n_mels, 3]", "handcrafted": "[N, descriptors]",
                   "music_descriptors": "[N, descriptors]",
                   "waveform": "[N, samples]", "musicnn": "[N, 200]"}
INPUT_RANKS = {n: len(d.split(",")) for n, d in INPUT_SHAPE_DOC.items()}


class ModelCardError(Exception):
    """A model card is missing, unreadable or does not match its ONNX file."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_model_path(source: str) -> Path:
    return MODELS_DIR / f"{source}.onnx"


def read_card(onnx_path: Path) -> dict:
    """The card (JSON beside the ONNX file) as written, unchecked; a missing model or card, or a card that
    is not a JSON object, is a one-line :class:`ModelCardError`."""
    onnx_path = Path(onnx_path)
    card_path = onnx_path.with_suffix(".json")
    if not onnx_path.is_file():
        raise ModelCardError(f"model file not found: {onnx_path}")
    if not card_path.is_file():
        raise ModelCardError(f"model card not found beside the model: {card_path}")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelCardError(f"cannot read model card {card_path}: {exc}") from None
    if not isinstance(card, dict):
        raise ModelCardError(f"model card {card_path} is not a JSON object")
    return card


def load_card(onnx_path: Path) -> dict:
    """The card of a model the streamer can run, checked (fields, inputs it computes, sha256)."""
    card_path = onnx_path.with_suffix(".json")
    card = read_card(onnx_path)
    missing = [k for k in REQUIRED_CARD_FIELDS if k not in card]
    if missing:
        raise ModelCardError(f"model card {card_path} lacks fields {missing}")
    card["inputs"] = specs_by_name(card["inputs"], card_path, "inputs")
    card["outputs"] = specs_by_name(card["outputs"], card_path, "outputs")
    names = sorted(card["inputs"])
    if card.get("streamable") is False or not names or any(n not in INPUT_KINDS for n in names):
        raise ModelCardError(f"{onnx_path.name} takes inputs {names}; the streamer computes "
                             f"{', '.join(INPUT_KINDS)}: it can be evaluated offline (emotrack evaluate) but not "
                             "streamed")
    for n, spec in card["inputs"].items():
        shape = spec.get("shape") if isinstance(spec, dict) else None
        if not isinstance(shape, list) or len(shape) != INPUT_RANKS[n]:
            raise ModelCardError(f"model card {card_path}: inputs.{n}.shape must be {INPUT_SHAPE_DOC[n]}")
    want = card.get("onnx_sha256")
    if want and sha256_of(onnx_path) != want:
        raise ModelCardError(f"{onnx_path} does not match the sha256 in its card {card_path}: "
                             "the file was changed or the card belongs to another model")
    return card


def specs_by_name(specs, card_path: Path, what: str) -> dict:
    """Card I/O specs as {name: spec}; cards may list them or map them by name."""
    if isinstance(specs, dict):
        return specs
    if isinstance(specs, list) and all(isinstance(s, dict) and "name" in s for s in specs):
        return {s["name"]: s for s in specs}
    raise ModelCardError(f"model card {card_path}: {what} must be a list of {{name, ...}} or a mapping")


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
        """The inputs this model takes (a subset of :data:`INPUT_KINDS`), in card order."""
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
            raise ModelCardError(f"model {self.id} lacks outputs {missing}")
        return {"quadrant": np.asarray(out["quadrant"], np.float32),
                "va": np.asarray(out["va"], np.float32),
                "activity": np.asarray(out["activity"], np.float32).reshape(-1)}

    def close(self) -> None:
        self.backend.close()


def load_model(path: Optional[str | Path], source: str, backend: str = "auto",
               threads: Optional[int] = None) -> LoadedModel:
    """Load the model at ``path`` (default: the shipped one for ``source``)."""
    p = Path(path) if path else default_model_path(source)
    card = load_card(p)
    if card["source"] != source:
        raise ModelCardError(f"{p} is a {card['source']} model, not a {source} model")
    be = select_backend(backend, p, threads=threads)
    return LoadedModel(p, card, be)


__all__ = ["LoadedModel", "ModelCardError", "BackendError", "load_model", "load_card",
           "default_model_path", "sha256_of", "MODELS_DIR"]
