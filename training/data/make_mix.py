"""Build a held-out "TV programme": held-out speakers talking over held-out songs.

``python -m training.data.make_mix --out examples/heldout_mix.ogg --seconds 60``

Songs: 4Q clips of TEST artists (``corpora.split_4q_artists``) played back to
back.  Speech: RAVDESS clips of TEST actors 19-24 (speaker-independent),
placed in seed 001's 4.5 s slots over the music; every third slot is left
empty so the programme has music-only passages.  Both are R128-normalised
(-23 LUFS) and mixed at speech-to-music ratio ``--smr`` dB (default +5: TV
dialogue sits above its music).  A ``.truth.json`` beside the output lists
every speech clip and song with its time span and label, so a replay of the
file can be scored against it.

``--music emopia`` plays instrumental music instead (EMOPIA piano pieces of the
official test split, rendered from MIDI: :mod:`training.render`), and
``--music-gap S`` leaves S seconds without music after every piece, so the
programme also has speech-only passages (``training.experiments.track_eval`` scores
presence detection on both).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from streamer.features import loudness_normalise

from . import corpora

SR = corpora.SR


def _runs(active: np.ndarray, offset: int, n: int) -> list[list[float]]:
    """Spans ``[t0, t1]`` (s, programme time) of the active 10 ms frames (corpora.activity_mask: RMS
    above -40 dB re the clip's loudest frame) of the first ``n`` samples of a clip placed at ``offset``."""
    a = np.asarray(active[: n // corpora.FRAME], bool)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], a.astype(np.int8), [0]])))
    return [[round((offset + i * corpora.FRAME) / SR, 2), round((offset + j * corpora.FRAME) / SR, 2)]
            for i, j in zip(edges[::2], edges[1::2])]


def emovo_clips() -> list[corpora.Clip]:
    """EMOVO (Italian, 6 actors) as training speech of programmes (no split of its own: it is not one
    of the emotion models' corpora, and no held-out programme has it)."""
    from streamer import taxonomy

    return [corpora.Clip("emovo", r["path"], r["emotion"], taxonomy.label_quadrant(r["emotion"]), r["speaker"], "train")
            for r in corpora.read_manifest("speech_emovo")]


def build(seconds: float, smr_db: float, seed: int, music_corpus: str = "4q",
          music_gap_s: float = 0.0, split: str = "test", more_speech: bool = False,
          speech_corpus: str = "ravdess") -> tuple[np.ndarray, dict]:
    """``split``: whose speakers and music (``test``: held out, the default; ``train`` / ``val``: for
    training and selecting models on programmes, e.g. :mod:`training.presence`; ``train`` speech adds
    TESS to RAVDESS actors 1-16).  ``more_speech`` (``train`` only): EMOVO's actors too, and each slot
    draws its corpus first (RAVDESS, TESS, EMOVO equally often: TESS's 2 speakers would otherwise say
    most of the clips).  ``speech_corpus="emovo"``: EMOVO's 6 actors say every clip whatever ``split``
    says (``split`` then picks the music only): speakers, language and corpus the emotion models have
    never heard, for choosing settings downstream of them (the tracker: docs/TRACKING.md) on speakers
    other than the 2 validation actors."""
    rng = np.random.default_rng(seed)
    music_rows = [c for c in corpora.music_index() if c.corpus == music_corpus and c.split == split]
    if not music_rows:
        raise SystemExit(f"no {split}-split music of corpus {music_corpus!r}")
    if speech_corpus not in ("ravdess", "emovo"):
        raise SystemExit(f"speech corpus {speech_corpus!r}: ravdess or emovo")
    if speech_corpus == "emovo":
        if more_speech:
            raise SystemExit("more_speech is for RAVDESS training programmes only")
        speech_rows = emovo_clips()
    else:
        speech_rows = [c for c in corpora.speech_index() if c.corpus in ("ravdess", "tess") and c.split == split]
    if more_speech:
        if split != "train":
            raise SystemExit("more_speech is for training programmes only")
        speech_rows += emovo_clips()
    n = int(seconds * SR)
    music = np.zeros(n, np.float32)
    truth = {"songs": [], "speech": [], "smr_db": smr_db, "seed": seed,
             "protocol": (f"4Q {split} artists (split_4q_artists)" if music_corpus == "4q" else
                          f"{music_corpus} official {split} split (rendered MIDI)")
             + (" x EMOVO speakers" if speech_corpus == "emovo" else f" x {split} speakers"),
             "split": split,
             "music_corpus": music_corpus, "music_gap_s": music_gap_s}
    pos = 0
    for i in rng.permutation(len(music_rows)):
        if pos >= n:
            break
        clip = corpora.load_audio([music_rows[i]], use_cache=False)[0]
        seg = clip.audio[: n - pos]
        music[pos:pos + seg.size] = seg
        truth["songs"].append({"path": f"{corpora._FOLDER[clip.corpus]}/{clip.path}", "artist": clip.group,
                               "quadrant": clip.quadrant, "t_start": pos / SR, "t_end": (pos + seg.size) / SR,
                               "active": _runs(clip.active, pos, seg.size)})
        pos += seg.size + int(music_gap_s * SR)
    speech = np.zeros(n, np.float32)
    slot = int(4.5 * SR)
    order = rng.permutation(len(speech_rows))
    if more_speech:   # the clips of each corpus in the permuted order; a corpus drawn per slot
        names = sorted({c.corpus for c in speech_rows})
        queues = {nm: [i for i in order if speech_rows[i].corpus == nm] for nm in names}
        drawn = {nm: 0 for nm in names}
    k = 0
    for j, start in enumerate(range(0, n - slot + 1, slot)):
        if j % 3 == 2:
            continue  # music-only passage
        if more_speech:
            nm = names[int(rng.integers(len(names)))]
            row = speech_rows[queues[nm][drawn[nm] % len(queues[nm])]]
            drawn[nm] += 1
        else:
            row = speech_rows[order[k % len(order)]]
        clip = corpora.load_audio([row], use_cache=False)[0]
        k += 1
        x = clip.audio[:slot]
        off = start + (slot - x.size) // 2
        speech[off:off + x.size] = x
        truth["speech"].append({"path": f"{corpora._FOLDER[clip.corpus]}/{clip.path}", "speaker": clip.group,
                                "emotion": clip.label, "quadrant": clip.quadrant,
                                "t_start": off / SR, "t_end": (off + x.size) / SR,
                                "active": _runs(clip.active, off, x.size)})
    mix = speech * np.float32(10 ** (smr_db / 40)) + music * np.float32(10 ** (-smr_db / 40))
    mix = loudness_normalise(mix)
    peak = float(np.max(np.abs(mix))) or 1.0
    if peak > 0.99:
        mix *= np.float32(0.99 / peak)
    return mix, truth


def write(mix: np.ndarray, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix in (".wav", ".flac"):
        import soundfile as sf

        sf.write(out, mix, SR)
        return
    # Ogg Opus through ffmpeg: small enough to ship, readable by libsndfile.
    proc = subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "f32le", "-ar", str(SR), "-ac", "1",
                           "-i", "pipe:0", "-c:a", "libopus", "-b:a", "48k", str(out)],
                          input=mix.astype("<f4").tobytes(), capture_output=True)
    if proc.returncode != 0:
        raise SystemExit(f"ffmpeg failed: {proc.stderr.decode(errors='replace').strip()}")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.data.make_mix", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help=".ogg (Opus), .flac or .wav")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--smr", type=float, default=5.0, help="speech-to-music ratio in dB (default 5)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--music", choices=("4q", "emopia"), default="4q",
                    help="4q: sung popular music (default); emopia: instrumental piano rendered from MIDI")
    ap.add_argument("--music-gap", type=float, default=0.0, metavar="S",
                    help="seconds without music after each piece (default 0: music throughout)")
    ap.add_argument("--split", choices=("test", "val", "train"), default="test",
                    help="whose speakers and music: test (held out, default), val or train")
    ap.add_argument("--speech", choices=("ravdess", "emovo"), default="ravdess",
                    help="ravdess: RAVDESS (+ TESS in train) speakers of --split (default); emovo: EMOVO's 6 "
                         "Italian actors, never heard by the emotion models (--split then picks the music)")
    a = ap.parse_args(argv)
    mix, truth = build(a.seconds, a.smr, a.seed, a.music, a.music_gap, a.split, speech_corpus=a.speech)
    write(mix, a.out)
    Path(str(a.out) + ".truth.json").write_text(json.dumps(truth, indent=1))
    print(f"{a.out}: {mix.size / SR:.1f} s, {len(truth['songs'])} songs, {len(truth['speech'])} speech clips",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
