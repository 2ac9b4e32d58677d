"""Run the evaluation protocols with every registered system and write docs/RESULTS.md.

    python -m training.results                     # every protocol, every system (hours: the runs
                                                   # in docs/results took ~16 h of one core, features cached;
                                                   # --jobs 2 fits two folds at once)
    python -m training.results --only ravdess      # one protocol; the others are re-read from their JSON
    python -m training.results --from-json         # re-render docs/RESULTS.md + PNGs from docs/results/*.json
    python -m training.results --quick             # small settings, output to the cache (not docs/)
    python -m training.results --separator builtin # fills the "separated" cells of seed 001's grid
    python -m training.results --add --only ravdess --systems fusion   # add a system to saved results
    python -m training.results --only music4q --jobs 2   # two folds fitted at once (same results)
    python -m training.results --manifest my.csv [--va-scale 1,9]   # your own corpus (see training.manifest)

Systems are a registry (:func:`register_system`): a name, a description and a
factory ``factory(experiment, settings) -> model`` where ``model.fit(items, y)``
takes the training :class:`training.protocols.Item` objects (each gives its
clip, group and audio) with their targets, and ``model.predict(items)`` returns
class indices (classification) or an [n, 2] valence/arousal array
(regression).  The handcrafted baselines below are the first entries; neural
recipes register theirs the same way and run under the same folds.

Results are saved per protocol as ``docs/results/protocol_<name>.json`` (every
fold's metrics, pooled confusion matrices, chance levels, settings, versions),
so the page can be regenerated without retraining.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from streamer import adapt

from . import handcrafted, protocols
from .paths import cache_root
from .protocols import Experiment, Item

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "RESULTS.md"
JSON_DIR = REPO / "docs" / "results"
IMG_DIR = REPO / "docs" / "img" / "results"


# --------------------------------------------------------------------------- settings

@dataclass
class Settings:
    """Knobs of a run (the defaults are the full run; ``quick()`` is the cheap one)."""

    rf_trees: int = 1000                      # seed 001: 1000 trees, max_features sqrt
    mlp_max_iter: int = 5000                  # seed 001: early stopping, max 5000 iterations
    svm_C: tuple = (1.0, 3.0, 10.0, 30.0, 100.0)
    svm_gamma_x: tuple = (0.125, 0.25, 0.5, 1.0, 2.0)  # times 1/n_features (= 'scale' on standardised data)
    svm_inner_folds: int = 3
    svm_max_tune: int = 2000                  # inner CV on at most this many training items
    mlp_alpha: tuple = (0.1, 0.3, 1.0, 3.0, 10.0)  # L2 weights tried by the ReLU MLP's inner CV
    n_mix: int = 5                            # seed 001: each speech clip in 5 mixtures
    music_pool: str = "4q"
    workers: int = 1
    jobs: int = 1                             # folds fitted at once, in forked processes (same results)
    seed: int = protocols.SEED
    quick: bool = False

    @classmethod
    def quick_settings(cls) -> "Settings":
        return cls(rf_trees=100, mlp_max_iter=300, svm_C=(1.0, 10.0), svm_gamma_x=(1.0,), svm_inner_folds=2,
                   svm_max_tune=600, mlp_alpha=(1.0,), n_mix=1, quick=True)


# --------------------------------------------------------------------------- features of items

_MEMO: dict[tuple[str, str, str], np.ndarray] = {}


def prepare_features(items: Sequence[Item], workers: int = 1, log=print, kinds: Sequence[str] = ("handcrafted",)) -> None:
    """Descriptors of every item (``kinds``: of :data:`training.handcrafted.KINDS`), from the per-set caches
    (computing what is missing)."""
    for kind in kinds:
        by_set: dict[str, list[Item]] = {}
        seen = set()
        for it in items:
            k = (kind, it.feature_set, it.key)
            if k in _MEMO or k in seen:
                continue
            seen.add(k)
            by_set.setdefault(it.feature_set, []).append(it)
        for name, its in by_set.items():
            def audio_of(i, its=its):
                return its[i].audio()

            def before(todo, its=its):
                protocols.ensure_audio([c for i in todo for c in its[i].needs])

            X = handcrafted.cached(name, [it.key for it in its], audio_of, workers=workers, before_compute=before,
                                   log=log, kind=kind)
            for it, row in zip(its, X):
                _MEMO[(kind, name, it.key)] = row


def feature_matrix(items: Sequence[Item], workers: int = 1, kinds: Sequence[str] = ("handcrafted",)) -> np.ndarray:
    """Rows of :func:`prepare_features`, the ``kinds`` side by side (computing missing ones)."""
    missing = [it for it in items if any((k, it.feature_set, it.key) not in _MEMO for k in kinds)]
    if missing:
        prepare_features(missing, workers, kinds=kinds)
    return np.stack([np.concatenate([_MEMO[(k, it.feature_set, it.key)] for k in kinds]) for it in items])


def group_standardise(X: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """Each group's features z-scored with that group's own mean and std (speaker normalisation)."""
    X = X.astype(np.float64).copy()
    groups = np.asarray(groups)
    for g in np.unique(groups):
        m = groups == g
        X[m] = (X[m] - X[m].mean(0)) / (X[m].std(0) + 1e-8)
    return X


def group_stats_prior(X: np.ndarray, groups: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """What a new speaker looks like before any of their audio has been heard
    (:func:`streamer.adapt.group_prior`)."""
    return adapt.group_prior(X, groups)


def online_group_standardise(X: np.ndarray, groups: Sequence[str], keys: Sequence[str],
                             prior: tuple[np.ndarray, np.ndarray], prior_n: float = 5.0,
                             seed: int = protocols.SEED) -> tuple[np.ndarray, np.ndarray]:
    """Causal speaker normalisation, as a stream that keeps hearing one speaker would do it.

    Each group's items are taken in a seeded random order; item ``i`` is z-scored with the running mean and
    variance of items ``0..i`` of its group (itself included: a window is normalised with what has been heard
    up to its end), shrunk toward ``prior`` with the weight of ``prior_n`` items: the streamer's
    :class:`streamer.adapt.StreamStandardiser`. Returns the features and each item's position (1-based) in
    its group's order.
    """
    groups, keys = np.asarray(groups), list(keys)
    order, pos = [], np.zeros(len(X), int)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        idx = idx[np.argsort([hashlib.sha1(f"{seed}:{keys[i]}".encode()).hexdigest() for i in idx])]
        order.extend(idx)
        pos[idx] = np.arange(1, len(idx) + 1)
    return adapt.standardise_groups(X, groups, prior, prior_n, order), pos


# --------------------------------------------------------------------------- systems

@dataclass
class SystemSpec:
    name: str
    description: str
    factory: Callable[[Experiment, Settings], object]
    applies: Callable[[Experiment], bool] = field(default=lambda exp: True)
    adapt: str = ""  # "" (none), "group" (batch per speaker), "online" (causal per speaker), "corpus"
    kinds: tuple = ("handcrafted",)  # descriptors it reads (training.handcrafted.KINDS), side by side


SYSTEMS: dict[str, SystemSpec] = {}


def register_system(name: str, factory: Callable[[Experiment, Settings], object], description: str,
                    applies: Callable[[Experiment], bool] = lambda exp: True, adapt: str = "",
                    kinds: tuple = ("handcrafted",)) -> None:
    """Add a system: ``factory(experiment, settings)`` -> object with ``fit(items, y)`` / ``predict(items)``.

    ``adapt`` says which unlabelled test-side statistics the system uses (see :class:`SystemSpec`): the
    summary keeps adapted and unadapted systems apart.  ``kinds``: the descriptors its features are made
    of (computed before its folds are fitted)."""
    SYSTEMS[name] = SystemSpec(name, description, factory, applies, adapt, tuple(kinds))


def systems_adapting(kind: str) -> tuple[str, ...]:
    """Registered systems whose ``adapt`` is ``kind`` ("" for the unadapted ones)."""
    return tuple(n for n, s in SYSTEMS.items() if s.adapt == kind)


class HandcraftedModel:
    """A scikit-learn estimator on :mod:`training.handcrafted` features of the items."""

    def __init__(self, exp: Experiment, make: Callable[[], object], settings: Settings,
                 tune: Optional[dict] = None, group_norm: "bool | str" = False, final: Optional[dict] = None,
                 kinds: Sequence[str] = ("handcrafted",)):
        """``group_norm``: False; True or "group" (z-score per speaker/artist); "corpus" (per corpus);
        "online" (causal per speaker).  ``final``: parameters set after tuning, for the last fit only
        (an SVM's Platt probabilities, which do not change its decisions).  ``kinds``: the descriptors
        (:data:`training.handcrafted.KINDS`) side by side."""
        self.exp, self.make, self.settings, self.tune, self.group_norm = exp, make, settings, tune, group_norm
        self.final = final or {}
        self.kinds = tuple(kinds)
        self.est = None
        self.best_params: Optional[dict] = None
        self.prior = None

    def feature_needs(self, items: Sequence[Item]) -> dict[str, list[Item]]:
        """The items whose descriptors of each kind fitting and testing on ``items`` reads."""
        return {k: list(items) for k in self.kinds}

    def _X(self, items, train: bool = False):
        X = feature_matrix(items, self.settings.workers, self.kinds)
        if not self.group_norm:
            return X
        by = [it.clip.corpus for it in items] if self.group_norm == "corpus" else [it.group for it in items]
        if self.group_norm == "online":
            if train:  # trained as it is tested: the training speakers' clips normalised causally too
                self.prior = group_stats_prior(X, by)
            return online_group_standardise(X, by, [it.key for it in items], self.prior)[0]
        return group_standardise(X, by)

    def fit(self, items: Sequence[Item], y: np.ndarray) -> "HandcraftedModel":
        X = self._X(items, train=True)
        groups = np.array([it.group for it in items])
        est = self.make()
        if self.tune and all(len(v) == 1 for v in self.tune.values()):
            self.best_params = {k: v[0] for k, v in self.tune.items()}
            est.set_params(**self.best_params)
        elif self.tune:
            from sklearn.base import clone
            from sklearn.model_selection import GridSearchCV, GroupKFold

            rng = np.random.default_rng(self.settings.seed)
            idx = np.arange(len(X))
            if len(idx) > self.settings.svm_max_tune:
                idx = np.sort(rng.choice(idx, self.settings.svm_max_tune, replace=False))
            scoring = "f1_macro" if self.exp.kind == "classify" else "neg_mean_squared_error"
            gs = GridSearchCV(est, self.tune, scoring=scoring, n_jobs=1, refit=False,
                              cv=GroupKFold(n_splits=min(self.settings.svm_inner_folds, len(set(groups[idx])))))
            gs.fit(X[idx], y[idx], groups=groups[idx])
            self.best_params = gs.best_params_
            est = clone(est).set_params(**gs.best_params_)
        est.set_params(**self.final)
        est.fit(X, y)
        self.est = est
        return self

    def predict(self, items: Sequence[Item]) -> np.ndarray:
        return self.est.predict(self._X(items))

    def _scores(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities in ``est.classes_`` order (classification) or the outputs (regression)."""
        if self.exp.kind == "regress":
            return self.est.predict(X).reshape(len(X), -1)
        return self.est.predict_proba(X)

    def scores(self, items: Sequence[Item]) -> np.ndarray:
        return self._scores(self._X(items))


def segment_items(items: Sequence[Item], n: int) -> list[Item]:
    """Each item cut into ``n`` equal consecutive parts (same clip, label and group)."""
    def part(it, k):
        x = it.audio()
        L = x.size // n
        return x[k * L:(k + 1) * L] if k < n - 1 else x[k * L:]
    return [Item(f"{it.key}#{k}", it.clip, lambda it=it, k=k: part(it, k), f"{it.feature_set}-seg{n}",
                 needs=it.needs, other=it.other) for it in items for k in range(n)]


class SegmentModel(HandcraftedModel):
    """The same estimator trained on ``n`` equal parts of every clip (each part keeps the clip's label
    and group); a clip's prediction averages its parts' decision values (classification) or outputs."""

    def __init__(self, *a, n: int = 6, **kw):
        super().__init__(*a, **kw)
        self.n = n

    def feature_needs(self, items):
        return super().feature_needs(segment_items(items, self.n))

    def fit(self, items, y):
        return super().fit(segment_items(items, self.n), np.repeat(np.asarray(y), self.n, axis=0))

    def predict(self, items):
        X = self._X(segment_items(items, self.n))
        if self.exp.kind == "regress":
            return self.est.predict(X).reshape(len(items), self.n, -1).mean(1)
        est = self.est
        score = est.decision_function(X) if hasattr(est, "decision_function") else est.predict_proba(X)
        score = score.reshape(len(items), self.n, -1).mean(1)
        return np.asarray(est.classes_)[score.argmax(1)]

    def scores(self, items):
        return self._scores(self._X(segment_items(items, self.n))).reshape(len(items), self.n, -1).mean(1)


def _merge_needs(needs) -> dict[str, list[Item]]:
    out: dict[str, list[Item]] = {}
    for n in needs:
        for kind, items in n.items():
            out.setdefault(kind, []).extend(items)
    return out


class FusionModel:
    """Late fusion (seed 003's ensemble, on one feature set): every member is fitted on the same training
    items; a clip's class probabilities (regression: outputs) are the members' average."""

    def __init__(self, members: Sequence[HandcraftedModel], flat_prior: bool = False):
        """``flat_prior``: divide the fused class probabilities by the training classes' frequencies, the
        Bayes decision for a test set whose classes are equally likely (the label-shift correction for a
        target domain whose class balance is unknown; classification only)."""
        self.members = list(members)
        self.flat_prior = flat_prior
        self.prior: Optional[np.ndarray] = None
        self.best_params: Optional[dict] = None

    def feature_needs(self, items):
        return _merge_needs(m.feature_needs(items) for m in self.members)

    def fit(self, items, y):
        for m in self.members:
            m.fit(items, y)
        params = {f"{i}:{k}": v for i, m in enumerate(self.members) for k, v in (m.best_params or {}).items()}
        self.best_params = params or None
        if self.flat_prior and self.members[0].exp.kind == "classify":
            classes = np.asarray(self.members[0].est.classes_)
            self.prior = np.array([np.mean(np.asarray(y) == c) for c in classes])
        return self

    def predict(self, items):
        s = np.mean([m.scores(items) for m in self.members], axis=0)
        if self.members[0].exp.kind == "regress":
            return s
        if self.prior is not None:
            s = s / self.prior
        return np.asarray(self.members[0].est.classes_)[s.argmax(1)]


def more_mixtures(items: Sequence[Item], extra: int, seed: int) -> list[Item]:
    """``extra`` more mixtures of every speech clip among the mixed-speech training ``items``, built
    as seed 001's (:func:`training.protocols.speech_segment`: the speech centred in a random 4.5 s slot
    of a music clip, equal loudness), each with a music clip that the training items already use
    (so from the training folds only, never a test song) and that this speech clip is not yet mixed
    with.  The songs it may get are those of its own fold (seed 001 mixes speech fold i with music fold i
    only): the training songs linked to it through shared mixtures.  So a speech clip gets the same extra
    mixtures in every training fold it is in (their features are computed once), and the draw is
    seeded per speech clip; test items are never touched."""
    by_speech: dict[str, list[Item]] = {}
    for it in items:
        if it.other is None:
            raise ValueError(f"{it.key}: more mixtures need mixed-speech items (a speech clip and its music)")
        by_speech.setdefault(it.clip.path, []).append(it)
    parent: dict[str, str] = {}

    def root(p: str) -> str:
        while parent.setdefault(p, p) != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    for its in by_speech.values():  # songs mixed with one speech clip belong to one fold
        for it in its[1:]:
            parent[root(it.other.path)] = root(its[0].other.path)
    songs_of: dict[str, list] = {}  # fold (its root song) -> its training songs, in path order
    for p, m in sorted({it.other.path: it.other for it in items}.items()):
        songs_of.setdefault(root(p), []).append(m)
    out = []
    for path, its in by_speech.items():
        used = {it.other.path for it in its}
        cand = [m for m in songs_of[root(its[0].other.path)] if m.path not in used]
        if len(cand) < extra:
            raise ValueError(f"{path}: {len(cand)} training songs left to mix with, fewer than {extra}")
        rng = np.random.default_rng([seed, 7, int(hashlib.sha1(path.encode()).hexdigest()[:15], 16)])
        for j in rng.choice(len(cand), size=extra, replace=False):
            m = cand[int(j)]
            mx = protocols.Mixture(its[0].clip, m, int(rng.integers(protocols.n_slots(protocols.music_samples(m)))), -1)
            out.append(Item(mx.key, mx.speech, lambda mx=mx: protocols.speech_segment(mx), its[0].feature_set,
                            needs=(mx.speech, mx.music), other=mx.music))
    return out


class MoreMixturesModel:
    """A system trained on its training fold plus :func:`more_mixtures` of it (augmentation: the same
    speakers and songs in new combinations and slots); tested unchanged."""

    def __init__(self, inner, extra: int, seed: int):
        self.inner, self.extra, self.seed = inner, extra, seed
        self.best_params: Optional[dict] = None

    def feature_needs(self, items):  # the new mixtures are made per fold, when it is fitted
        return self.inner.feature_needs(items)

    def fit(self, items, y):
        more = more_mixtures(items, self.extra, self.seed)
        label = {it.clip.path: t for it, t in zip(items, np.asarray(y))}
        self.inner.fit(list(items) + more, np.concatenate([np.asarray(y), [label[m.clip.path] for m in more]]))
        self.best_params = getattr(self.inner, "best_params", None)
        return self

    def predict(self, items):
        return self.inner.predict(items)


def _more_mixtures(factory: Callable, extra: int = 5) -> Callable:
    return lambda exp, s: MoreMixturesModel(factory(exp, s), extra, s.seed)


def _rf_maker(exp: Experiment, s: Settings) -> Callable[[], object]:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    cls = RandomForestClassifier if exp.kind == "classify" else RandomForestRegressor
    return lambda: cls(n_estimators=s.rf_trees, max_features="sqrt", n_jobs=1, random_state=s.seed)


def _rf(exp: Experiment, s: Settings):
    return HandcraftedModel(exp, _rf_maker(exp, s), s)


def _mlp(exp: Experiment, s: Settings):
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cls = MLPClassifier if exp.kind == "classify" else MLPRegressor
    return HandcraftedModel(exp, lambda: make_pipeline(StandardScaler(), cls(
        hidden_layer_sizes=(512,), activation="logistic", early_stopping=True, max_iter=s.mlp_max_iter,
        batch_size=256, learning_rate="adaptive", random_state=s.seed)), s)


def _svm_factory(group_norm: "bool | str", segments: int = 0, kinds: tuple = ("handcrafted",)):
    def make_model(exp: Experiment, s: Settings):
        from sklearn.multioutput import MultiOutputRegressor
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC, SVR

        d = handcrafted.n_features(kinds)
        gammas = [g / d for g in s.svm_gamma_x]
        if exp.kind == "classify":
            make = lambda: Pipeline([("scale", StandardScaler()),  # noqa: E731
                                     ("svm", SVC(kernel="rbf", class_weight="balanced"))])
            grid = {"svm__C": list(s.svm_C), "svm__gamma": gammas}
        else:
            make = lambda: Pipeline([("scale", StandardScaler()),  # noqa: E731
                                     ("svm", MultiOutputRegressor(SVR(kernel="rbf")))])
            grid = {"svm__estimator__C": list(s.svm_C), "svm__estimator__gamma": gammas}
        if segments:
            return SegmentModel(exp, make, s, tune=grid, group_norm=group_norm, n=segments, kinds=kinds)
        return HandcraftedModel(exp, make, s, tune=grid, group_norm=group_norm, kinds=kinds)
    return make_model


def _relu_mlp(exp: Experiment, s: Settings, group_norm: "bool | str" = False, segments: int = 0,
              kinds: tuple = ("handcrafted",)):
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    cls = MLPClassifier if exp.kind == "classify" else MLPRegressor
    make = lambda: Pipeline([("scale", StandardScaler()),  # noqa: E731
                             ("mlp", cls(hidden_layer_sizes=(256,), max_iter=500, random_state=s.seed))])
    tune = {"mlp__alpha": list(s.mlp_alpha)}
    if segments:
        return SegmentModel(exp, make, s, tune=tune, group_norm=group_norm, n=segments, kinds=kinds)
    return HandcraftedModel(exp, make, s, tune=tune, group_norm=group_norm, kinds=kinds)


def _mlp_seg(exp: Experiment, s: Settings):
    return _relu_mlp(exp, s, segments=6)


def _fusion_factory(group_norm: "bool | str", segments: int = 0, flat_prior: bool = False,
                    kinds: tuple = ("handcrafted",)):
    """SVM (Platt probabilities) + ReLU MLP + random forest, each as its own system tunes it, averaged."""
    def make_model(exp: Experiment, s: Settings):
        svm = _svm_factory(group_norm, segments, kinds)(exp, s)
        if exp.kind == "classify":
            svm.final = {"svm__probability": True, "svm__random_state": s.seed}
        rf = (SegmentModel(exp, _rf_maker(exp, s), s, group_norm=group_norm, n=segments, kinds=kinds) if segments
              else HandcraftedModel(exp, _rf_maker(exp, s), s, group_norm=group_norm, kinds=kinds))
        return FusionModel([svm, _relu_mlp(exp, s, group_norm, segments, kinds), rf], flat_prior=flat_prior)
    return make_model


def _speech_exp(exp: Experiment) -> bool:
    return exp.protocol == "ravdess" or exp.task.startswith("speech_")


def _music_exp(exp: Experiment) -> bool:
    return exp.protocol in ("music4q", "emopia", "vgmidi") or exp.task.startswith("music_")


def _crosscorpus_speech(exp: Experiment) -> bool:
    return exp.protocol == "crosscorpus" and exp.folds[0].train[0].clip.corpus in ("ravdess", "tess")


def _streamed_speech_exp(exp: Experiment) -> bool:
    """Speech tasks whose test speakers each say many clips, as one stream would hear them (RAVDESS, the
    seed 001 grid's speech, speech corpus -> corpus): where causal speaker normalisation applies."""
    return _speech_exp(exp) or _crosscorpus_speech(exp)


register_system("rf", _rf, "random forest, 1000 trees, max_features sqrt (seed 001's RFC/RFR)")
register_system("mlp", _mlp, "MLP, one hidden layer of 512 logistic units, early stopping, batch 256, "
                             "standardised features (seed 001's MLPC)")
register_system("svm", _svm_factory(False), "RBF SVM on standardised features, balanced class weights, C and "
                                            "gamma by grouped inner CV on the training fold (seed 003's baseline)")
register_system("svm_seg", _svm_factory(False, segments=6),
                "the SVM trained on 6 equal parts of every music clip (5 s of a 30 s clip), a clip's decision "
                "values averaged over its parts (music protocols only)", applies=_music_exp)
register_system("mlp_seg", _mlp_seg,
                "MLP, 256 ReLU units, L2 weight alpha by grouped inner CV on the training fold, trained on 6 "
                "equal parts of every music clip, a clip's probabilities averaged over its parts (music only)",
                applies=_music_exp)
register_system("svm_corpusnorm", _svm_factory("corpus"),
                "the SVM with every corpus's features z-scored by that corpus's own statistics (the test "
                "corpus too, unlabelled, as one batch: a simple unsupervised domain adaptation; speech -> music "
                "and corpus -> corpus only)",
                applies=lambda exp: exp.protocol in ("transfer", "crosscorpus"), adapt="corpus")
register_system("svm_spknorm_online", _svm_factory("online"),
                "the SVM with causal speaker normalisation, as a live stream would do it: a test speaker's "
                "clips in a seeded random order, each z-scored with the running statistics of that speaker's "
                "clips heard so far (itself included), shrunk toward the training speakers' average with the "
                "weight of 5 clips (the training speakers are normalised the same way); the score averages over "
                "a whole session from the speaker's first clip (60 clips per RAVDESS actor; 300 mixtures per actor "
                "in seed 001's grid; 1400 per TESS speaker cross-corpus)",
                applies=_streamed_speech_exp, adapt="online")
register_system("svm_spknorm", _svm_factory(True),
                "the SVM with every speaker's features z-scored by that speaker's own statistics (test speakers "
                "too: needs unlabelled audio of each test speaker; not a streaming setting)", applies=_speech_exp,
                adapt="group")
_FUSION = ("late fusion of three systems fitted on the same training fold, their class probabilities "
           "averaged (regression: their outputs): the tuned SVM (Platt-scaled probabilities), the ReLU MLP with "
           "its L2 weight tuned as `mlp_seg`'s, and the random forest (seed 003's ensemble idea on one "
           "feature set)")
register_system("fusion", _fusion_factory(False), _FUSION + ", on whole clips")
register_system("fusion_seg", _fusion_factory(False, segments=6),
                _FUSION + ", each trained on 6 equal parts of every music clip and averaged over a clip's parts "
                          "(music only)", applies=_music_exp)
register_system("fusion_spknorm_online", _fusion_factory("online"),
                _FUSION + ", on features with causal speaker normalisation as `svm_spknorm_online`'s",
                applies=_streamed_speech_exp, adapt="online")
register_system("fusion_spknorm", _fusion_factory(True),
                _FUSION + ", on features with every speaker's own normalisation as `svm_spknorm`'s (not a streaming "
                          "setting)", applies=_speech_exp, adapt="group")
register_system("fusion_corpusnorm", _fusion_factory("corpus"),
                _FUSION + ", on features with per-corpus normalisation as `svm_corpusnorm`'s",
                applies=lambda exp: exp.protocol in ("transfer", "crosscorpus"), adapt="corpus")
register_system("fusion_corpusnorm_flat", _fusion_factory("corpus", flat_prior=True),
                "`fusion_corpusnorm` deciding for equally likely classes: its averaged probabilities divided by "
                "the training classes' frequencies (Bayes' rule under a uniform test prior, the usual "
                "label-shift correction when the test domain's class balance is unknown)",
                applies=lambda exp: exp.protocol in ("transfer", "crosscorpus"), adapt="corpus")

_MUSIC = ("handcrafted", "music_descriptors")
_WITH_MUSIC = (" on the handcrafted descriptors and, beside them, the music descriptors of "
               "`streamer/music_descriptors.py` (harmony: chords and local key of the harmonic part; sensory "
               "dissonance; the predominant melody's register, notes, intervals and vibrato; texture), "
               "the dimensions of Panda et al.'s novel features (the music corpora's protocols: 4Q, EMOPIA, VGMIDI)")
_MUSIC_CORPUS = lambda exp: exp.protocol in ("music4q", "emopia", "vgmidi")  # noqa: E731  (not the mixtures)
register_system("svm_seg_music", _svm_factory(False, segments=6, kinds=_MUSIC), "`svm_seg`" + _WITH_MUSIC,
                applies=_MUSIC_CORPUS, kinds=_MUSIC)
register_system("fusion_seg_music", _fusion_factory(False, segments=6, kinds=_MUSIC), "`fusion_seg`" + _WITH_MUSIC,
                applies=_MUSIC_CORPUS, kinds=_MUSIC)

_MIXED_SPEECH = lambda exp: exp.protocol == "mixed" and exp.task == "speech_train_mixed"  # noqa: E731
_MORE = (" trained with twice seed 001's mixtures: each training speech clip also in 5 more mixtures, with "
         "songs of the training folds it is not yet mixed with, in random slots (augmentation; the test mixtures "
         "are the protocol's; mixed speech training only)")
register_system("svm_spknorm_online_mix10", _more_mixtures(_svm_factory("online")),
                "`svm_spknorm_online`" + _MORE, applies=_MIXED_SPEECH, adapt="online")
register_system("svm_mix10", _more_mixtures(_svm_factory(False)), "`svm`" + _MORE, applies=_MIXED_SPEECH)
register_system("fusion_spknorm_online_mix10", _more_mixtures(_fusion_factory("online")),
                "`fusion_spknorm_online`" + _MORE, applies=_MIXED_SPEECH, adapt="online")


# --------------------------------------------------------------------------- running

def _aggregate(per_fold: list[dict]) -> dict:
    """mean and std over folds of every scalar metric."""
    keys = [k for k, v in per_fold[0].items() if isinstance(v, (int, float)) and k != "n"]
    return {k: [float(np.mean([m[k] for m in per_fold if k in m])), float(np.std([m[k] for m in per_fold if k in m]))]
            for k in keys}


def _metrics(exp: Experiment, y, p) -> dict:
    if exp.kind == "classify":
        return protocols.classification_metrics(y, p, exp.classes)
    return protocols.regression_metrics(y, p)


def _chance(exp: Experiment, ytr, yte) -> dict:
    if exp.kind == "classify":
        return protocols.chance_classification(ytr, yte, exp.classes)
    return protocols.chance_regression(ytr, yte)


_FOLD_JOB: Optional[tuple] = None


def _fit_fold(i: int) -> tuple[Optional[dict], dict]:
    """Fit the system of ``_FOLD_JOB`` on fold ``i``: its chosen settings and its predictions per test condition."""
    spec, exp, settings = _FOLD_JOB
    f = exp.folds[i]
    model = spec.factory(exp, settings)
    model.fit(f.train, exp.targets(f.train))
    return getattr(model, "best_params", None), {c: np.asarray(model.predict(v)) for c, v in f.test.items()}


def _fit_folds(spec: SystemSpec, exp: Experiment, settings: Settings) -> list[tuple[Optional[dict], dict]]:
    """Every fold fitted, in order; ``settings.jobs`` > 1 fits that many folds at once in forked processes
    (each with one BLAS thread; every fit is seeded, so the results are the same as one after another)."""
    global _FOLD_JOB
    _FOLD_JOB = (spec, exp, settings)
    try:
        if settings.jobs > 1 and len(exp.folds) > 1:
            import multiprocessing as mp

            from threadpoolctl import threadpool_limits

            with threadpool_limits(1), mp.get_context("fork").Pool(min(settings.jobs, len(exp.folds))) as pool:
                return pool.map(_fit_fold, range(len(exp.folds)), chunksize=1)
        return [_fit_fold(i) for i in range(len(exp.folds))]
    finally:
        _FOLD_JOB = None


def run_experiment(exp: Experiment, systems: Sequence[str], settings: Settings, log=print) -> dict:
    """Fit every applicable system on every fold; metrics per fold and test condition, pooled confusions."""
    t0 = time.time()
    say = log or (lambda *_: None)
    all_items = [it for f in exp.folds for it in f.train + [x for v in f.test.values() for x in v]]
    # the descriptors the systems read (a segment model: its segments'), computed before any fold is fitted
    models = [SYSTEMS[n].factory(exp, settings) for n in systems if SYSTEMS[n].applies(exp)]
    needs = _merge_needs(m.feature_needs(all_items) if hasattr(m, "feature_needs") else {"handcrafted": all_items}
                         for m in models)
    for kind, items in needs.items():
        prepare_features(items, settings.workers, log=log, kinds=(kind,))
    conds = list(exp.folds[0].test)
    res = {"protocol": exp.protocol, "task": exp.task, "title": exp.title, "kind": exp.kind,
           "classes": list(exp.classes), "notes": exp.notes, "conditions": conds,
           "folds": [{"name": f.name, "n_train": len(f.train), "n_test": {c: len(v) for c, v in f.test.items()},
                      "train_groups": len({it.group for it in f.train}),
                      "test_groups": {c: len({it.group for it in v}) for c, v in f.test.items()}}
                     for f in exp.folds],
           "systems": {}, "chance": {}}
    chance_folds: dict[str, list[dict]] = {c: [] for c in conds}
    for f in exp.folds:
        ytr = exp.targets(f.train)
        for c in conds:
            chance_folds[c].append(_chance(exp, ytr, exp.targets(f.test[c])))
    for c in conds:
        res["chance"][c] = {kind: _aggregate([cf[kind] for cf in chance_folds[c]]) for kind in chance_folds[c][0]}
    for name in systems:
        spec = SYSTEMS[name]
        if not spec.applies(exp):
            continue
        per = {c: [] for c in conds}
        pooled_y = {c: [] for c in conds}
        pooled_p = {c: [] for c in conds}
        params = []
        ts = time.time()
        for f, (best, preds) in zip(exp.folds, _fit_folds(spec, exp, settings)):
            params.append(best)
            for c in conds:
                y = exp.targets(f.test[c])
                p = preds[c]
                m = _metrics(exp, y, p)
                per[c].append(m)
                pooled_y[c].append(y)
                pooled_p[c].append(p)
        sysres = {"description": spec.description, "seconds": round(time.time() - ts, 1),
                  "per_fold": {c: [{k: v for k, v in m.items() if k != "confusion"} for m in per[c]] for c in conds},
                  "mean_std": {c: _aggregate(per[c]) for c in conds},
                  "pooled": {c: _metrics(exp, np.concatenate(pooled_y[c]), np.concatenate(pooled_p[c]))
                             for c in conds}}
        if any(params):
            sysres["chosen_params"] = params
        res["systems"][name] = sysres
        say(f"  {exp.protocol}/{exp.task} {name}: " + ", ".join(
            f"{c} {_headline(exp.kind, sysres['mean_std'][c])}" for c in conds) + f" ({sysres['seconds']} s)")
    res["seconds"] = round(time.time() - t0, 1)
    return res


def _headline(kind: str, ms: dict) -> str:
    if kind == "classify":
        return f"acc {100 * ms['accuracy'][0]:.1f} % F1 {ms['macro_f1'][0]:.3f}"
    return f"CCC V {ms['valence_ccc'][0]:.3f} A {ms['arousal_ccc'][0]:.3f}"


def versions() -> dict:
    import scipy
    import sklearn

    return {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__, "handcrafted_features": handcrafted.HANDCRAFTED_VERSION,
            "n_features": len(handcrafted.feature_names()),
            "music_descriptors": handcrafted.KINDS["music_descriptors"].version,
            "n_music_descriptors": handcrafted.n_features(("music_descriptors",))}


def result_name(protocol: str, music_pool: str = "4q") -> str:
    """The name of a protocol's results (``protocol_<name>.json``, its section): the grid over another
    music pool than 4Q has its own, ``mixed_<pool>``."""
    return f"mixed_{music_pool}" if protocol == "mixed" and music_pool != "4q" else protocol


def run_protocol(name: str, systems: Sequence[str], settings: Settings, separator=None, log=print,
                 tasks: Optional[Sequence[str]] = None) -> dict:
    """Every experiment of a protocol (or only those whose task is in ``tasks``) -> one JSON-able dict."""
    t0 = time.time()
    if name == "mixed":
        exps = protocols.protocol_mixed(separator=separator, n_mix=settings.n_mix, music_corpus=settings.music_pool)
    else:
        exps = protocols.PROTOCOLS[name]()
    if tasks:
        unknown = set(tasks) - {e.task for e in exps}
        if unknown:
            raise ValueError(f"{name}: no task {', '.join(sorted(unknown))}; tasks: {', '.join(e.task for e in exps)}")
        exps = [e for e in exps if e.task in tasks]
    name = result_name(name, settings.music_pool)
    out = {"protocol": name, "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "settings": {k: v for k, v in settings.__dict__.items()}, "versions": versions(),
           "systems": {s: SYSTEMS[s].description for s in systems},
           "separator": None if separator is None else separator.id,
           "experiments": [run_experiment(e, systems, settings, log) for e in exps]}
    out["seconds"] = round(time.time() - t0, 1)
    protocols.release_audio()
    return out


# --------------------------------------------------------------------------- the seeds' numbers

#: (protocol, task) -> rows quoted from the seeds: (source, system, {metric: value}, note)
SEED_NUMBERS: dict[tuple[str, str], list[tuple[str, str, dict, str]]] = {
    ("ravdess", "8class"): [
        ("seed 001 Table 4.1", "D-NN, openSMILE emobase2010", {"accuracy": 0.61}, "speaker-independent 6-fold"),
        ("seed 001 Table 4.1", "MLPC, emobase2010", {"accuracy": 0.603}, ""),
        ("seed 001 Table 4.1", "SVC (sklearn defaults), emobase2010", {"accuracy": 0.574}, ""),
        ("seed 001 Table 4.1", "RFC, emobase2010", {"accuracy": 0.551}, ""),
        ("seed 001 Table 4.1", "Dummy_strat / Dummy_mf", {"accuracy": 0.13}, "13 % / 13.3 %"),
    ],
    ("music4q", "4quadrant"): [
        ("seed 003 Table 2", "SVM baseline (Panda et al. features)", {"macro_f1": 0.7559},
         "Original-4QAED, 900 clips, 10-fold x 10-repetition stratified CV, not artist-grouped"),
        ("seed 003 Table 2", "DL baseline (CNN, mel-spectrogram)", {"macro_f1": 0.6062}, "same protocol"),
        ("seed 003 Table 3", "DNN, top-100 / all 1714 handcrafted features", {"macro_f1": 0.7248},
         "72.5 % / 69.2 %, Original-4QAED, same protocol"),
        ("seed 003 Table 3", "Hybrid Augmented (DNN + CNN)", {"macro_f1": 0.6804},
         "Original-4QAED; its 80.2 % is on New-4QAED B (1372 clips), a different, larger set"),
        ("seed 004 Table 1", "MLP, IS13 ComParE features", {"accuracy": 0.63, "macro_f1": 0.63},
         "4Q, 720 clips, within-dataset"),
        ("seed 004 Table 1", "SincNet (raw waveform)", {"accuracy": 0.57, "macro_f1": 0.52}, "same"),
    ],
    ("emopia", "4quadrant"): [
        ("seed 000 Table 5.1", "MER2MER DCNN / ADCRNN (3D log-mel)", {"accuracy": 0.431},
         "43.1 % / 49.2 %, on seed 000's own instrumental test set (325 clips: DEAM/Soundtracks/EMOPIA "
         "segments), not EMOPIA's official split"),
    ],
    ("transfer", "4quadrant"): [
        ("seed 000 Table 5.1", "SER2MER DCNN (3D log-mel, MSP-Podcast -> instrumental music)",
         {"accuracy": 0.3317}, "+- 1.7 %, test set of 325 instrumental clips"),
        ("seed 000 Table 5.1", "SER2MER ADCRNN", {"accuracy": 0.307}, ""),
        ("seed 000 Table 5.1", "random baseline (training distribution)", {"accuracy": 0.24}, ""),
    ],
}

#: seed 001 Table 4.2 (speech, 8 RAVDESS emotions): (train, test) -> (RFC, D-NN, Dummy-Strat)
SEED001_GRID = {
    ("clean", "clean"): ("A", 0.551, 0.61, 0.13),
    ("clean", "mixed"): ("B", 0.148, 0.14, 0.13),
    ("clean", "separated"): ("C", 0.156, 0.171, 0.128),
    ("mixed", "mixed"): ("D", 0.301, 0.29, 0.128),
    ("mixed", "separated"): ("E", 0.273, 0.214, 0.134),
    ("separated", "separated"): ("F", 0.414, 0.431, 0.131),
}


# --------------------------------------------------------------------------- rendering

def _pct(ms, key, std=True) -> str:
    if key not in ms:
        return "-"
    m, s = ms[key]
    return f"{100 * m:.1f} ± {100 * s:.1f}" if std else f"{100 * m:.1f}"


def _num(ms, key, std=True) -> str:
    if key not in ms:
        return "-"
    m, s = ms[key]
    return f"{m:.3f} ± {s:.3f}" if std else f"{m:.3f}"


SYS_LABEL = {"rf": "RF (seed 001 config)", "mlp": "MLP (seed 001 config)", "svm": "SVM (seed 003 style, tuned)",
             "svm_spknorm": "SVM + speaker normalisation", "svm_seg": "SVM on 6 segments per clip",
             "mlp_seg": "MLP (ReLU, L2 tuned) on 6 segments per clip",
             "svm_corpusnorm": "SVM + per-corpus normalisation",
             "svm_spknorm_online": "SVM + causal speaker normalisation (streaming)",
             "fusion": "Fusion SVM + MLP + RF", "fusion_seg": "Fusion SVM + MLP + RF on 6 segments per clip",
             "fusion_spknorm_online": "Fusion + causal speaker normalisation (streaming)",
             "fusion_spknorm": "Fusion + speaker normalisation",
             "fusion_corpusnorm": "Fusion + per-corpus normalisation",
             "fusion_corpusnorm_flat": "Fusion + per-corpus normalisation, uniform class prior",
             "svm_mix10": "SVM, trained on twice the mixtures",
             "svm_spknorm_online_mix10": "SVM + causal speaker normalisation, trained on twice the mixtures",
             "fusion_spknorm_online_mix10": "Fusion + causal speaker normalisation, trained on twice the mixtures",
             "svm_seg_music": "SVM on 6 segments per clip, with the music descriptors",
             "fusion_seg_music": "Fusion SVM + MLP + RF on 6 segments per clip, with the music descriptors"}


def _classify_table(exp: dict, cond: str, seeds: Sequence = ()) -> list[str]:
    nf = len(exp["folds"])
    std = nf > 1
    quad = "quadrant_accuracy" in next(iter(exp["systems"].values()))["mean_std"][cond] if exp["systems"] else False
    is4 = set(exp["classes"]) <= {"Q1", "Q2", "Q3", "Q4"}  # quadrant classes: no mapped column
    head = ["system", "accuracy %", "macro-F1", "UAR %"]
    if quad:
        head += ([] if is4 else ["4Q acc % (mapped)"]) + ["arousal half %", "valence half %"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(label, ms, std_=std):
        r = [label, _pct(ms, "accuracy", std_), _num(ms, "macro_f1", std_), _pct(ms, "uar", std_)]
        if quad:
            r += ([] if is4 else [_pct(ms, "quadrant_accuracy", std_)]) + \
                 [_pct(ms, "arousal_half_accuracy", std_), _pct(ms, "valence_half_accuracy", std_)]
        return "| " + " | ".join(r) + " |"

    for name, s in exp["systems"].items():
        rows.append(row(f"**{SYS_LABEL.get(name, name)}**", s["mean_std"][cond]))
    ch = exp["chance"][cond]
    rows.append(row("chance: majority class of the training fold", ch["majority"]))
    rows.append(row("chance: uniform guessing (expected)", ch["uniform"], False))
    rows.append(row("chance: guessing with the training distribution (seed 001's Dummy_strat)",
                    ch["stratified"], False))
    for src, system, vals, note in seeds:
        cells = [f"{src}: {system}" + (f" ({note})" if note else "")]
        cells.append(f"{100 * vals['accuracy']:.1f}" if "accuracy" in vals else "-")
        cells.append(f"{vals['macro_f1']:.3f}" if "macro_f1" in vals else "-")
        cells.append("-")
        if quad:
            cells += ([] if is4 else ["-"]) + ["-", "-"]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _regress_table(exp: dict, cond: str) -> list[str]:
    std = len(exp["folds"]) > 1
    head = ["system", "valence CCC", "arousal CCC", "valence RMSE", "arousal RMSE", "valence R2", "arousal R2",
            "4Q acc % (signs)", "arousal half %", "valence half %"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(label, ms, std_=std):
        return "| " + " | ".join([label] + [_num(ms, k, std_) for k in (
            "valence_ccc", "arousal_ccc", "valence_rmse", "arousal_rmse", "valence_r2", "arousal_r2")] +
            [_pct(ms, k, std_) for k in ("quadrant_accuracy", "arousal_half_accuracy",
                                          "valence_half_accuracy")]) + " |"

    for name, s in exp["systems"].items():
        rows.append(row(f"**{SYS_LABEL.get(name, name)}**", s["mean_std"][cond]))
    rows.append(row("chance: predict the training mean", exp["chance"][cond]["train_mean"]))
    return rows


def confusion_png(exp: dict, cond: str, path: Path) -> None:
    """Row-normalised pooled confusion matrices of every system, side by side, counts annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(exp["systems"])
    labels = exp["classes"] if exp["kind"] == "classify" else ["Q1", "Q2", "Q3", "Q4"]
    k = len(labels)
    ncol = min(3, len(names))
    nrow = -(-len(names) // ncol)
    side = 1.3 + 0.38 * k
    fig, axes = plt.subplots(nrow, ncol, figsize=(side * ncol, (side + 0.6) * nrow + 0.3), squeeze=False)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names):
        cm = np.array(exp["systems"][name]["pooled"][cond]["confusion"], float)
        rn = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(rn, vmin=0, vmax=1, cmap="Blues")
        for i in range(k):
            for j in range(k):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7 if k > 4 else 9,
                        color="white" if rn[i, j] > 0.6 else "black")
        acc = exp["systems"][name]["pooled"][cond]["accuracy"] if exp["kind"] == "classify" else \
            exp["systems"][name]["pooled"][cond].get("quadrant_accuracy", 0)
        ax.set_title(f"{SYS_LABEL.get(name, name)}\npooled acc {100 * acc:.1f} %", fontsize=8)
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xticklabels(labels, rotation=60 if k > 4 else 0, fontsize=7)
        ax.set_yticklabels(labels, fontsize=7)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    fig.suptitle(f"{exp['title']} -- test: {cond}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _img(protocol: str, exp: dict, cond: str, img_dir: Path, doc_dir: Path, lines: list[str]) -> None:
    if not exp["systems"]:
        return
    p = img_dir / f"{protocol}_{exp['task']}_{cond}.png"
    confusion_png(exp, cond, p)
    lines += [f"![confusion matrices, {exp['title']}, test {cond}]({os.path.relpath(p, doc_dir)})", ""]


def _fold_summary(exp: dict) -> str:
    f = exp["folds"]
    conds = exp["conditions"]
    tests = ", ".join(f"{c} {sum(x['n_test'][c] for x in f)}" for c in conds)
    return (f"{len(f)} fold(s); training items per fold {min(x['n_train'] for x in f)}-"
            f"{max(x['n_train'] for x in f)} ({min(x['train_groups'] for x in f)}-"
            f"{max(x['train_groups'] for x in f)} groups); test items over all folds: {tests}.")


PROTOCOL_TEXT = {
    "ravdess": ("RAVDESS, speaker-independent 6-fold",
                "1440 RAVDESS clips, 24 actors; 6 folds of 4 actors (actors 1-4, 5-8, ..., 21-24: 2 male and 2 "
                "female each); every clip is tested exactly once, by a model that never heard its speaker. "
                "8 emotions (seed 001's task) and, separately trained, the 4 quadrants with neutral left out "
                "(1344 clips). The 8-class table also maps each predicted emotion to its quadrant "
                "(`4Q acc (mapped)`, neutral clips left out, a predicted neutral counts as wrong)."),
    "music4q": ("4Q music, 10-fold stratified, artist-grouped",
                "The 630 clips of the 4Q audio emotion dataset held here (463 artists), 10 folds by a seeded "
                "greedy stratified group split (`protocols.stratified_group_folds`): no artist in two folds, "
                "quadrant counts per fold within one or two of each other. Seed 003's 75.6 % was on the full 900 "
                "clips with plain stratified folds "
                "(artists may repeat across folds), seed 004's 0.63 on 720 clips."),
    "emopia": ("EMOPIA official split",
               "EMOPIA 1.0 MIDI rendered to 16 kHz piano audio (`python -m training.render`, one of three "
               "SoundFonts per clip); trained on the official train + val clips (990), tested on the official "
               "test clips (88). The same models are also tested on all 204 labelled VGMIDI phrases (another "
               "piano-MIDI corpus, never trained on). One split, so no ± over folds: with 88 test clips one "
               "clip is 1.1 points."),
    "transfer": ("Speech -> music transfer (seed 000)",
                 "Trained on speech only: every non-neutral RAVDESS and TESS clip (3744: Q1 784, Q2 1776, Q3 592, "
                 "Q4 192 -- calm exists only in RAVDESS) with its quadrant; tested on music that no model saw: "
                 "EMOPIA's official test clips (instrumental piano, the closest to seed 000's instrumental test "
                 "set), all 1078 EMOPIA clips, and all 630 4Q clips (mostly sung). The features are "
                 "standardised with the training (speech) statistics, as seed 000 did nothing to adapt either; "
                 "`svm_corpusnorm` (and `fusion_corpusnorm`) instead z-scores every corpus (RAVDESS, TESS, the "
                 "music test set) with its own statistics, a simple unsupervised domain adaptation; "
                 "`fusion_corpusnorm_flat` also decides as if the four quadrants were equally likely (its "
                 "probabilities divided by the training frequencies: the speech corpora's balance, with Q2 nine "
                 "times Q4, says nothing about music's). Seed 000 "
                 "trained on 37k MSP-Podcast clips; "
                 "here 3744 acted clips of 26 speakers."),
    "crosscorpus": ("Cross-corpus: train on one corpus, test on another",
                    "Each experiment is one fold: trained on ALL of one corpus, tested on ALL of another (class counts "
                    "per side under each table). Speech: RAVDESS (24 actors, 12 female and 12 male, two acted "
                    "sentences) and TESS (2 female speakers, one older and one younger, \"Say the word ...\"), both "
                    "ways, on the 7 emotions they share (RAVDESS calm left out; TESS `fear` is fearful, `ps` is "
                    "surprised) and on quadrants Q1-Q3 (neutral and calm left out: TESS has no Q4). A model trained "
                    "on TESS has heard 2 voices; a model tested on TESS is scored on 2 speakers (1400 or 1200 clips "
                    "each). "
                    "Music: all 630 4Q clips (mostly sung popular music) <-> all 1078 EMOPIA clips (rendered piano); "
                    "4Q -> EMOPIA is also scored on EMOPIA's 88 official test clips (`emopia_test`), the test set of "
                    "the within-corpus EMOPIA number. No hyper-parameter sees the test corpus: the SVM's C and gamma "
                    "(and the fusion MLP's L2 weight) come from a grouped inner cross-validation on the training "
                    "corpus alone (at most 2000 of its clips; RAVDESS: 3 folds by actor; TESS: 2 folds, one per "
                    "speaker; 4Q by artist; EMOPIA by song), the other systems are not tuned. Adaptation: "
                    "`svm_corpusnorm` z-scores each corpus with its "
                    "own statistics, the test corpus's computed on all of its (unlabelled) test clips at once "
                    "(`emopia_test`: those 88); `svm_spknorm_online` (speech only) is the causal per-speaker "
                    "normalisation of the RAVDESS protocol, unchanged: each test speaker's "
                    "clips in a seeded random order, each normalised with that speaker's running statistics so far, "
                    "shrunk toward the average of the training speakers (2 of them when trained on TESS); "
                    "`fusion_corpusnorm` and `fusion_spknorm_online` put the same normalisations in front of the "
                    "fusion. "
                    "Within-corpus references: 4Q 10-fold (artist-grouped) tests the same 630 clips as EMOPIA -> 4Q, "
                    "and EMOPIA's official split the same 88 clips as 4Q -> EMOPIA `emopia_test`; for speech there "
                    "is none with these classes (the RAVDESS protocol has 8 emotions, or 4 quadrants with calm, and "
                    "TESS, with 2 speakers, has no speaker-independent protocol of its own)."),
    "vgmidi": ("VGMIDI valence/arousal regression",
               "204 labelled VGMIDI phrases (rendered piano) with valence and arousal in {-1, +1}; 5 folds "
               "stratified by quadrant and grouped by piece. CCC / RMSE / R2 per dimension, and the quadrant "
               "from the signs of the predictions."),
    "mixed": ("Seed 001's clean / mixed / separated grid",
              "Speech: the 1440 RAVDESS clips in the same 6 actor folds as above. Music: the 630 4Q clips in 6 "
              "folds (stratified by quadrant, grouped by artist); speech fold i is only ever mixed with music "
              "fold i, so a test fold's speakers AND songs are unseen in training. Every clip is R128-normalised "
              "to -23 LUFS first (equal loudness, seed 001 section 3.2); each speech clip, padded (centred) to "
              "4.5 s, is mixed with 5 distinct music clips of its fold (7200 mixtures, as the seed's), "
              "in every 4.5 s slot; the speech model hears one slot per mixture (seeded random), the music model "
              "the whole 30 s mixture. Training on `clean` is the RAVDESS protocol above (same folds, same "
              "models). The music clips are mostly sung (seed 001 removed vocal music from DEAM), which makes "
              "the speech task harder than the seed's."),
    "mixed_emopia": ("Seed 001's grid with instrumental music (EMOPIA piano)",
                     "The same design as the grid above (same RAVDESS folds, R128 at -23 LUFS, 5 mixtures per "
                     "speech clip in every 4.5 s slot, speech fold i only with music fold i) but the music pool is "
                     "the 1078 EMOPIA clips (MIDI rendered to piano audio, `python -m training.render`) in 6 folds "
                     "stratified by quadrant and grouped by song. Seed 001 used music without vocals (DEAM + "
                     "Soundtrack), so this pool is the closer match to its Table 4.2; solo piano is also more "
                     "uniform in timbre than the seed's music, which makes it easier, so both pools are reported."),
}


def render(results: dict[str, dict], img_dir: Path = IMG_DIR, doc_path: Path = DOC) -> str:
    """The whole RESULTS.md from the per-protocol result dicts."""
    doc_dir = doc_path.parent
    L = ["# emotrack results: evaluation protocols and baselines", "",
         "Generated by `python -m training.results` from `docs/results/protocol_*.json` (re-render without "
         "retraining: `python -m training.results --from-json`). Every number is measured on data held out "
         "from training under the protocol named (../shared/data/README.md), with chance levels and the "
         "seeds' own numbers beside ours. Percentages are mean ± standard deviation over folds; confusion "
         "matrices are pooled over folds (rows: true class).", ""]
    any_r = next(iter(results.values()), None)
    if any_r:
        v = any_r["versions"]
        mv = next((r["versions"] for r in results.values() if "music_descriptors" in r["versions"]), None)
        L += [f"Features: `training/handcrafted.py` v{v['handcrafted_features']} ({v['n_features']} per clip)"
              + (f"; the `*_music` systems add `streamer/music_descriptors.py` v{mv['music_descriptors']} "
                 f"({mv['n_music_descriptors']} per clip)" if mv else "") + ". "
              f"Software: Python {v['python']}, numpy {v['numpy']}, scipy {v['scipy']}, scikit-learn "
              f"{v['scikit-learn']}.", ""]
    L += ["## Systems", ""]
    order = ["ravdess", "mixed", "mixed_emopia", "music4q", "emopia", "transfer", "crosscorpus", "vgmidi"]
    names = [n for n in order if n in results] + [n for n in results if n not in order]
    seen = {}
    for n in names:  # a later protocol's description of a system wins
        seen.update(results[n]["systems"])
    L += [f"- **{SYS_LABEL.get(n, n)}** (`{n}`): {d}" for n, d in seen.items()]
    L += ["", "All systems see the same handcrafted features (MFCC, log-mel bands, spectral shape and contrast, "
          "ZCR, RMS dynamics, autocorrelation F0 and voicing, chroma with key clarity and mode, onset rate, "
          "tempo; clip statistics over active frames, see `training/handcrafted.py` for the list and the "
          "seeds' feature sets they stand in for); the `*_music` systems see the music descriptors beside them "
          "too (chords and local key, dissonance, the predominant melody and its vibrato, texture: "
          "`streamer/music_descriptors.py`). Nothing is tuned on test data: the SVM's C and gamma "
          "come from a grouped inner cross-validation inside each training fold.", ""]
    L += summary_lines(results)
    for name in names:
        if name.startswith("_"):
            continue
        r = results[name]
        title, text = PROTOCOL_TEXT.get(name, (name, ""))
        L += [f"## {title}", "", text, "",
              f"_Run: {r['generated']}, {r['seconds'] / 60:.1f} min"
              + (", QUICK settings (not the full protocol)" if r["settings"].get("quick") else "")
              + "".join(f"; `{', '.join(a['systems'])}` added by a later run on the same folds and features "
                        + (f"for {', '.join(a['tasks'])} " if len(a.get("tasks", [])) < len(r["experiments"]) else "")
                        + f"({a['generated']}, {a['seconds'] / 60:.1f} min"
                        + "".join(f", {k} {v}" for k, v in a.get("settings", {}).items()) + ")"
                        for a in r.get("added_runs", []))
              + "._", ""]
        if name.startswith("mixed"):
            L += mixed_section(r, img_dir, doc_dir)
            continue
        for exp in r["experiments"]:
            L += [f"### {exp['title']}", "", _fold_summary(exp), ""]
            seeds = SEED_NUMBERS.get((name, exp["task"]), [])
            for cond in exp["conditions"]:
                if len(exp["conditions"]) > 1:
                    L += [f"Test: **{cond}**", ""]
                if exp["kind"] == "classify":
                    L += _classify_table(exp, cond, seeds if cond == exp["conditions"][0] else ()) + [""]
                else:
                    L += _regress_table(exp, cond) + [""]
                _img(name, exp, cond, img_dir, doc_dir, L)
            for n in exp.get("notes", []):
                L += [n, ""]
            params = {s: v.get("chosen_params") for s, v in exp["systems"].items() if v.get("chosen_params")}
            if params:
                L += ["Parameters chosen by the inner CV, per fold: " + "; ".join(
                    f"`{s}` " + ", ".join(_short_params(p, s) for p in ps) for s, ps in params.items()), ""]
    L += [LIMITS, "", manifest_section(), ""]
    return "\n".join(L) + "\n"


LIMITS = """## Limits, and what is missing

- **Features, not the seeds' toolkits.** Seed 001 used openSMILE emobase2010 (1582 features) and Essentia
  (2651); seed 003 Panda et al.'s 1714 features (100 selected); seed 004 ComParE. None is installed here:
  `training/handcrafted.py` computes a smaller set of the same families with numpy/scipy. Our plain SVM on
  RAVDESS lands where seed 001's SVC did (57 %), its RF a little under its RFC.
- **Speaker normalisation is what lifts RAVDESS past 65 % (8 emotions) and 70 % (quadrants).** Without it
  the best handcrafted system, the late fusion of SVM, MLP and RF, stays at 58.2 % / 67.6 % (the SVM alone
  56.5 % / 64.8 %; seed 001's D-NN 61 %). Over all of a test speaker's unlabelled clips (60, balanced over
  emotions by RAVDESS's design) the normalisation is an upper bound; the causal variant, which a stream can
  run, reaches both targets with the fusion (68.2 % / 76.2 %) and the quadrant one with the SVM alone
  (64.7 % / 74.0 %). With the SVM, its first five clips of a new speaker score about 48 % (8 emotions),
  below the unnormalised SVM; from the sixth clip on, 64-69 %.
  A speaker who keeps one mood for minutes would bias its statistics, which RAVDESS cannot show.
  The shipped streaming models do not adapt per stream yet. A calibration of their outputs to the stream
  (each window's log-probabilities shifted by the running mean of the stream's, shrunk toward the model's
  mean on validation speakers) was measured and not shipped (development measurements, not in the tables):
  on held-out RAVDESS actors it moved the speech CNN's quadrant accuracy by about +1 point, and on TESS's
  2400 non-neutral clips, with the same CNN trained on RAVDESS only, it fell from 57.7 % to 43.9 %, because
  it also removes the corpus's real class balance; a per-stream log-mel band mean normalisation gained
  +2.6 points there (53.9 % -> 56.5 % on 800 of those clips) and nothing on RAVDESS. For the descriptor
  music model (`music_dnn`), a per-stream standardisation of its inputs (running mean and variance of the
  stream's descriptors, shrunk toward its training statistics with the weight of 50-1000 windows; one
  stream per test corpus, 3 clip orders) cost 4-13 points on held-out 4Q artists (64.2 % unadapted) and
  3-6 on EMOPIA's test (62.5 %), and gained 1-5 on VGMIDI, never trained on (35.3 %).
- **Seed 001's grid: at or above the seed except separated -> separated over sung music; over piano both
  targets are met with speaker normalisation (causal or over all of a speaker's clips), not without it.**
  Mixed -> mixed is at the seed's level with sung 4Q music (about 29-30 %; 30.4 % for the SVM, 31.5 %
  with causal speaker normalisation and 32.2 % for the causal fusion, all trained on twice the mixtures) and above it with instrumental piano:
  36.6 % with the late fusion and 37.4 % with the SVM trained on twice the mixtures
  (`svm_mix10`, 35.4 % on the protocol's five), 40.0 % with the fusion on features normalised by all of a
  speaker's mixtures, and with causal speaker normalisation (each test actor's 300 mixtures heard as one
  stream) 41.9 +- 3.8 % for the fusion trained on twice the mixtures (`fusion_spknorm_online_mix10`; 39.0 % on
  the protocol's five; at or above both in every fold, its inner CV again at the grids' edges: the SVM's lowest gamma
  and the MLP's highest L2 weight in 4 of 6 folds) and 40.5 % for the SVM alone (`svm_spknorm_online_mix10`;
  37.9 % on the five). The batch 40.0 % sits at the target and the causal 41.9 % half a fold's spread (3-4
  points) above it. More
  training mixtures help: each training speech clip also mixed with 5 more songs of its own
  fold (never a test song; the test mixtures stay the protocol's) gained +2.9 (causal fusion) and +2.6 (causal
  SVM, same settings) and +2.0 (unadapted SVM, whose five-mixture run had the narrower gamma grid) points over
  piano, +1.9 and +1.3 over sung music; a development check on the sung pool (a ReLU MLP, not in the tables) had
  reached 23 % with one training mixture per speech clip and 26 % with two, against about 29 % with the
  protocol's five, roughly +3 points per doubling. Separated -> separated with the built-in separator reaches 47.1 %
  over piano with the fusion (45.5 % with the SVM alone; seed 001, Spleeter with its trained weights:
  41-43 %) and 51.1 % with causal speaker normalisation in front of it (52.2 % normalising by all of a
  speaker's mixtures); over sung music it
  stays at about 33 %, because the built-in separator gains only about 1 dB SI-SDR when the music is singing
  (`docs/results/separation.md`) and Spleeter's trained weights cannot be downloaded here. The fusions were
  run on the piano grid's mixed and separated training rows only (about 80 min of one core for the two,
  about 110 min for the two causal ones and 90 min for the two batch-normalised ones; the causal fusion on
  twice the mixtures, mixed training only, 51 min with two folds at a time, `--jobs 2`);
  the sung grid has the single systems and that causal fusion (58 min, `--jobs 2`). A
  median-spectrum background subtraction in front of the features (a REPET-like cheap "separator") did not
  help in a development check.
- **4Q music macro-F1 reaches 0.70 only with the music descriptors** (artist-grouped folds on 630 clips;
  seed 003's 0.756 had 900 clips, Panda et al.'s feature set and folds in which an artist can be on both
  sides). The fusion of SVM, MLP and random forest on 6 segments per clip scores 0.710 +- 0.062 (accuracy
  71.6 %, `fusion_seg_music`) with the 53 music descriptors of `streamer/music_descriptors.py` beside the 496
  handcrafted ones, against 0.689 +- 0.074 without them (`fusion_seg`): higher in 8 of the 10 folds, the same
  folds, grids and inner CV; the SVM alone 0.695 against 0.679 (`svm_seg` -> `svm_seg_music`). The gain is in
  valence (valence half 76.5 -> 78.1 %; Q3 <-> Q4 confusions 80 -> 78, true Q4 called Q1 25 -> 22). The descriptors
  (chords and local key of the harmonic part, sensory dissonance, the predominant melody's register,
  intervals and vibrato, texture) follow the musical dimensions of Panda et al.'s novel features; they were
  not selected one by one on these folds (all are kept), and a development check before the run, the SVM on 6 segments at three fixed
  settings (C 3 or 10, gamma 0.25-0.5/d) on the protocol's partition and on two other seeded
  artist-grouped partitions, found them higher in all 9 cells, by +0.003 to +0.026 (mean 0.690 -> 0.705).
  The margin over the target (0.010) is a sixth of a fold's spread, so the estimate is 0.71 +- 0.02
  (standard error over 10 folds), not a clear pass; seed 003's 10 x 10 repetitions were not run. They cost
  about 2.1 s of one core per 30 s clip (0.45 s per 5 s segment), four times the handcrafted ones. They
  help on the other music corpora too, run afterwards without any change: EMOPIA's official test 59.1 ->
  68.2 % (`fusion_seg` -> `fusion_seg_music`, macro-F1 0.575 -> 0.660; 88 clips, one clip is 1.1 points),
  VGMIDI, never trained on, 43.1 -> 46.1 %, and VGMIDI's VA regression CCC valence 0.358 -> 0.383, arousal
  0.543 -> 0.590 (`svm_seg` -> `svm_seg_music`, 5 folds grouped by piece). Without
  them every variant tried on the same folds landed within 0.665-0.705, none passing the fusion: each
  segment's features plus its clip's (0.665), the 100-200 best features by ANOVA F inside the inner CV
  (0.653), logistic regression on segments (0.668), a majority vote of `svm_seg`, `rf` and `mlp_seg`
  (0.674); seed 003's own DNN on the descriptors (Dense 256-128, dropout 0.1/0.3, SGD 0.01 with momentum,
  batch 150, 60 epochs) 0.683 +- 0.073, averaged with the SVM 0.705 on settings not tuned inside the folds;
  C and gamma tuned by the clip-level macro-F1 of averaged segments (0.672); five more training segments per
  clip shifted by half a segment (seed 003's time shift, 0.687-0.695 at fixed settings); every training clip
  also played 6 % faster and slower (0.665-0.681); EMOPIA's or VGMIDI's clips added to every training fold
  (0.665-0.694).
- **Speech -> music transfer is at seed 000's level; above it only with adaptation, and within noise**:
  unadapted, the late fusion scores 33.0 % on EMOPIA's 88 test clips (29 of them; seed 000: 33.2 +- 1.7 %,
  a CNN trained on 37k natural podcast clips, on its own 325-clip test set) and 39.7 % on all 630 4Q clips
  (macro-F1 0.305, majority 24.9 %); the single systems stay at 22-32 %. Re-centring each corpus and
  deciding for equally likely quadrants (`fusion_corpusnorm_flat`: the speech training set has nine Q2
  clips for each Q4 one, a balance music does not share) gives 36.4 % on the 88 (32 clips; one clip is
  1.1 points, the binomial standard error 5 points), 29.2 % on all 1078 EMOPIA clips and 36.5 % on 4Q,
  with macro-F1 0.27-0.34 on all three (0.25-0.29 without the prior). Arousal transfers a little on 4Q,
  valence does not.
- **Across corpora of the same kind, the unadapted models collapse onto one or two classes** (4Q -> EMOPIA
  calls 85-96 % of the piano clips Q4; TESS -> RAVDESS reaches 28 % on 7 emotions and a Q1-Q3 UAR of 38 %,
  chance 33 %); re-centring the test corpus or, causally, each test speaker recovers part of the gap
  (RAVDESS -> TESS 7 emotions 38 % -> 59-62 %, EMOPIA -> 4Q macro-F1 0.39 -> 0.47 against 0.66 within 4Q),
  but a model trained on TESS's 2 voices stays at 33-36 % on RAVDESS even with it.
- **EMOPIA audio is rendered MIDI** (three piano SoundFonts), not the original recordings; its test split
  has 88 clips, so one clip is 1.1 points.
- Not here: DEAM / PMEmo / MSP-Podcast / IEMOCAP / CREMA-D (plug in through the manifest below), the
  music-side regression of seed 001 (its DEAM + Soundtrack VA targets), repeated cross-validation as seed
  003 did (10 x 10), and significance tests between systems."""


def _short_params(p: Optional[dict], system: str = "") -> str:
    if not p:
        return "-"
    d = handcrafted.n_features(SYSTEMS[system].kinds if system in SYSTEMS else ("handcrafted",))
    out = []
    for k, v in p.items():
        if k.endswith("gamma"):
            out.append(f"g={v * d:.2g}/d")
        elif k.endswith("alpha"):
            out.append(f"alpha={v:g}")
        else:
            out.append(f"C={v:g}")
    return "(" + " ".join(out) + ")"


def mixed_section(r: dict, img_dir: Path, doc_dir: Path) -> list[str]:
    exps = {e["task"]: e for e in r["experiments"]}
    name = r["protocol"]
    systems = []  # every system run on any speech experiment (one added later may have run on some only)
    for task, e in exps.items():
        systems += [s for s in e["systems"] if task.startswith("speech_") and s not in systems]
    L = ["### Speech: seed 001 Table 4.2, 8 RAVDESS emotions, accuracy %", "",
         "| | train -> test | " + " | ".join(SYS_LABEL.get(s, s) for s in systems) +
         " | chance (Dummy_strat) | seed 001 RFC | seed 001 D-NN | seed 001 Dummy-Strat |",
         "|" + "---|" * (len(systems) + 6)]
    sep = r.get("separator")
    for (tr, te), (letter, rfc, dnn, dummy) in SEED001_GRID.items():
        e = exps.get(f"speech_train_{tr}")
        if e is None or te not in e["conditions"]:
            cells = ["n/a (no separator given: `--separator`)"] * len(systems) + ["-"]
        else:
            cells = [_pct(e["systems"][s]["mean_std"][te], "accuracy") if s in e["systems"] else "-"
                     for s in systems]
            cells.append(_pct(e["chance"][te]["stratified"], "accuracy", False))
        L.append(f"| {letter} | {tr} -> {te} | " + " | ".join(cells) +
                 f" | {100 * rfc:.1f} | {100 * dnn:.1f} | {100 * dummy:.1f} |")
    L += ["", "Seed 001's own rows: RFC / D-NN on openSMILE emobase2010 features, DEAM + Soundtrack "
          "music without vocals, Spleeter 2stems as the separator. "
          + (f"Separator here: `{sep}`." if sep else
             "No separator was given to this run, so rows C, E and F are empty: "
             "`python -m training.results --only mixed --separator builtin` (or `module:callable` mapping a "
             "16 kHz mix to (speech, music)) fills them."), ""]
    for task, e in exps.items():
        if not task.startswith("speech_"):
            continue
        L += [f"#### {e['title']}", "", _fold_summary(e), ""]
        for cond in e["conditions"]:
            L += [f"Test: **{cond}**", ""] + _classify_table(e, cond) + [""]
            if cond == task.split("_")[-1] or (task.endswith("clean") and cond == "mixed"):
                _img(name, e, cond, img_dir, doc_dir, L)
    pool = {"4q": "4Q", "emopia": "EMOPIA"}.get(r["settings"].get("music_pool", "4q"), r["settings"].get("music_pool"))
    L += [f"### Music side: {pool} quadrants of whole mixtures", "",
          f"Each {pool} clip once, with one speech clip of its fold in every 4.5 s slot; same 6 music folds. Seed 001's "
          "music experiments were valence/arousal regression on DEAM + Soundtrack (its Table 4.6), so no seed "
          "number is comparable here; its finding was that music models trained on mixed audio did as well as or "
          "better than on music alone, and that clean-trained models fail on mixed audio.", "",
          "| train -> test | " + " | ".join(SYS_LABEL.get(s, s) for s in systems if s in
                                             exps.get("music_train_clean", {}).get("systems", {})) +
          " | chance (majority) |", "|" + "---|" * 2 + "---|" * len([
              s for s in systems if s in exps.get("music_train_clean", {}).get("systems", {})])]
    for task, e in exps.items():
        if not task.startswith("music_"):
            continue
        tr = task.split("_")[-1]
        for cond in e["conditions"]:
            cells = [f"{_pct(e['systems'][s]['mean_std'][cond], 'accuracy')} (F1 "
                     f"{_num(e['systems'][s]['mean_std'][cond], 'macro_f1', False)})" for s in e["systems"]]
            L.append(f"| {tr} -> {cond} | " + " | ".join(cells) + " | "
                     + _pct(e["chance"][cond]["majority"], "accuracy") + " |")
    L.append("")
    for task, e in exps.items():
        if task.startswith("music_"):
            tr = task.split("_")[-1]
            if tr in e["conditions"]:
                _img(name, e, tr, img_dir, doc_dir, L)
    return L


def summary_lines(results: dict) -> list[str]:
    """The headline numbers against the targets of issue 3 and the seeds."""
    L = ["## Summary", "",
         "| protocol | our best (system) | chance | seed | target (issue 3) |", "|---|---|---|---|---|"]

    def best(exp, cond, key, excl=(), only=None):
        c = [(v["mean_std"][cond][key][0], v["mean_std"][cond][key][1], s, len(exp["folds"]))
             for s, v in exp["systems"].items()
             if s not in excl and (only is None or s in only) and key in v["mean_std"][cond]]
        return max(c) if c else None

    def fmt(b, pct=True):
        if b is None:
            return "-"
        if b[3] == 1:  # one split: no spread over folds
            return (f"{100 * b[0]:.1f} %" if pct else f"{b[0]:.3f}") + f" ({b[2]})"
        return (f"{100 * b[0]:.1f} ± {100 * b[1]:.1f} %" if pct else f"{b[0]:.3f} ± {b[1]:.3f}") + f" ({b[2]})"

    def met(b, goal):
        return "-" if b is None else ("**met**" if b[0] >= goal else "**not met**")

    def get(p, task):
        for e in results.get(p, {}).get("experiments", []):
            if e["task"] == task:
                return e
        return None

    def shared(e, w):  # the unadapted systems run on both experiments
        return tuple(n for n in plain if n in e["systems"] and n in w["systems"])

    def maj(e, cond):
        return f"{100 * e['chance'][cond]['majority']['accuracy'][0]:.1f} % majority"

    online, corpus, plain = systems_adapting("online"), systems_adapting("corpus"), systems_adapting("")

    def by_adaptation(e, cond, goal, extra=""):
        """Cells and target verdicts of a speech experiment: its best system with speaker normalisation over
        all of a speaker's clips, with causal (streaming) normalisation, and without any."""
        cells, targets = [], []
        for label, short, b in (("speaker normalisation over all of a speaker's clips", "with it",
                                 best(e, cond, "accuracy", only=systems_adapting("group"))),
                                ("causal (streaming) speaker normalisation", "causal", best(e, cond, "accuracy",
                                                                                            only=online)),
                                ("without", "without", best(e, cond, "accuracy", only=plain))):
            if b:
                cells.append(f"{label} {fmt(b)}")
                targets.append(f"{met(b, goal)} {short}")
        return "; ".join(cells) + extra, ", ".join(targets)

    for task, what, goal, seed in (("8class", "8 emotions", 0.65, "seed 001 D-NN 61 %, SVC 57.4 %, RFC 55.1 %"),
                                   ("4quadrant", "4 quadrants (no neutral)", 0.70, "-")):
        e = get("ravdess", task)
        if not e:
            continue
        uni = 12.5 if task == "8class" else 25
        cells, targets = by_adaptation(e, "clean", goal)
        L.append(f"| RAVDESS {what}, speaker-independent 6-fold, accuracy | {cells} | "
                 f"{maj(e, 'clean')}, {uni} % uniform | {seed} | >= {100 * goal:.0f} %: {targets} |")
    for proto, pool in (("mixed", "sung 4Q music"), ("mixed_emopia", "instrumental EMOPIA piano")):
        if proto not in results:
            continue
        e = get(proto, "speech_train_mixed")
        if e:
            cells, targets = by_adaptation(e, "mixed", 0.40)
            L.append(f"| Seed 001 grid ({pool}), mixed -> mixed (8 emotions), accuracy | {cells} | "
                     f"{100 * e['chance']['mixed']['stratified']['accuracy'][0]:.1f} % Dummy_strat | "
                     f"seed 001 RFC 30.1 %, D-NN 29 % | >= 40 %: {targets} |")
        e = get(proto, "speech_train_clean")
        if e:
            L.append(f"| Seed 001 grid ({pool}), clean -> mixed, accuracy | {fmt(best(e, 'mixed', 'accuracy'))} | "
                     f"{100 * e['chance']['mixed']['stratified']['accuracy'][0]:.1f} % Dummy_strat | "
                     f"seed 001 RFC 14.8 %, D-NN 14 % | reported |")
        e = get(proto, "speech_train_separated")
        cells, targets = (by_adaptation(e, "separated", 0.50, f"; separator `{results[proto].get('separator')}`")
                          if e else ("not run: no separator given", "-"))
        L.append(f"| Seed 001 grid ({pool}), separated -> separated | {cells} | | seed 001 RFC 41.4 %, D-NN 43.1 % | "
                 f">= 50 %: {targets} |")
    e = get("music4q", "4quadrant")
    if e:
        b = best(e, "clean", "macro_f1")
        L.append(f"| 4Q music, 10-fold artist-grouped, macro-F1 | {fmt(b, False)} | "
                 f"{e['chance']['clean']['uniform']['macro_f1'][0]:.3f} uniform | seed 003 SVM 0.756 (900 clips, "
                 f"not artist-grouped); seed 004 MLP 0.63 | >= 0.70: {met(b, 0.70)} |")
    e = get("emopia", "4quadrant")
    if e:
        L.append(f"| EMOPIA official test (88 clips), accuracy | {fmt(best(e, 'emopia_test', 'accuracy'))} | "
                 f"{maj(e, 'emopia_test')}, 25 % uniform | (seed 000 MER2MER 43.1-49.2 % on its own test set) | "
                 f"reported |")
    e = get("transfer", "4quadrant")
    if e:
        b = best(e, "emopia_test", "accuracy")
        also = "".join(f"; the same system on {what}: {100 * e['systems'][b[2]]['mean_std'][c]['accuracy'][0]:.1f} %"
                       for c, what in (("emopia_all", "all 1078 EMOPIA clips"), ("4q_all", "all 630 4Q clips"))
                       if b and c in e["systems"][b[2]]["mean_std"])
        if b and b[2] not in plain:
            also += f"; without adaptation {fmt(best(e, 'emopia_test', 'accuracy', only=plain))}"
        L.append(f"| Speech -> music (EMOPIA test), accuracy | {fmt(b)}{also} | {maj(e, 'emopia_test')}, 25 % "
                 f"uniform | seed 000 SER2MER 33.2 % (random 24 %) | vs 33.2 %: "
                 f"{'above' if b and b[0] > 0.332 else 'below'} |")
        L.append(f"| Speech -> music (4Q, all 630), accuracy | {fmt(best(e, '4q_all', 'accuracy'))} | "
                 f"{maj(e, '4q_all')}, 25 % uniform | | |")
    for task, what, key in (("7emotions", "7 shared emotions, accuracy", "accuracy"),
                            ("3quadrants", "quadrants Q1-Q3, UAR", "uar")):
        for src, dst, nm in (("ravdess", "tess", "RAVDESS -> TESS"), ("tess", "ravdess", "TESS -> RAVDESS")):
            e = get("crosscorpus", f"{task}_{src}_to_{dst}")
            if not e:
                continue
            cond, ch = f"{dst}_all", e["chance"][f"{dst}_all"]
            L.append(f"| Cross-corpus speech, {nm}, {what} | without adaptation {fmt(best(e, cond, key, only=plain))}; "
                     f"per-corpus normalisation (batch) {fmt(best(e, cond, key, only=corpus))}; causal "
                     f"speaker normalisation {fmt(best(e, cond, key, only=online))}; within-corpus: "
                     f"none with these classes | {100 * ch['majority'][key][0]:.1f} % majority, "
                     f"{100 * ch['uniform'][key][0]:.1f} % uniform | - | reported |")
    e, w = get("crosscorpus", "4quadrants_4q_to_emopia"), get("emopia", "4quadrant")
    if e:
        L.append(f"| Cross-corpus music, 4Q -> EMOPIA, accuracy | all 1078: without adaptation "
                 f"{fmt(best(e, 'emopia_all', 'accuracy', only=plain))}, per-corpus normalisation "
                 f"{fmt(best(e, 'emopia_all', 'accuracy', only=corpus))}; official test (88): without "
                 f"{fmt(best(e, 'emopia_test', 'accuracy', only=plain))}, per-corpus normalisation "
                 f"{fmt(best(e, 'emopia_test', 'accuracy', only=corpus))}; within-corpus (EMOPIA "
                 f"train+val -> the same 88) "
                 f"{fmt(best(w, 'emopia_test', 'accuracy', only=shared(e, w))) if w else '-'} | "
                 f"{maj(e, 'emopia_all')} (all), 25 % uniform | - | reported |")
    e, w = get("crosscorpus", "4quadrants_emopia_to_4q"), get("music4q", "4quadrant")
    if e:
        L.append(f"| Cross-corpus music, EMOPIA -> 4Q (all 630), macro-F1 | without adaptation "
                 f"{fmt(best(e, '4q_all', 'macro_f1', only=plain), False)}; per-corpus normalisation "
                 f"{fmt(best(e, '4q_all', 'macro_f1', only=corpus), False)}; within-corpus (4Q 10-fold, "
                 f"same systems) {fmt(best(w, 'clean', 'macro_f1', only=shared(e, w)), False) if w else '-'} | "
                 f"{e['chance']['4q_all']['uniform']['macro_f1'][0]:.3f} uniform | - | reported |")
    e = get("vgmidi", "va")
    if e:
        L.append(f"| VGMIDI VA regression, CCC valence / arousal | {fmt(best(e, 'clean', 'valence_ccc'), False)} / "
                 f"{fmt(best(e, 'clean', 'arousal_ccc'), False)} | 0 (training mean) | - | |")
    L += ["", "`± x` is the standard deviation over folds (one split: no ±); `(name)` is the system that scored "
          "best on that line. Picking the best of several systems on the test folds flatters it slightly; every "
          "system's own number is in the tables below. Speaker normalisation (`svm_spknorm`) z-scores each "
          "speaker's features with statistics of all of that speaker's clips, the test speakers' included "
          "(unlabelled): it needs a batch of audio per speaker, which a live stream does not have at its start. "
          "The causal variants (`svm_spknorm_online`, `fusion_spknorm_online`) are what a stream can do: they "
          "normalise each clip only with what they have heard of that speaker so far, from the first clip on. "
          "RAVDESS speakers act every emotion "
          "equally often; a real speaker's statistics mix emotion with voice, so expect less gain there."
          + (" Cross-corpus lines: `without adaptation` is the best of the unadapted systems; the within-corpus "
             "number beside it is the best of the unadapted systems run on both, on the corpus's own protocol, "
             "where that tests the same clips." if "crosscorpus" in results else ""),
          ""]
    return L


def manifest_section() -> str:
    return """## Your own corpus (generic manifest)

IEMOCAP, MSP-Podcast, CREMA-D, DEAM, PMEmo, EMOPIA audio or your own recordings plug in without code:
write a CSV and run

    python -m training.results --manifest path/to/manifest.csv [--va-scale 1,9] [--folds 5]

It runs every system under folds grouped by the `group` column (stratified by quadrant), or under the
CSV's `split` column when it has `test` rows, prints the tables and writes `manifest_<name>.json`.
In code, `training.manifest.load_manifest(csv)` returns the same `Clip` objects as `training.corpora`
(`training.corpora.load_audio` decodes them, R128-normalised, 16 kHz mono).

| column | required | meaning |
|---|---|---|
| `path` | yes | audio file, relative to the CSV's folder (or absolute); what soundfile reads (wav, flac, ogg/opus, mp3), other containers through ffmpeg |
| `label` | `label`, or `valence` + `arousal` | categorical label, mapped by the one table in `streamer/taxonomy.py` (happy, surprised, angry, fearful, disgust, sad, boredom, calm, neutral, ... or Q1..Q4); neutral has no quadrant and is left out of quadrant tasks |
| `valence`, `arousal` | (see above) | graded targets in [-1, 1], or on the scale given by `--va-scale LO,HI` (e.g. `1,9` for DEAM / SAM ratings, `1,7` for MSP-Podcast), mapped linearly to [-1, 1]; the quadrant follows the taxonomy's rule (>= 0 is positive / high) |
| `group` | yes | speaker, artist or song: no group is split across folds |
| `start`, `end` | no | segment of the file in seconds (empty: from the start / to the end) |
| `split` | no | `train` / `val` / `test`: used instead of folds when there are `test` rows |

Labels outside the taxonomy table (IEMOCAP's `frustrated` or `excited`, CREMA-D's codes) are refused with
the line number: rename them to a table label or a quadrant you can justify, or give valence/arousal.
Every problem (missing column, unknown label, value outside the scale, end before start, missing file) is
one line naming the CSV line and what to do, raised before any audio is decoded.

Example (categorical, IEMOCAP-style, with segments):

    path,label,group,start,end
    Session1/wav/Ses01F_impro01_F000.wav,neutral,Ses01F,,
    Session1/wav/Ses01F_impro01_F005.wav,angry,Ses01F,0.5,3.2

Example (DEAM-style 1-9 ratings, `--va-scale 1,9`):

    path,valence,arousal,group
    audio/2.mp3,3.1,3.0,2
"""


# --------------------------------------------------------------------------- CLI

def add_systems(old: dict, new: dict, command: str) -> dict:
    """``new``'s systems merged into ``old`` (the same protocol, folds and features), recorded in
    ``added_runs``; a system in both is replaced by ``new``'s run."""
    if old["protocol"] != new["protocol"] or old.get("separator") != new.get("separator"):
        raise ValueError(f"cannot add a {new['protocol']} run (separator {new.get('separator')}) to "
                         f"{old['protocol']} (separator {old.get('separator')})")
    if old["versions"].get("handcrafted_features") != new["versions"].get("handcrafted_features"):
        raise ValueError("cannot add systems run on another version of the handcrafted features")
    reads_music = any("music_descriptors" in SYSTEMS[s].kinds for s in new["systems"] if s in SYSTEMS)
    if reads_music and old["versions"].get("music_descriptors", new["versions"].get("music_descriptors")) != \
            new["versions"].get("music_descriptors"):
        raise ValueError("cannot add systems run on another version of the music descriptors")
    by_task = {e["task"]: e for e in old["experiments"]}
    for e in new["experiments"]:
        o = by_task.get(e["task"])
        if o is None:
            raise ValueError(f"{new['protocol']}: task {e['task']!r} is not in the existing results")
        if [f["n_test"] for f in o["folds"]] != [f["n_test"] for f in e["folds"]]:
            raise ValueError(f"{new['protocol']}/{e['task']}: the folds differ from the existing results'")
        o["systems"].update(e["systems"])
    added = [s for e in new["experiments"] for s in e["systems"]]
    if not added:
        raise ValueError(f"{new['protocol']}: none of the systems applies to "
                         f"{', '.join(e['task'] for e in new['experiments'])}; nothing to add")
    old["systems"].update({s: d for s, d in new["systems"].items() if s in added})
    for k in ("music_descriptors", "n_music_descriptors"):  # results older than the music descriptors lack them
        if k in new["versions"]:
            old["versions"].setdefault(k, new["versions"][k])
    run = {"systems": sorted(set(added), key=added.index), "tasks": [e["task"] for e in new["experiments"]],
           "generated": new["generated"], "seconds": new["seconds"],
           "command": command + " (same folds and features; merged)"}
    was, now = json.loads(json.dumps(old.get("settings", {}))), json.loads(json.dumps(new.get("settings", {})))
    changed = {k: v for k, v in now.items() if k in was and was[k] != v and k not in ("workers", "jobs")}
    if changed:  # the added systems ran with other knobs than the page's header says
        run["settings"] = changed
    old.setdefault("added_runs", []).append(run)
    return old


def load_json_results(json_dir: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(json_dir.glob("protocol_*.json")):
        r = json.loads(p.read_text())
        out[r["protocol"]] = r
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.results", description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help=f"comma-separated protocols ({', '.join(protocols.PROTOCOLS)})")
    ap.add_argument("--systems", default="rf,mlp,svm,svm_seg,mlp_seg,svm_spknorm,svm_corpusnorm,svm_spknorm_online,"
                                          "fusion,fusion_seg,fusion_spknorm,fusion_spknorm_online,fusion_corpusnorm,"
                                          "fusion_corpusnorm_flat,svm_mix10,svm_spknorm_online_mix10,"
                                          "fusion_spknorm_online_mix10,svm_seg_music,fusion_seg_music",
                    help="comma-separated registered systems")
    ap.add_argument("--add", action="store_true",
                    help="run only --systems and add them to the protocol's existing JSON (same folds and features), "
                         "keeping the systems already there")
    ap.add_argument("--tasks", default=None, help="with --add: only these tasks of the protocol (comma-separated)")
    ap.add_argument("--quick", action="store_true", help="cheap settings; JSON + doc go to the cache unless "
                                                        "--json-dir/--doc are given")
    ap.add_argument("--from-json", action="store_true", help="only re-render the doc and PNGs from the JSON files")
    ap.add_argument("--separator", default=None, help="builtin | spleeter | module:callable (mix -> speech, music)")
    ap.add_argument("--music-pool", default="4q", choices=("4q", "emopia"),
                    help="music of the `mixed` protocol: 4q (sung, default) or emopia (instrumental piano)")
    ap.add_argument("--workers", type=int, default=1, help="processes for feature extraction (1 or 2)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="folds fitted at once in separate processes (1 or 2 here; the results do not change; "
                         "features are computed first, except the extra mixtures of the *_mix10 systems, which "
                         "each process computes for its own fold when they are not cached yet)")
    ap.add_argument("--json-dir", default=None)
    ap.add_argument("--doc", default=None)
    ap.add_argument("--manifest", default=None, help="a generic manifest CSV (training.manifest): run it only")
    ap.add_argument("--va-scale", default=None, help="LO,HI of the manifest's valence/arousal columns")
    ap.add_argument("--folds", type=int, default=5, help="folds for --manifest without a split column")
    a = ap.parse_args(argv)

    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(max(1, a.workers))
    except ImportError:
        pass
    settings = Settings.quick_settings() if a.quick else Settings()
    settings.workers = a.workers
    settings.jobs = max(1, a.jobs)
    settings.music_pool = a.music_pool
    systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s!r}; registered: {', '.join(SYSTEMS)}")

    if a.manifest:
        from .manifest import ManifestError, load_manifest, parse_va_scale
        try:
            clips = load_manifest(a.manifest, parse_va_scale(a.va_scale))
        except ManifestError as exc:
            print(f"training.results: {exc}", file=sys.stderr)
            return 2
        exps = protocols.protocol_manifest(clips, k=a.folds)
        r = {"protocol": "manifest", "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
             "settings": dict(settings.__dict__), "versions": versions(),
             "systems": {s: SYSTEMS[s].description for s in systems if s != "svm_spknorm"},
             "experiments": [run_experiment(e, [s for s in systems if s != "svm_spknorm"], settings) for e in exps]}
        out = Path(a.json_dir or ".") / f"manifest_{clips[0].corpus}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(r, indent=1))
        for exp in r["experiments"]:
            print(f"\n### {exp['title']}\n\n{_fold_summary(exp)}\n")
            for cond in exp["conditions"]:
                rows = _classify_table(exp, cond) if exp["kind"] == "classify" else _regress_table(exp, cond)
                print("\n".join(rows) + "\n")
        print(f"wrote {out}")
        return 0

    default_dir = cache_root() / "results-quick" if a.quick else None
    json_dir = Path(a.json_dir) if a.json_dir else (default_dir / "results" if a.quick else JSON_DIR)
    doc = Path(a.doc) if a.doc else (default_dir / "RESULTS.md" if a.quick else DOC)
    img_dir = IMG_DIR if doc == DOC else doc.parent / "img"
    json_dir.mkdir(parents=True, exist_ok=True)
    if not a.from_json:
        names = a.only.split(",") if a.only else list(protocols.PROTOCOLS)
        for n in names:
            if n not in protocols.PROTOCOLS:
                ap.error(f"unknown protocol {n!r}; known: {', '.join(protocols.PROTOCOLS)}")
        tasks = [t.strip() for t in a.tasks.split(",") if t.strip()] if a.tasks else None
        if tasks and not a.add:
            ap.error("--tasks needs --add (a protocol's JSON must keep all of its tasks)")
        for n in names if tasks else ():
            saved = json_dir / f"protocol_{result_name(n, a.music_pool)}.json"
            if not saved.exists():
                ap.error(f"--tasks adds to saved results, and {saved} does not exist: run the whole protocol first")
        separator = None
        if a.separator:
            separator = protocols.separator_from_name(a.separator)
        for n in names:
            print(f"protocol {n} ...", flush=True)
            try:
                r = run_protocol(n, systems, settings, separator=separator if n == "mixed" else None, tasks=tasks)
            except ValueError as exc:
                print(f"training.results: {exc}", file=sys.stderr)
                return 2
            out = json_dir / f"protocol_{r['protocol']}.json"
            minutes = r["seconds"] / 60
            if a.add and out.exists():
                cmd = " ".join(["python -m training.results", *(sys.argv[1:] if argv is None else argv)])
                try:
                    r = add_systems(json.loads(out.read_text()), r, cmd)
                except ValueError as exc:
                    print(f"training.results: {exc}", file=sys.stderr)
                    return 2
            out.write_text(json.dumps(r, indent=1))
            print(f"protocol {r['protocol']}: {minutes:.1f} min -> {out}", flush=True)
    results = load_json_results(json_dir)
    if not results:
        print(f"training.results: no protocol_*.json in {json_dir}", file=sys.stderr)
        return 1
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(render(results, img_dir=img_dir, doc_path=doc))
    print(f"wrote {doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
