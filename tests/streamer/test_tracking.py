"""The tracker (streamer.tracking): step response, silence, consistency with the taxonomy."""

import math

import pytest

from streamer import taxonomy
from streamer.errors import ParameterError
from streamer.tracking import DEFAULT_PARAMS, DEFAULT_SMOOTH_S, Tracker, make_tracker, track_messages

HOP, WIN = 1.0, 3.0
#: The plain filter (no tempering, no hysteresis) and each source's defaults (tempered, with hysteresis).
KINDS = ["plain"] + sorted(DEFAULT_PARAMS)


def make(tau, kind="plain"):
    if kind == "plain":
        return Tracker(tau, window_s=WIN, hop_s=HOP)
    return make_tracker(kind, tau, window_s=WIN, hop_s=HOP)


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


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("tau", [4.0, 8.0, 16.0])
def test_step_change_followed_within_time_constant(tau, kind):
    tr = make(tau, kind)
    before = feed(tr, "Q3", 0.0, 60)
    assert before[-1].quadrant == "Q3" and before[-1].confidence > 0.5
    after = feed(tr, "Q1", 60.0, int(tau) + 1)
    k = next(i for i, s in enumerate(after) if s.quadrant == "Q1")
    assert 1 <= k + 1 <= tau / HOP          # followed within tau, but not at the first window (sticky)
    assert after[-1].quadrant == "Q1"
    # a longer time constant follows no faster
    fast = make(tau / 4, kind)
    feed(fast, "Q3", 0.0, 60)
    k_fast = next(i for i, s in enumerate(feed(fast, "Q1", 60.0, 40)) if s.quadrant == "Q1")
    assert k_fast <= k


@pytest.mark.parametrize("kind", KINDS)
def test_single_outlier_does_not_flip_state(kind):
    tr = make(8.0, kind)
    feed(tr, "Q2", 0.0, 30)
    s = feed(tr, "Q4", 30.0, 1, p=0.5)[-1]  # one window that leans elsewhere
    assert s.quadrant == "Q2"


@pytest.mark.parametrize("kind", KINDS)
def test_silence_does_not_move_the_state(kind):
    tr = make(8.0, kind)
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


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("tau", [0.75, 3.0, 8.0])
def test_source_returning_after_a_pause_is_reacquired(tau, kind):
    """A source that comes back after a pause of several tau with a new emotion is followed from
    its first windows (the chain's prediction over the unobserved pause); after a pause much
    shorter than tau the state is still sticky."""
    long_tr, short_tr = make(tau, kind), make(tau, kind)
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


@pytest.mark.parametrize("kind", KINDS)
def test_tracked_quadrant_follows_the_taxonomy_rule(rng, kind):
    tr = make(3.0, kind)
    for i in range(2000):
        p = rng.dirichlet([0.5] * 4)
        s = tr.update(valence=float(rng.uniform(-1, 1)), arousal=float(rng.uniform(-1, 1)),
                      probs=dict(zip(taxonomy.QUADRANTS, p)), activity=float(rng.uniform(0, 1)), t_end=float(i))
        d = s.to_dict()
        assert d["quadrant"] == taxonomy.quadrant_of(d["valence"], d["arousal"])
        assert -1 <= d["valence"] <= 1 and -1 <= d["arousal"] <= 1
        # confidence: the posterior probability of the published quadrant, never below 1/4 (hysteresis
        # does not hold a quadrant below that)
        pi = tr.state()[0]
        assert d["confidence"] == round(pi[taxonomy.QUADRANTS.index(d["quadrant"])], 4)
        assert 0.25 - 1e-9 <= d["confidence"] <= 1.0


@pytest.mark.parametrize("kind", sorted(DEFAULT_PARAMS))
def test_hysteresis_inside_a_passage_only(rng, kind):
    """The published quadrant leaves for the most probable one b only when pi[b] exceeds the published
    one's by margin * P(no jump), or the published one falls below 1/4, or (v4, where the source has a
    yield_margin) the window's own probabilities prefer b to it by yield_margin, while the source
    stays present; at the first window after the source was absent it is the argmax of the posterior."""
    tau, margin = 3.0, DEFAULT_PARAMS[kind]["margin"]
    ym = DEFAULT_PARAMS[kind]["yield_margin"]
    assert margin > 0
    tr = make(tau, kind)
    held = switched_at_return = yielded = 0
    prev_q, prev_present = None, False
    for i in range(3000):
        present = bool(rng.uniform() < 0.9)  # whole windows present or away, so the gate weight is 0 or 1
        p = rng.dirichlet([2.0] * 4)
        s = tr.update(valence=0.0, arousal=0.0, probs=dict(zip(taxonomy.QUADRANTS, p)),
                      activity=0.9 if present else 0.05, presence=1.0 if present else 0.0, t_end=float(i))
        pi = tr.state()[0]
        best = max(range(4), key=lambda k: pi[k])
        shown = taxonomy.QUADRANTS.index(s.quadrant)
        if not present:          # an absent window leaves everything as it was
            assert s.quadrant == prev_q or prev_q is None
        elif not prev_present:   # first window of a passage: no hysteresis
            assert shown == best
            switched_at_return += prev_q is not None and s.quadrant != prev_q
        else:                    # inside a passage (one hop since the last window: stay = exp(-1 / tau))
            need = margin * math.exp(-1.0 / tau)
            if shown != best:
                held += 1
                assert pi[best] < pi[shown] + need and pi[shown] >= 0.25
                assert ym is None or p[best] - p[shown] < ym     # the window did not prefer b clearly
            if prev_q is not None and s.quadrant != prev_q:
                k_old = taxonomy.QUADRANTS.index(prev_q)
                old = pi[k_old]
                by_window = ym is not None and p[shown] - p[k_old] >= ym
                assert pi[shown] >= old + need - 1e-12 or old < 0.25 or by_window
                yielded += by_window and pi[shown] < old + need and old >= 0.25
        prev_q, prev_present = s.quadrant, present
    assert held > 0 and switched_at_return > 0     # both branches were exercised
    assert (yielded > 0) == (ym is not None)        # and the yield, where the source has it


def test_hysteresis_yields_to_a_sure_window():
    """v4 (speech): a held quadrant gives way at once when the window itself clearly prefers the
    posterior's argmax (no lag inside an utterance), but still holds when the window is near-tied."""
    ym = DEFAULT_PARAMS["speech"]["yield_margin"]
    assert ym is not None and DEFAULT_PARAMS["music"]["yield_margin"] is None
    lead = {"Q1": 0.36, "Q2": 0.32, "Q3": 0.16, "Q4": 0.16}
    for gap, switched in ((ym / 2, False), (ym + 0.02, True)):
        tr = make_tracker("speech", 0.75, window_s=WIN, hop_s=HOP, params={"margin": 0.9})
        assert tr.update(valence=0.1, arousal=0.1, probs=lead, activity=0.9, presence=1.0, t_end=3.0).quadrant == "Q1"
        # Q2 now ahead in the posterior, by less than the (large) margin; the window prefers it by `gap`
        p = {"Q1": 0.30, "Q2": 0.30 + gap, "Q3": 0.2 - gap / 2, "Q4": 0.2 - gap / 2}
        s = tr.update(valence=-0.1, arousal=0.1, probs=p, activity=0.9, presence=1.0, t_end=4.0)
        pi = tr.state()[0]
        assert pi[1] > pi[0]                        # the posterior's argmax is Q2 ...
        assert s.quadrant == ("Q2" if switched else "Q1")   # ... published only when the window is sure
        plain = make_tracker("speech", 0.75, window_s=WIN, hop_s=HOP, params={"margin": 0.9, "yield_margin": None})
        plain.update(valence=0.1, arousal=0.1, probs=lead, activity=0.9, presence=1.0, t_end=3.0)
        assert plain.update(valence=-0.1, arousal=0.1, probs=p, activity=0.9, presence=1.0, t_end=4.0).quadrant == "Q1"


@pytest.mark.parametrize("kind,gap", [("speech", 0.01), ("music", 0.04)])
def test_hysteresis_cuts_flips_between_near_tied_quadrants(kind, gap):
    """Windows that lean alternately to two quadrants, barely (``gap`` apart: inside the source's
    hysteresis at its default time constant; v4's speech hysteresis is narrow, music's wider): the
    plain filter flips with them, the defaults hold one (fewer changes) and still follow a clear
    change."""
    tau = DEFAULT_SMOOTH_S[kind]
    hi, lo = 0.34 + gap / 2, 0.34 - gap / 2
    flips = {}
    for k in ("plain", kind):
        tr = make(tau, k)
        qs = []
        for i in range(40):
            p = {"Q1": hi, "Q2": lo, "Q3": 0.16, "Q4": 0.16} if i % 2 else {"Q1": lo, "Q2": hi, "Q3": 0.16, "Q4": 0.16}
            qs.append(tr.update(valence=0.0, arousal=0.5, probs=p, activity=0.9, t_end=float(i)).quadrant)
        flips[k] = sum(a != b for a, b in zip(qs, qs[1:]))
        after = feed(tr, "Q3", 40.0, int(2 * tau) + 3, p=0.8)
        assert after[-1].quadrant == "Q3"
    assert flips[kind] < flips["plain"] / 4 and flips["plain"] >= 30


def test_offline_retracking_equals_streaming():
    tr = make(8.0, "speech")   # the source's defaults, as track_messages uses
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


@pytest.mark.parametrize("bad", [{"temper": 0}, {"temper": -1.0}, {"temper": math.nan}, {"margin": -0.1},
                                 {"margin": 1.0}, {"yield_margin": -0.1}, {"yield_margin": 1.5},
                                 {"yield_margin": math.nan}])
def test_bad_filter_settings(bad):
    with pytest.raises(ParameterError, match=next(iter(bad))):
        make_tracker("speech", 1.0, window_s=WIN, hop_s=HOP, params=bad)


def test_source_defaults_and_overrides():
    tr = make_tracker("music", 5.0, window_s=10.0, hop_s=2.0, params={"margin": 0.0})
    assert tr.params() == dict(DEFAULT_PARAMS["music"], margin=0.0)
    assert make_tracker("speech", 0.75, window_s=WIN, hop_s=HOP).params() == DEFAULT_PARAMS["speech"]
