"""The log-mel CNN (the shipped speech model's architecture) as a leave-one-corpus-out candidate.

    python -m training.experiments.loco_cnn features                   # the log-mel caches (once)
    python -m training.experiments.loco_cnn run --systems cnn_aug_mix  # trained per fold, scored as loco's,
                                                                       # gathered into loco's JSON

The shipped speech model (``training/recipes/speech.toml``) trained on RAVDESS actors 1-16 and all of
TESS, so it has no leave-one-corpus-out number.  Here the same architecture
(:func:`training.nets.archs.build_cnn`, the recipe's widths or a smaller variant) is trained on two of
RAVDESS, TESS and EMOVO and tested on the third, on exactly what :mod:`training.experiments.loco` scores
the descriptor systems on: each clip's streaming window (:func:`loco.stream_window`), clean and under a 4Q
song at +5 dB (:func:`loco.variant_window`), through the published agreeing outputs (:func:`loco.score`).

Training windows: the training corpora's clean windows, their imitated other-corpus versions
(:func:`training.data.augment.imitate`, the ``aug`` variant) and the same clips over music (``mix``), with
SpecAugment masks (:func:`training.loop.spec_augment`); weights balance each (corpus, quadrant) cell, so
every training corpus counts alike.  A fixed number of epochs (nothing of the held-out corpus is seen,
not even to stop early).  Options of a :class:`CnnSystem`:

* ``band_norm``: per-window channel normalisation of the log-mel: each band's mean over the window's
  active frames (:data:`training.nets.logmel_stats.ACTIVE_DB`) is replaced by the window's mean over
  bands, i.e. the window's spectral envelope (microphone, EQ, room colour) is removed and its level and
  dynamics are kept.  Causal and per window (a window sees nothing of the stream around it), so it
  cannot collapse on a one-emotion stream.
* ``heads="axes"``: two sigmoid outputs P(V+), P(A+) (neutral clips trained as low arousal, their
  valence masked) and quadrant probabilities as their product (:func:`streamer.taxonomy.agreeing`'s
  relation), so a model trained on TESS + EMOVO (no calm: no Q4) can still say Q4.
* ``label_smoothing``, ``mixup`` (pairs drawn across the whole training set, so across corpora).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from streamer.features import FEATURE_VERSION, extract

from ..data.corpora import load_audio
from ..loop import _tf
from ..nets.logmel_stats import ACTIVE_DB


class CnnSystem:
    """A CNN candidate: the architecture's widths, the inputs' options and the training's (module docstring)."""

    def __init__(self, name: str, description: str, train_variants: Sequence[str] = ("clean", "aug", "mix"),
                 channels: Sequence[int] = (16, 24, 32, 48), dense: int = 64, dropout: float = 0.3,
                 band_norm: bool = False, heads: str = "quadrant", label_smoothing: float = 0.0,
                 mixup: float = 0.0, epochs: int = 12, batch_size: int = 64, learning_rate: float = 1e-3,
                 spec_augment: bool = True, one_variant_per_epoch: bool = True, seed: int = 1):
        self.name, self.description, self.train_variants = name, description, tuple(train_variants)
        self.channels, self.dense, self.dropout = list(channels), dense, dropout
        self.band_norm, self.heads, self.label_smoothing, self.mixup = band_norm, heads, label_smoothing, mixup
        self.epochs, self.batch_size, self.learning_rate = epochs, batch_size, learning_rate
        self.spec_augment, self.one_variant_per_epoch, self.seed = spec_augment, one_variant_per_epoch, seed
        self.input = "logmel"
        self.norm = "train"


SYSTEMS = {s.name: s for s in (
    CnnSystem("cnn_aug_mix", "the shipped speech CNN's architecture and widths (recipes/speech.toml), trained "
              "on two corpora: clean + imitated other corpora + over music, SpecAugment, (corpus, quadrant) "
              "balanced weights, 4-way softmax; 12 epochs, each clip once per epoch in one of its three variants"),
    CnnSystem("cnn_bn_av_aug_mix", "cnn_aug_mix with per-window band normalisation of the log-mel (the "
              "window's spectral envelope removed) and per-axis sigmoid heads (quadrant = product; neutral "
              "as low arousal), label smoothing 0.1", band_norm=True, heads="axes", label_smoothing=0.1),
    CnnSystem("cnn_bn_av_aug_mix_s2", "cnn_bn_av_aug_mix with another seed (2): how much a reseed moves it",
              band_norm=True, heads="axes", label_smoothing=0.1, seed=2),
    CnnSystem("cnn_bn_av_mixup_aug_mix", "cnn_bn_av_aug_mix with mixup (Beta(0.2, 0.2)) of pairs drawn across the "
              "whole training set (so across corpora)", band_norm=True, heads="axes", label_smoothing=0.1, mixup=0.2),
)}


# ----------------------------------------------------------------------------- inputs


def _cache_path(variant: str, corpus: str) -> Path:
    from ..paths import cache_root
    from . import loco
    p = cache_root() / "loco"
    p.mkdir(parents=True, exist_ok=True)
    return p / f"logmel-{variant}-{corpus}-v{loco.VARIANT_VERSION}-f{FEATURE_VERSION}.npz"


def logmel(clips, variant: str = "clean", log=print) -> np.ndarray:
    """``features`` [len(clips), frames, 64, 3] (float16, memory-mapped) of the clips' ``variant`` windows, the
    streamer's input of the speech CNN (:func:`streamer.features.extract`); cached per corpus and variant."""
    from . import loco

    # the clips' windows in their order, one memory-mapped file (the training reads batches from it)
    want = "\n".join(loco.clip_key(c) for c in clips)
    all_path = _cache_path(variant, "set-" + hashlib.sha1(want.encode()).hexdigest()[:12]).with_suffix(".npy")
    if all_path.exists() and all_path.with_suffix(".keys").exists() and all_path.with_suffix(".keys").read_text() == want:
        return np.load(all_path, mmap_mode="r")
    by_corpus: dict[str, list[int]] = {}
    for i, c in enumerate(clips):
        by_corpus.setdefault(c.corpus, []).append(i)
    parts: dict[str, np.ndarray] = {}
    for corpus, idx in by_corpus.items():
        cs = [clips[i] for i in idx]
        keys = [loco.clip_key(c) for c in cs]
        path = _cache_path(variant, corpus)
        have: dict[str, int] = {}
        F = None
        if path.exists():
            z = np.load(path, allow_pickle=False)
            have = {k: j for j, k in enumerate(z["keys"].tolist())}
            F = z["F"]
        if not all(k in have for k in keys):
            t0 = time.time()
            if any(c.audio is None for c in cs):
                load_audio(cs)
            if variant == "mix":
                loco.music_clips()
            F = np.stack([extract(loco.variant_window(c, variant)).astype(np.float16) for c in cs])
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, keys=np.array(keys), F=F)
            os.replace(tmp, path)
            have = {k: j for j, k in enumerate(keys)}
            if log:
                log(f"log-mel {variant} {corpus}: {len(cs)} windows in {time.time() - t0:.0f} s")
        parts[corpus] = F[[have[k] for k in keys]]
    shape = next(iter(parts.values())).shape[1:]
    out = np.lib.format.open_memmap(all_path, mode="w+", dtype=np.float16, shape=(len(clips), *shape))
    for corpus, idx in by_corpus.items():
        out[idx] = parts[corpus]
        parts[corpus] = None
    out.flush()
    del out
    all_path.with_suffix(".keys").write_text(want)
    return np.load(all_path, mmap_mode="r")


class Rows:
    """Training rows drawn from several arrays without copying them: row r is ``arrays[k][i]`` for
    ``(k, i) = (which[r], index[r])``; ``group[r] = index[r]`` (the clip, whatever the variant)."""

    def __init__(self, arrays: Sequence[np.ndarray], index: np.ndarray, which: np.ndarray):
        self.arrays, self.index, self.which = list(arrays), np.asarray(index), np.asarray(which)
        self.shape = (len(self.index), *self.arrays[0].shape[1:])
        self.group = self.index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, rows) -> np.ndarray:
        rows = np.arange(len(self))[rows] if isinstance(rows, slice) else np.atleast_1d(np.asarray(rows))
        out = np.empty((len(rows), *self.shape[1:]), np.float16)
        for k, a in enumerate(self.arrays):
            m = self.which[rows] == k
            if m.any():
                ii = self.index[rows[m]]
                o = np.argsort(ii)           # sorted reads from a memory map
                got = np.asarray(a[ii[o]])
                sub = np.empty_like(got)
                sub[o] = got
                out[m] = sub
        return out


def band_normalise(F: np.ndarray) -> np.ndarray:
    """Channel 0 (log-mel dB) of ``F`` [N, T, M, 3] with each band's mean over the window's active frames
    replaced by the mean over bands (the window's spectral envelope removed, its level kept)."""
    F = np.array(F, np.float32)
    L = F[..., 0]                                           # [N, T, M]
    e = L.mean(2)                                           # [N, T]
    w = (e > e.max(1, keepdims=True) - ACTIVE_DB).astype(np.float32)
    mu = (L * w[:, :, None]).sum(1) / w.sum(1, keepdims=True)   # [N, M]
    F[..., 0] = L - (mu - mu.mean(1, keepdims=True))[:, None, :]
    return F


# ----------------------------------------------------------------------------- training


def balanced_weights(y: np.ndarray, corpus: np.ndarray) -> np.ndarray:
    """Per-row weights: each training corpus the same total, each quadrant within it the same total
    (neutral rows, y < 0: the corpus's mean quadrant weight, for the axes they train)."""
    w = np.zeros(len(y))
    corpora = np.unique(corpus)
    for c in corpora:
        m = corpus == c
        labels = np.unique(y[m & (y >= 0)])
        for q in labels:
            cell = m & (y == q)
            w[cell] = 1.0 / (len(corpora) * len(labels) * cell.sum())
        neu = m & (y < 0)
        if neu.any():
            w[neu] = 1.0 / (len(corpora) * len(labels) * max(neu.sum(), 1))
    return w * len(y) / w.sum()


def _channel_stats(X, transform, chunk: int = 256, most: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of ``transform(X)`` [N, T, M, C] (float64 accumulation, in chunks, over at
    most ``most`` evenly spaced rows)."""
    s1 = np.zeros(X.shape[-1])
    s2 = np.zeros(X.shape[-1])
    n = 0
    rows = np.linspace(0, len(X) - 1, min(len(X), most)).astype(int)
    for i in range(0, len(rows), chunk):
        x = transform(X[rows[i:i + chunk]]).astype(np.float64)
        s1 += x.sum((0, 1, 2))
        s2 += (x ** 2).sum((0, 1, 2))
        n += x[..., 0].size
    mean = s1 / n
    return mean, np.sqrt(np.maximum(s2 / n - mean ** 2, 0.0))


def axis_weights(side: np.ndarray, known: np.ndarray, corpus: np.ndarray) -> np.ndarray:
    """Weights of one binary axis target ``side`` on the rows where it is ``known``: each corpus the same
    total, each side within a corpus the same total (0 where unknown)."""
    w = np.zeros(len(side))
    corpora = np.unique(corpus)
    for c in corpora:
        for v in (0, 1):
            cell = known & (corpus == c) & (side == v)
            if cell.any():
                w[cell] = 1.0 / cell.sum()
    return w * known.sum() / max(w.sum(), 1e-12)


class FittedCnn:
    """A trained candidate: ``proba(F)`` -> [n, 4] quadrant probabilities of ``features`` windows."""

    def __init__(self, system: CnnSystem, F: np.ndarray, y: np.ndarray, corpus: np.ndarray,
                 threads: int = 1, log=print):
        tf = _tf(threads)
        from tensorflow.keras import layers

        from ..loop import spec_augment
        from ..nets import archs

        self.system = s = system
        tf.keras.utils.set_random_seed(s.seed)
        rng = np.random.default_rng(s.seed)
        X = F  # float16 rows (an array or :class:`Rows`); the network's input is made per batch (_input)
        mean, std = _channel_stats(X, self._input)
        base = archs.build_cnn({"features": X.shape[1:]}, {"features": (mean, std)},
                               {"channels": s.channels, "dense": s.dense, "dropout": s.dropout})
        emb = [l for l in base.layers if isinstance(l, layers.Dropout)][-1].output
        if s.heads == "axes":
            axes = layers.Dense(2, activation="sigmoid", name="axes")(emb)
            self.model = tf.keras.Model(base.input, axes)
        else:
            q = layers.Dense(4, activation="softmax", name="quadrant")(emb)
            self.model = tf.keras.Model(base.input, q)
        opt = tf.keras.optimizers.Adam(s.learning_rate)
        sw = balanced_weights(y, corpus)
        if s.heads == "axes":
            # targets [V+, A+]; the mask holds per-axis balanced weights (each corpus alike, each side of an
            # axis alike within it; valence unknown for neutral, which is low arousal)
            t = np.stack([np.isin(y, (0, 3)), np.isin(y, (0, 1))], 1).astype(np.float32)
            mask = np.stack([axis_weights(t[:, 0], y >= 0, corpus), axis_weights(t[:, 1], np.ones(len(y), bool),
                                                                               corpus)], 1).astype(np.float32)
            sw = np.ones(len(y))
            keep = np.ones(len(y), bool)
        else:
            keep = y >= 0
            t = np.eye(4, dtype=np.float32)[np.maximum(y, 0)]
            mask = np.ones((len(y), 1), np.float32)
        idx_all = np.flatnonzero(keep)
        groups = getattr(F, "group", None)
        ls = s.label_smoothing

        @tf.function(reduce_retracing=True)
        def step(xb, tb, mb, wb):
            with tf.GradientTape() as tape:
                out = self.model(xb, training=True)
                if s.heads == "axes":
                    tt = tb * (1 - ls) + 0.5 * ls
                    o = tf.clip_by_value(out, 1e-6, 1 - 1e-6)
                    bce = -(tt * tf.math.log(o) + (1 - tt) * tf.math.log(1 - o)) * mb
                    return_loss = tf.reduce_sum(bce) / tf.reduce_sum(mb)
                    per = None
                else:
                    tt = tb * (1 - ls) + ls / 4.0
                    per = -tf.reduce_sum(tt * tf.math.log(tf.clip_by_value(out, 1e-7, 1.0)), 1)
                loss = return_loss if per is None else tf.reduce_sum(per * wb) / tf.reduce_sum(wb)
            g = tape.gradient(loss, self.model.trainable_variables)
            opt.apply_gradients(zip(g, self.model.trainable_variables))
            return loss

        fill = mean.astype(np.float32)  # masks filled with the training mean per channel
        bs = s.batch_size
        for e in range(s.epochs):
            t0 = time.time()
            order = rng.permutation(idx_all)
            if s.one_variant_per_epoch and groups is not None:
                # each clip once per epoch, in one of its variants (clean, imitated, over music) drawn anew
                _, first = np.unique(groups[order], return_index=True)
                order = order[np.sort(first)]
            losses = []
            for b in range(0, len(order), bs):
                ib = order[b:b + bs]
                xb = self._input(X[ib])
                if s.spec_augment:
                    spec_augment(rng, xb, fill)
                tb, mb, wb = t[ib], mask[ib], sw[ib]
                if s.mixup > 0:
                    lam = rng.beta(s.mixup, s.mixup, size=len(ib)).astype(np.float32)
                    perm = rng.permutation(len(ib))
                    xb = lam[:, None, None, None] * xb + (1 - lam[:, None, None, None]) * xb[perm]
                    tb = lam[:, None] * tb + (1 - lam[:, None]) * tb[perm]
                    mb = mb * mb[perm]
                    wb = (wb + wb[perm]) / 2
                losses.append(float(step(xb, tb.astype(np.float32), mb.astype(np.float32), wb.astype(np.float32))))
            if log:
                log(f"    {s.name} epoch {e + 1}/{s.epochs}: loss {np.mean(losses):.4f} ({time.time() - t0:.0f} s)")
        self._refresh_batch_norm(X, idx_all, rng)

    def _refresh_batch_norm(self, X: np.ndarray, idx: np.ndarray, rng, batches: int = 40) -> None:
        """BatchNorm's moving statistics re-estimated on clean (unmasked) training batches: with few steps
        (a short run) Keras's momentum 0.99 leaves them near their initial values."""
        from tensorflow.keras import layers

        bns = [l for l in self.model.layers if isinstance(l, layers.BatchNormalization)]
        saved = [l.momentum for l in bns]
        for l in bns:
            l.momentum = 0.8
        for _ in range(batches):
            ib = rng.choice(idx, min(len(idx), self.system.batch_size * 2), replace=False)
            self.model(self._input(X[np.sort(ib)]), training=True)
        for l, m in zip(bns, saved):
            l.momentum = m

    def _input(self, F: np.ndarray) -> np.ndarray:
        """The network's input of a batch of cached windows: float32, band-normalised if the system says so."""
        return band_normalise(F) if self.system.band_norm else np.array(F, np.float32)

    def proba(self, F: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(F), 256):
            out.append(self.model(self._input(F[i:i + 256]), training=False).numpy())
        p = np.concatenate(out).astype(np.float64)
        if self.system.heads == "axes":
            pv, pa = p[:, 0], p[:, 1]
            return np.stack([pv * pa, (1 - pv) * pa, (1 - pv) * (1 - pa), pv * (1 - pa)], 1)
        return p


# ----------------------------------------------------------------------------- the protocol


def train_set(data, inputs: dict, idx: np.ndarray, variants: Sequence[str]):
    """(rows, y, corpus) of the clips ``idx`` in every variant (no copy: :class:`Rows`)."""
    F = Rows([inputs[v] for v in variants], np.tile(idx, len(variants)), np.repeat(np.arange(len(variants)), len(idx)))
    y = np.concatenate([data.y[idx]] * len(variants))
    c = np.concatenate([data.corpus[idx]] * len(variants))
    return F, y, c


def evaluate(data, system: CnnSystem, inputs: dict, threads: int = 1, log=print) -> dict:
    """Leave-one-corpus-out scores of ``system`` (as :func:`loco.evaluate_system`), with the out-of-fold
    probabilities; ``inputs``: {variant: features of every clip of ``data``}."""
    from . import loco

    res = {"description": system.description, "loco": {}, "oof": {}}
    for held in loco.SPEECH_CORPORA:
        t0 = time.time()
        tr = np.flatnonzero(data.corpus != held)
        te = np.flatnonzero(data.corpus == held)
        model = FittedCnn(system, *train_set(data, inputs, tr, system.train_variants), threads=threads, log=log)
        r = {}
        for v in ("clean", "mix"):
            p = model.proba(Rows([inputs[v]], te, np.zeros(len(te), int)))
            r[v] = loco.score(data.y[te], p)
            res["oof"][f"{held}:{v}"] = p
        r["chance"] = loco.chance(data.y[te])
        res["loco"][held] = r
        if log:
            log(f"  {system.name} held out {held}: {r} ({time.time() - t0:.0f} s)")
    return res


def main(argv: Optional[list[str]] = None) -> int:
    from . import loco

    ap = argparse.ArgumentParser(prog="python -m training.experiments.loco_cnn", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("features", help="the log-mel caches of every stream window")
    f.add_argument("--variant", nargs="+", default=list(loco.VARIANTS), choices=loco.VARIANTS)
    r = sub.add_parser("run", help="leave-one-corpus-out scores of CNN candidates, gathered with loco's systems")
    r.add_argument("--systems", nargs="+", required=True, choices=sorted(SYSTEMS))
    r.add_argument("--out", default=str(loco.REPO / "docs" / "results" / "loco_speech.json"))
    r.add_argument("--threads", type=int, default=1, help="TensorFlow threads")
    r.add_argument("--unseen", nargs="*", default=[], help="systems to compare on the clips no model trained on")
    args = ap.parse_args(argv)
    if args.cmd == "features":
        clips = loco.speech_clips()
        for v in args.variant:
            t0 = time.time()
            logmel(clips, v)
            print(f"{v}: {len(clips)} clips in {time.time() - t0:.0f} s", flush=True)
        return 0
    data = loco.Data(tuple(loco.VARIANTS), log=None)
    for name in args.systems:
        print(f"{name}:", flush=True)
        lm = {v: logmel(data.clips, v) for v in loco.VARIANTS}
        loco.save_system(name, evaluate(data, SYSTEMS[name], lm, threads=args.threads))
    return loco.gather(args.out, args.unseen)


if __name__ == "__main__":
    sys.exit(main())
