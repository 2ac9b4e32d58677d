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

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from . import descriptors, music_descriptors, musicnn
from .errors import ModelError, ParameterError
from .features import (DEFAULT_PARAMS, FEATURE_VERSION, FeatureParams, LogMelStream, extract,
                       loudness_gain_db, loudness_normalise)
from .loudness import STEP_S, KWeightedStream, stream_grid
from .window import RingBuffer, Window, WindowStream

__all__ = ["INPUT_KINDS", "INPUT_VERSIONS", "InputWindowStream", "check_input_versions", "input_shape",
           "input_versions", "stack_inputs", "window_inputs"]

#: the inputs the streamer computes for a window, and their shapes (a card's ``inputs`` name them)
INPUT_KINDS = ("features", "handcrafted", "music_descriptors", "waveform", "musicnn")
INPUT_SHAPE_DOC = {"features": "[N, frames, n_mels, 3]", "handcrafted": "[N, descriptors]",
                   "music_descriptors": "[N, descriptors]", "waveform": "[N, samples]",
                   "musicnn": "[N, 200]"}
INPUT_RANKS = {n: len(d.split(",")) for n, d in INPUT_SHAPE_DOC.items()}
#: bump when the ``waveform`` input changes (the R128-normalised window)
WAVEFORM_VERSION = 1
#: the version of each input's definition, beside it in its module; a model card records the
#: versions its model was trained on (``input_versions``) and the streamer refuses other ones
INPUT_VERSIONS = {"features": FEATURE_VERSION, "handcrafted": descriptors.HANDCRAFTED_VERSION,
                  "music_descriptors": music_descriptors.MUSIC_DESCRIPTOR_VERSION, "waveform": WAVEFORM_VERSION,
                  "musicnn": musicnn.MUSICNN_VERSION}


def input_versions(names: Sequence[str]) -> dict[str, int]:
    """``input_versions`` for the card of a model that reads ``names``."""
    return {n: INPUT_VERSIONS[n] for n in names}


def check_input_versions(card: dict, model_id: str = "") -> None:
    """Refuse (one-line :class:`ModelError`) a card whose recorded input versions differ from the
    definitions this emotrack computes.  A card that records none (written before versions were
    recorded) is taken as it is: its feature parameters are still checked."""
    recorded = card.get("input_versions") or {}
    names = card["inputs"] if isinstance(card.get("inputs"), dict) else [i["name"] for i in card.get("inputs", [])]
    bad = [n for n in names if n in recorded and recorded[n] != INPUT_VERSIONS.get(n)]
    if bad:
        what = ", ".join(f"{n} version {recorded[n]} (this emotrack computes version {INPUT_VERSIONS.get(n)})"
                         for n in bad)
        raise ModelError(f"model {model_id or card.get('id', '?')} was trained on {what}; retrain it or use "
                         "the emotrack version it was trained with")


def check_card_inputs(card: dict, onnx_path: Path) -> None:
    """Refuse (one-line :class:`ModelError`) a card whose inputs the streamer cannot compute, whose
    input shapes are malformed, or whose input versions differ from this emotrack's."""
    names = sorted(card["inputs"])
    if card.get("streamable") is False or not names or any(n not in INPUT_KINDS for n in names):
        raise ModelError(f"{onnx_path.name} takes inputs {names}; the streamer computes "
                         f"{', '.join(INPUT_KINDS)}: it can be evaluated offline (emotrack evaluate) but not "
                         "streamed")
    for n, spec in card["inputs"].items():
        shape = spec.get("shape") if isinstance(spec, dict) else None
        if not isinstance(shape, list) or len(shape) != INPUT_RANKS[n]:
            raise ModelError(f"model card {onnx_path.with_suffix('.json')}: inputs.{n}.shape must be "
                             f"{INPUT_SHAPE_DOC[n]}")
    check_input_versions(card)


def load_streamable(path, source: str, backend: str = "auto", threads: Optional[int] = None):
    """:func:`engines.runtime.load_model` of a model the streamer can feed (:func:`check_card_inputs`)."""
    from engines.runtime import load_model

    return load_model(path, source, backend=backend, threads=threads, check=check_card_inputs)


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


class InputWindowStream(WindowStream):
    """A :class:`~streamer.window.WindowStream` that also hands out each window's model inputs,
    with the log-mel frames of every stem computed once per stream (:class:`LogMelStream`)."""

    def __init__(self, specs: dict[str, tuple[str, int, int]], block_max: int,
                 params: Optional[FeatureParams] = None, lead_samples: int = 0):
        super().__init__(specs, block_max)
        # the caches hold ``lead_samples`` more than the rings: what :meth:`derive` may run ahead
        cache = self.capacity + max(0, int(lead_samples))
        #: per-stem log-mel frames, computed once (when feature params are given)
        self.mels = {stem: LogMelStream(cache, params) for stem in self.rings} if params else {}
        #: per-stem K-weighted energies (R128 loudness of every window from one filtering of the stream)
        self.loudness = {}
        if params:
            step = int(round(STEP_S * params.sample_rate))
            for stem in self.rings:
                hops = [w.hop for s, w in self.windowers.values() if s == stem]
                self.loudness[stem] = KWeightedStream(cache, params.sample_rate, stream_grid(step, hops))
        #: True while :meth:`derive` (on another thread) fills the caches instead of :meth:`written`
        self.derive_elsewhere = False
        self._shadow: Optional[dict] = None
        self.params = params
        #: per-stem musicnn patch embeddings (streamer.musicnn), made when a model first asks for them
        self.patches: dict = {}
        #: per stem, callables given its LogMelStream after every update (the presence detector reads
        #: the frames from here instead of computing them again)
        self.frame_listeners: dict = {}

    def written(self, stem: str, ring: RingBuffer) -> None:
        if self.patches:
            pe = self.patches.get(stem)
            if pe is not None:
                pe.feed(ring)
        if not self.derive_elsewhere:
            self._derive(stem, ring)

    def derive(self, stems: dict[str, np.ndarray]) -> None:
        """Fill the caches (log-mel frames, K-weighted energies) with the stems' next block, ahead of
        :meth:`push` (which then only writes the rings: ``derive_elsewhere``): a copy of each ring is
        written in the pieces :meth:`push` writes, and the caches are derived from it as
        :meth:`written` would, so they hold the same numbers.  For a thread running the separator
        ahead of the windows (:class:`streamer.separation.Ahead`), at most ``lead_samples`` ahead."""
        if self._shadow is None:   # the caches read the newest piece and a frame before it, no more
            self._shadow = {stem: RingBuffer(min(self.capacity, self._piece + 4096)) for stem in self.rings}
            for stem, ring in self._shadow.items():   # the copies start where the rings are
                r = self.rings[stem]
                held = min(r.total, ring.capacity)
                ring.total = r.total - held
                if held:
                    ring.write(r.view(r.total - held, held))
        n = next(iter(stems.values())).shape[0]
        for i in range(0, n, self._piece):
            for stem, ring in self._shadow.items():
                ring.write(stems[stem][i:i + self._piece])
                self._derive(stem, ring)

    def _derive(self, stem: str, ring: RingBuffer) -> None:
        if stem in self.mels:
            self.mels[stem].update(ring)
            for f in self.frame_listeners.get(stem, ()):
                f(self.mels[stem])
        if stem in self.loudness:
            self.loudness[stem].update(ring)

    def gain_db(self, w: Window) -> Optional[float]:
        """R128 gain of window ``w`` from the stream's K-weighted energies, or None when they do
        not cover it (a padded tail, a window off the grid)."""
        kw = self.loudness.get(self.windowers[w.key][0])
        if kw is None or w.end - w.start != w.samples.size:
            return None
        lufs = kw.window_loudness(w.samples, w.start)
        return None if lufs is None else loudness_gain_db(lufs, self.params)

    def features(self, w: Window) -> np.ndarray:
        """Model input of window ``w``: cached frames when on the frame grid, else computed."""
        stem = self.windowers[w.key][0]
        mel = self.mels.get(stem)
        n = self.params.n_frames(w.samples.size)
        if mel is not None and w.end - w.start == w.samples.size and mel.covers(w.start, n):
            return mel.window_features(w.samples, w.start, n, self.gain_db(w))
        return extract(w.samples, self.params)

    def inputs(self, w: Window, names) -> dict[str, np.ndarray]:
        """Model inputs ``names`` of window ``w`` (:func:`window_inputs`), the log-mel ``features``
        from the frame cache where it covers the window."""
        feats = self.features(w) if "features" in names else None
        emb = self.embedding(w) if "musicnn" in names else None
        return window_inputs(w.samples, names, self.params, features=feats, embedding=emb)

    def embedding(self, w: Window):
        """``musicnn`` input of window ``w``: the mean of its grid patches' embeddings, each patch
        embedded once per stream (a window shorter than the stream's windows, a padded tail, gets
        :func:`streamer.musicnn.window_input` of its real samples)."""
        stem = self.windowers[w.key][0]
        pe = self.patch_embeddings(stem)
        if w.end - w.start != w.samples.size:  # a stream shorter than a window: its real samples only
            return musicnn.window_input(w.samples[:w.end - w.start], pe.fe)
        return pe.window_input(self.rings[stem], w.start, w.end)

    def patch_embeddings(self, stem: str) -> "musicnn.PatchEmbeddings":
        """The musicnn patch embeddings of ``stem`` (made on first use)."""
        pe = self.patches.get(stem)
        if pe is None:
            pe = self.patches[stem] = musicnn.PatchEmbeddings(musicnn.default_front_end())
        return pe

    def close(self) -> None:
        """Stop the musicnn patch workers (eager mode)."""
        for pe in self.patches.values():
            pe.close()
