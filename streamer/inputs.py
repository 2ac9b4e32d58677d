"""Model inputs of one window, by the names a model card's ``inputs`` use.

* ``features`` [frames, n_mels, 3]: :func:`streamer.features.extract` (log-mel
  dB, delta, delta-delta of the R128-normalised window); the shipped CNNs.
* ``handcrafted`` [D]: :func:`streamer.descriptors.features` of the window
  (MFCC, spectral, pitch, chroma and rhythm descriptors); descriptor models.
* ``music_descriptors`` [D]: :func:`streamer.music_descriptors.features` of the
  window (harmony, dissonance, melody, texture).
* ``waveform`` [samples]: the window after R128 loudness normalisation (SincNet).
* ``musicnn`` [200]: mean embedding of the pretrained musicnn front end over the 3 s
  grid patches inside the window (:mod:`streamer.musicnn`; streams embed each patch once).

Training (:mod:`training.recipe`) and streaming build a window's inputs with
:func:`window_inputs`, so a model sees the same inputs in both.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from engines.models import INPUT_KINDS

from . import descriptors, music_descriptors, musicnn
from .errors import ParameterError
from .features import DEFAULT_PARAMS, FeatureParams, extract, loudness_normalise

__all__ = ["INPUT_KINDS", "input_shape", "stack_inputs", "window_inputs"]


def input_shape(name: str, n_samples: int, params: FeatureParams = DEFAULT_PARAMS) -> tuple[int, ...]:
    """Shape of input ``name`` for one window of ``n_samples`` (no batch dimension)."""
    if name == "features":
        return (params.n_frames(n_samples), params.n_mels, 3)
    if name == "handcrafted":
        return (len(descriptors.feature_names()),)
    if name == "music_descriptors":
        return (len(music_descriptors.feature_names()),)
    if name == "waveform":
        return (n_samples,)
    if name == "musicnn":
        return (musicnn.EMBED_DIM,)
    raise ParameterError(f"unknown model input {name!r}; emotrack computes {', '.join(INPUT_KINDS)}")


def window_inputs(x: np.ndarray, names: Sequence[str], params: FeatureParams = DEFAULT_PARAMS,
                  features: Optional[np.ndarray] = None,
                  embedding: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
    """Inputs ``names`` of the window ``x`` (16 kHz mono); ``features``: its log-mel input
    when already computed (e.g. from a stream's frame cache); ``embedding``: its ``musicnn``
    input when already pooled from a stream's patch embeddings."""
    out = {}
    for n in names:
        if n == "features":
            out[n] = extract(x, params) if features is None else features
        elif n == "handcrafted":
            out[n] = descriptors.features(x)
        elif n == "music_descriptors":
            out[n] = music_descriptors.features(x)
        elif n == "waveform":
            out[n] = loudness_normalise(np.asarray(x, np.float32), params)
        elif n == "musicnn":
            out[n] = musicnn.window_input(x) if embedding is None else embedding
        else:
            input_shape(n, 0, params)  # raises: unknown input
    return out


def stack_inputs(per_window: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One batch from the inputs of several windows (each a :func:`window_inputs` dict)."""
    return {n: np.stack([w[n] for w in per_window]) for n in per_window[0]}
