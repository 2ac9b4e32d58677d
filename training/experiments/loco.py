"""Selection of the speech model on unseen corpora: leave-one-corpus-out (LOCO).

    python -m training.experiments.loco features --variant clean      # descriptor caches (slow once)
    python -m training.experiments.loco features --input logmel_stats # log-mel statistics caches
    python -m training.experiments.loco_cnn features                  # log-mel caches (the CNN candidates)
    python -m training.experiments.loco_cnn run --systems cnn_aug_mix # a CNN candidate, gathered here too
    python -m training.experiments.loco run [--out docs/results/loco_speech.json]
    python -m training.experiments.loco ship                          # train the winner on all, export, card

Candidate systems are ranked the way a user meets them: trained on every speech
corpus but one (RAVDESS, TESS, EMOVO), tested on the one left out (another
language, studio and set of speakers), on clean clips and on the same clips
under music (speech over a 4Q song at +5 dB speech-to-music ratio).  Beside it,
the in-corpus number: leave-one-speaker-group-out inside each corpus
(speaker-independent), trained on that corpus plus the others.

Every clip is heard as the streamer hears it: the clip's streaming window
(:func:`stream_window`: a clip shorter than one 3 s window is centred in it,
zero-padded, as ``emotrack predict`` does; a longer clip gives its middle
window), then the descriptors of :mod:`streamer.descriptors`.

Scoring (:func:`score`): neutral clips have no quadrant (DESIGN.md taxonomy): they
are never a quadrant target, not trained on as one, and not scored in the
quadrant macro-F1 or the arousal / valence UARs; what the model says about them
is reported apart (share of each quadrant).  Macro-F1 is over the quadrants the
held-out corpus has (TESS and EMOVO have no Q4; a Q4 prediction on them is an
error of the true class).  Arousal UAR: mean recall of high (Q1, Q2) and low
(Q3, Q4) arousal from the sign of the published arousal; valence alike.  Chance:
the expected macro-F1 of a uniform guess over the 4 quadrants on the corpus's
class shares (per class 2 p q / (p + q), q = 1/4), and 0.5 for each UAR.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from streamer import taxonomy
from streamer.predict import clip_windows

from ..data import augment, handcrafted
from ..data.corpora import SR, Clip, load_audio, read_manifest

SPEECH_CORPORA = ("ravdess", "tess", "emovo")
FOLDERS = {"ravdess": "speech_ravdess", "tess": "speech_tess", "emovo": "speech_emovo"}
VARIANTS = ("clean", "aug", "mix")
WINDOW = 3 * SR
HOP = SR
MIX_SMR_DB = 5.0
VARIANT_VERSION = 1  # bump when stream_window, augment.imitate or the mixtures change (renames the caches)
REPO = Path(__file__).resolve().parents[2]


def speech_clips(corpora: Sequence[str] = SPEECH_CORPORA) -> list[Clip]:
    """Every clip of the speech corpora (no audio yet); ``group`` is the speaker."""
    out = []
    for corpus in corpora:
        for r in read_manifest(FOLDERS[corpus]):
            out.append(Clip(corpus, r["path"], r["emotion"], taxonomy.label_quadrant(r["emotion"]),
                            r["speaker"], "loco"))
    return out


def clip_key(c: Clip) -> str:
    return f"{c.corpus}:{c.path}"


def stream_window(x: np.ndarray) -> np.ndarray:
    """The 3 s streaming window of a clip: centred and zero-padded if shorter, else its middle window."""
    wins = clip_windows(np.asarray(x, np.float32), WINDOW, HOP)
    return wins[len(wins) // 2]


def _seed(key: str, variant: str) -> int:
    return int(hashlib.sha1(f"{variant}:{key}".encode()).hexdigest()[:8], 16)


_MUSIC: list = []


def music_clips() -> list[Clip]:
    """4Q songs (R128-normalised) for the speech-over-music variant."""
    if not _MUSIC:
        from ..data.corpora import music_index
        _MUSIC.extend(load_audio([c for c in music_index() if c.corpus == "4q"]))
    return _MUSIC


def variant_window(c: Clip, variant: str) -> np.ndarray:
    """What the model hears of clip ``c`` in ``variant``: clean, ``aug`` (:func:`training.data.augment.imitate`)
    or ``mix`` (over a 4Q song at +5 dB speech-to-music ratio)."""
    key = clip_key(c)
    if variant == "clean":
        return stream_window(c.audio)
    if variant == "aug":
        return stream_window(augment.imitate(c.audio, _seed(key, variant)))
    if variant == "mix":
        rng = np.random.default_rng(_seed(key, variant))
        w = stream_window(c.audio)
        songs = music_clips()
        o = songs[int(rng.integers(len(songs)))].audio
        s = int(rng.integers(0, max(1, o.size - w.size)))
        seg = np.zeros(w.size, np.float32)
        seg[: min(w.size, o.size - s)] = o[s:s + w.size]
        return (w + seg * np.float32(10.0 ** (-MIX_SMR_DB / 20.0))).astype(np.float32)
    raise ValueError(f"variant {variant!r} is not one of {VARIANTS}")


def descriptors(clips: Sequence[Clip], variant: str = "clean", workers: int = 1, log=print,
                kind: str = "handcrafted") -> np.ndarray:
    """Rows [len(clips), D] of the clips' ``variant`` windows (cached per corpus and variant): the 496
    descriptors (``kind="handcrafted"``) or the log-mel statistics (``"logmel_stats"``,
    :mod:`training.nets.logmel_stats`)."""
    out = np.zeros((len(clips), handcrafted.n_features((kind,))), np.float32)
    by_corpus: dict[str, list[int]] = {}
    for i, c in enumerate(clips):
        by_corpus.setdefault(c.corpus, []).append(i)
    for corpus, idx in by_corpus.items():
        cs = [clips[i] for i in idx]

        def before(todo, cs=cs):
            need = [cs[i] for i in todo if cs[i].audio is None]
            if need:
                load_audio(need if len(need) < len(cs) else cs)
            if variant == "mix":
                music_clips()

        X = handcrafted.cached(f"loco-{variant}-{corpus}-v{VARIANT_VERSION}", [clip_key(c) for c in cs],
                               lambda i, cs=cs: variant_window(cs[i], variant), workers=workers,
                               before_compute=before, log=log, kind=kind)
        out[idx] = X
    return out


# ----------------------------------------------------------------------------- systems


class System:
    """A candidate on the 496 descriptors (or, ``input="logmel_stats"``, on the statistics of the log-mel input
    that the speech CNN reads, :mod:`training.nets.logmel_stats`): a balanced RBF SVM (``kind="svm"``, Platt probabilities) or a
    balanced multinomial logistic regression (``kind="lr"``), trained on ``train_variants`` of the training
    corpora, with one of three standardisations (``norm``):

    * ``train``: the training set's mean and std (what a model without adaptation does);
    * ``corpus``: every corpus, the held-out one included, z-scored with its own statistics (batch,
      needs the whole test corpus before the first answer: an upper bound, not streamable);
    * ``stream``: :mod:`streamer.adapt`'s causal per-stream standardisation, each training speaker a
      stream, shrunk toward the training speakers' average with the weight of ``prior_n`` windows;
    * ``corpus_stream``: each TRAINING corpus (and each augmented variant of it) z-scored with its own
      statistics (batch: the model learns on corpus-normalised descriptors), the test streams
      standardised causally as ``stream`` does, shrunk toward the training corpora's average statistics
      with the weight of ``prior_n`` windows (streamable: nothing of the test corpus is seen as a batch).

    ``gamma``: the RBF width as a multiple of scikit-learn's ``"scale"`` (1 / D after the scaler).
    ``blend=(name, w)``: the published probabilities are ``w`` times this system's plus ``1 - w`` times
    those of system ``name`` (trained on the same corpora): late fusion of an adapted and an unadapted
    model, so that a one-emotion stream, where adaptation collapses, keeps the unadapted model's half.
    ``select``: ``prior_n`` (and the blend's weight) chosen per held-out corpus by :func:`inner_select`, on
    the training corpora only (``corpus_stream`` systems: both are test-time settings, no refit);
    ``select_gamma``: the RBF widths the inner selection also chooses among (one fit each).
    """

    def __init__(self, name: str, norm: str = "train", train_variants: Sequence[str] = ("clean",),
                 prior_n: float = 5.0, C: float = 1.0, kind: str = "svm", description: str = "",
                 input: str = "handcrafted", gamma: float = 1.0, blend: Optional[tuple] = None,
                 select: bool = False, select_gamma: Optional[Sequence[float]] = None):
        self.name, self.norm, self.train_variants, self.prior_n, self.C = name, norm, tuple(train_variants), prior_n, C
        self.kind, self.description, self.input, self.gamma, self.blend = kind, description, input, gamma, blend
        self.select, self.select_gamma = select, tuple(select_gamma) if select_gamma else None

    n_features = 496  # the RBF width's unit (gamma="scale" after the StandardScaler is 1 / D); set by Fitted

    def make_classifier(self, probability: bool = True):
        if self.kind in ("lr", "lr_av"):
            from sklearn.linear_model import LogisticRegression
            return LogisticRegression(C=self.C, class_weight="balanced", max_iter=3000)
        from sklearn.svm import SVC
        return SVC(C=self.C, kernel="rbf", gamma="scale" if self.gamma == 1.0 else self.gamma / self.n_features,
                   class_weight="balanced", probability=probability,
                   random_state=0, cache_size=800)


SYSTEMS = {s.name: s for s in (
    System("svm", "train", ("clean",), description="RBF SVM, training statistics"),
    System("svm_corpus", "corpus", ("clean",), description="RBF SVM, per-corpus standardisation (batch: not streamable)"),
    System("svm_stream5", "stream", ("clean",), prior_n=5.0,
           description="RBF SVM, causal per-stream standardisation (streamer.adapt), prior weight 5 windows"),
    System("svm_stream30", "stream", ("clean",), prior_n=30.0,
           description="RBF SVM, causal per-stream standardisation, prior weight 30 windows"),
    System("lr", "train", ("clean",), C=0.1, kind="lr", description="logistic regression, training statistics"),
    System("lr_aug_mix", "train", ("clean", "aug", "mix"), C=0.1, kind="lr",
           description="logistic regression, training statistics, trained on clean + imitated other corpora "
                       "(training.data.augment) + speech over music"),
    System("lr_stream5_aug_mix", "stream", ("clean", "aug", "mix"), prior_n=5.0, C=0.1, kind="lr",
           description="logistic regression, causal per-stream standardisation (prior weight 5), clean + "
                       "augmented + over music"),
    # shrinkage sweep: the prior's weight n0 (mean_t = (n0 mu_train + sum x) / (n0 + n)); n0 -> inf is "lr"
    *[System(f"lr_stream{n:g}", "stream", ("clean",), prior_n=float(n), C=0.1, kind="lr",
             description=f"logistic regression, causal per-stream standardisation shrunk toward the training "
                         f"speakers with the weight of {n:g} windows, clean")
      for n in (30, 100, 300)],
    System("svm_stream300", "stream", ("clean",), prior_n=300.0,
           description="RBF SVM, causal per-stream standardisation, prior weight 300 windows"),
    System("lr_stream300_aug_mix", "stream", ("clean", "aug", "mix"), prior_n=300.0, C=0.1, kind="lr",
           description="logistic regression, causal per-stream standardisation (prior weight 300), clean + "
                       "augmented + over music"),
    # third round: corpus-normalised training + causal shrinkage at test, late fusion with the unadapted LR;
    # n0 (and the blend weight) chosen by inner leave-one-corpus-out on the training corpora
    System("lr_cstream_sel", "corpus_stream", ("clean",), C=0.1, kind="lr", select=True,
           description="logistic regression on per-training-corpus standardised descriptors; test streams "
                       "standardised causally, shrunk toward the training corpora (n0 by inner LOCO), clean"),
    System("svm_cstream_lr_sel", "corpus_stream", ("clean",), blend=("lr", 0.5), select=True,
           description="late fusion: w x RBF SVM on corpus-standardised descriptors, causal shrinkage at test + "
                       "(1 - w) x unadapted LR (lr); n0 and w by inner LOCO, clean"),
    System("svm_cstream_lraug_sel", "corpus_stream", ("clean",), blend=("lr_aug_mix", 0.5), select=True,
           description="late fusion: w x RBF SVM on corpus-standardised descriptors (clean), causal shrinkage at "
                       "test + (1 - w) x unadapted LR trained clean + augmented + over music (lr_aug_mix = "
                       "speech_lr); n0 and w by inner LOCO"),
    System("svm_cstream_lrav_sel", "corpus_stream", ("clean",), blend=("lr_av_aug_mix", 0.5), select=True,
           description="late fusion: w x RBF SVM on corpus-standardised descriptors (clean), causal shrinkage at "
                       "test + (1 - w) x the unadapted per-axis LR trained clean + augmented + over music "
                       "(lr_av_aug_mix); n0 and w by inner LOCO"),
    System("svm_cstream_lrav_selg", "corpus_stream", ("clean",), blend=("lr_av_aug_mix", 0.5), select=True,
           select_gamma=(1.0, 0.5),
           description="svm_cstream_lrav_sel with the RBF width (x1 or x0.5 of 'scale') also chosen by inner LOCO"),
    # arousal and valence as two binary classifiers (neutral clips: low arousal), combined into quadrants
    System("lr_av_aug_mix", "train", ("clean", "aug", "mix"), C=0.1, kind="lr_av",
           description="per-axis balanced logistic regressions P(V+), P(A+) (neutral clips trained as low "
                       "arousal), quadrants as their product; training statistics, clean + augmented + over music "
                       "(speech_lr's recipe and C otherwise)"),
    System("lr_av", "train", ("clean",), C=0.1, kind="lr_av",
           description="per-axis balanced logistic regressions (neutral clips: low arousal), training statistics, "
                       "clean"),
    # the log-mel statistics the CNN's input gives for free (training.nets.logmel_stats): costs no descriptors
    System("lm_lr_aug_mix", "train", ("clean", "aug", "mix"), C=0.01, kind="lr", input="logmel_stats",
           description="logistic regression on the log-mel statistics (training.nets.logmel_stats), training "
                       "statistics, clean + augmented + over music"),
)}


def stream_order(keys: Sequence[str], groups: Sequence[str], seed: int = 0) -> list[int]:
    """Rows grouped by stream, each stream's rows in a seeded random order (as a stream hears them)."""
    groups = np.asarray(groups)
    order = []
    for g in sorted(set(groups.tolist())):
        idx = np.flatnonzero(groups == g)
        order.extend(idx[np.argsort([hashlib.sha1(f"{seed}:{keys[i]}".encode()).hexdigest() for i in idx])])
    return order


def _zscore(X, m, s):
    return (X - m) / (s + 1e-8)


class Fitted:
    """A fitted candidate: ``proba(X, keys, streams)`` -> [n, 4] quadrant probabilities."""

    def __init__(self, system: System, X: np.ndarray, y: np.ndarray, corpus: np.ndarray, speaker: np.ndarray,
                 keys: Sequence[str], probability: bool = True):
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from streamer import adapt

        self.system = system
        X = np.asarray(X, np.float64)
        if system.norm == "corpus":
            X = X.copy()
            for c in np.unique(corpus):
                m = corpus == c
                X[m] = _zscore(X[m], X[m].mean(0), X[m].std(0))
        elif system.norm == "stream":
            clean = np.array(["#" not in k for k in keys])
            self.prior = adapt.group_prior(X[clean], speaker[clean])
            X = adapt.standardise_groups(X, speaker, self.prior, system.prior_n, stream_order(keys, speaker))
        elif system.norm == "corpus_stream":
            clean = np.array(["#" not in k for k in keys])
            self.prior = adapt.group_prior(X[clean], corpus[clean])
            groups = np.array([c + (k[k.index("#"):] if "#" in k else "") for c, k in zip(corpus, keys)])
            X = X.copy()
            for g in np.unique(groups):
                m = groups == g
                X[m] = _zscore(X[m], X[m].mean(0), X[m].std(0))
        keep = y >= 0  # neutral is never a quadrant target
        system.n_features = X.shape[1]
        if system.kind == "lr_av":
            # one balanced binary classifier per axis, on every clip with a quadrant; neutral clips are low
            # arousal (they have no valence): the quadrant probabilities are P(V+) P(A+) ... (taxonomy.agreeing)
            self.axes = []
            for cls, extra in (((0, 3), None), ((0, 1), y < 0)):
                rows = keep | extra if extra is not None else keep
                e = make_pipeline(StandardScaler(), system.make_classifier(probability))
                e.fit(X[rows], np.isin(y[rows], cls).astype(int))
                self.axes.append(e)
            self.est = None
        else:
            self.est = make_pipeline(StandardScaler(), system.make_classifier(probability))
            self.est.fit(X[keep], y[keep])
        self.partner: Optional[Fitted] = None  # the blend's other system (Data.fit)
        # test-time settings (no refit needed to change them): the prior's weight and the blend's weight
        self.prior_n = system.prior_n
        self.weight = float(system.blend[1]) if system.blend else 1.0

    def features(self, X: np.ndarray, keys: Sequence[str], streams: Sequence[str]) -> np.ndarray:
        from streamer import adapt

        X = np.asarray(X, np.float64)
        if self.system.norm == "corpus":
            return _zscore(X, X.mean(0), X.std(0))
        if self.system.norm in ("stream", "corpus_stream"):
            streams = np.asarray(streams)
            return adapt.standardise_groups(X, streams, self.prior, self.prior_n, stream_order(keys, streams))
        return X

    def proba(self, X, keys, streams) -> np.ndarray:
        """[n, 4] quadrant probabilities (a quadrant absent from the training set: 0)."""
        F = self.features(X, keys, streams)
        if self.est is None:  # per-axis classifiers
            pv, pa = (e.predict_proba(F)[:, list(e.classes_).index(1)] for e in self.axes)
            out = np.stack([pv * pa, (1 - pv) * pa, (1 - pv) * (1 - pa), pv * (1 - pa)], 1)
        else:
            p = self.est.predict_proba(F)
            out = np.zeros((len(p), 4))
            out[:, self.est.classes_.astype(int)] = p
        if self.partner is not None:
            w = self.weight
            out = w * out + (1.0 - w) * self.partner.proba(X, keys, streams)
        return out


# ----------------------------------------------------------------------------- scoring


def macro_f1(y: np.ndarray, pred: np.ndarray, labels: Sequence[int]) -> float:
    f = []
    for c in labels:
        tp = np.sum((pred == c) & (y == c))
        fp = np.sum((pred == c) & (y != c))
        fn = np.sum((pred != c) & (y == c))
        f.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(f))


def uar(t: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean([np.mean(p[t == c] == c) for c in np.unique(t)]))


def published(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(quadrant index, valence, arousal) published for rows of model quadrant probabilities
    (:func:`streamer.taxonomy.agreeing`)."""
    out = [taxonomy.agreeing(p) for p in probs]
    return (np.array([taxonomy.QUADRANTS.index(o["quadrant"]) for o in out]),
            np.array([o["valence"] for o in out]), np.array([o["arousal"] for o in out]))


def chance(y: np.ndarray) -> dict:
    labels = sorted(set(y[y >= 0].tolist()))
    p = np.array([np.mean(y[y >= 0] == c) for c in labels])
    return {"macro_f1": round(float(np.mean(2 * p * 0.25 / (p + 0.25))), 4), "arousal_uar": 0.5, "valence_uar": 0.5}


def score(y: np.ndarray, probs: np.ndarray) -> dict:
    """Quadrant macro-F1 (over the quadrants present), arousal and valence UAR of the published
    outputs on the clips with a quadrant; neutral clips: share of each published quadrant."""
    q, v, a = published(probs)
    keep = y >= 0
    labels = sorted(set(y[keep].tolist()))
    yv = np.isin(y[keep], (0, 3)).astype(int)
    ya = np.isin(y[keep], (0, 1)).astype(int)
    out = {"macro_f1": round(macro_f1(y[keep], q[keep], labels), 4),
           "arousal_uar": round(uar(ya, (a[keep] >= 0).astype(int)), 4),
           "valence_uar": round(uar(yv, (v[keep] >= 0).astype(int)), 4),
           "n": int(keep.sum())}
    if (~keep).any():
        out["neutral_shares"] = {qq: round(float(np.mean(q[~keep] == i)), 3) for i, qq in enumerate(taxonomy.QUADRANTS)}
    return out


# ----------------------------------------------------------------------------- the protocol


class Data:
    """Every speech clip's descriptors in each variant, labels, corpus and speaker."""

    def __init__(self, variants: Sequence[str] = VARIANTS, clips: Optional[list] = None, log=print,
                 inputs: Sequence[str] = ("handcrafted",)):
        self.clips = clips if clips is not None else speech_clips()
        self.inputs = {k: {v: descriptors(self.clips, v, log=log, kind=k) for v in variants} for k in inputs}
        self.X = self.inputs.get("handcrafted") or next(iter(self.inputs.values()))
        self.y = np.array([c.q_index for c in self.clips])
        self.corpus = np.array([c.corpus for c in self.clips])
        self.speaker = np.array([f"{c.corpus}:{c.group}" for c in self.clips])
        self.label = np.array([c.label for c in self.clips])
        self.keys = [clip_key(c) for c in self.clips]

    def train_set(self, idx: np.ndarray, variants: Sequence[str], input: str = "handcrafted"):
        Xs, ys, cs, ss, ks = [], [], [], [], []
        for v in variants:
            Xs.append(self.inputs[input][v][idx])
            ys.append(self.y[idx])
            cs.append(self.corpus[idx])
            # an augmented clip is another recording condition: its own stream
            ss.append(self.speaker[idx] if v == "clean" else np.char.add(self.speaker[idx], f"#{v}"))
            ks += [self.keys[i] + ("" if v == "clean" else f"#{v}") for i in idx]
        return np.concatenate(Xs), np.concatenate(ys), np.concatenate(cs), np.concatenate(ss), ks

    def fit(self, system: System, idx: np.ndarray, probability: bool = True) -> Fitted:
        # one fit per training recipe and set within a run: systems that differ only in test-time settings
        # (blend partner, selection) share it
        key = (system.norm, system.train_variants, system.C, system.kind, system.gamma, system.input,
               system.prior_n if system.norm == "stream" else None, probability,
               hashlib.sha1(np.asarray(idx).tobytes()).hexdigest())
        cache = self.__dict__.setdefault("_fits", {})
        if key not in cache:
            cache[key] = Fitted(system, *self.train_set(idx, system.train_variants, system.input),
                                probability=probability)
        fitted = copy.copy(cache[key])
        fitted.system, fitted.prior_n = system, system.prior_n
        fitted.weight = float(system.blend[1]) if system.blend else 1.0
        if system.blend:
            fitted.partner = self.fit(SYSTEMS[system.blend[0]], idx, probability)
        return fitted


#: the test-time settings a ``select`` system chooses among by inner leave-one-corpus-out: prior weight n0
#: of the causal standardisation and the blend weight w of the adapted model
SELECT_PRIOR_N = (10.0, 30.0, 100.0, 300.0)
SELECT_WEIGHT = (1.0, 0.7, 0.5)


def one_emotion_streams(data: "Data", idx: np.ndarray) -> np.ndarray:
    """Streams where one speaker speaks one emotion (a TV stream where one angry speaker holds the floor)."""
    return np.char.add(data.speaker[idx], np.char.add("|", data.label[idx]))


def inner_select(data: "Data", system: System, tr: np.ndarray, log=print) -> dict:
    """(n0, w) for ``system`` chosen on the training corpora ``tr`` only: each training corpus held out in
    turn, the model trained on the other(s); the objective is the mean macro-F1 over clean and under music,
    natural and one-emotion streams (so adaptation may not win by collapsing the one-emotion case)."""
    corpora = sorted(set(data.corpus[tr].tolist()))
    scores: dict = {}
    for gamma in system.select_gamma or (system.gamma,):
        sg = copy.copy(system)
        sg.gamma = gamma
        for held in corpora:
            itr, ite = tr[data.corpus[tr] != held], tr[data.corpus[tr] == held]
            model = data.fit(sg, itr)
            keys = [data.keys[i] for i in ite]
            for v in ("clean", "mix"):
                if v not in data.inputs[system.input]:
                    continue
                X = data.inputs[system.input][v][ite]
                for streams in (data.speaker[ite], one_emotion_streams(data, ite)):
                    for n0 in SELECT_PRIOR_N:
                        model.prior_n = n0
                        for w in (SELECT_WEIGHT if system.blend else (1.0,)):
                            model.weight = w
                            scores.setdefault((n0, w, gamma), []).append(
                                score(data.y[ite], model.proba(X, keys, streams))["macro_f1"])
    best = max(scores, key=lambda k: (np.mean(scores[k]), k[0]))
    out = {"prior_n": best[0], "weight": best[1], "gamma": best[2],
           "inner_mean_macro_f1": round(float(np.mean(scores[best])), 4),
           "grid": {f"n0={k[0]:g},w={k[1]:g},gamma={k[2]:g}": round(float(np.mean(v)), 4) for k, v in scores.items()}}
    if log:
        log(f"    inner selection on {corpora}: n0={best[0]:g}, w={best[1]:g}, gamma={best[2]:g} "
            f"({out['inner_mean_macro_f1']})")
    return out


def evaluate_system(data: Data, system: System, log=print) -> dict:
    """Leave-one-corpus-out scores of ``system``: per held-out corpus, clean and mixed, natural streams
    (one per speaker) and, for a stream-adapted system, one-emotion streams (speaker x emotion).
    Also returns the out-of-fold probabilities (for calibration)."""
    res = {"description": system.description, "loco": {}, "oof": {}}
    for held in SPEECH_CORPORA:
        t0 = time.time()
        tr = np.flatnonzero(data.corpus != held)
        te = np.flatnonzero(data.corpus == held)
        r = {}
        if system.select:
            r["selected"] = inner_select(data, system, tr, log=log)
            chosen = copy.copy(system)
            chosen.gamma = r["selected"]["gamma"]
            model = data.fit(chosen, tr)
            model.prior_n, model.weight = r["selected"]["prior_n"], r["selected"]["weight"]
        else:
            model = data.fit(system, tr)
        keys = [data.keys[i] for i in te]
        for v in ("clean", "mix"):
            if v not in data.X:
                continue
            X = data.inputs[system.input][v][te]
            p = model.proba(X, keys, data.speaker[te])
            r[v] = score(data.y[te], p)
            res["oof"][f"{held}:{v}"] = p
            if system.norm in ("stream", "corpus_stream"):
                p1 = model.proba(X, keys, one_emotion_streams(data, te))
                r[f"{v}_one_emotion_streams"] = score(data.y[te], p1)
        r["chance"] = chance(data.y[te])
        res["loco"][held] = r
        log(f"  {system.name} held out {held}: {json.dumps({k: v for k, v in r.items()})} ({time.time() - t0:.0f} s)")
    return res


def cnn_probs(data: Data, variant: str, model_path: Optional[str] = None) -> np.ndarray:
    """Quadrant probabilities of a ``features`` (log-mel CNN) speech model on every clip's window."""
    from engines.runtime import load_model
    from streamer.inputs import stack_inputs, window_inputs

    model = load_model(model_path, "speech", backend="onnxruntime", threads=1)
    out = []
    for i in range(0, len(data.clips), 32):
        batch = [window_inputs(variant_window(c, variant), model.input_names) for c in data.clips[i:i + 32]]
        out.append(model.predict(stack_inputs(batch))["quadrant"])
    return np.concatenate(out)


def evaluate_cnn(data: Data, model_path: Optional[str] = None, log=print) -> dict:
    res = {"description": "previous shipped speech CNN (log-mel, emotrack-speech-cnn-1)", "loco": {}}
    probs = {}
    for v in ("clean", "mix"):
        if v not in data.X:
            continue
        for c in data.clips:
            if c.audio is None:
                load_audio(data.clips)
                break
        probs[v] = cnn_probs(data, v, model_path)
    for held in SPEECH_CORPORA:
        te = np.flatnonzero(data.corpus == held)
        res["loco"][held] = {v: score(data.y[te], probs[v][te]) for v in probs}
        res["loco"][held]["chance"] = chance(data.y[te])
        log(f"  cnn held out {held}: {json.dumps(res['loco'][held])}")
    return res


def in_corpus(data: Data, system: System, folds: int = 3, log=print) -> dict:
    """Speaker-independent scores inside each corpus: its speakers split in ``folds`` groups (TESS: 2), each
    held out in turn, trained on the corpus's other speakers plus the other corpora."""
    out = {}
    for corpus in SPEECH_CORPORA:
        spk = sorted(set(data.speaker[data.corpus == corpus].tolist()))
        k = min(folds, len(spk))
        probs = np.zeros((len(data.y), 4))
        te_all = np.flatnonzero(data.corpus == corpus)
        for f in range(k):
            held = set(spk[f::k])
            te = np.array([i for i in te_all if data.speaker[i] in held])
            tr = np.array([i for i in range(len(data.y)) if data.speaker[i] not in held])
            model = data.fit(system, tr)
            probs[te] = model.proba(data.inputs[system.input]["clean"][te], [data.keys[i] for i in te],
                                    data.speaker[te])
        out[corpus] = score(data.y[te_all], probs[te_all])
        out[corpus]["chance"] = chance(data.y[te_all])
        out[corpus]["folds"] = k
        log(f"  {system.name} in-corpus {corpus}: {json.dumps(out[corpus])}")
    return out


def mean_of(res: dict, variant: str = "clean", metric: str = "macro_f1") -> float:
    return round(float(np.mean([r[variant][metric] for r in res["loco"].values()])), 4)


def markdown(results: dict, systems: Sequence[str], labels: dict) -> str:
    """The "shipped defaults on unseen corpora" table: per held-out corpus, clean and under music."""
    rows = ["| system | held-out corpus | macro-F1 | arousal UAR | valence UAR | under music: macro-F1 | A UAR | V UAR |",
            "|---|---|---|---|---|---|---|---|"]
    first = results["systems"][systems[0]]["loco"]
    for held in SPEECH_CORPORA:
        ch = first[held]["chance"]
        rows.append(f"| chance | {held} | {ch['macro_f1']:.3f} | 0.500 | 0.500 | {ch['macro_f1']:.3f} | 0.500 | 0.500 |")
    for name in systems:
        r = results["systems"][name]
        for held in [*SPEECH_CORPORA, "mean"]:
            c = r["mean"]["clean"] if held == "mean" else r["loco"][held]["clean"]
            m = (r["mean"].get("mix") if held == "mean" else r["loco"][held].get("mix")) or {}
            cell = lambda d, k: f"{d[k]:.3f}" if k in d else "-"
            h = f"**{held}**" if held == "mean" else held
            rows.append(f"| {labels.get(name, name)} | {h} | {cell(c, 'macro_f1')} | {cell(c, 'arousal_uar')} | "
                        f"{cell(c, 'valence_uar')} | {cell(m, 'macro_f1')} | {cell(m, 'arousal_uar')} | "
                        f"{cell(m, 'valence_uar')} |")
    return "\n".join(rows)


def unseen_by_all(data: "Data", systems: Sequence[str]) -> dict:
    """Scores on the clips that no compared model trained on: EMOVO, and RAVDESS actors 19-24 (the previous
    shipped CNN's test speakers; it trained on actors 1-16 and all of TESS, so TESS is left out here).
    Descriptor systems: their leave-one-corpus-out predictions; the CNN: ``oof-cnn_fair.npz``."""
    out = {}
    sets = {"emovo": np.flatnonzero(data.corpus == "emovo"),
            "ravdess_actors_19_24": np.array([i for i, c in enumerate(data.clips)
                                              if c.corpus == "ravdess" and int(c.group[5:]) >= 19])}
    for name in systems:
        z = np.load(cache_oof("cnn_fair" if name == "cnn" else name))
        full = {}
        for v in ("clean", "mix"):
            P = np.zeros((len(data.y), 4))
            if name == "cnn":
                P[z["idx"]] = z[v]
            else:
                for c in SPEECH_CORPORA:
                    P[data.corpus == c] = z[f"{c}:{v}"]
            full[v] = P
        out[name] = {k: {v: score(data.y[ix], full[v][ix]) for v in full} for k, ix in sets.items()}
    out["chance"] = {k: chance(data.y[ix]) for k, ix in sets.items()}
    return out


def markdown_unseen(results: dict, labels: dict) -> str:
    """The "shipped defaults on unseen corpora" table (clips no compared model trained on)."""
    u = results["unseen_by_all"]
    rows = ["| system | held-out set | macro-F1 | arousal UAR | valence UAR | under music: macro-F1 | A UAR | V UAR |",
            "|---|---|---|---|---|---|---|---|"]
    for k, ch in u["chance"].items():
        rows.append(f"| chance | {k} | {ch['macro_f1']:.3f} | 0.500 | 0.500 | {ch['macro_f1']:.3f} | 0.500 | 0.500 |")
    for name, lab in labels.items():
        if name not in u:
            continue
        for k, r in u[name].items():
            c, m = r["clean"], r["mix"]
            rows.append(f"| {lab} | {k} | {c['macro_f1']:.3f} | {c['arousal_uar']:.3f} | {c['valence_uar']:.3f} | "
                        f"{m['macro_f1']:.3f} | {m['arousal_uar']:.3f} | {m['valence_uar']:.3f} |")
    return "\n".join(rows)


def main_run(args) -> int:
    """Score ``--systems`` (each saved on its own under the cache, so runs can go in parallel), then
    gather every saved system into ``--out``."""
    if args.systems or args.in_corpus:
        names = [n for n in [*args.systems, *args.in_corpus] if n in SYSTEMS]
        data = Data(args.variants, log=None,
                    inputs=tuple(dict.fromkeys(["handcrafted", *(SYSTEMS[n].input for n in names)])))
    for name in args.systems:
        print(f"{name}:", flush=True)
        if name == "cnn":
            r = evaluate_cnn(data)
        elif name in SYSTEMS:
            r = evaluate_system(data, SYSTEMS[name])
        else:
            raise SystemExit(f"unknown system {name!r} (the CNN candidates run with python -m "
                             "training.experiments.loco_cnn run)")
        save_system(name, r)
    for name in args.in_corpus:
        p = cache_oof(name).with_suffix(".json")
        r = json.loads(p.read_text())
        r["in_corpus"] = in_corpus(data, SYSTEMS[name])
        p.write_text(json.dumps(r, indent=1))
    return gather(args.out, args.unseen)


def save_system(name: str, r: dict) -> None:
    """Keep system ``name``'s scores ``r`` (out-of-fold probabilities apart) in the cache, for :func:`gather`."""
    if "oof" in r:
        np.savez(cache_oof(name), **r.pop("oof"))
    r["mean"] = {v: {m: mean_of(r, v, m) for m in ("macro_f1", "arousal_uar", "valence_uar")}
                 for v in ("clean", "mix", "clean_one_emotion_streams", "mix_one_emotion_streams")
                 if v in next(iter(r["loco"].values()))}
    cache_oof(name).with_suffix(".json").write_text(json.dumps(r, indent=1))


def gather(out: str, unseen: Sequence[str] = ()) -> int:
    """Every system scored so far (the cache: this module's systems in their order, then any other that
    saved its scores, e.g. the CNN candidates of training.experiments.loco_cnn) into ``out``."""
    results = {"protocol": __doc__.split("\n\n")[1].replace("\n", " "), "systems": {}}
    saved = sorted(p.stem.removeprefix("oof-") for p in cache_oof("cnn").parent.glob("oof-*.json"))
    for name in dict.fromkeys(["cnn", *SYSTEMS, *saved]):
        p = cache_oof(name).with_suffix(".json")
        if p.exists():
            results["systems"][name] = json.loads(p.read_text())
    if unseen:
        data = Data(("clean", "mix"), log=None)
        results["unseen_by_all"] = unseen_by_all(data, unseen)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out_path} ({', '.join(results['systems'])})")
    return 0


def cache_oof(name: str) -> Path:
    from ..paths import cache_root
    p = cache_root() / "loco"
    p.mkdir(parents=True, exist_ok=True)
    return p / f"oof-{name}.npz"


def main_features(args) -> int:
    clips = speech_clips()
    for v in args.variant:
        t0 = time.time()
        descriptors(clips, v, workers=args.workers, kind=args.input)
        print(f"{v}: {len(clips)} clips in {time.time() - t0:.0f} s", flush=True)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.experiments.loco", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("features", help="compute the descriptor caches")
    f.add_argument("--variant", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    f.add_argument("--workers", type=int, default=1)
    f.add_argument("--input", default="handcrafted", choices=("handcrafted", "logmel_stats"),
                   help="the 496 descriptors or the statistics of the log-mel input (training.nets.logmel_stats); "
                        "the log-mel input of the CNN candidates: python -m training.experiments.loco_cnn features")
    r = sub.add_parser("run", help="leave-one-corpus-out scores of candidate systems")
    r.add_argument("--systems", nargs="*", default=["cnn", *SYSTEMS])
    r.add_argument("--out", default=str(REPO / "docs" / "results" / "loco_speech.json"))
    r.add_argument("--add", action="store_true", help="keep the systems already in --out")
    r.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    r.add_argument("--in-corpus", nargs="*", default=[], help="systems to score in-corpus (speaker-independent) too")
    r.add_argument("--unseen", nargs="*", default=[], help="systems to compare on the clips no model trained on")
    args = ap.parse_args(argv)
    if args.cmd == "features":
        return main_features(args)
    if args.cmd == "run":
        return main_run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
