"""Causal tracking of one source's emotion: a filter over the window outputs.

The window outputs (``valence``, ``arousal``, ``quadrant``, ``probs``) describe one
analysis window each and jump from one hop to the next.  A :class:`Tracker` turns
them into a state that moves only when the evidence says so, and says how sure it
is.  It is causal (each message's tracked fields use that window and the ones
before it, nothing later) and adds no latency: it runs when the window's outputs
are there, in the same hop.

The model
---------
The state is the Russell quadrant, a hidden Markov chain over Q1..Q4 whose two
axes (valence sign, arousal sign) are independent two-state chains.  Per axis:

* **Sticky transitions.**  Between two windows ``dt`` seconds apart the sign flips
  with probability ``s = (1 - exp(-2 dt / tau)) / 2`` (a two-state chain whose
  correlation decays as ``exp(-2 dt / tau)``), ``tau`` = ``--smooth`` seconds.
* **Emissions.**  A window's evidence for the positive sign of an axis is the
  marginal of its quadrant probabilities (``probs``: the classifier head),
  ``e = P(Q1) + P(Q4)`` for valence and ``P(Q1) + P(Q2)`` for arousal; a window
  without ``probs`` uses its VA head, which estimates ``2 P(positive) - 1``
  (trained on quadrant sign targets, :mod:`streamer.taxonomy`): ``e = (1 + v) / 2``.
  (Measured on make_mix programmes, the quadrant head of the shipped music model
  is much better than its VA head: docs/TRACKING.md.)  Consecutive
  windows overlap (speech: 3 s every 1 s), so each window's likelihood is
  tempered by ``hop / window`` (every second of audio counts once) and by the
  activity gate below: ``L+ = e ** k``, ``L- = (1 - e) ** k``.
* **Forward filter.**  ``p <- p (1 - s) + (1 - p) s`` (predict), then
  ``p <- p L+ / (p L+ + (1 - p) L-)`` (update).

Tracked valence and arousal are the posterior means of the sign,
``2 p - 1``: the same meaning as the raw VA head's output, given every window
so far instead of one.  The tracked quadrant is ``taxonomy.quadrant_of`` of the
tracked valence and arousal (so the two always agree), and the confidence is the
posterior probability of that quadrant, ``P(valence sign) * P(arousal sign)``,
from 0.25 (no idea) to 1.

Gating by activity
------------------
A window's weight ``w = clip((activity - off) / (on - off), 0, 1)`` scales both its
elapsed time (``dt * w``) and its evidence (``k * w``).  A window with activity at
or below ``off`` (silence, or the other source alone) leaves the state exactly as
it was: silence does not move the state, and the curve holds its last value
through pauses.  ``present`` says whether the source is there, with hysteresis
(on above ``on``, off below ``off``); :mod:`streamer.segments` cuts passages on it.

Before the first active window the state is unknown: ``p = 0.5`` on both axes,
tracked valence and arousal 0, quadrant Q1 (the zero rule), confidence 0.25.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from . import taxonomy
from .errors import ParameterError

#: Names the filter in the ``start`` status (``tracking.method``).
METHOD = "sticky-sign-hmm-v1"
#: Default time constant of the tracked curves (seconds): ``--smooth``.
DEFAULT_SMOOTH_S = 8.0
#: Activity at or below which a window does not move the state; above ``ACTIVITY_ON`` it counts fully.
ACTIVITY_OFF = 0.25
ACTIVITY_ON = 0.5
#: Evidence of one window is kept inside (EPS, 1 - EPS): no window is ever certain.
EPS = 0.02


@dataclass
class TrackedState:
    """What the tracker says after a window (the ``tracked`` object of a message)."""

    valence: float
    arousal: float
    quadrant: str
    confidence: float
    present: bool

    def to_dict(self) -> dict:
        return {"valence": self.valence, "arousal": self.arousal, "quadrant": self.quadrant,
                "confidence": round(self.confidence, 4), "present": self.present}


class Tracker:
    """Forward filter of one source's quadrant (two sticky sign chains), gated by activity.

    ``tau_s``: time constant in seconds (``--smooth``); ``window_s`` and ``hop_s``: the
    source's analysis windows (their ratio tempers overlapping evidence).  Feed windows
    in stream order with :meth:`update`.  The whole state is ``(p_valence, p_arousal,
    present, last_t)``; :meth:`state` / :meth:`restore` hand it out and back.
    """

    def __init__(self, tau_s: float = DEFAULT_SMOOTH_S, *, window_s: float, hop_s: float,
                 activity_off: float = ACTIVITY_OFF, activity_on: float = ACTIVITY_ON):
        if not (isinstance(tau_s, (int, float)) and math.isfinite(tau_s) and tau_s > 0):
            raise ParameterError(f"smooth={tau_s!r} must be a positive number of seconds")
        if window_s <= 0 or hop_s <= 0:
            raise ParameterError(f"window_s={window_s!r} and hop_s={hop_s!r} must be > 0")
        if not 0 <= activity_off < activity_on <= 1:
            raise ParameterError(f"activity_off={activity_off!r} must be below activity_on={activity_on!r}, both in [0, 1]")
        self.tau = float(tau_s)
        self.temper = min(1.0, float(hop_s) / float(window_s))
        self.hop = float(hop_s)
        self.off, self.on = float(activity_off), float(activity_on)
        self.p = [0.5, 0.5]          # P(valence >= 0), P(arousal >= 0)
        self.present = False
        self.last_t: Optional[float] = None

    def weight(self, activity: float) -> float:
        """How much a window of this activity counts (0: not at all, 1: fully)."""
        return min(1.0, max(0.0, (activity - self.off) / (self.on - self.off)))

    def update(self, *, valence: float, arousal: float, activity: float, t_end: float,
               probs: Optional[dict] = None) -> TrackedState:
        """Take one window (its raw outputs, its activity, where it ends) and return the tracked state."""
        dt = self.hop if self.last_t is None else max(0.0, float(t_end) - self.last_t)
        self.last_t = float(t_end)
        if activity >= self.on:
            self.present = True
        elif activity <= self.off:
            self.present = False
        w = self.weight(float(activity))
        if w > 0.0:
            s = 0.5 * (1.0 - math.exp(-2.0 * dt * w / self.tau))
            k = self.temper * w
            if probs is not None:
                ev = (float(probs["Q1"]) + float(probs["Q4"]), float(probs["Q1"]) + float(probs["Q2"]))
            else:
                ev = ((1.0 + float(valence)) / 2.0, (1.0 + float(arousal)) / 2.0)
            for i, e in enumerate(ev):
                e = min(1.0 - EPS, max(EPS, e))
                p = self.p[i] * (1.0 - s) + (1.0 - self.p[i]) * s
                lp, ln = e ** k, (1.0 - e) ** k
                self.p[i] = p * lp / (p * lp + (1.0 - p) * ln)
        return self.current()

    def current(self) -> TrackedState:
        # rounded as on the wire, so that the published quadrant is quadrant_of(published values)
        v, a = round(2.0 * self.p[0] - 1.0, 4) + 0.0, round(2.0 * self.p[1] - 1.0, 4) + 0.0
        q = taxonomy.quadrant_of(v, a)
        pv = self.p[0] if v >= 0 else 1.0 - self.p[0]
        pa = self.p[1] if a >= 0 else 1.0 - self.p[1]
        return TrackedState(valence=v, arousal=a, quadrant=q, confidence=pv * pa, present=self.present)

    def state(self) -> tuple:
        return (self.p[0], self.p[1], self.present, self.last_t)

    def restore(self, state: tuple) -> None:
        self.p = [float(state[0]), float(state[1])]
        self.present, self.last_t = bool(state[2]), state[3]


def track_messages(bodies, tau_s: float = DEFAULT_SMOOTH_S, *, windows: Optional[dict] = None) -> list[dict]:
    """Tracked state of a recorded run: ``bodies`` are emotion messages (one stream, any
    sources, in order); returns a copy of each with ``tracked`` computed afresh at
    ``tau_s`` (for re-smoothing a recording offline, e.g. ``emotrack segments --smooth``).
    ``windows``: ``{source: (window_s, hop_s)}``; by default each source's first message's
    window length and the step between its first two messages."""
    out, trackers, by_src = [], {}, {}
    bodies = list(bodies)
    for b in bodies:
        by_src.setdefault(b["source"], []).append(b)
    for src, bs in by_src.items():
        if windows and src in windows:
            win, hop = windows[src]
        else:
            win = bs[0]["t_end"] - bs[0]["t_start"]
            hop = bs[1]["t_end"] - bs[0]["t_end"] if len(bs) > 1 else win
        trackers[src] = Tracker(tau_s, window_s=max(win, 1e-3), hop_s=max(hop, 1e-3))
    for b in bodies:
        st = trackers[b["source"]].update(valence=b["valence"], arousal=b["arousal"], probs=b.get("probs"),
                                          activity=b["activity"], t_end=b["t_end"])
        c = dict(b)
        c["tracked"] = st.to_dict()
        out.append(c)
    return out
