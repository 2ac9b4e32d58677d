"""Outputs that agree: the published quadrant, probabilities and valence/arousal never contradict
(streamer.taxonomy.agreeing, applied once in streamer.pipeline.summarise)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamer import taxonomy
from streamer.pipeline import summarise
from streamer.schema import QUADRANTS

REPO = Path(__file__).resolve().parents[2]


def _check(fields):
    probs = [fields["probs"][q] for q in QUADRANTS]
    assert fields["quadrant"] == taxonomy.quadrant_of(fields["valence"], fields["arousal"])
    assert fields["quadrant"] == QUADRANTS[int(np.argmax(probs))]
    assert sum(probs) == pytest.approx(1.0, abs=1e-3) and min(probs) >= 0
    assert -1 <= fields["valence"] <= 1 and -1 <= fields["arousal"] <= 1


def test_agreeing_on_random_ties_and_degenerate_probabilities(rng):
    cases = list(rng.dirichlet(np.full(4, 0.3), size=2000))
    # the case of today's shipped CNN: Q3 most likely on its own, yet P(V+) > 0.5
    cases.append(np.array([0.3, 0.0, 0.4, 0.3]))
    cases += [np.array(p, float) for p in ([0.25] * 4, [0.5, 0.5, 0, 0], [0.5, 0, 0, 0.5], [0, 0.5, 0.5, 0],
                                           [0, 0, 0.5, 0.5], [1, 0, 0, 0], [0, 0, 0, 0], [np.nan, 1, 0, 0],
                                           [np.inf, 1, 1, 1], [-1, 2, 0, 0], [3, 1, 0, 0])]
    for p in cases:
        f = taxonomy.agreeing(p)
        _check(f)
        # the relation applied to what it published gives it back
        again = taxonomy.agreeing([f["probs"][q] for q in QUADRANTS])
        assert again["valence"] == pytest.approx(f["valence"], abs=1e-12)
        assert again["arousal"] == pytest.approx(f["arousal"], abs=1e-12)
        assert again["quadrant"] == f["quadrant"]
    f = taxonomy.agreeing([0.3, 0.0, 0.4, 0.3])
    assert f["quadrant"] == "Q4" and f["valence"] == pytest.approx(0.2) and f["arousal"] == pytest.approx(-0.4)
    # ties go to the positive / high half, as the zero rule says
    assert taxonomy.agreeing([0.25] * 4)["quadrant"] == "Q1"
    assert taxonomy.agreeing([0, 0.5, 0.5, 0])["quadrant"] == "Q2"


def test_the_wire_rounding_keeps_the_agreement():
    """Bodies carry 4 decimals: a valence of -0.00003 must not become 0 (positive), and a rounding tie
    must not move the argmax to an earlier quadrant."""
    from streamer.schema import emotion_body

    for p in ([0.5 - 3e-5, 0.5 + 3e-5, 0.0, 0.0], [0.0, 0.25, 0.25 + 4e-5, 0.5 - 4e-5],
              [0.0, 0.49998, 0.50002, 0.0], [0.0, 0.0, 0.5 - 1e-5, 0.5 + 1e-5]):
        f = taxonomy.agreeing(p)
        body = emotion_body(stream="s", seq=0, source="speech", t_start=0, t_end=3, wall_time=0, activity=1,
                            model="m", **f)
        _check(body)


def test_summarise_publishes_the_relation_not_the_va_head():
    out = {"quadrant": np.array([[0.3, 0.0, 0.4, 0.3]], np.float32),
           "va": np.array([[-0.9, 0.9]], np.float32), "activity": np.array([0.7], np.float32)}
    f = summarise(out, 0)
    _check(f)
    assert f["valence"] == pytest.approx(0.2, abs=1e-6) and f["activity"] == pytest.approx(0.7)


def test_every_window_of_a_real_replay_agrees(tmp_path):
    """A replay of examples/heldout_mix.ogg with the shipped speech and music models and the
    built-in separator: every published window of both sources agrees."""
    out = tmp_path / "replay.jsonl"
    r = subprocess.run([sys.executable, "-m", "streamer.cli", "replay", str(REPO / "examples" / "heldout_mix.ogg"),
                        "--out", str(out), "--no-pub", "--no-snapshot", "--separator", "builtin", "--quiet"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    msgs = [m for m in map(json.loads, out.read_text().splitlines()) if m["topic"].startswith("emotion.")]
    by = {s: [m for m in msgs if m["source"] == s] for s in ("speech", "music")}
    assert len(by["speech"]) >= 80 and len(by["music"]) >= 30  # 90 s: hop 1 s speech, 2 s music
    for m in msgs:
        _check(m)
    # not a constant answer: the curve moves
    assert len({m["quadrant"] for m in by["speech"]}) >= 2
