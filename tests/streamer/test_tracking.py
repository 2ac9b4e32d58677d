"""The tracker (streamer.tracking): step response, silence, consistency with the taxonomy."""

import math

import pytest

from streamer import taxonomy
from streamer.errors import ParameterError
from streamer.tracking import Tracker, track_messages

HOP, WIN = 1.0, 3.0


def probs_of(q, p=0.7):
    out = {k: (1 - p) / 3 for k in taxonomy.QUADRANTS}
    out[q] = p
    return out


def feed(tr, q, t, n, activity=0.9, p=0.7):
    states = []
    for i in range(n):
        sv, sa = taxonomy.QUADRANT_SIGNS[q]
        states.append(tr.update(valence=0.4 * sv, arousal=0.4 * sa, probs=probs_of(q, p), activity=activity,
                                t_end=t + i * HOP))
    return states


@pytest.mark.parametrize("tau", [4.0, 8.0, 16.0])
def test_step_change_followed_within_time_constant(tau):
    tr = Tracker(tau, window_s=WIN, hop_s=HOP)
    before = feed(tr, "Q3", 0.0, 60)
    assert before[-1].quadrant == "Q3" and before[-1].confidence > 0.5
    after = feed(tr, "Q1", 60.0, int(tau) + 1)
    k = next(i for i, s in enumerate(after) if s.quadrant == "Q1")
    assert 1 <= k + 1 <= tau / HOP          # followed within tau, but not at the first window (sticky)
    assert after[-1].quadrant == "Q1"
    # a longer time constant follows no faster
    fast = Tracker(tau / 4, window_s=WIN, hop_s=HOP)
    feed(fast, "Q3", 0.0, 60)
    k_fast = next(i for i, s in enumerate(feed(fast, "Q1", 60.0, 40)) if s.quadrant == "Q1")
    assert k_fast <= k


def test_single_outlier_does_not_flip_state():
    tr = Tracker(8.0, window_s=WIN, hop_s=HOP)
    feed(tr, "Q2", 0.0, 30)
    s = feed(tr, "Q4", 30.0, 1, p=0.5)[-1]  # one window that leans elsewhere
    assert s.quadrant == "Q2"


def test_silence_does_not_move_the_state():
    tr = Tracker(8.0, window_s=WIN, hop_s=HOP)
    st = feed(tr, "Q2", 0.0, 20)[-1]
    state = tr.state()
    # a long pause whose windows say Q4 with low activity: nothing changes, however long
    quiet = feed(tr, "Q4", 20.0, 300, activity=0.1, p=0.95)
    assert all(q.valence == st.valence and q.arousal == st.arousal and q.quadrant == "Q2" for q in quiet)
    assert tr.state()[0] == state[0] and quiet[-1].present is False
    # the pause's time is spent when the source returns: the old state is forgotten (memory of
    # exp(-300 / 8)), so the returning window's own evidence decides, and it is less sure than
    # 20 windows of agreement were
    nxt = feed(tr, "Q2", 320.0, 1)[-1]
    assert nxt.quadrant == "Q2" and nxt.confidence < st.confidence


@pytest.mark.parametrize("tau", [0.75, 3.0, 8.0])
def test_source_returning_after_a_pause_is_reacquired(tau):
    """A source that comes back after a pause of several tau with a new emotion is followed from
    its first windows (the chain's prediction over the unobserved pause); after a pause much
    shorter than tau the state is still sticky."""
    long_tr, short_tr = Tracker(tau, window_s=WIN, hop_s=HOP), Tracker(tau, window_s=WIN, hop_s=HOP)
    for tr in (long_tr, short_tr):
        feed(tr, "Q3", 0.0, 60)
    feed(long_tr, "Q3", 60.0, int(5 * tau) + 1, activity=0.05)     # away for > 5 tau
    back = feed(long_tr, "Q1", 61.0 + int(5 * tau), int(tau) + 1, p=0.6)
    assert back[0].quadrant == "Q1"                                  # re-acquired at once
    assert back[-1].quadrant == "Q1"
    # without the pause, where tau spans several hops, the same weak window does not flip the state
    cont = feed(short_tr, "Q1", 60.0, 1, p=0.6)[-1]
    assert cont.quadrant == ("Q3" if tau >= 3 * HOP else "Q1")


def test_unknown_before_first_active_window_and_presence():
    tr = Tracker(8.0, window_s=WIN, hop_s=HOP)
    s = feed(tr, "Q3", 0.0, 3, activity=0.0)[-1]
    assert (s.valence, s.arousal, s.confidence, s.present) == (0.0, 0.0, 0.25, False)
    assert feed(tr, "Q3", 3.0, 1, activity=0.6)[-1].present
    assert not feed(tr, "Q3", 4.0, 1, activity=0.45)[-1].present
    # the presence over the centre hop, where given, decides; the window's activity gates the evidence
    s = tr.update(valence=0.0, arousal=0.0, probs=probs_of("Q3"), activity=0.3, t_end=6.0, presence=0.9)
    assert s.present


def test_tracked_quadrant_follows_the_taxonomy_rule(rng):
    tr = Tracker(3.0, window_s=WIN, hop_s=HOP)
    for i in range(2000):
        p = rng.dirichlet([0.5] * 4)
        s = tr.update(valence=float(rng.uniform(-1, 1)), arousal=float(rng.uniform(-1, 1)),
                      probs=dict(zip(taxonomy.QUADRANTS, p)), activity=float(rng.uniform(0, 1)), t_end=float(i))
        d = s.to_dict()
        assert d["quadrant"] == taxonomy.quadrant_of(d["valence"], d["arousal"])
        assert 0.25 - 1e-9 <= d["confidence"] <= 1.0 and -1 <= d["valence"] <= 1


def test_offline_retracking_equals_streaming():
    tr = Tracker(8.0, window_s=WIN, hop_s=HOP)
    bodies = []
    for i, q in enumerate(["Q1"] * 10 + ["Q3"] * 15):
        b = {"source": "speech", "t_start": float(i), "t_end": i + WIN, "valence": 0.1, "arousal": -0.2,
             "probs": probs_of(q), "activity": 0.8}
        b["tracked_live"] = tr.update(valence=b["valence"], arousal=b["arousal"], probs=b["probs"],
                                      activity=b["activity"], t_end=b["t_end"]).to_dict()
        bodies.append(b)
    for b in track_messages(bodies, 8.0):
        assert b["tracked"] == b["tracked_live"]


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf])
def test_bad_time_constant(bad):
    with pytest.raises(ParameterError, match="smooth"):
        Tracker(bad, window_s=WIN, hop_s=HOP)
