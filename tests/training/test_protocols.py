"""Evaluation protocols, metrics, the generic manifest and a baseline, on the real corpora.

Folds are checked on the full corpus indices (no audio needed); the baseline and the
manifest decode a small real subset.  Caches go to a temporary folder.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections import Counter

import numpy as np
import pytest

from conftest import DATA, needs_data

pytest.importorskip("sklearn", reason="training extra not installed (pip install -e '.[training]')")
pytestmark = [pytest.mark.training]

from training import results  # noqa: E402
from training.data import corpora  # noqa: E402
from training.experiments import protocols, runner, systems  # noqa: E402
from training.reports import results as report  # noqa: E402
from training.data.manifest import ManifestError, load_manifest, parse_va_scale  # noqa: E402
from training.metrics import (chance_classification, classification_metrics, ccc, macro_f1,  # noqa: E402
                                quadrant_halves, regression_metrics, uar)


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTRACK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _keys(items):
    return [it.key for it in items]


# --------------------------------------------------------------------------- metrics, hand-checked

def test_uar_macro_f1_accuracy_on_a_hand_checked_example():
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 2, 2])
    # recalls 2/3, 1/2, 1 ; F1: 4/5, 2/4, 2/3
    assert uar(y, p, 3) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert macro_f1(y, p, 3) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    m = classification_metrics(y, p, ("a", "b", "c"))
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    # a class never true nor predicted does not count
    assert macro_f1(y, p, 5) == pytest.approx(macro_f1(y, p, 3))


def test_ccc_rmse_r2_hand_checked():
    y = np.array([1.0, 2.0, 3.0])
    assert ccc(y, y) == pytest.approx(1.0)
    assert ccc(y, y + 1) == pytest.approx(4 / 7)       # var 2/3 each, cov 2/3, mean gap 1
    assert ccc(y, y[::-1]) == pytest.approx(-1.0)
    Y = np.array([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]])
    P = np.array([[0.4, 0.6], [0.2, 0.1], [-0.3, -0.5], [0.6, -0.4]])
    m = regression_metrics(Y, P)
    assert m["valence_rmse"] == pytest.approx(np.sqrt(np.mean((Y[:, 0] - P[:, 0]) ** 2)))
    assert m["arousal_r2"] == pytest.approx(1 - np.sum((Y[:, 1] - P[:, 1]) ** 2) / np.sum(Y[:, 1] ** 2))
    # quadrants from signs: Q1->Q1, Q2->Q1 (valence 0.2 >= 0), Q3->Q3, Q4->Q4
    assert m["quadrant_accuracy"] == pytest.approx(0.75)
    assert m["valence_half_accuracy"] == pytest.approx(0.75)
    assert m["arousal_half_accuracy"] == pytest.approx(1.0)


def test_quadrant_halves_count_neutral_predictions_as_wrong_and_skip_neutral_truth():
    yq = ["Q1", "Q2", "Q3", "Q4", None]
    pq = ["Q1", "Q3", "Q4", None, "Q1"]
    h = quadrant_halves(yq, pq)
    assert h["n_quadrant"] == 4
    assert h["quadrant_accuracy"] == pytest.approx(1 / 4)
    assert h["arousal_half_accuracy"] == pytest.approx(2 / 4)   # Q1/Q1 and Q3/Q4 share arousal
    assert h["valence_half_accuracy"] == pytest.approx(2 / 4)   # Q1/Q1 and Q2/Q3 share valence
    # 8-class labels map through the taxonomy: calm->Q4, sad->Q3, neutral->none
    m = classification_metrics(np.array([1, 3, 0]), np.array([3, 3, 1]), protocols.RAVDESS_EMOTIONS)
    assert m["quadrant_accuracy"] == pytest.approx(0.5)          # calm->sad wrong, sad->sad right
    assert m["arousal_half_accuracy"] == pytest.approx(1.0)
    assert m["valence_half_accuracy"] == pytest.approx(0.5)


def test_chance_levels():
    ytr = np.array([0, 0, 0, 1])
    yte = np.array([0, 1, 1, 1])
    c = chance_classification(ytr, yte, ("x", "y"))
    assert c["majority"]["accuracy"] == pytest.approx(0.25)          # always class 0
    assert c["majority"]["uar"] == pytest.approx(0.5)
    assert c["uniform"]["accuracy"] == pytest.approx(0.5)
    # expected F1 of uniform guessing: class prevalence p, recall 1/2 -> 2 p (1/2) / (p + 1/2)
    assert c["uniform"]["macro_f1"] == pytest.approx(np.mean([2 * .25 * .5 / .75, 2 * .75 * .5 / 1.25]))
    assert c["stratified"]["accuracy"] == pytest.approx(0.75 * 0.25 + 0.25 * 0.75)
    q = chance_classification(np.array([0, 1, 2, 3]), np.array([0, 1, 2, 3]), ("Q1", "Q2", "Q3", "Q4"))
    assert q["uniform"]["quadrant_accuracy"] == pytest.approx(0.25)
    assert q["uniform"]["arousal_half_accuracy"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- folds

@needs_data("speech_ravdess")
def test_ravdess_folds_are_speaker_disjoint_gender_balanced_and_cover_every_clip_once():
    gender = {r["speaker"]: r["gender"] for r in corpora.read_manifest("speech_ravdess")}
    eight, four = protocols.protocol_ravdess()
    all_keys = {protocols.clip_item(c).key for c in protocols.corpus_clips("ravdess")}
    tested = [k for f in eight.folds for k in _keys(f.test["clean"])]
    assert len(eight.folds) == 6 and len(tested) == 1440 and set(tested) == all_keys
    for f in eight.folds:
        tr, te = {it.group for it in f.train}, {it.group for it in f.test["clean"]}
        assert len(te) == 4 and len(tr) == 20 and not tr & te, f.name
        assert sorted(gender[a] for a in te) == ["F", "F", "M", "M"], f.name
        assert len(f.train) + len(f.test["clean"]) == 1440
    tested4 = [k for f in four.folds for k in _keys(f.test["clean"])]
    assert len(tested4) == len(set(tested4)) == 1344   # neutral (96 clips) has no quadrant
    assert all(it.clip.quadrant for f in four.folds for it in f.train)


@needs_data("music_4q")
def test_4q_folds_are_artist_disjoint_stratified_and_cover_every_clip_once():
    (e,) = protocols.protocol_4q()
    tested = [k for f in e.folds for k in _keys(f.test["clean"])]
    assert len(e.folds) == 10 and len(tested) == len(set(tested)) == 630
    for f in e.folds:
        tr, te = {it.group for it in f.train}, {it.group for it in f.test["clean"]}
        assert not tr & te, f"{f.name}: artists {sorted(tr & te)[:3]} in train and test"
        counts = Counter(it.clip.quadrant for it in f.test["clean"])
        assert set(counts) == {"Q1", "Q2", "Q3", "Q4"} and max(counts.values()) - min(counts.values()) <= 2, counts
    # the assignment is fixed (seeded): a second call gives the same folds
    (e2,) = protocols.protocol_4q()
    assert [_keys(f.test["clean"]) for f in e2.folds] == [_keys(f.test["clean"]) for f in e.folds]


@needs_data("midi_emopia", "midi_vgmidi")
def test_emopia_official_split_and_vgmidi_folds():
    (e,) = protocols.protocol_emopia()
    (f,) = e.folds
    assert len(f.test["emopia_test"]) == 88 and len(f.train) == 990 and len(f.test["vgmidi"]) == 204
    assert {it.clip.split for it in f.train} == {"train", "val"}
    (v,) = protocols.protocol_vgmidi()
    tested = [k for fo in v.folds for k in _keys(fo.test["clean"])]
    assert len(tested) == len(set(tested)) == 204
    for fo in v.folds:
        assert not {it.group for it in fo.train} & {it.group for it in fo.test["clean"]}
    assert {tuple(v.target(it.clip)) for it in v.folds[0].train} <= {(1.0, 1.0), (1.0, -1.0), (-1.0, 1.0),
                                                                    (-1.0, -1.0)}


@needs_data("speech_ravdess", "speech_tess", "music_4q", "midi_emopia")
def test_crosscorpus_trains_on_one_corpus_tests_on_another_with_the_shared_classes():
    exps = {e.task: e for e in protocols.protocol_crosscorpus()}
    assert "crosscorpus" in protocols.PROTOCOLS
    want = {"7emotions": (("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"),
                          {"ravdess": 1248, "tess": 2800}),
            "3quadrants": (("Q1", "Q2", "Q3"), {"ravdess": 1152, "tess": 2400}),
            "4quadrants": (("Q1", "Q2", "Q3", "Q4"), {"4q": 630, "emopia": 1078})}
    assert len(exps) == 6
    for task, (classes, n) in want.items():
        for src, dst in (tuple(n), tuple(n)[::-1]):
            e = exps[f"{task}_{src}_to_{dst}"]
            (f,) = e.folds
            assert e.classes == classes and e.kind == "classify"
            assert {it.clip.corpus for it in f.train} == {src} and len(f.train) == n[src]
            test = f.test[f"{dst}_all"]
            assert {it.clip.corpus for it in test} == {dst} and len(test) == n[dst]
            train_keys = set(_keys(f.train))
            for items in f.test.values():
                assert not train_keys & set(_keys(items))
            # every class on both sides (TESS "ps"/"fear" are surprised/fearful); calm never, neutral only as a class
            for items in (f.train, test):
                assert set(e.targets(items)) == set(range(len(classes))), (e.task, len(items))
                assert not any(it.clip.label == "calm" for it in items)
    # 4Q -> EMOPIA is also scored on EMOPIA's official test clips (the within-corpus number's test set)
    assert {it.clip.split for it in exps["4quadrants_4q_to_emopia"].folds[0].test["emopia_test"]} == {"test"}
    assert len(exps["4quadrants_4q_to_emopia"].folds[0].test["emopia_test"]) == 88
    # adaptation systems run here (causal speaker normalisation on speech only) and, as before, not elsewhere
    online, cnorm = systems.SYSTEMS["svm_spknorm_online"].applies, systems.SYSTEMS["svm_corpusnorm"].applies
    assert all(cnorm(e) for e in exps.values())
    assert [online(e) for e in exps.values()] == [True] * 4 + [False] * 2
    for e in protocols.protocol_ravdess() + protocols.protocol_4q():
        assert online(e) == (e.protocol == "ravdess") and not cnorm(e)


@needs_data("speech_ravdess", "music_4q")
def test_mixed_protocol_test_folds_share_no_speaker_and_no_song_with_training():
    speech, sfold, music, mfold, mixes = protocols.seed001_design(n_mix=5)
    assert len(mixes) == 1440 * 5
    per_clip = Counter(mx.speech.path for mx in mixes)
    assert set(per_clip.values()) == {5}
    for s in {mx.speech.path for mx in mixes[:50]}:
        songs = [mx.music.path for mx in mixes if mx.speech.path == s]
        assert len(set(songs)) == 5                          # 5 distinct songs per speech clip
    assert all(0 <= mx.slot < 6 for mx in mixes)            # 30 s clips: 6 slots of 4.5 s
    exps = {e.task: e for e in protocols.protocol_mixed(n_mix=5)}
    e = exps["speech_train_mixed"]
    assert len(e.folds) == 6
    tested = [k for f in e.folds for k in _keys(f.test["mixed"])]
    assert len(tested) == len(set(tested)) == 7200
    for f in e.folds:
        tr_spk = {it.group for it in f.train}
        tr_song = {it.other.path for it in f.train}
        for cond, items in f.test.items():
            assert not tr_spk & {it.group for it in items}, (f.name, cond)
        te_song = {it.other.path for it in f.test["mixed"]}
        assert te_song and not tr_song & te_song, f.name
    m = exps["music_train_mixed"]
    for f in m.folds:
        assert not {it.clip.path for it in f.train} & {it.clip.path for it in f.test["mixed"]}
        assert not {it.other.group for it in f.train} & {it.other.group for it in f.test["mixed"]}
        assert not {it.group for it in f.train} & {it.group for it in f.test["mixed"]}   # artists


def test_more_training_mixtures_use_only_the_speech_clips_own_fold_and_never_a_test_song():
    speech, sfold, music, mfold, mixes = protocols.seed001_design(n_mix=5)
    fold_of_song = {m.path: int(f) for m, f in zip(music, mfold)}
    fold_of_speech = {c.path: int(f) for c, f in zip(speech, sfold)}
    e = {x.task: x for x in protocols.protocol_mixed(n_mix=5)}["speech_train_mixed"]
    seen: dict[str, set] = {}
    for f in e.folds[:3]:
        more = systems.more_mixtures(f.train, 5, seed=11)
        assert len(more) == len(f.train)                     # 5 more per training speech clip
        test_songs = {it.other.path for it in f.test["mixed"]}
        assert not test_songs & {m.other.path for m in more}, f.name
        assert {m.group for m in more} == {it.group for it in f.train}
        protocol_pairs = {(it.clip.path, it.other.path) for it in f.train}
        for m in more:
            assert fold_of_song[m.other.path] == fold_of_speech[m.clip.path]   # seed 001: fold i with fold i
            assert (m.clip.path, m.other.path) not in protocol_pairs         # a song it was not mixed with
            assert m.feature_set == f.train[0].feature_set and 0 <= int(m.key.rsplit("|", 1)[1]) < 6
        per_clip = Counter(m.clip.path for m in more)
        assert set(per_clip.values()) == {5}
        for m in more:  # the same extra mixtures whichever training fold the speech clip is in
            seen.setdefault(m.clip.path, set()).add(m.key)
    assert all(len(v) == 5 for v in seen.values())
    assert _keys(systems.more_mixtures(e.folds[0].train, 5, seed=11)) != _keys(
        systems.more_mixtures(e.folds[0].train, 5, seed=12))

    class Recorder:  # what the wrapped system is trained on
        best_params = {"C": 1.0}

        def fit(self, items, y):
            self.items, self.y = items, y

    model = systems.MoreMixturesModel(Recorder(), 5, seed=11)
    train = e.folds[0].train
    model.fit(train, e.targets(train))
    assert len(model.inner.items) == 2 * len(train) and model.best_params == {"C": 1.0}
    np.testing.assert_array_equal(model.inner.y, e.targets(model.inner.items))  # each with its speech's label
    with pytest.raises(ValueError, match="mixed-speech items"):
        systems.more_mixtures([protocols.clip_item(speech[0])], 5, seed=11)


@needs_data("speech_ravdess", "music_4q")
def test_mixtures_hold_speech_and_music_at_equal_loudness_and_the_separator_hook_sees_them():
    from streamer.loudness import integrated_loudness

    s = next(c for c in protocols.corpus_clips("ravdess") if c.group == "actor01" and c.label == "angry")
    m = protocols.corpus_clips("4q")[0]
    s2, m2 = corpora.Clip(**{**s.__dict__}), corpora.Clip(**{**m.__dict__})
    corpora.load_audio([s2], use_cache=False)
    corpora.load_audio([m2], use_cache=False)
    for x in (s2.audio, m2.audio):
        assert integrated_loudness(x, 16000) == pytest.approx(-23.0, abs=0.5)
    mx = protocols.Mixture(s2, m2, slot=2, fold=0)
    seg = protocols.speech_segment(mx)
    n = int(4.5 * 16000)
    assert seg.size == n
    np.testing.assert_allclose(seg - m2.audio[2 * n:3 * n], protocols.fit_length(s2.audio, n), atol=1e-6)
    full = protocols.music_mixture(mx)
    assert full.size == m2.audio.size
    for k in range(protocols.n_slots(m2.audio.size)):
        np.testing.assert_allclose(full[k * n:(k + 1) * n] - m2.audio[k * n:(k + 1) * n],
                                   protocols.fit_length(s2.audio, n), atol=1e-6)
    seen = []

    def fake_separator(x):
        seen.append(x.size)
        return x * 0.5, x * 0.5

    sep = protocols.SeparatorSpec("test-half", fake_separator)
    exps = {e.task: e for e in protocols.protocol_mixed(separator=sep, n_mix=1)}
    assert {"speech_train_separated", "music_train_separated"} <= set(exps)
    assert set(exps["speech_train_clean"].folds[0].test) == {"clean", "mixed", "separated"}
    fold0 = exps["speech_train_separated"].folds[0]
    item = fold0.test["separated"][0]
    mixed_item = next(it for it in fold0.test["mixed"] if it.key == item.key)
    assert item.feature_set.startswith("sep-test-half-") and mixed_item.feature_set.startswith("mixspeech-")
    try:  # borrow real audio for this one mixture's two clips
        item.clip.audio, item.other.audio = s2.audio, m2.audio
        np.testing.assert_allclose(item.audio(), 0.5 * mixed_item.audio(), atol=1e-6)
    finally:
        item.clip.audio = item.other.audio = None
    assert seen == [n]


# --------------------------------------------------------------------------- manifest

def _copy(tmp_path, rel):
    src = DATA / "speech_ravdess" / rel
    dst = tmp_path / "audio" / src.name
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    return f"audio/{src.name}"


@needs_data("speech_ravdess")
def test_manifest_loads_real_files_with_labels_segments_and_va_scale(tmp_path, tmp_cache):
    rows = corpora.read_manifest("speech_ravdess")
    picks = [next(r for r in rows if r["emotion"] == e and r["speaker"] == "actor02") for e in
             ("happy", "sad", "neutral")]
    rels = [_copy(tmp_path, r["path"]) for r in picks]
    (tmp_path / "m.csv").write_text("path,label,group,start,end,extra\n"
                                    f"{rels[0]},happy,spk2,,,x\n{rels[1]},Sad,spk2,0.5,2.0,y\n"
                                    f"{rels[2]},neutral,spk2,,,z\n")
    clips = load_manifest(tmp_path / "m.csv")
    assert [c.quadrant for c in clips] == ["Q1", "Q3", None]
    assert clips[1].start == 0.5 and clips[1].end == 2.0 and clips[0].group == "spk2"
    corpora.load_audio(clips)
    assert clips[1].audio.size == int(1.5 * 16000)
    import soundfile as sf
    assert clips[0].audio.size == sf.info(str(tmp_path / rels[0])).frames
    # same clip objects the corpora give: items and features work on them
    items = [protocols.clip_item(c) for c in clips]
    systems.prepare_features(items, log=None)
    assert systems.feature_matrix(items).shape[0] == 3

    (tmp_path / "va.csv").write_text(f"path,valence,arousal,group\n{rels[0]},9,5,a\n{rels[1]},1,3,b\n")
    va = load_manifest(tmp_path / "va.csv", va_scale=parse_va_scale("1,9"))
    assert (va[0].valence, va[0].arousal, va[0].quadrant) == (1.0, 0.0, "Q1")
    assert (va[1].valence, va[1].arousal, va[1].quadrant) == (-1.0, -0.5, "Q3")


@needs_data("speech_ravdess")
def test_manifest_errors_are_one_clear_line(tmp_path):
    rel = _copy(tmp_path, corpora.read_manifest("speech_ravdess")[0]["path"])
    cases = {
        "path,label\nx.flac,happy\n": "missing column 'group'",
        "path,group\nx.flac,g\n": "needs a 'label' column or 'valence' and 'arousal'",
        f"path,label,group\n{rel},happy,g\n{rel},excited,g\n": "m.csv:3: label 'excited' is not in the taxonomy",
        "path,label,group\naudio/missing.wav,happy,g\n": "audio file not found",
        f"path,valence,arousal,group\n{rel},0.5,1.5,g\n": "arousal=1.5 is outside the scale [-1, 1]",
        f"path,label,group,start,end\n{rel},happy,g,2,1\n": "end=1.0 is not after start=2.0",
        f"path,label,group\n{rel},happy,\n": "empty 'group'",
    }
    for text, msg in cases.items():
        (tmp_path / "m.csv").write_text(text)
        with pytest.raises(ManifestError) as ei:
            load_manifest(tmp_path / "m.csv")
        assert msg in str(ei.value) and "\n" not in str(ei.value), str(ei.value)
    with pytest.raises(ManifestError, match="LO,HI"):
        parse_va_scale("9")


# --------------------------------------------------------------------------- a real baseline

@needs_data("speech_ravdess")
def test_quick_svm_beats_chance_on_held_out_speakers_and_renders(tmp_path, tmp_cache):
    """Train on actors 1-8 (statement 1), test on actors 9-10 (never heard), 8 emotions."""
    clips = [corpora.Clip(**{**c.__dict__}) for c in protocols.corpus_clips("ravdess")]
    stmt = {r["path"]: r["statement"] for r in corpora.read_manifest("speech_ravdess")}
    train = [c for c in clips if protocols.ravdess_fold(c.group) in (0, 1) and stmt[c.path] == "01"]
    test = [c for c in clips if c.group in ("actor09", "actor10")]
    corpora.load_audio(train + test, use_cache=False)
    exp = protocols.Experiment("ravdess", "8class", "RAVDESS subset", "classify", protocols.RAVDESS_EMOTIONS,
                               [protocols.Fold("actors 9-10", [protocols.clip_item(c) for c in train],
                                               {"clean": [protocols.clip_item(c) for c in test]})])
    settings = systems.Settings.quick_settings()
    r = runner.run_experiment(exp, ["svm", "rf"], settings, log=None)
    # the late fusion of SVM + MLP + RF, run later and added to the same results
    r2 = runner.run_experiment(exp, ["fusion", "fusion_spknorm_online"], settings, log=None)
    r["systems"].update(r2["systems"])
    for name in ("svm", "rf", "fusion", "fusion_spknorm_online"):
        acc = r["systems"][name]["mean_std"]["clean"]["accuracy"][0]
        maj = r["chance"]["clean"]["majority"]["accuracy"][0]
        assert acc > 2.5 * max(maj, 1 / 8), f"{name}: accuracy {acc:.3f} vs majority {maj:.3f} / uniform 0.125"
        pooled = np.array(r["systems"][name]["pooled"]["clean"]["confusion"])
        assert pooled.sum() == len(test) == 120
    # every tuned member's choice is kept, named by its place in the fusion
    assert {"0:svm__C", "0:svm__gamma", "1:mlp__alpha"} <= set(r2["systems"]["fusion"]["chosen_params"][0])
    r["systems"] = {k: r["systems"][k] for k in ("svm", "rf")}

    # folds fitted in two forked processes give the very same results, fold by fold
    halves = [[protocols.clip_item(c) for c in train if protocols.ravdess_fold(c.group) == k] for k in (0, 1)]
    exp2 = protocols.Experiment("ravdess", "8class", "RAVDESS subset", "classify", protocols.RAVDESS_EMOTIONS,
                                [protocols.Fold(f"actors {4 * k + 1}-{4 * k + 4}", h,
                                                {"clean": [protocols.clip_item(c) for c in test]})
                                 for k, h in enumerate(halves)])
    one, two = (runner.run_experiment(exp2, ["svm"], dataclasses.replace(settings, jobs=j), log=None)["systems"]["svm"]
                for j in (1, 2))
    assert one["per_fold"] == two["per_fold"] and one["chosen_params"] == two["chosen_params"]
    assert one["pooled"]["clean"]["confusion"] == two["pooled"]["clean"]["confusion"]
    assert one["per_fold"]["clean"][0] != one["per_fold"]["clean"][1]  # two different models, in fold order

    def doc_of(exps, **extra):
        return {"protocol": "ravdess", "generated": "now", "settings": settings.__dict__,
                "versions": runner.versions(), "systems": {k: "x" for e in exps for k in e["systems"]},
                "experiments": exps, "seconds": 1.0, **extra}

    merged = runner.add_systems(doc_of([r]), doc_of([r2], generated="later"), "python -m training.results --add")
    assert list(merged["experiments"][0]["systems"]) == ["svm", "rf", "fusion", "fusion_spknorm_online"]
    assert merged["added_runs"] == [{"systems": ["fusion", "fusion_spknorm_online"], "tasks": ["8class"],
                                     "generated": "later",
                                     "seconds": 1.0, "command": "python -m training.results --add (same folds and "
                                                                "features; merged)"}]
    assert "settings" not in merged["added_runs"][0]  # same knobs as the page's header
    regrid = runner.add_systems(json.loads(json.dumps(merged)), doc_of(
        [r2], settings={**settings.__dict__, "svm_gamma_x": (0.125, 1.0), "workers": 2}), "x")
    assert regrid["added_runs"][-1]["settings"] == {"svm_gamma_x": [0.125, 1.0]}, regrid["added_runs"]
    other = json.loads(json.dumps(r2))
    other["folds"][0]["n_test"]["clean"] = 119
    with pytest.raises(ValueError, match="folds differ"):
        runner.add_systems(doc_of([r]), doc_of([other]), "x")
    empty = dict(json.loads(json.dumps(r2)), systems={})  # no system applied to the task: nothing to record
    with pytest.raises(ValueError, match="none of the systems applies to 8class"):
        runner.add_systems(doc_of([r]), doc_of([empty]), "x")
    # the page renders from JSON alone (tables + confusion PNG)
    jd = tmp_path / "json"
    jd.mkdir()
    (jd / "protocol_ravdess.json").write_text(json.dumps(merged))
    doc = tmp_path / "out" / "RESULTS.md"
    assert results.main(["--from-json", "--json-dir", str(jd), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert "seed 001 Table 4.1" in text and "chance: majority class" in text
    assert "| **Fusion + causal speaker normalisation (streaming)** |" in text
    assert "`fusion, fusion_spknorm_online` added by a later run" in text
    # the summary keeps the causal fusion with the causal systems, not with the unadapted ones
    summary = next(line for line in text.splitlines() if line.startswith("| RAVDESS 8 emotions"))
    without = summary.split("without")[1]
    assert any(f"({n})" in without for n in ("svm", "rf", "fusion")) and "spknorm" not in without, summary
    assert "(fusion_spknorm_online)" in summary.split("causal (streaming)")[1].split(";")[0], summary
    # a subset of a protocol's tasks is only ever added to saved results, never written alone
    for argv in (["--only", "ravdess", "--tasks", "8class", "--json-dir", str(jd)],
                 ["--add", "--only", "emopia", "--tasks", "4quadrant", "--json-dir", str(jd)]):
        with pytest.raises(SystemExit) as exc:
            results.main(argv + ["--doc", str(doc)])
        assert exc.value.code == 2
    assert not (jd / "protocol_emopia.json").exists()
    pngs = list((doc.parent / "img").glob("ravdess_8class_clean.png"))
    assert pngs and pngs[0].stat().st_size > 5000


@needs_data("speech_ravdess")
def test_a_flat_prior_fusion_decides_as_if_the_classes_were_equally_likely(tmp_cache):
    """Trained with one emotion nearly absent, the fusion with a uniform prior (transfer's
    `fusion_corpusnorm_flat`) divides the same members' probabilities by the training frequencies,
    and so names the rare emotion more often than the plain average does."""
    clips = protocols.corpus_clips("ravdess")
    stmt = {r["path"]: r["statement"] for r in corpora.read_manifest("speech_ravdess")}
    train = [c for c in clips if protocols.ravdess_fold(c.group) in (0, 1) and stmt[c.path] == "01"
             and (c.label != "happy" or c.group == "actor01")]
    test = [c for c in clips if c.group in ("actor09", "actor10")]
    corpora.load_audio(train + test, use_cache=False)
    exp = protocols.Experiment("transfer", "8class", "imbalanced", "classify", protocols.RAVDESS_EMOTIONS,
                               [protocols.Fold("f", [protocols.clip_item(c) for c in train],
                                               {"clean": [protocols.clip_item(c) for c in test]})])
    tr, te = exp.folds[0].train, exp.folds[0].test["clean"]
    ytr = exp.targets(tr)
    systems.prepare_features(tr + te, log=None)
    model = systems._fusion_factory(False, flat_prior=True)(exp, systems.Settings.quick_settings()).fit(tr, ytr)
    happy = protocols.RAVDESS_EMOTIONS.index("happy")
    assert np.allclose(model.prior, np.bincount(ytr, minlength=8) / len(ytr)) and model.prior[happy] < 0.03
    mean = np.mean([m.scores(te) for m in model.members], axis=0)
    flat = model.predict(te)
    assert np.array_equal(flat, (mean / model.prior).argmax(1))
    model.prior = None
    plain = model.predict(te)
    assert np.array_equal(plain, mean.argmax(1))
    assert (flat == happy).sum() > (plain == happy).sum(), (np.bincount(flat, minlength=8), np.bincount(plain, minlength=8))


def test_causal_speaker_normalisation_uses_only_what_was_heard_and_converges_to_the_batch_one():
    rng = np.random.default_rng(3)
    groups = np.repeat(["a", "b"], 40)
    X = rng.normal(size=(80, 5)) * np.where(groups == "a", 2.0, 0.5)[:, None] + np.where(groups == "a", 3.0, -1.0)[:, None]
    keys = [f"clip{i}" for i in range(80)]
    prior = systems.group_stats_prior(X, groups)
    Z, pos = systems.online_group_standardise(X, groups, keys, prior, prior_n=5.0)
    assert sorted(pos[groups == "a"]) == list(range(1, 41))
    # causal: changing a clip heard LATER leaves every earlier clip's features unchanged
    a = np.flatnonzero(groups == "a")
    last = a[pos[a].argmax()]
    X2 = X.copy()
    X2[last] += 100.0
    Z2, _ = systems.online_group_standardise(X2, groups, keys, prior, prior_n=5.0)
    earlier = a[pos[a] < pos[last]]
    np.testing.assert_array_equal(Z2[earlier], Z[earlier])
    assert not np.allclose(Z2[last], Z[last])
    # with no prior, the last clip of a group is z-scored exactly as the batch normalisation does it
    Z0, pos0 = systems.online_group_standardise(X, groups, keys, prior, prior_n=0.0)
    full = systems.group_standardise(X, groups)
    np.testing.assert_allclose(Z0[last], full[last], rtol=1e-6, atol=1e-6)
    # the first clip of a speaker, with the prior, is not blown up by a zero variance
    first = a[pos[a].argmin()]
    assert np.all(np.isfinite(Z[first])) and np.abs(Z[first]).max() < 10


def test_a_replay_is_scored_per_truth_clip_from_the_windows_inside_it():
    from training.score import replay_predictions, score

    def win(t0, q, src="speech", length=3.0):
        probs = {k: (0.7 if k == q else 0.1) for k in ("Q1", "Q2", "Q3", "Q4")}
        return {"topic": f"emotion.{src}", "t_start": t0, "t_end": t0 + length, "probs": probs,
                "valence": 0.5 if q in ("Q1", "Q4") else -0.5, "arousal": 0.5 if q in ("Q1", "Q2") else -0.5}

    truth = {"speech": [{"path": "a.wav", "quadrant": "Q2", "t_start": 10.0, "t_end": 14.0},
                        {"path": "b.wav", "quadrant": None, "t_start": 20.0, "t_end": 23.5},
                        {"path": "c.wav", "quadrant": "Q3", "t_start": 40.0, "t_end": 43.0}],
             "songs": [{"path": "s.mp3", "quadrant": "Q1", "t_start": 0.0, "t_end": 30.0}]}
    rows = [win(9.0, "Q2"), win(10.0, "Q2"), win(11.0, "Q1"), win(12.5, "Q4"),  # 12.5-15.5: half inside
            win(13.0, "Q4"),  # 1 s of 3 inside: left out
            win(20.0, "Q3"), win(0.0, "Q1", "music", 10.0), win(20.0, "Q4", "music", 10.0)]
    preds, labels = replay_predictions(rows, truth)
    by = {p["path"].split("@")[0]: p for p in preds}
    assert set(by) == {"speech:a.wav", "speech:b.wav", "music:s.mp3"}  # c.wav: no window inside
    assert by["speech:a.wav"]["windows"] == 4 and by["music:s.mp3"]["windows"] == 2
    assert by["speech:a.wav"]["probs"]["Q2"] == pytest.approx((0.7 + 0.7 + 0.1 + 0.1) / 4)
    m = score([p for p in preds if p["source"] == "speech"], labels)
    assert m["n_clips"] == 1 and m["quadrant_accuracy"] == 1.0 and m["neutral_clips"]["n"] == 1


def test_score_names_an_unreadable_input_in_one_line(tmp_path, capsys):
    from training.score import main

    good = tmp_path / "replay.jsonl"
    good.write_text('{"topic": "status", "event": "start"}\n')
    (tmp_path / "bad.json").write_text("{not json")
    for argv, what in (([str(tmp_path / "missing.jsonl")], "predictions"),
                       ([str(good), "--truth", str(tmp_path / "missing.json")], "truth file"),
                       ([str(good), "--truth", str(tmp_path / "bad.json")], "truth file")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.startswith(f"training.score: cannot read {what} ") and err.count("\n") == 1, err


@needs_data("music_4q")
def test_music_descriptors_join_the_handcrafted_ones_and_a_svm_on_them_learns_held_out_artists(tmp_cache):
    """``kinds`` puts streamer.music_descriptors beside streamer.descriptors (the very values the streamer
    computes for a window); an SVM on 10 s of 4Q clips, tested on artists it never heard, beats chance with
    them and with the music descriptors alone."""
    from streamer import descriptors, music_descriptors, taxonomy

    clips = protocols.corpus_clips("4q")
    fold_of = protocols.stratified_group_folds([c.quadrant for c in clips], [c.group for c in clips], 10)

    def pick(folds, per_quadrant):
        return [c for q in taxonomy.QUADRANTS for c in [c for c, f in zip(clips, fold_of) if f in folds
                                                          and c.quadrant == q][:per_quadrant]]

    train, test = pick((1, 2, 3), 20), pick((0,), 12)
    assert not {c.group for c in train} & {c.group for c in test}
    corpora.load_audio(train + test, use_cache=False)
    crop = [protocols.Item(f"{c.path}@10s", c, lambda c=c: c.audio[:10 * corpora.SR], "4q-10s", needs=(c,))
            for c in train + test]
    tr, te = crop[:len(train)], crop[len(train):]
    exp = protocols.Experiment("music4q", "4quadrant", "4Q subset", "classify", taxonomy.QUADRANTS,
                               [protocols.Fold("f", tr, {"clean": te})])
    both = systems.feature_matrix(te[:2], kinds=systems._MUSIC)
    assert both.shape == (2, len(descriptors.feature_names()) + len(music_descriptors.feature_names()))
    np.testing.assert_array_equal(both[1], np.concatenate([descriptors.features(te[1].audio()),
                                                           music_descriptors.features(te[1].audio())]))
    settings = systems.Settings.quick_settings()
    y, ytr = exp.targets(te), exp.targets(tr)
    for kinds, floor in ((systems._MUSIC, 0.45), (("music_descriptors",), 0.4)):
        model = systems._svm_factory(False, kinds=kinds)(exp, settings).fit(tr, ytr)
        f1 = macro_f1(y, model.predict(te), 4)
        assert f1 > floor, f"{kinds}: macro-F1 {f1:.3f} on {len(te)} clips of unseen artists (chance 0.25)"
    assert report._short_params({"svm__C": 1.0, "svm__gamma": 0.5 / both.shape[1]}, "svm_seg_music") == "(C=1 g=0.5/d)"


def test_systems_on_other_music_descriptors_are_not_added_to_saved_results():
    """Saved results record the music descriptors' version; a run of systems reading them on another version
    is refused (one of other systems is not), and results older than the music descriptors take the version
    of the first run that adds them."""
    def doc(version, systems):
        v = {**runner.versions(), "music_descriptors": version}
        if version is None:
            del v["music_descriptors"], v["n_music_descriptors"]
        return {"protocol": "music4q", "generated": "now", "seconds": 1.0, "settings": {}, "versions": v,
                "systems": {s: "x" for s in systems},
                "experiments": [{"task": "4quadrant", "folds": [{"n_test": {"clean": 63}}],
                                 "systems": {s: {} for s in systems}}]}

    merged = runner.add_systems(doc(None, ["svm_seg"]), doc(1, ["svm_seg_music"]), "x")
    assert merged["versions"]["music_descriptors"] == 1 and list(merged["experiments"][0]["systems"]) == [
        "svm_seg", "svm_seg_music"]
    with pytest.raises(ValueError, match="another version of the music descriptors"):
        runner.add_systems(merged, doc(2, ["fusion_seg_music"]), "x")
    assert "fusion_seg" in runner.add_systems(merged, doc(2, ["fusion_seg"]), "x")["experiments"][0]["systems"]


@needs_data("music_4q")
def test_an_experiment_computes_the_descriptors_its_systems_read_before_the_folds():
    """Segment systems read their segments' descriptors, not their clips': those are what run_experiment
    prepares (once, in the parent, not in each forked fold), and the music descriptors only where read."""
    exp = protocols.protocol_4q()[0]
    clips = [it for f in exp.folds for it in f.train + [x for v in f.test.values() for x in v]]
    s = systems.Settings.quick_settings()
    needs = systems.merge_needs(systems.SYSTEMS[n].factory(exp, s).feature_needs(clips)
                                 for n in ("svm", "fusion_seg_music"))
    sets = {k: {it.feature_set for it in v} for k, v in needs.items()}
    assert sets == {"handcrafted": {"4q", "4q-seg6"}, "music_descriptors": {"4q-seg6"}}, sets
    assert len({it.key for it in needs["music_descriptors"]}) == 6 * len({it.key for it in clips})
