"""Model artifacts: an ONNX file with its model card (JSON) beside it.

The shipped models live in ``engines/models/*.onnx``, each with its card
(same name, ``.json``); :data:`DEFAULT_MODELS` names the defaults (the folder keeps its user-visible name; this module is
``cards`` so that no module shares it).  A card names the task, inputs, outputs
(with labels), feature parameters, window and hop, training data, protocol,
metrics and the licence of the data; ``onnx_sha256`` ties it to its ONNX file;
``input_versions`` records the version of every input definition the model
reads (``{"features": 1}``: :data:`streamer.inputs.INPUT_VERSIONS`), so that the
streamer refuses a model whose inputs it now computes differently.

:class:`ModelCard` is the one type that reads and writes every card in emotrack:
the emotion models, the built-in separator, training's exports and the tests'
tiny models.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .errors import ModelError

MODELS_DIR = Path(__file__).resolve().parent / "models"
REQUIRED_CARD_FIELDS = ("id", "source", "task", "onnx", "window_s", "hop_s", "inputs", "outputs",
                        "features", "training_data", "protocol", "metrics", "licence")
OUTPUTS = ("quadrant", "va", "activity")


#: the old name of the error a missing, unreadable or mismatched card raises: it is :class:`ModelError`
ModelCardError = ModelError


class ModelCard(dict):
    """A model card: the JSON object beside an ONNX file, as a dict (``card["window_s"]``).

    :meth:`read` takes it as written, :meth:`load` checks it for the streamer, :meth:`write`
    puts it beside its ONNX file.
    """

    @classmethod
    def read(cls, onnx_path: str | Path) -> "ModelCard":
        return read_card(Path(onnx_path))

    @classmethod
    def load(cls, onnx_path: str | Path) -> "ModelCard":
        return load_card(Path(onnx_path))

    def write(self, onnx_path: str | Path, *, indent: int = 2) -> Path:
        """Write the card beside ``onnx_path`` (same name, ``.json``); returns its path."""
        path = Path(onnx_path).with_suffix(".json")
        path.write_text(json.dumps(self, indent=indent) + "\n")
        return path

    def seal(self, onnx_path: str | Path) -> "ModelCard":
        """Tie the card to its ONNX file: ``onnx_sha256`` and ``onnx_bytes``."""
        self["onnx_sha256"] = sha256_of(Path(onnx_path))
        self["onnx_bytes"] = Path(onnx_path).stat().st_size
        return self

    @property
    def input_versions(self) -> dict:
        """{input name: version of its definition} as recorded (empty for cards written before
        versions were recorded)."""
        v = self.get("input_versions")
        return dict(v) if isinstance(v, dict) else {}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: the model a source gets when none is named (``--speech-model`` / ``--music-model``).  Music: the musicnn
#: head (``music_musicnn.onnx``, a gated 4Q | EMOPIA mixture on the MSD musicnn front end, trained on clean
#: music and music under speech), the winner on every unseen condition measured (docs/RESULTS.md): unseen 4Q
#: artists 0.73 against the log-mel CNN's 0.50, under speech 0.73 / 0.47, EMOPIA 0.64 / 0.56, VGMIDI 0.46 /
#: 0.43, held-out TV-like programmes per second 0.59 / 0.53 (level over piano), inside the 50x budget.  The
#: CNN (``music.onnx``) stays as the fast profile, ``--music-model engines/models/music.onnx``: the musicnn
#: front end's arithmetic is what keeps a default replay with separation below 100x (docs/BENCHMARKS.md).
DEFAULT_MODELS = {"speech": "speech.onnx", "music": "music_musicnn.onnx"}


def default_model_path(source: str) -> Path:
    return MODELS_DIR / DEFAULT_MODELS.get(source, f"{source}.onnx")


def read_card(onnx_path: Path) -> ModelCard:
    """The card (JSON beside the ONNX file) as written, unchecked; a missing model or card, or a card that
    is not a JSON object, is a one-line :class:`ModelError`."""
    onnx_path = Path(onnx_path)
    card_path = onnx_path.with_suffix(".json")
    if not onnx_path.is_file():
        raise ModelError(f"model file not found: {onnx_path}")
    if not card_path.is_file():
        raise ModelError(f"model card not found beside the model: {card_path}")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read model card {card_path}: {exc}") from None
    if not isinstance(card, dict):
        raise ModelError(f"model card {card_path} is not a JSON object")
    return ModelCard(card)


def load_card(onnx_path: Path) -> ModelCard:
    """The card of a model, checked: required fields, inputs and outputs by name, sha256 of the ONNX
    file.  Which inputs a runtime can compute is the runtime's to check (the streamer:
    :func:`streamer.inputs.check_card_inputs`)."""
    card_path = onnx_path.with_suffix(".json")
    card = read_card(onnx_path)
    missing = [k for k in REQUIRED_CARD_FIELDS if k not in card]
    if missing:
        raise ModelError(f"model card {card_path} lacks fields {missing}")
    if "input_versions" in card and not (isinstance(card["input_versions"], dict) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in card["input_versions"].values())):
        raise ModelError(f"model card {card_path}: input_versions must map input names to integer versions")
    card["inputs"] = specs_by_name(card["inputs"], card_path, "inputs")
    card["outputs"] = specs_by_name(card["outputs"], card_path, "outputs")
    want = card.get("onnx_sha256")
    if want and sha256_of(onnx_path) != want:
        raise ModelError(f"{onnx_path} does not match the sha256 in its card {card_path}: "
                         "the file was changed or the card belongs to another model")
    return card


def specs_by_name(specs, card_path: Path, what: str) -> dict:
    """Card I/O specs as {name: spec}; cards may list them or map them by name."""
    if isinstance(specs, dict):
        return specs
    if isinstance(specs, list) and all(isinstance(s, dict) and "name" in s for s in specs):
        return {s["name"]: s for s in specs}
    raise ModelError(f"model card {card_path}: {what} must be a list of {{name, ...}} or a mapping")


__all__ = ["ModelCard", "ModelError", "ModelCardError", "load_card", "read_card", "default_model_path",
           "DEFAULT_MODELS", "sha256_of", "MODELS_DIR"]
