"""argparse value types shared by every ``emotrack`` command (defined once, here at the bottom
layer, so that engines' own command uses them too).  A bad value is one line, exit code 2."""

from __future__ import annotations

import argparse
from typing import Callable


def number(kind: type, what: str, ok: Callable[[float], bool], rule: str) -> Callable[[str], float]:
    """argparse type: ``kind(text)`` that satisfies ``ok``, else one clear message
    (``'x' is not <what>`` / ``'x' must be <rule>``)."""
    def conv(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"{text!r} must be {rule}")
        return v
    return conv


def positive(kind: type) -> Callable[[str], float]:
    """A finite number > 0 of ``kind`` (int or float; NaN and inf are refused)."""
    return number(kind, f"a valid {kind.__name__}", lambda v: v > 0 and v != float("inf"), "> 0 and finite")


def int_at_least(lo: int) -> Callable[[str], int]:
    """An integer >= ``lo``."""
    return number(int, "an integer", lambda v: v >= lo, f">= {lo}")
