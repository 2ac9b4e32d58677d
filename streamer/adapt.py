"""Per-stream adaptation: causal standardisation of a model input.

Models that score well on their own corpus often collapse to one quadrant on a new
speaker, microphone or language: the descriptors of a voice move as a whole.  A model
whose card carries an ``adaptation`` section was trained on inputs standardised per
speaker, and the streamer standardises its input the same way, per stream and causally:
each window is z-scored with the running mean and variance of the windows heard so far
on that stream (itself included), shrunk toward the training speakers' average with the
weight of ``prior_n`` windows.  A stream starts as an average training speaker and
becomes itself as it is heard.

The same :class:`StreamStandardiser` is what training uses (:mod:`training.recipe` for
the recipe's windows and its clip-level evaluation, :mod:`training.results` for the
protocols' ``*_spknorm_online`` systems), so a model sees the same inputs in both.

Card section (``adaptation``)::

    {"method": "causal_standardise", "input": "handcrafted", "prior_n": 5.0,
     "prior_mean": [D floats], "prior_var": [D floats], "min_activity": 0.5}

Windows whose separator activity is below ``min_activity`` (no speech in them) are
standardised with the statistics so far but do not update them.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from .errors import ModelError

METHOD = "causal_standardise"
EPS = 1e-8


class StreamStandardiser:
    """Running mean/variance of one stream's input vectors, started from a prior."""

    def __init__(self, prior_mean: Sequence[float], prior_var: Sequence[float], prior_n: float = 5.0,
                 input_name: Optional[str] = None):
        """``input_name``: the model input it standardises (a card's ``adaptation.input``), for
        :meth:`adapt_inputs`."""
        mu0 = np.asarray(prior_mean, np.float64)
        var0 = np.asarray(prior_var, np.float64)
        if mu0.shape != var0.shape or mu0.ndim != 1:
            raise ValueError(f"prior mean {mu0.shape} and variance {var0.shape} must be vectors of one length")
        if prior_n < 0 or not math.isfinite(prior_n):
            raise ValueError(f"prior_n must be >= 0 (0: no prior), not {prior_n}")
        self.prior_n = float(prior_n)
        self.s1 = self.prior_n * mu0
        self.s2 = self.prior_n * (var0 + mu0 ** 2)
        self.n = self.prior_n
        self.updates = 0
        self.input_name = input_name

    @property
    def dim(self) -> int:
        return int(self.s1.size)

    def update(self, x: np.ndarray) -> None:
        """Count ``x`` (one window's vector) in the stream's statistics; a non-finite ``x`` is skipped."""
        x = np.asarray(x, np.float64)
        if not np.all(np.isfinite(x)):
            return
        self.s1 = self.s1 + x
        self.s2 = self.s2 + x ** 2
        self.n += 1.0
        self.updates += 1

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n <= 0:  # no prior and nothing heard yet: leave the input as it is
            return np.zeros_like(self.s1), np.ones_like(self.s1)
        m = self.s1 / self.n
        return m, np.sqrt(np.maximum(self.s2 / self.n - m ** 2, 0.0))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``x`` z-scored with the statistics so far (same dtype as ``x``)."""
        m, s = self.mean_std()
        x = np.asarray(x)
        return ((x.astype(np.float64) - m) / (s + EPS)).astype(x.dtype if x.dtype.kind == "f" else np.float32)

    def __call__(self, x: np.ndarray, update: bool = True) -> np.ndarray:
        """Update with ``x`` (unless ``update`` is false), then standardise it."""
        if update:
            self.update(x)
        return self.transform(x)

    def adapt_inputs(self, inputs: dict, update: bool = True) -> dict:
        """One window's model inputs with the adapted one (``input_name``) standardised."""
        if self.input_name is None:
            raise ValueError("this stream was made without the name of the input it standardises")
        return {**inputs, self.input_name: self(inputs[self.input_name], update=update)}


def card_section(prior_mean, prior_var, prior_n: float, input_name: str = "handcrafted",
                 min_activity: float = 0.5) -> dict:
    """The ``adaptation`` section of a model card."""
    return {"method": METHOD, "input": input_name, "prior_n": float(prior_n),
            "min_activity": float(min_activity),
            "prior_mean": [float(v) for v in prior_mean], "prior_var": [float(v) for v in prior_var],
            "description": ("causal per-stream standardisation (streamer.adapt): each window's input is z-scored "
                            "with the running mean and variance of the stream's windows so far, itself "
                            "included, shrunk toward the training speakers' average (prior_mean, prior_var) with "
                            "the weight of prior_n windows; windows with separator activity below min_activity "
                            "do not update the statistics")}


class Adaptation:
    """A model card's ``adaptation`` section, checked; :meth:`new_stream` gives one stream's state."""

    def __init__(self, section: dict, input_dims: dict, model_id: str = "model"):
        if not isinstance(section, dict) or section.get("method") != METHOD:
            raise ModelError(f"model {model_id}: adaptation.method must be {METHOD!r}, not "
                             f"{section.get('method') if isinstance(section, dict) else section!r}")
        self.input = section.get("input")
        if self.input not in input_dims:
            raise ModelError(f"model {model_id}: adaptation.input {self.input!r} is not one of its inputs "
                             f"{sorted(input_dims)}")
        try:
            self.mean = np.asarray(section["prior_mean"], np.float64)
            self.var = np.asarray(section["prior_var"], np.float64)
            self.prior_n = float(section.get("prior_n", 5.0))
            self.min_activity = float(section.get("min_activity", 0.5))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"model {model_id}: adaptation section unreadable ({exc})") from None
        dim = input_dims[self.input]
        if self.mean.shape != (dim,) or self.var.shape != (dim,) or not (
                np.all(np.isfinite(self.mean)) and np.all(self.var >= 0)):
            raise ModelError(f"model {model_id}: adaptation prior must be {dim} finite means and variances >= 0")
        if not self.prior_n > 0:
            raise ModelError(f"model {model_id}: adaptation.prior_n must be > 0")

    def new_stream(self) -> StreamStandardiser:
        return StreamStandardiser(self.mean, self.var, self.prior_n, input_name=self.input)

    def wants_update(self, activity: Optional[float]) -> bool:
        """Whether a window with separator ``activity`` (None: unknown) updates the statistics."""
        return activity is None or activity >= self.min_activity


def from_section(section: Optional[dict]) -> Optional[Adaptation]:
    """An ``adaptation`` section on its own (no card around it: its input's width is the prior's),
    or None for none."""
    if not section:
        return None
    return Adaptation(section, {section.get("input"): len(section.get("prior_mean") or [])})


def from_card(card: dict) -> Optional[Adaptation]:
    """The card's adaptation, or None when the model does not adapt."""
    section = card.get("adaptation")
    if not section:
        return None
    inputs = card.get("inputs", {})
    if isinstance(inputs, list):
        inputs = {s.get("name"): s for s in inputs if isinstance(s, dict)}
    dims = {}
    for name, spec in inputs.items():
        shape = spec.get("shape") if isinstance(spec, dict) else None
        if isinstance(shape, list) and len(shape) == 2 and isinstance(shape[1], int):
            dims[name] = shape[1]
    return Adaptation(section, dims, card.get("id", "model"))


def standardise_groups(X: np.ndarray, groups: Sequence, prior: tuple[np.ndarray, np.ndarray],
                       prior_n: float = 5.0, order: Optional[Sequence[int]] = None,
                       update: Optional[Sequence[bool]] = None) -> np.ndarray:
    """Rows of ``X`` standardised causally per group, as a stream per group would: rows taken in
    ``order`` (default: row order), each with its group's statistics up to and including itself;
    a row whose ``update`` is false is standardised without being counted (a window below the
    streamer's activity gate)."""
    X = np.asarray(X)
    out = np.empty(X.shape, np.float64)
    streams: dict = {}
    for i in (range(len(X)) if order is None else order):
        st = streams.get(groups[i])
        if st is None:
            st = streams[groups[i]] = StreamStandardiser(prior[0], prior[1], prior_n)
        out[i] = st(X[i], update=True if update is None else bool(update[i]))
    return out


def group_prior(X: np.ndarray, groups: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """The mean of the groups' feature means and of their variances: what a new speaker looks
    like before any of their audio has been heard."""
    X, groups = np.asarray(X, np.float64), np.asarray(groups)
    ms, vs = zip(*[(X[groups == g].mean(0), X[groups == g].var(0)) for g in np.unique(groups)])
    return np.mean(ms, 0), np.mean(vs, 0)
