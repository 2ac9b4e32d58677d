"""Systems: the models an experiment fits on a fold, in a registry.

A system is a name, a description and a factory ``factory(experiment, settings) -> model`` where
``model.fit(items, y)`` takes the training :class:`training.experiments.protocols.Item` objects (each
gives its clip, group and audio) with their targets, and ``model.predict(items)`` returns class
indices (classification) or an [n, 2] valence/arousal array (regression).  The handcrafted
baselines below are the first entries; neural recipes register theirs the same way
(:func:`register_system`) and run under the same folds (:mod:`training.experiments.runner`).
"""


from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from streamer import adapt

from ..data import handcrafted
from . import protocols
from .protocols import Experiment, Item

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
    """Descriptors of every item (``kinds``: of :data:`training.data.handcrafted.KINDS`), from the per-set caches
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
    kinds: tuple = ("handcrafted",)  # descriptors it reads (training.data.handcrafted.KINDS), side by side


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
    """A scikit-learn estimator on :mod:`training.data.handcrafted` features of the items."""

    def __init__(self, exp: Experiment, make: Callable[[], object], settings: Settings,
                 tune: Optional[dict] = None, group_norm: "bool | str" = False, final: Optional[dict] = None,
                 kinds: Sequence[str] = ("handcrafted",)):
        """``group_norm``: False; True or "group" (z-score per speaker/artist); "corpus" (per corpus);
        "online" (causal per speaker).  ``final``: parameters set after tuning, for the last fit only
        (an SVM's Platt probabilities, which do not change its decisions).  ``kinds``: the descriptors
        (:data:`training.data.handcrafted.KINDS`) side by side."""
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


def merge_needs(needs) -> dict[str, list[Item]]:
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
        return merge_needs(m.feature_needs(items) for m in self.members)

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
    as seed 001's (:func:`training.experiments.protocols.speech_segment`: the speech centred in a random 4.5 s slot
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
