"""Training and evaluation windows built on the fly: target source + the other source.

Every window is made with a seeded ``numpy.random.Generator`` from clips that are
already R128-normalised to -23 LUFS (:func:`training.data.corpora.load_audio`), so a
gain of ``-SMR`` dB on the other source gives the speech-to-music ratio.

Speech model (3 s windows): a speech clip at a random offset; music from the same
split at SMR ~ U[-5, +20] dB on 80 % of windows (20 % clean); overall gain
U[-25, +5] dB; white noise at U[-80, -50] dBFS.  15 % of windows hold no speech
(music only or near-silence): activity target 0, quadrant/VA losses masked.

Music model (10 s windows): a random 10 s of a music clip; on ~50 % of windows
speech clips in seed 001's 4.5 s slots (random phase) at SMR ~ U[-10, +10] dB;
same gain/noise; 15 % without music (speech only or near-silence).

Augmentation: on half of the windows the target clip is speed-perturbed by a
factor U[0.9, 1.1] (pitch and tempo together); the training loop adds
SpecAugment-style time/frequency masks on the features (:func:`training.loop.spec_augment`).

Targets: quadrant index (-1 = masked: neutral or no target source), VA signs of
the quadrant (``taxonomy.va_target``; neutral -> origin) with a mask, and
activity = fraction of the window's 10 ms frames in which the placed target clip
is active (frame RMS above -40 dB re its loudest frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from streamer.features import DEFAULT_PARAMS

from .corpora import FRAME, SR, Clip


@dataclass(frozen=True)
class MixConfig:
    """Window recipe of one model."""

    source: str            # "speech" or "music"
    window_s: float
    hop_s: float
    p_clean: float         # windows without the other source
    smr_lo: float
    smr_hi: float
    p_empty: float = 0.15  # windows without the target source
    gain_lo: float = -25.0
    gain_hi: float = 5.0
    noise_lo: float = -80.0
    noise_hi: float = -50.0
    slot_s: float = 4.5    # speech slots in music windows (seed 001)
    p_speed: float = 0.5   # target clips speed-perturbed by U[0.9, 1.1]

    @property
    def n_samples(self) -> int:
        return int(round(self.window_s * SR))

    @property
    def n_frames(self) -> int:
        return DEFAULT_PARAMS.n_frames(self.n_samples)


SPEECH = MixConfig("speech", 3.0, 1.0, p_clean=0.2, smr_lo=-5.0, smr_hi=20.0)
MUSIC = MixConfig("music", 10.0, 2.0, p_clean=0.5, smr_lo=-10.0, smr_hi=10.0, p_speed=0.3)
CONFIGS = {"speech": SPEECH, "music": MUSIC}


def db(x: float) -> float:
    """dB -> linear amplitude factor."""
    return float(10.0 ** (x / 20.0))


def speed_perturb(rng: np.random.Generator, audio: np.ndarray, active: np.ndarray,
                  lo: float = 0.9, hi: float = 1.1) -> tuple[np.ndarray, np.ndarray]:
    """Resample by a random factor in [lo, hi] (linear interpolation: pitch and tempo change
    together, as a tape speed change); the activity frames are resampled alike."""
    f = rng.uniform(lo, hi)
    n = max(FRAME, int(audio.size / f))
    y = np.interp(np.arange(n) * f, np.arange(audio.size), audio).astype(np.float32)
    a = active[np.minimum((np.arange(n // FRAME) * f).astype(int), active.size - 1)] if active.size \
        else np.zeros(n // FRAME, dtype=bool)
    return y, a


def place(rng: np.random.Generator, clip: Clip, n: int, p_speed: float = 0.0
          ) -> tuple[np.ndarray, np.ndarray]:
    """``clip`` placed in a window of ``n`` samples: random offset if shorter,
    random crop if longer; with probability ``p_speed`` speed-perturbed first.
    Returns (audio [n], active per 10 ms frame [n // FRAME])."""
    out = np.zeros(n, dtype=np.float32)
    act = np.zeros(n // FRAME, dtype=bool)
    audio, active = clip.audio, clip.active
    if p_speed > 0 and rng.random() < p_speed:
        # crop first (long music clips) so that resampling stays cheap
        if audio.size > 2 * n:
            s = int(rng.integers(0, audio.size - 2 * n + 1)) // FRAME * FRAME
            audio, active = audio[s:s + 2 * n], active[s // FRAME:(s + 2 * n) // FRAME]
        audio, active = speed_perturb(rng, audio, active)
    L = audio.size
    if L <= n:
        off = int(rng.integers(0, n - L + 1)) // FRAME * FRAME
        out[off:off + L] = audio
        a = active[: (n - off) // FRAME]
        act[off // FRAME: off // FRAME + a.size] = a
    else:
        start = int(rng.integers(0, L - n + 1)) // FRAME * FRAME
        out[:] = audio[start:start + n]
        a = active[start // FRAME: start // FRAME + n // FRAME]
        act[: a.size] = a
    return out, act


def speech_slots(rng: np.random.Generator, speech: Sequence[Clip], n: int, slot_s: float,
                 phase: Optional[float] = None) -> tuple[np.ndarray, np.ndarray]:
    """Speech clips placed one per ``slot_s`` slot (seed 001), slot grid at a random phase."""
    out = np.zeros(n, dtype=np.float32)
    act = np.zeros(n // FRAME, dtype=bool)
    slot = int(slot_s * SR)
    ph = int(rng.integers(0, slot)) if phase is None else int(phase * SR)
    start = ph - slot
    while start < n:
        c = speech[int(rng.integers(len(speech)))]
        s0 = start + int(rng.integers(0, max(1, slot - c.audio.size)))
        s0 = s0 // FRAME * FRAME
        a, b = max(0, s0), min(n, s0 + c.audio.size, start + slot)
        if b > a:
            out[a:b] += c.audio[a - s0:b - s0]
            ca = c.active[(a - s0) // FRAME:(b - s0) // FRAME]
            act[a // FRAME:a // FRAME + ca.size] |= ca
        start += slot
    return out, act


def finish(rng: np.random.Generator, x: np.ndarray, cfg: MixConfig) -> np.ndarray:
    """Overall random gain and a little white noise."""
    x = x * db(rng.uniform(cfg.gain_lo, cfg.gain_hi))
    x = x + rng.standard_normal(x.size).astype(np.float32) * db(rng.uniform(cfg.noise_lo, cfg.noise_hi))
    return x.astype(np.float32)


def make_window(rng: np.random.Generator, mc: MixConfig, mode: str, targets: Sequence[Clip], others: Sequence[Clip],
                target_p: Optional[np.ndarray] = None):
    """One training window: (audio, the target clip or None when the window has no target source,
    activity).  ``mode`` "clean": never the other source over a target clip; ``targets`` are clips
    of the model's source drawn with probabilities ``target_p``, ``others`` of the other source
    (same split)."""
    n = mc.n_samples
    if rng.random() < mc.p_empty:
        if mode == "mixed" and others and rng.random() < 0.7:
            if mc.source == "speech":
                o, _ = place(rng, others[int(rng.integers(len(others)))], n)
            else:
                o, _ = speech_slots(rng, others, n, mc.slot_s)
            x = o * db(rng.uniform(-10, 5))
        else:
            x = np.zeros(n, dtype=np.float32)
        return finish(rng, x, mc), None, 0.0
    c = targets[int(rng.choice(len(targets), p=target_p))]
    x, act = place(rng, c, n, mc.p_speed)
    if mode == "mixed" and others and rng.random() >= mc.p_clean:
        smr = rng.uniform(mc.smr_lo, mc.smr_hi)
        if mc.source == "speech":
            o, _ = place(rng, others[int(rng.integers(len(others)))], n)
            x = x + o * db(-smr)
        else:
            o, _ = speech_slots(rng, others, n, mc.slot_s)
            x = x + o * db(smr)
    return finish(rng, x, mc), c, float(act.mean())


_SEPARATION: dict = {"name": "none", "model": None, "sep": None}


def use_separator(name: str, model_path: Optional[str] = None) -> None:
    """Train and evaluate on this separator's stem instead of the mix (``none``: the mix).

    Set before worker processes are forked; each process builds its own separator
    lazily.  The streaming pipeline then has to run the same separator (the model
    card says which)."""
    _SEPARATION.update(name=name, model=model_path, sep=None)


def model_input(x: np.ndarray, source: str) -> np.ndarray:
    """What the model of ``source`` hears of the audio ``x``: the mix, or its separated stem."""
    if _SEPARATION["name"] == "none":
        return x
    from streamer.separation import make_separator, separate

    if _SEPARATION["sep"] is None:
        kw = {"model_path": _SEPARATION["model"], "threads": 1} if _SEPARATION["name"] == "builtin" else {}
        _SEPARATION["sep"] = make_separator(_SEPARATION["name"], **kw)
    return separate(x, _SEPARATION["sep"])[source]


def mix_eval(rng: np.random.Generator, cfg: MixConfig, clip: Clip, others: Sequence[Clip],
             smr_db: float = 0.0) -> np.ndarray:
    """Evaluation mixture of one whole clip at ``smr_db`` (0 dB: equal R128 loudness).

    Speech model: the clip (padded, centred, to at least one window) + a random
    segment of one music clip of the same length.  Music model: speech clips in
    every 4.5 s slot of the music clip (seed 001's protocol).
    """
    x = clip.audio
    if x.size < cfg.n_samples:
        pad = cfg.n_samples - x.size
        x = np.pad(x, (pad // 2, pad - pad // 2))
    if cfg.source == "speech":
        o = others[int(rng.integers(len(others)))].audio
        if o.size < x.size:
            o = np.tile(o, x.size // o.size + 1)
        s = int(rng.integers(0, o.size - x.size + 1))
        return (x + o[s:s + x.size] * db(-smr_db)).astype(np.float32)
    o, _ = speech_slots(rng, others, x.size, cfg.slot_s, phase=0.0)
    return (x + o * db(smr_db)).astype(np.float32)
