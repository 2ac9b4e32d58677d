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
