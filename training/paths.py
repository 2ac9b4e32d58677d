"""Where the shared data and the cache live (environment overridable)."""

from __future__ import annotations

import os
from pathlib import Path


def data_root() -> Path:
    """Shared corpora: env ``EMOTRACK_DATA``, else ``shared/data`` beside the repository."""
    env = os.environ.get("EMOTRACK_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def cache_root() -> Path:
    """Cache for rendered MIDI and decoded audio: env ``EMOTRACK_CACHE``, else ~/.cache/emotrack."""
    env = os.environ.get("EMOTRACK_CACHE")
    root = Path(env) if env else Path.home() / ".cache" / "emotrack"
    root.mkdir(parents=True, exist_ok=True)
    return root
