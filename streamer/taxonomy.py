"""The emotion taxonomy: quadrants, the zero rule, and the label table.

Valence and arousal live in [-1, 1].  Quadrants are counted counter-clockwise
from top right (Russell's circumplex):

    Q1 = V+ A+   happy, excited
    Q2 = V- A+   angry, afraid
    Q3 = V- A-   sad, bored
    Q4 = V+ A-   calm, serene

A value >= 0 counts as positive/high.

This is the ONE table that maps corpus labels to quadrants (DESIGN.md).  Neutral
has no quadrant: it is never forced into one.  The only valence/arousal
information a categorical label carries here is the sign pair of its quadrant,
so the regression targets of a labelled clip are those signs (neutral: the
origin); a model trained on them estimates ``2 P(positive) - 1`` per axis.  No
graded VA value is invented for a label.
"""

from __future__ import annotations

import math
from typing import Optional

from .schema import QUADRANTS  # noqa: F401 - the quadrant names are the message schema's

#: (valence sign, arousal sign) of each quadrant.
QUADRANT_SIGNS = {"Q1": (1.0, 1.0), "Q2": (-1.0, 1.0), "Q3": (-1.0, -1.0), "Q4": (1.0, -1.0)}

#: Categorical labels of the corpora in ../shared/data -> quadrant (None: no quadrant).
LABEL_TO_QUADRANT: dict[str, Optional[str]] = {
    # Q1: positive valence, high arousal
    "happy": "Q1",
    "surprised": "Q1",
    "ps": "Q1",  # TESS "pleasant surprise"
    "pleasant_surprise": "Q1",
    # Q2: negative valence, high arousal
    "angry": "Q2",
    "fearful": "Q2",
    "fear": "Q2",
    "disgust": "Q2",
    # Q3: negative valence, low arousal
    "sad": "Q3",
    "boredom": "Q3",
    # Q4: positive valence, low arousal
    "calm": "Q4",
    # no quadrant
    "neutral": None,
}


def quadrant_of(valence: float, arousal: float) -> str:
    """Quadrant of a VA point; zero counts as positive/high."""
    if valence >= 0:
        return "Q1" if arousal >= 0 else "Q4"
    return "Q2" if arousal >= 0 else "Q3"


def label_quadrant(label: str) -> Optional[str]:
    """Quadrant of a categorical label or a quadrant name; ``None`` for neutral.

    Raises KeyError for a label that is not in the table, so that a new corpus
    cannot silently fall into a wrong class.
    """
    key = label.strip()
    if key in QUADRANTS:
        return key
    return LABEL_TO_QUADRANT[key.lower()]


def va_target(quadrant: Optional[str]) -> tuple[float, float]:
    """Regression target of a clip labelled with ``quadrant`` (origin for none)."""
    if quadrant is None:
        return (0.0, 0.0)
    return QUADRANT_SIGNS[quadrant]


# ----------------------------------------------------------------------------- outputs that agree
#
# A window's published quadrant, probabilities and valence/arousal come from ONE pair of numbers:
# the probability that valence is positive, P(V+), and that arousal is high, P(A+).  Given a
# model's four quadrant probabilities p (Q1..Q4), the axes are their marginals
#
#     P(V+) = p1 + p4        P(A+) = p1 + p2
#
# and everything published follows from them:
#
#     valence = 2 P(V+) - 1          arousal = 2 P(A+) - 1          (expected sign, in [-1, 1])
#     probs   = P(V+) P(A+), (1 - P(V+)) P(A+), (1 - P(V+)) (1 - P(A+)), P(V+) (1 - P(A+))
#     quadrant = quadrant_of(valence, arousal)
#
# The published probabilities are the product of the two marginals (the axes taken as
# independent), so their argmax is the pair of more likely halves, which is exactly the quadrant
# of (valence, arousal).  A tie (P exactly 0.5) goes to the positive/high half, as the zero rule
# says: it is published as the next float above 0.5, so valence (arousal) is a positive 2e-16 and
# the positive quadrant's probability is the larger one.  Applying the relation to probabilities
# it produced gives them back (their marginals are P(V+), P(A+)).


def axis_probabilities(probs) -> tuple[float, float]:
    """(P(V+), P(A+)) of four quadrant probabilities (Q1..Q4; normalised here, clipped to >= 0)."""
    p = [max(0.0, float(v)) if v == v else 0.0 for v in probs]  # NaN -> 0
    s = sum(p)
    if not s > 0 or s == float("inf"):
        return 0.5, 0.5
    p = [v / s for v in p]
    pv = min(1.0, max(0.0, p[0] + p[3]))
    pa = min(1.0, max(0.0, p[0] + p[1]))
    return _untie(pv), _untie(pa)


_ABOVE_HALF = math.nextafter(0.5, 1.0)


def _untie(p: float) -> float:
    """A probability of exactly 0.5 as the next float above it (ties go to the positive half)."""
    return _ABOVE_HALF if p == 0.5 else p


def quadrant_probabilities(p_valence: float, p_arousal: float) -> tuple[float, float, float, float]:
    """Q1..Q4 probabilities of independent axes with P(V+) = ``p_valence``, P(A+) = ``p_arousal``."""
    pv, pa = _untie(float(p_valence)), _untie(float(p_arousal))
    return (pv * pa, (1.0 - pv) * pa, (1.0 - pv) * (1.0 - pa), pv * (1.0 - pa))


def agreeing(probs) -> dict:
    """The published fields of a window from its model's quadrant probabilities: valence, arousal,
    quadrant and probs that never contradict each other (see the comment above)."""
    pv, pa = axis_probabilities(probs)
    v, a = 2.0 * pv - 1.0, 2.0 * pa - 1.0
    q = quadrant_probabilities(pv, pa)
    return {"valence": v, "arousal": a, "quadrant": quadrant_of(v, a),
            "probs": dict(zip(QUADRANTS, q))}
