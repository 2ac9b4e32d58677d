"""Evaluation protocols (the seeds' own, ../shared/data/README.md) and their metrics.

Each protocol is a list of :class:`Experiment` objects: folds of training
items and, per fold, one or more named test conditions.  An :class:`Item` is
what a system sees: a key (for feature caches), the labelled clip, and a
function returning its 16 kHz audio (a corpus clip, a mixture, or a separated
stem of a mixture).  Systems (``training.results``) fit on a fold's training
items and predict every test condition.

Fold generators (pure functions, tested):

* :func:`ravdess_fold` -- RAVDESS speaker-independent 6-fold, 4 actors per fold,
  fixed: actors 1-4, 5-8, ..., 21-24.  RAVDESS's odd actors are male and even
  ones female, so every fold holds 2 + 2 (seed 001 shuffled actors with a seed
  and checked only that each fold had both genders).
* :func:`stratified_group_folds` -- stratified group k-fold (greedy, seeded with
  :data:`SEED`): 4Q 10-fold by artist, seed 001's 6 music folds, VGMIDI folds by
  piece, manifests without a split column.
* :func:`seed001_mixtures` -- seed 001's mixed-audio protocol: every RAVDESS
  clip mixed with ``n_mix`` (5, as the seed) distinct music clips of the SAME
  fold (music folds are independent of the speech folds but paired by index),
  so a test fold's speakers and songs are both unseen in training.  Both
  sources are R128-normalised to -23 LUFS before mixing (equal loudness).  The
  speech clip is padded (or cropped) to 4.5 s, centred, and placed in every
  4.5 s slot of the music clip (seed 001 section 3.2, Figure 3.4); the speech
  model hears ONE slot, chosen at random per mixture (seeded), the music model
  the whole mixture.

Metrics: accuracy, macro-F1, UAR (unweighted average recall), confusion
matrix; for labels that map to quadrants the 4-quadrant accuracy and the
arousal-half / valence-half accuracies; CCC, RMSE and R2 for valence/arousal
regression; chance levels (majority class of the training fold, uniform
guessing, and seed 001's "Dummy_strat": guessing with the training
distribution) per fold.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from streamer import taxonomy

from ..data import corpora
from ..data.corpora import SR, Clip

SEED = 20261122
SLOT_S = 4.5
RAVDESS_EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
SHARED_EMOTIONS = tuple(e for e in RAVDESS_EMOTIONS if e != "calm")  # RAVDESS and TESS both have these


# --------------------------------------------------------------------------- items and experiments

@dataclass
class Item:
    """One thing to classify: a key, its labelled clip, and its audio on demand."""

    key: str                          # unique within ``feature_set``
    clip: Clip                        # the labelled (target-source) clip
    audio: Callable[[], np.ndarray]   # 16 kHz mono
    feature_set: str                  # name of the feature cache it belongs to
    needs: tuple = ()                 # clips whose audio must be loaded for ``audio()``
    other: Optional[Clip] = None      # the mixed-in clip of a mixture

    @property
    def group(self) -> str:
        return self.clip.group


@dataclass
class Fold:
    name: str
    train: list[Item]
    test: dict[str, list[Item]]


@dataclass
class Experiment:
    """One task under one protocol: its folds and how a clip becomes a target."""

    protocol: str
    task: str
    title: str
    kind: str                          # "classify" or "regress"
    classes: tuple                     # class names (classify); ("valence", "arousal") (regress)
    folds: list[Fold]
    notes: list[str] = field(default_factory=list)

    def target(self, clip: Clip):
        if self.kind == "regress":
            return (clip.valence, clip.arousal)
        return self.classes.index(class_of(clip, self.classes))

    def targets(self, items: Sequence[Item]) -> np.ndarray:
        return np.array([self.target(it.clip) for it in items], dtype=float if self.kind == "regress" else int)


def class_of(clip: Clip, classes: Sequence[str]) -> str:
    """The clip's class name within ``classes``: its quadrant for quadrant tasks, else its label."""
    if set(classes) <= set(taxonomy.QUADRANTS):
        return clip.quadrant
    lab = clip.label.lower()
    return {"fear": "fearful", "ps": "surprised", "pleasant_surprise": "surprised"}.get(lab, lab)


# --------------------------------------------------------------------------- fold generators

def ravdess_fold(speaker: str) -> int:
    """Fold (0..5) of a RAVDESS actor: actors 1-4 -> 0, 5-8 -> 1, ..., 21-24 -> 5."""
    n = int(speaker.lower().replace("actor", ""))
    if not 1 <= n <= 24:
        raise ValueError(f"RAVDESS actor {speaker!r} is not actor01..actor24")
    return (n - 1) // 4


def stratified_group_folds(labels: Sequence, groups: Sequence[str], k: int, seed: int = SEED) -> np.ndarray:
    """Fold index per sample: ``k`` folds, no group split, class counts per fold as even as groups allow.

    Greedy: groups in decreasing size (ties in a seeded random order) each go to the
    fold where they add least to the squared deviation of the fold's class counts
    from ``total / k``.  (scikit-learn's ``StratifiedGroupKFold(shuffle=True)`` left a
    4Q fold at 25/17/15/13 clips per quadrant; this gives at most one or two apart.)
    """
    labels = np.asarray([str(x) for x in labels])
    groups = np.asarray([str(g) for g in groups])
    classes = sorted(set(labels))
    ci = np.array([classes.index(x) for x in labels])
    uniq = sorted(set(groups))
    gi = {g: i for i, g in enumerate(uniq)}
    gcount = np.zeros((len(uniq), len(classes)))
    for g, c in zip(groups, ci):
        gcount[gi[g], c] += 1
    target = gcount.sum(0) / k
    rng = np.random.default_rng(seed)
    order = sorted(range(len(uniq)), key=lambda i: (-gcount[i].sum(), rng.random()))
    counts = np.zeros((k, len(classes)))
    gfold = np.zeros(len(uniq), dtype=int)
    for i in order:
        g = gcount[i]
        cost = (g * (2 * (counts - target) + g)).sum(1) + 1e-9 * counts.sum(1)  # tie: smaller fold
        f = int(np.argmin(cost))
        gfold[i] = f
        counts[f] += g
    return np.array([gfold[gi[g]] for g in groups])


def folds_from_index(fold_of: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train indices, test indices) for every fold id, in order."""
    ids = sorted(set(int(f) for f in fold_of))
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in ids]


# --------------------------------------------------------------------------- corpus items

_INDEX: dict[str, list[Clip]] = {}


def corpus_clips(corpus: str) -> list[Clip]:
    """Every clip of a corpus (index built once per process; audio loaded on demand)."""
    if corpus not in _INDEX:
        for c in corpora.speech_index() + corpora.music_index():
            _INDEX.setdefault(c.corpus, []).append(c)
    return _INDEX[corpus]


def ensure_audio(clips: Sequence[Clip]) -> None:
    """Load audio of every corpus the clips belong to (whole corpora: the decoded caches are per corpus)."""
    need = sorted({c.corpus for c in clips if c.audio is None})
    for corpus in need:
        if corpus in _INDEX:
            corpora.load_audio(_INDEX[corpus])
        else:  # a manifest's clips: load just those
            corpora.load_audio([c for c in clips if c.corpus == corpus])


def release_audio() -> None:
    """Drop decoded audio of every indexed corpus (features are cached)."""
    for cs in _INDEX.values():
        for c in cs:
            c.audio = c.active = None


def clip_item(c: Clip) -> Item:
    return Item(f"{c.corpus}:{c.path}" + ("" if c.start is None and c.end is None else f"@{c.start}-{c.end}"),
                c, lambda c=c: c.audio, c.corpus, needs=(c,))


# --------------------------------------------------------------------------- seed 001 mixtures

@dataclass(frozen=True)
class Mixture:
    speech: Clip
    music: Clip
    slot: int      # the slot whose 4.5 s the speech model hears
    fold: int

    @property
    def key(self) -> str:
        return f"{self.speech.corpus}:{self.speech.path}|{self.music.corpus}:{self.music.path}|{self.slot}"


def n_slots(n_samples: int) -> int:
    """Whole 4.5 s slots in a music clip (at least one: shorter clips are looped)."""
    return max(1, int(n_samples // int(SLOT_S * SR)))


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` zero-padded (centred) or centre-cropped to ``n`` samples."""
    if x.size >= n:
        s = (x.size - n) // 2
        return x[s:s + n]
    pad = n - x.size
    return np.pad(x, (pad // 2, pad - pad // 2))


def seed001_mixtures(speech: Sequence[Clip], music: Sequence[Clip], speech_fold: Sequence[int],
                     music_fold: Sequence[int], n_mix: int = 5, seed: int = SEED) -> list[Mixture]:
    """Every speech clip mixed with ``n_mix`` distinct music clips of its own fold, a random slot each.

    Seeded per speech clip, so the set does not depend on the order of the lists.
    ``music`` items need ``duration`` only through their audio; slots are
    computed from the corpus manifests' durations when audio is not loaded.
    """
    by_fold: dict[int, list[int]] = {}
    for j, f in enumerate(music_fold):
        by_fold.setdefault(int(f), []).append(j)
    out = []
    for i, s in enumerate(speech):
        f = int(speech_fold[i])
        pool = by_fold.get(f, [])
        if len(pool) < n_mix:
            raise ValueError(f"fold {f} has {len(pool)} music clips, fewer than n_mix={n_mix}")
        rng = np.random.default_rng([seed, int(hashlib.sha1(s.path.encode()).hexdigest()[:15], 16)])
        for j in rng.choice(pool, size=n_mix, replace=False):
            m = music[int(j)]
            out.append(Mixture(s, m, int(rng.integers(n_slots(music_samples(m)))), f))
    return out


_DURATIONS: dict[str, dict[str, float]] = {}


def music_samples(m: Clip) -> int:
    """Length of a music clip in samples (from its audio, or from the corpus manifest's duration)."""
    if m.audio is not None:
        return m.audio.size
    if m.corpus == "4q":
        if "4q" not in _DURATIONS:
            _DURATIONS["4q"] = {r["path"]: float(r["duration_s"]) for r in corpora.read_manifest("music_4q")}
        return int(_DURATIONS["4q"][m.path] * SR)
    raise ValueError(f"duration of {m.corpus} clips needs their audio loaded")


def music_loop(m: Clip, n: int) -> np.ndarray:
    x = m.audio
    return np.tile(x, n // x.size + 1)[:n] if x.size < n else x


def speech_segment(mx: Mixture) -> np.ndarray:
    """The 4.5 s the speech model hears: slot ``mx.slot`` of the music plus the centred speech, equal loudness."""
    n = int(SLOT_S * SR)
    m = music_loop(mx.music, n)
    seg = m[mx.slot * n:(mx.slot + 1) * n]
    return (seg + fit_length(mx.speech.audio, n)).astype(np.float32)


def music_mixture(mx: Mixture) -> np.ndarray:
    """The whole music clip with the (centred, 4.5 s) speech clip in every slot, equal loudness."""
    n = int(SLOT_S * SR)
    x = mx.music.audio.copy()
    sp = fit_length(mx.speech.audio, n)
    for k in range(n_slots(x.size)):
        seg = x[k * n:(k + 1) * n]
        seg += sp[:seg.size]
    return x


# --------------------------------------------------------------------------- separator hook

@dataclass
class SeparatorSpec:
    """A separator for the "separated" column: ``fn(mix16k) -> (speech, music)`` and an id for caches."""

    id: str
    fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def separator_from_name(name: str) -> SeparatorSpec:
    """``builtin`` / ``spleeter`` (streamer.separation) or ``module:callable`` returning (speech, music)."""
    if ":" in name:
        import importlib

        mod, attr = name.split(":", 1)
        fn = getattr(importlib.import_module(mod), attr)
        return SeparatorSpec(f"{name}-{getattr(fn, '__version__', '0')}", fn)
    from streamer import separation

    sep_id = name
    if name == "builtin":
        from engines.cards import sha256_of
        p = separation.DEFAULT_SEPARATOR_MODEL
        if not p.exists():
            raise FileNotFoundError(f"--separator builtin needs {p} (python -m training.separator)")
        sep_id = f"builtin-{sha256_of(p)[:12]}"

    def fn(x: np.ndarray):
        s = separation.make_separator(name)
        try:
            out = separation.separate(x, s)
        finally:
            if hasattr(s, "close"):
                s.close()
        return out["speech"][:x.size], out["music"][:x.size]

    return SeparatorSpec(sep_id, fn)


# --------------------------------------------------------------------------- protocols

def _ravdess_items() -> list[Item]:
    return [clip_item(c) for c in corpus_clips("ravdess")]


def protocol_ravdess() -> list[Experiment]:
    """RAVDESS speaker-independent 6-fold: 8 emotions, and 4 quadrants (neutral left out)."""
    items = _ravdess_items()
    fold_of = np.array([ravdess_fold(it.group) for it in items])
    exps = []
    for task, classes, keep in (("8class", RAVDESS_EMOTIONS, lambda it: True),
                                ("4quadrant", taxonomy.QUADRANTS, lambda it: it.clip.quadrant is not None)):
        folds = []
        for f, (tr, te) in enumerate(folds_from_index(fold_of)):
            actors = sorted({items[i].group for i in te})
            folds.append(Fold(f"actors {actors[0][5:]}-{actors[-1][5:]}",
                              [items[i] for i in tr if keep(items[i])],
                              {"clean": [items[i] for i in te if keep(items[i])]}))
        exps.append(Experiment("ravdess", task,
                               "RAVDESS 8 emotions" if task == "8class" else "RAVDESS 4 quadrants (no neutral)",
                               "classify", tuple(classes), folds))
    return exps


def protocol_4q(k: int = 10) -> list[Experiment]:
    """4Q audio emotion dataset (630 clips here): k-fold stratified by quadrant, grouped by artist."""
    items = [clip_item(c) for c in corpus_clips("4q")]
    fold_of = stratified_group_folds([it.clip.quadrant for it in items], [it.group for it in items], k)
    folds = [Fold(f"fold {f}", [items[i] for i in tr], {"clean": [items[i] for i in te]})
             for f, (tr, te) in enumerate(folds_from_index(fold_of))]
    return [Experiment("music4q", "4quadrant", f"4Q music, {k}-fold stratified, artist-grouped", "classify",
                       taxonomy.QUADRANTS, folds)]


def protocol_emopia() -> list[Experiment]:
    """EMOPIA official split (rendered piano audio): train + val -> test; VGMIDI as a cross-corpus test."""
    em = [clip_item(c) for c in corpus_clips("emopia")]
    vg = [clip_item(c) for c in corpus_clips("vgmidi")]
    fold = Fold("official", [it for it in em if it.clip.split in ("train", "val")],
                {"emopia_test": [it for it in em if it.clip.split == "test"], "vgmidi": vg})
    return [Experiment("emopia", "4quadrant", "EMOPIA official split (train+val -> test)", "classify",
                       taxonomy.QUADRANTS, [fold],
                       notes=["`vgmidi`: all 204 labelled VGMIDI phrases, a corpus never trained on."])]


def protocol_vgmidi(k: int = 5) -> list[Experiment]:
    """VGMIDI valence/arousal (+-1 per phrase) regression, k folds grouped by piece."""
    items = [clip_item(c) for c in corpus_clips("vgmidi")]
    fold_of = stratified_group_folds([it.clip.quadrant for it in items], [it.group for it in items], k)
    folds = [Fold(f"fold {f}", [items[i] for i in tr], {"clean": [items[i] for i in te]})
             for f, (tr, te) in enumerate(folds_from_index(fold_of))]
    return [Experiment("vgmidi", "va", f"VGMIDI valence/arousal regression, {k}-fold grouped by piece", "regress",
                       ("valence", "arousal"), folds)]


def protocol_transfer() -> list[Experiment]:
    """Seed 000: train on speech quadrants (RAVDESS + TESS, neutral left out), test on music quadrants."""
    train = [clip_item(c) for corpus in ("ravdess", "tess") for c in corpus_clips(corpus) if c.quadrant]
    em = [clip_item(c) for c in corpus_clips("emopia")]
    q4 = [clip_item(c) for c in corpus_clips("4q")]
    fold = Fold("speech -> music", train, {"emopia_test": [it for it in em if it.clip.split == "test"],
                                           "emopia_all": em, "4q_all": q4})
    return [Experiment("transfer", "4quadrant", "Speech -> music transfer (seed 000's SER2MER)", "classify",
                       taxonomy.QUADRANTS, [fold])]


def _class_counts(items: Sequence[Item], classes: Sequence[str]) -> str:
    n = {c: 0 for c in classes}
    for it in items:
        n[class_of(it.clip, classes)] += 1
    return ", ".join(f"{c} {k}" for c, k in n.items())


def protocol_crosscorpus() -> list[Experiment]:
    """Train on all of one corpus, test on all of another (one fold each way): RAVDESS <-> TESS on their 7
    shared emotions and on quadrants Q1-Q3 (TESS has no Q4), 4Q <-> EMOPIA on the 4 quadrants."""
    names = {"ravdess": "RAVDESS", "tess": "TESS", "4q": "4Q", "emopia": "EMOPIA"}
    groups = {"ravdess": "speakers", "tess": "speakers", "4q": "artists", "emopia": "songs"}
    tasks = [("7emotions", "7 shared emotions (no calm)", SHARED_EMOTIONS, ("ravdess", "tess")),
             ("3quadrants", "quadrants Q1-Q3 (no neutral, no calm)", ("Q1", "Q2", "Q3"), ("ravdess", "tess")),
             ("4quadrants", "4 quadrants", taxonomy.QUADRANTS, ("4q", "emopia"))]
    exps = []
    for task, what, classes, pair in tasks:
        items = {c: [clip_item(x) for x in corpus_clips(c) if class_of(x, classes) in classes] for c in pair}

        def side(c, items=items, classes=classes):
            return (f"all {len(items[c])} {names[c]} clips ({_class_counts(items[c], classes)}; "
                    f"{len({it.group for it in items[c]})} {groups[c]})")
        for src, dst in (pair, pair[::-1]):
            test = {f"{dst}_all": items[dst]}
            if dst == "emopia":  # the within-corpus EMOPIA number is on these 88 clips
                test["emopia_test"] = [it for it in items[dst] if it.clip.split == "test"]
            exps.append(Experiment(
                "crosscorpus", f"{task}_{src}_to_{dst}", f"{names[src]} -> {names[dst]}, {what}", "classify",
                tuple(classes), [Fold(f"{src} -> {dst}", items[src], test)],
                notes=[f"Trained on {side(src)}; tested on {side(dst)}."]))
    return exps


def seed001_design(n_mix: int = 5, music_corpus: str = "4q", k: int = 6, seed: int = SEED):
    """(speech clips, speech folds, music clips, music folds, mixtures) of seed 001's mixed protocol."""
    speech = corpus_clips("ravdess")
    sfold = np.array([ravdess_fold(c.group) for c in speech])
    music = corpus_clips(music_corpus)
    mfold = stratified_group_folds([c.quadrant for c in music], [c.group for c in music], k, seed)
    if music_corpus != "4q":
        ensure_audio(music)  # durations
    mixes = seed001_mixtures(speech, music, sfold, mfold, n_mix=n_mix, seed=seed)
    return speech, sfold, music, mfold, mixes


def _sep_item(base: Item, sep: SeparatorSpec, stem: int, tag: str) -> Item:
    return Item(base.key, base.clip, lambda: np.asarray(sep.fn(base.audio())[stem], np.float32),
                f"sep-{sep.id}-{tag}", needs=base.needs, other=base.other)


def protocol_mixed(separator: Optional[SeparatorSpec] = None, n_mix: int = 5,
                   music_corpus: str = "4q") -> list[Experiment]:
    """Seed 001's clean / mixed / separated grid for the speech model (8 RAVDESS emotions), plus the
    music side (4Q quadrants of whole mixtures; each music clip in one mixture)."""
    speech, sfold, music, mfold, mixes = seed001_design(n_mix, music_corpus)
    tag = f"{music_corpus}-n{n_mix}"
    clean = {c.path: clip_item(c) for c in speech}
    mixed = [Item(mx.key, mx.speech, lambda mx=mx: speech_segment(mx), f"mixspeech-{tag}",
                  needs=(mx.speech, mx.music), other=mx.music) for mx in mixes]
    conds = {"clean": lambda f: [clean[c.path] for c, sf in zip(speech, sfold) if sf == f],
             "mixed": lambda f: [it for it, mx in zip(mixed, mixes) if mx.fold == f]}
    if separator is not None:
        sep = [_sep_item(it, separator, 0, f"mixspeech-{tag}") for it in mixed]
        conds["separated"] = lambda f: [it for it, mx in zip(sep, mixes) if mx.fold == f]
    exps = []
    n_f = int(sfold.max()) + 1
    for train_cond in conds:
        folds = []
        for f in range(n_f):
            train = [it for g in range(n_f) if g != f for it in conds[train_cond](g)]
            folds.append(Fold(f"fold {f}", train, {c: conds[c](f) for c in conds}))
        exps.append(Experiment("mixed", f"speech_train_{train_cond}",
                               f"Seed 001 grid, speech (8 RAVDESS emotions), trained on {train_cond} audio",
                               "classify", RAVDESS_EMOTIONS, folds))

    # music side: every music clip once, mixed with one speech clip of its fold (speech in every slot)
    rng = np.random.default_rng(SEED + 1)
    by_fold = {f: [c for c, sf in zip(speech, sfold) if sf == f] for f in range(n_f)}
    mmixes = [Mixture(by_fold[int(mf)][int(rng.integers(len(by_fold[int(mf)])))], m, -1, int(mf))
              for m, mf in zip(music, mfold)]
    mclean = [clip_item(m) for m in music]
    mmixed = [Item(mx.key, mx.music, lambda mx=mx: music_mixture(mx), f"mixmusic-{music_corpus}",
                   needs=(mx.speech, mx.music), other=mx.speech) for mx in mmixes]
    mconds = {"clean": mclean, "mixed": mmixed}
    if separator is not None:
        mconds["separated"] = [_sep_item(it, separator, 1, f"mixmusic-{music_corpus}") for it in mmixed]
    for train_cond in mconds:
        folds = []
        for f in range(n_f):
            folds.append(Fold(f"fold {f}", [it for it, mf in zip(mconds[train_cond], mfold) if mf != f],
                              {c: [it for it, mf in zip(mconds[c], mfold) if mf == f] for c in mconds}))
        exps.append(Experiment("mixed", f"music_train_{train_cond}",
                               f"Seed 001 grid, music ({music_corpus} quadrants), trained on {train_cond} audio",
                               "classify", taxonomy.QUADRANTS, folds))
    return exps


def protocol_manifest(clips: Sequence[Clip], k: int = 5) -> list[Experiment]:
    """A user's manifest: its ``split`` column (train [+ val] -> test) when present, else k folds by group.

    Categorical labels -> quadrant classification (neutral left out); valence/arousal
    -> regression (and the quadrant from the signs).
    """
    items = [clip_item(c) for c in clips]
    has_va = all(c.valence is not None for c in clips)
    keep = items if has_va else [it for it in items if it.clip.quadrant is not None]
    if not keep:
        raise ValueError("no clip with a quadrant or valence/arousal in the manifest")
    splits = {it.clip.split for it in keep}
    if "test" in splits:
        folds = [Fold("split column", [it for it in keep if it.clip.split in ("train", "val")],
                      {"test": [it for it in keep if it.clip.split == "test"]})]
    else:
        fold_of = stratified_group_folds([it.clip.quadrant for it in keep], [it.group for it in keep], k)
        folds = [Fold(f"fold {f}", [keep[i] for i in tr], {"clean": [keep[i] for i in te]})
                 for f, (tr, te) in enumerate(folds_from_index(fold_of))]
    name = clips[0].corpus
    if has_va:
        return [Experiment("manifest", "va", f"{name}: valence/arousal regression", "regress",
                           ("valence", "arousal"), folds)]
    return [Experiment("manifest", "4quadrant", f"{name}: 4 quadrants", "classify", taxonomy.QUADRANTS, folds)]


PROTOCOLS = {
    "ravdess": protocol_ravdess,
    "music4q": protocol_4q,
    "emopia": protocol_emopia,
    "transfer": protocol_transfer,
    "crosscorpus": protocol_crosscorpus,
    "vgmidi": protocol_vgmidi,
    "mixed": protocol_mixed,
}
