"""Handcrafted features of whole corpora, cached.

The descriptors themselves are defined once, in :mod:`streamer.descriptors`
and :mod:`streamer.music_descriptors` (the streamer computes them for
descriptor models); this module caches those of a whole corpus (or of a set
of mixtures) as one npz per set and kind under ``cache_root()/handcrafted``,
keyed per clip, so a later run computes only clips it has not seen.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
from streamer import music_descriptors
from streamer.descriptors import HANDCRAFTED_VERSION, feature_names, features

from ..paths import cache_root

__all__ = ["HANDCRAFTED_VERSION", "KINDS", "feature_names", "features", "cached", "key_of", "n_features"]


class Kind(NamedTuple):
    """A descriptor definition of :mod:`streamer`, named as a model card's input."""

    fn: Callable[[np.ndarray], np.ndarray]
    names: Callable[[], list]
    version: int
    tag: str            # in the cache file's name
    label: str          # in progress lines


def _logmel_stats(x: np.ndarray) -> np.ndarray:
    from streamer.features import extract

    from ..nets import logmel_stats
    return logmel_stats.stats(extract(x))


def _logmel_stats_names() -> list:
    from ..nets import logmel_stats
    return logmel_stats.names()


def _logmel_stats_version() -> int:
    from streamer.features import FEATURE_VERSION

    from ..nets import logmel_stats
    return 100 * logmel_stats.STATS_VERSION + FEATURE_VERSION


KINDS = {
    "handcrafted": Kind(features, feature_names, HANDCRAFTED_VERSION, "", "handcrafted features"),
    # statistics of the streamer's ``features`` input (training.nets.logmel_stats: computed inside the model graph)
    "logmel_stats": Kind(_logmel_stats, _logmel_stats_names, _logmel_stats_version(), "-lmstats",
                         "log-mel statistics"),
    "music_descriptors": Kind(music_descriptors.features, music_descriptors.feature_names,
                              music_descriptors.MUSIC_DESCRIPTOR_VERSION, "-music", "music descriptors"),
}

_JOB: Optional[tuple[Callable[[np.ndarray], np.ndarray], Callable[[int], np.ndarray]]] = None


def _job(i: int) -> np.ndarray:
    fn, audio_of = _JOB
    return fn(audio_of(i))


def n_features(kinds: Sequence[str] = ("handcrafted",)) -> int:
    """Length of the concatenated descriptors of ``kinds``."""
    return sum(len(KINDS[k].names()) for k in kinds)


def _cache_file(name: str, kind: str = "handcrafted") -> "os.PathLike":
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    k = KINDS[kind]
    return cache_root() / "handcrafted" / f"{safe}{k.tag}-v{k.version}.npz"


def cached(name: str, keys: Sequence[str], audio_of: Callable[[int], np.ndarray], workers: int = 1,
           before_compute: Optional[Callable[[list[int]], None]] = None,
           log: Optional[Callable[[str], None]] = print, kind: str = "handcrafted") -> np.ndarray:
    """Feature matrix [len(keys), D] of a named set, computing only keys not cached yet.

    ``audio_of(i)`` returns the audio of ``keys[i]``.  ``kind`` is one of :data:`KINDS`.  The set's file
    (``cache_root()/handcrafted/<name>[-music]-v<version>.npz``) holds every key computed
    so far; new rows are appended.  ``before_compute(todo)`` runs first when
    some keys are missing (e.g. to load their audio).  ``workers`` > 1 forks
    that many processes.
    """
    global _JOB
    d = len(KINDS[kind].names())
    path = _cache_file(name, kind)
    have: dict[str, np.ndarray] = {}
    if path.exists():
        z = np.load(path, allow_pickle=False)
        if z["X"].shape[1] == d:
            have = dict(zip(z["keys"].tolist(), z["X"]))
    todo = [i for i, k in enumerate(keys) if k not in have]
    if todo:
        if log:
            log(f"{KINDS[kind].label}: {len(todo)} new clips for set '{name}' ({workers} process(es))")
        if before_compute is not None:
            before_compute(todo)
        _JOB = (KINDS[kind].fn, audio_of)
        if workers > 1 and len(todo) > 20:
            import multiprocessing as mp
            with mp.get_context("fork").Pool(workers) as pool:
                rows = pool.map(_job, todo, chunksize=8)
        else:
            rows = [_job(i) for i in todo]
        _JOB = None
        for i, r in zip(todo, rows):
            have[keys[i]] = r
        path.parent.mkdir(parents=True, exist_ok=True)
        ks = sorted(have)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(ks), X=np.stack([have[k] for k in ks]))
        os.replace(tmp, path)
    return np.stack([have[k] for k in keys]) if keys else np.zeros((0, d), np.float32)


def key_of(*parts) -> str:
    """A short stable key for a clip or a mixture (hash of its parts)."""
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:20]
