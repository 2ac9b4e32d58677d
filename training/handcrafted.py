"""Handcrafted features of whole corpora, cached.

The descriptors themselves are defined once, in :mod:`streamer.descriptors`
(the streamer computes them for descriptor models); this module caches those
of a whole corpus (or of a set of mixtures) as one npz per set under
``cache_root()/handcrafted``, keyed per clip, so a later run computes only
clips it has not seen.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable, Optional, Sequence

import numpy as np
from streamer.descriptors import HANDCRAFTED_VERSION, feature_names, features

from .paths import cache_root

__all__ = ["HANDCRAFTED_VERSION", "feature_names", "features", "cached", "key_of"]


_JOB_AUDIO: Optional[Callable[[int], np.ndarray]] = None


def _job(i: int) -> np.ndarray:
    return features(_JOB_AUDIO(i))


def _cache_file(name: str) -> "os.PathLike":
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return cache_root() / "handcrafted" / f"{safe}-v{HANDCRAFTED_VERSION}.npz"


def cached(name: str, keys: Sequence[str], audio_of: Callable[[int], np.ndarray], workers: int = 1,
           before_compute: Optional[Callable[[list[int]], None]] = None,
           log: Optional[Callable[[str], None]] = print) -> np.ndarray:
    """Feature matrix [len(keys), D] of a named set, computing only keys not cached yet.

    ``audio_of(i)`` returns the audio of ``keys[i]``.  The set's file
    (``cache_root()/handcrafted/<name>-v<version>.npz``) holds every key computed
    so far; new rows are appended.  ``before_compute(todo)`` runs first when
    some keys are missing (e.g. to load their audio).  ``workers`` > 1 forks
    that many processes.
    """
    global _JOB_AUDIO
    path = _cache_file(name)
    have: dict[str, np.ndarray] = {}
    if path.exists():
        z = np.load(path, allow_pickle=False)
        if z["X"].shape[1] == len(feature_names()):
            have = dict(zip(z["keys"].tolist(), z["X"]))
    todo = [i for i, k in enumerate(keys) if k not in have]
    if todo:
        if log:
            log(f"handcrafted features: {len(todo)} new clips for set '{name}' ({workers} process(es))")
        if before_compute is not None:
            before_compute(todo)
        _JOB_AUDIO = audio_of
        if workers > 1 and len(todo) > 20:
            import multiprocessing as mp
            with mp.get_context("fork").Pool(workers) as pool:
                rows = pool.map(_job, todo, chunksize=8)
        else:
            rows = [_job(i) for i in todo]
        _JOB_AUDIO = None
        for i, r in zip(todo, rows):
            have[keys[i]] = r
        path.parent.mkdir(parents=True, exist_ok=True)
        ks = sorted(have)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(ks), X=np.stack([have[k] for k in ks]))
        os.replace(tmp, path)
    return np.stack([have[k] for k in keys]) if keys else np.zeros((0, len(feature_names())), np.float32)


def key_of(*parts) -> str:
    """A short stable key for a clip or a mixture (hash of its parts)."""
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:20]
