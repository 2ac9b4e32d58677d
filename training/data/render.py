"""Render MIDI corpora (EMOPIA, VGMIDI) to 16 kHz mono audio with fluidsynth.

Each clip is rendered with one of the corpus' SoundFonts, chosen
deterministically from the clip's path (sha1), by Debian's ``fluidsynth``:
``fluidsynth -ni -F out.wav -r 16000 -g 0.8 SF2 MIDI``.  The result is mixed
to mono, trailing silence is trimmed, it is cut to ``max_seconds`` and cached
as 16-bit FLAC under ``cache_root()/render/<corpus>/``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from streamer.dsp import SAMPLE_RATE

from ..paths import cache_root, data_root

MAX_SECONDS = 60.0


def soundfonts() -> list[Path]:
    """The EMOPIA SoundFonts, sorted by name (used for every MIDI corpus)."""
    return sorted((data_root() / "midi_emopia" / "soundfonts").glob("*.sf2"))


def choose_soundfont(rel_path: str, fonts: list[Path]) -> Path:
    """Deterministic SoundFont for a clip: sha1 of its relative path modulo the count."""
    h = int(hashlib.sha1(rel_path.encode("utf-8")).hexdigest(), 16)
    return fonts[h % len(fonts)]


def cache_path(corpus: str, rel_path: str) -> Path:
    """Cached FLAC of one rendered clip."""
    safe = hashlib.sha1(rel_path.encode("utf-8")).hexdigest()[:16]
    return cache_root() / "render" / corpus / f"{Path(rel_path).stem[:60]}_{safe}.flac"


def render_one(args: tuple[str, str, str, str, float]) -> str:
    """Render one MIDI (``(corpus, folder, rel_path, sf2, max_seconds)``) to its cache path."""
    import soundfile as sf

    corpus, folder, rel, sf2, max_s = args
    out = cache_path(corpus, rel)
    if out.exists():
        return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        subprocess.run(["fluidsynth", "-ni", "-F", str(wav), "-r", str(SAMPLE_RATE), "-g", "0.8",
                        sf2, str(Path(folder) / rel)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        x, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    if sr != SAMPLE_RATE:
        raise RuntimeError(f"fluidsynth wrote {sr} Hz for {rel}")
    x = x.mean(axis=1)
    # trim the trailing silence (reverb tail) below -60 dB re peak
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 0:
        idx = np.nonzero(np.abs(x) > peak * 1e-3)[0]
        x = x[: idx[-1] + 1]
    x = x[: int(max_s * SAMPLE_RATE)]
    tmp_out = out.with_suffix(".tmp.flac")
    sf.write(str(tmp_out), x, SAMPLE_RATE, subtype="PCM_16")
    os.replace(tmp_out, out)
    return str(out)


def render_corpus(corpus: str, rel_paths: Iterable[str], processes: int = 2,
                  max_seconds: float = MAX_SECONDS) -> list[Path]:
    """Render (or find cached) every clip of ``corpus`` (folder name under the data root)."""
    folder = str(data_root() / corpus)
    fonts = soundfonts()
    jobs = [(corpus, folder, rel, str(choose_soundfont(rel, fonts)), max_seconds) for rel in rel_paths]
    todo = [j for j in jobs if not cache_path(corpus, j[2]).exists()]
    if todo:
        if processes > 1:
            with ProcessPoolExecutor(processes) as ex:
                list(ex.map(render_one, todo, chunksize=8))
        else:
            for j in todo:
                render_one(j)
    return [cache_path(corpus, j[2]) for j in jobs]


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m training.data.render [emopia|vgmidi ...]``: render and cache the MIDI corpora."""
    import csv
    import sys

    argv = list(sys.argv[1:] if argv is None else argv) or ["midi_emopia", "midi_vgmidi"]
    for corpus in argv:
        corpus = corpus if corpus.startswith("midi_") else f"midi_{corpus}"
        with open(data_root() / corpus / "manifest.csv", newline="") as fh:
            rels = [r["path"] for r in csv.DictReader(fh)]
        paths = render_corpus(corpus, rels)
        print(f"{corpus}: {len(paths)} clips rendered under {paths[0].parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
