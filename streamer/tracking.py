"""Causal tracking of one source's emotion: a filter over the window outputs.

The window outputs (``valence``, ``arousal``, ``quadrant``, ``probs``) describe one
analysis window each and jump from one hop to the next.  A :class:`Tracker` turns
them into a state that moves only when the evidence says so, and says how sure it
is.  It is causal (each message's tracked fields use that window and the ones
before it, nothing later) and adds no latency: it runs when the window's outputs
are there, in the same hop.

The model
---------
The state is the Russell quadrant, a hidden Markov chain over Q1..Q4, and the
tracker is its forward filter (posterior ``pi`` over the four quadrants).

* **Sticky transitions.**  Between two windows ``dt`` seconds apart the state
  stays with probability ``exp(-dt / tau)`` and otherwise jumps to any quadrant
  (itself included) with probability 1/4: ``prior = stay * pi + (1 - stay) / 4``.
  ``tau`` is ``--smooth`` (default per source: speech 0.5 s, music 5 s).  ``dt`` is
  the time since the last window that moved the state, absences included (below).
* **Emissions.**  A window's likelihood of each quadrant is its ``probs`` (the
  models' quadrant head; a window without them uses its VA head as independent
  signs, ``P(valence >= 0) = (1 + v) / 2``), clipped to ``[EPS, 1 - EPS]``,
  tempered and weighted by the activity gate below: ``L = probs ** (temper * w)``.
  Consecutive windows overlap (a 10 s music window every 2 s shares four fifths of
  its audio with the one before), so they are not independent evidence: ``temper``
  (music 0.5: each window counts as half a window) discounts them.  Speech has
  ``temper`` 1 since v4 (v3 0.5): with its 0.5 s time constant little of the previous
  window is left in the state a hop later (``exp(-2)``), and 0.5 scored no better.
* **Forward filter.**  ``pi <- prior * L / sum(prior * L)``.

The tracked (published) quadrant is the most probable one, with **hysteresis inside a
passage** (v3): the published quadrant ``s`` gives way to the most probable one ``b``
only when ``pi[b] >= pi[s] + margin * stay``, where ``stay`` is this window's
P(no jump), and only when the source was ``present`` at the previous window; at
the first window of a passage (after the source was absent) and after a long
absence (``stay`` near 0) the published quadrant is the posterior's argmax.  This
removes flips between near-tied quadrants inside an utterance or a piece without
holding the old quadrant into the next one (``margin``: speech 0.1, music 0.1;
a margin that also applied across pauses held the previous clip into the next one
and lost F1: docs/TRACKING.md).  **The hysteresis yields to a window that is sure**
(v4, ``yield_margin``): ``s`` also gives way to ``b`` at once when the window's own
probabilities prefer ``b`` to ``s`` by at least ``yield_margin``
(``probs[b] - probs[s] >= yield_margin``; speech 0.05, music ``None``: off).  Inside
an utterance shorter than the window, a later window holds more of it than the
earlier ones (a 3 s window every 1 s over 1.5-2 s of speech), so when it clearly
disagrees with the held quadrant it is the better evidence, and holding cost F1;
where it is near-tied between the two, holding costs nothing (on validation
programmes the held and the new quadrant were right equally often there) and
removes a flip.  ``confidence`` is the posterior probability of the
published quadrant (0.25: no idea, 1: certain; below 0.25 only while hysteresis
holds a quadrant that the evidence has started to leave).  Tracked valence and arousal are the
posterior means of the signs, ``P(valence >= 0) - P(valence < 0)`` (the meaning
of the raw VA head, which is trained on quadrant sign targets, given every
window so far), projected onto the tracked quadrant: a mean on the other side of
an axis is put on that axis' zero line (on the quadrant's side), so the tracked
quadrant always equals ``taxonomy.quadrant_of(tracked valence, tracked arousal)``.

Gating by activity
------------------
A window's weight ``w = clip((activity - off) / (on - off), 0, 1)`` (``off`` 0.1,
``on`` 0.5) scales its evidence (``temper * w``).  A window with activity at or below
``off`` (silence, or the other source alone) leaves the state exactly as it was:
silence does not move the state, and the curve holds its last value through pauses.
The time of an absence is not lost, though: the share ``dt * (1 - w)`` of each
window's elapsed time is kept aside (``held``) and spent on the transition of the
next window that counts (``stay = exp(-(dt * w + held) / tau)``).  This is the
chain's own prediction over time it did not observe: the emotion may have changed
while the source was away, so a source that returns after a pause of several
``tau`` (the next utterance, the next piece) is re-acquired from its first windows
instead of being held in the old state.  (Before, ``dt * w`` only: the state stood
still through absences and held the last clip's quadrant into the next one; with the
presence detector's activity, which rises later than the separator's at onsets,
held-out speech tracked macro-F1 fell to 0.475 against 0.581 raw: docs/TRACKING.md.)  ``present`` says
whether the source is there now: the presence estimate's value over the hop at the
window's centre (the presence detector by default; the window's activity where there is none)
is at least 0.5; :mod:`streamer.segments` cuts passages on it.

Before the first active window the state is unknown: ``pi`` uniform, tracked
valence and arousal 0, quadrant Q1 (the zero rule), confidence 0.25.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from . import taxonomy
from .errors import ParameterError

#: Names the filter in the ``start`` status (``tracking.method``).
#: v4: the hysteresis yields at once to a window whose own probabilities prefer the posterior's argmax
#: to the held quadrant by ``yield_margin`` (speech; off for music);
#: v3: tempered emissions and hysteresis of the published quadrant inside a passage (DEFAULT_PARAMS);
#: v2: absences count as elapsed time (v1: the state stood still).
METHOD = "sticky-quadrant-hmm-v4"
#: Default time constants of the tracked curves per source (seconds): ``--smooth``.  Chosen on
#: make_mix programmes (docs/TRACKING.md): speech emotion changes from utterance to utterance,
#: music's from piece to piece.
#: Re-chosen with absence time and ``ACTIVITY_OFF`` 0.1 on make_mix training and validation
#: programmes (never the held-out ones): speech 1 -> 0.75 s, music 3 -> 5 s; v4 (validation
#: programmes of RAVDESS actors 17-18 and of EMOVO speakers): speech 0.75 -> 0.5 s.
DEFAULT_SMOOTH_S = {"speech": 0.5, "music": 5.0}
#: ``present``: presence at or above this (no hysteresis: a 0.4 off-threshold was measured worse).
PRESENT_ON = 0.5
PRESENT_OFF = 0.5
#: Activity at or below which a window does not move the state; above ``ACTIVITY_ON`` it counts fully.
#: (0.25 before the presence detector: its activity over a window that straddles a clip onset is
#: often between 0.1 and 0.25, and such windows carry the new clip's evidence.)
ACTIVITY_OFF = 0.1
ACTIVITY_ON = 0.5
#: The filter's other settings per source (keyword arguments of :class:`Tracker`): the gate's
#: off-threshold, the emission power ``temper`` and the hysteresis ``margin`` of the published
#: quadrant, and ``yield_margin`` (v4: the window's own preference that overrides the hysteresis;
#: None: never).  Chosen with training/experiments/track_tune.py on make_mix validation programmes
#: only, of RAVDESS actors 17-18 and of EMOVO's actors (never the held-out ones; docs/TRACKING.md);
#: v2 was temper 1, margin 0; v3 speech temper 0.5, margin 0.25 and no yield_margin.
DEFAULT_PARAMS = {"speech": {"activity_off": ACTIVITY_OFF, "temper": 1.0, "margin": 0.1, "yield_margin": 0.05},
                  "music": {"activity_off": ACTIVITY_OFF, "temper": 0.5, "margin": 0.1, "yield_margin": None}}
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
    """Forward filter of one source's quadrant (a sticky chain over Q1..Q4), gated by activity.

    ``tau_s``: time constant in seconds (``--smooth``); ``window_s`` and ``hop_s``: the
    source's analysis windows (``hop_s`` is the first window's elapsed time); ``temper``: the
    emission power; ``margin``: the hysteresis of the published quadrant (module doc; the
    defaults here are the plain filter, :func:`make_tracker` gives a source's defaults).  Feed windows
    in stream order with :meth:`update`.  The whole state is ``(pi, present, last_t, held,
    shown)``; :meth:`state` / :meth:`restore` hand it out and back.
    """

    def __init__(self, tau_s: float, *, window_s: float, hop_s: float,
                 activity_off: float = ACTIVITY_OFF, activity_on: float = ACTIVITY_ON,
                 temper: float = 1.0, margin: float = 0.0, yield_margin: Optional[float] = None):
        if not (isinstance(tau_s, (int, float)) and math.isfinite(tau_s) and tau_s > 0):
            raise ParameterError(f"smooth={tau_s!r} must be a positive number of seconds")
        if window_s <= 0 or hop_s <= 0:
            raise ParameterError(f"window_s={window_s!r} and hop_s={hop_s!r} must be > 0")
        if not 0 <= activity_off < activity_on <= 1:
            raise ParameterError(f"activity_off={activity_off!r} must be below activity_on={activity_on!r}, both in [0, 1]")
        if not (math.isfinite(temper) and temper > 0):
            raise ParameterError(f"temper={temper!r} must be a positive number")
        if not 0 <= margin < 1:
            raise ParameterError(f"margin={margin!r} must be in [0, 1)")
        if yield_margin is not None and not (isinstance(yield_margin, (int, float))
                                             and 0 <= yield_margin <= 1):
            raise ParameterError(f"yield_margin={yield_margin!r} must be None (never) or in [0, 1]")
        self.yield_margin = None if yield_margin is None else float(yield_margin)
        self.tau = float(tau_s)
        self.temper, self.margin = float(temper), float(margin)
        self.shown: Optional[int] = None  # index of the published quadrant; None before the first evidence
        self.hop = float(hop_s)
        self.off, self.on = float(activity_off), float(activity_on)
        self.pi = [0.25] * 4         # P(Q1..Q4): the forward filter's posterior
        self.present = False
        self.last_t: Optional[float] = None
        self.held = 0.0              # elapsed seconds not yet spent on a transition (absences)

    def params(self) -> dict:
        """The filter's settings other than ``tau`` (as :data:`DEFAULT_PARAMS` names them)."""
        return {"activity_off": self.off, "temper": self.temper, "margin": self.margin,
                "yield_margin": self.yield_margin}

    def weight(self, activity: float) -> float:
        """How much a window of this activity counts (0: not at all, 1: fully)."""
        return min(1.0, max(0.0, (activity - self.off) / (self.on - self.off)))

    def update(self, *, valence: float, arousal: float, activity: float, t_end: float,
               probs: Optional[dict] = None, presence: Optional[float] = None) -> TrackedState:
        """Take one window (its raw outputs, its activity, where it ends; ``presence``: the source's
        presence over the hop at the window's centre, where the separator estimates it) and return
        the tracked state."""
        dt = self.hop if self.last_t is None else max(0.0, float(t_end) - self.last_t)
        self.last_t = float(t_end)
        pres = activity if presence is None else presence
        was_present = self.present
        if pres >= PRESENT_ON:
            self.present = True
        elif pres < PRESENT_OFF:
            self.present = False
        w = self.weight(float(activity))
        self.held += dt * (1.0 - w)                   # time the source was (partly) away
        if w > 0.0:
            stay = math.exp(-(dt * w + self.held) / self.tau)   # P(no jump); a jump lands on any quadrant
            self.held = 0.0
            k = w * self.temper
            if probs is not None:
                ev = [float(probs[q]) for q in taxonomy.QUADRANTS]
            else:  # from the VA head: independent signs
                pv, pa = (1.0 + float(valence)) / 2.0, (1.0 + float(arousal)) / 2.0
                ev = [pv * pa, (1 - pv) * pa, (1 - pv) * (1 - pa), pv * (1 - pa)]
            post = []
            for i, e in enumerate(ev):
                prior = stay * self.pi[i] + (1.0 - stay) / 4.0
                post.append(prior * min(1.0 - EPS, max(EPS, e)) ** k)
            total = sum(post)
            self.pi = [x / total for x in post]
            # hysteresis on the published quadrant, inside a passage only: scaled by the chain's own
            # P(no jump), none when the source was not present at the previous window, never
            # holding a quadrant below 1/4 (confidence keeps its range, 0.25..1), and yielding to a
            # window whose own probabilities clearly prefer the posterior's argmax (v4)
            best = max(range(4), key=lambda i: self.pi[i])
            need = self.margin * stay if was_present else 0.0
            if (self.shown is None or self.pi[best] >= self.pi[self.shown] + need or self.pi[self.shown] < 0.25
                    or (self.yield_margin is not None and ev[best] - ev[self.shown] >= self.yield_margin)):
                self.shown = best
        return self.current()

    def current(self) -> TrackedState:
        pi = self.pi
        best = max(range(4), key=lambda i: pi[i]) if self.shown is None else self.shown
        q = taxonomy.QUADRANTS[best]
        sv, sa = taxonomy.QUADRANT_SIGNS[q]
        # posterior means of the signs, projected onto the published quadrant (a mean on the
        # other side of an axis is put on its zero line, on the quadrant's side), rounded as on
        # the wire: the published quadrant is always quadrant_of(published valence, arousal)
        v = round(pi[0] + pi[3] - pi[1] - pi[2], 4)
        a = round(pi[0] + pi[1] - pi[2] - pi[3], 4)
        v = max(v, 0.0) if sv > 0 else min(v, -1e-4)
        a = max(a, 0.0) if sa > 0 else min(a, -1e-4)
        return TrackedState(valence=v + 0.0, arousal=a + 0.0, quadrant=q, confidence=pi[best], present=self.present)

    def state(self) -> tuple:
        return (tuple(self.pi), self.present, self.last_t, self.held, self.shown)

    def restore(self, state: tuple) -> None:
        self.pi = [float(x) for x in state[0]]
        self.present, self.last_t = bool(state[1]), state[2]
        self.held = float(state[3]) if len(state) > 3 else 0.0
        self.shown = state[4] if len(state) > 4 else None


def smooth_for(tau_s, source: str) -> float:
    """The time constant of ``source`` from a number (every source) or a ``{source: seconds}`` map."""
    return float(tau_s[source] if isinstance(tau_s, dict) else tau_s)


def parse_smooth(text: str):
    """``--smooth``: ``S`` (every source; 0 = off) or ``speech=S,music=S`` -> float, dict or None (off)."""
    try:
        if "=" not in text:
            v = float(text)
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError
            return v or None
        out = dict(DEFAULT_SMOOTH_S)
        for part in text.split(","):
            k, _, v = part.partition("=")
            k = k.strip()
            if k not in out:
                raise ValueError
            out[k] = float(v)
            if not (out[k] > 0 and math.isfinite(out[k])):
                raise ValueError
        return out
    except ValueError:
        raise ParameterError(f"--smooth {text!r}: give seconds (0 turns tracking off) or speech=S,music=S") from None


def make_tracker(source: str, tau_s: float, *, window_s: float, hop_s: float,
                 params: Optional[dict] = None) -> Tracker:
    """The tracker of ``source`` with its default settings (:data:`DEFAULT_PARAMS`), updated by
    ``params`` (keyword arguments of :class:`Tracker`)."""
    kw = dict(DEFAULT_PARAMS.get(source, {}))
    kw.update(params or {})
    return Tracker(tau_s, window_s=window_s, hop_s=hop_s, **kw)


def track_messages(bodies, tau_s=DEFAULT_SMOOTH_S, *, windows: Optional[dict] = None,
                   params: Optional[dict] = None) -> list[dict]:
    """Tracked state of a recorded run: ``bodies`` are emotion messages (one stream, any
    sources, in order); returns a copy of each with ``tracked`` computed afresh at
    ``tau_s`` (for re-smoothing a recording offline, e.g. ``emotrack segments --smooth``).
    ``windows``: ``{source: (window_s, hop_s)}``; by default each source's first message's
    window length and the step between its first two messages.  ``params``: ``{source: {name:
    value}}``, settings of the filter other than the defaults (for sweeps:
    training/experiments/track_tune.py)."""
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
        trackers[src] = make_tracker(src, smooth_for(tau_s, src), window_s=max(win, 1e-3), hop_s=max(hop, 1e-3),
                                     params=(params or {}).get(src))
    for b in bodies:
        old = b.get("tracked")
        pres = None if old is None else (1.0 if old["present"] else 0.0)  # as recorded (it saw the presence)
        st = trackers[b["source"]].update(valence=b["valence"], arousal=b["arousal"], probs=b.get("probs"),
                                          activity=b["activity"], t_end=b["t_end"], presence=pres)
        c = dict(b)
        c["tracked"] = st.to_dict()
        out.append(c)
    return out
