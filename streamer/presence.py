"""The speech/music presence detector: which sources are present, every 0.25 s, from log-mel statistics.

The built-in separator's presence heads call singing speech (speech detection over sung music
0.55 on held-out programmes, docs/TRACKING.md); this detector is trained to tell them apart
(:mod:`training.presence`) and is the default ``activity`` source (``--activity detector``).

Features, defined here once for training and streaming (``PRESENCE_VERSION``): the mix's
un-normalised log-mel frames (:func:`streamer.features.frame_log_mel`, 64 bands every 10 ms),
floored at ``FLOOR_DB``; a *step* every ``STEP`` frames (0.25 s), step ``j`` centred on frame
``j * STEP`` (stream sample ``j * STEP * hop + win / 2``) and described by the ``CONTEXT``
frames (1 s) around it (frames before the stream starts are silence):

* per band: mean level relative to the loudest frame of the context, standard deviation over
  time, mean absolute frame-to-frame difference (spectral flux) (3 x 64);
* modulation spectrum: the level of 8 groups of 8 bands, its energy at 1-2, 3-5, 6-9 and 10-16 Hz
  as a share (log) of its total modulation energy (syllables sit at 3-5 Hz; sung notes are held
  longer) (8 x 4);
* frame level: mean, maximum and standard deviation of the frame level (mean of the bands),
  share of frames 10 and 20 dB under the loudest (pauses between words) (5);
* spectral stability: mean correlation of the relative spectrum of the bands 4-44 (about 100 Hz to
  2.5 kHz, where voices' harmonics lie) between frames 1, 5 and 20 frames apart (held sung notes
  keep their harmonics, speech glides and stops) (3);
* the voice (:func:`voice_features`, version 2): the shape of the bands 2-28 (the low harmonics of
  a voice) compared 1, 5, 10 and 30 frames apart and the share of frames it is held (similarity
  above 0.99 at 10 ms, 0.95 and 0.85 at 50 ms); the spectral centroid and tilt, their spread and
  how fast they move; syllable-like peaks of the level envelope; how often the loudest low band
  stays put 30 ms later (15).

The model (``engines/models/presence.onnx``, card beside it) maps the ``presence_features``
[N, D] of N steps (:func:`model_input`: the features of the steps ``j - STACK .. j + STACK`` side
by side and the mean of the summary features over the ``PAST`` steps before, 3 s: causal) to
``presence`` [N, 2]: P(speech present), P(music present).

:class:`PresenceDetector` computes steps on the stream as their context arrives, whatever the
block sizes (the same values live and replayed, tested), with latency ``CONTEXT / 2`` frames
after a step's centre; it has a separator's ``process / flush / activity / close`` so that it
runs beside the mix as :class:`streamer.separation.NoneSeparator`'s ``presence``.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from . import dsp
from .errors import ModelError
from .features import DEFAULT_PARAMS, FeatureParams, frame_log_mel

PRESENCE_VERSION = 2   # 2: voice_features appended, past context in the model input
STEP = 25            # frames between steps (0.25 s)
CONTEXT = 100        # frames described per step (1 s), centred on the step
FLOOR_DB = -100.0    # log-mel floor (dB) of the features
GROUPS = 8           # band groups of the modulation spectrum
MOD_BANDS = ((1, 3), (3, 6), (6, 10), (10, 17))   # modulation frequency bins (1 Hz each over 1 s)
STABLE_BANDS = (4, 44)
STABLE_LAGS = (1, 5, 20)
STACK = 2           # the model reads the features of the steps j-STACK .. j+STACK (2.25 s in all)
PAST = 12           # and the mean over the steps j-PAST .. j-1 (the 3 s before) of the summary features
VOICE_BANDS = (2, 28)          # mel bands of a voice's low harmonics (about 90-700 Hz)
VOICE_LAGS = (1, 5, 10, 30)    # frames between the voice-band shapes compared
VOICE_HELD = ((1, 0.99), (5, 0.95), (5, 0.85))   # (lag, similarity): share of the frames whose shape is held
PEAK_LAG = 3        # frames between the loudest low bands compared
STEMS = ("speech", "music")


def feature_names(n_mels: int = DEFAULT_PARAMS.n_mels) -> list[str]:
    names = [f"rel_mean_{b}" for b in range(n_mels)] + [f"std_{b}" for b in range(n_mels)]
    names += [f"flux_{b}" for b in range(n_mels)]
    names += [f"mod_{g}_{lo}-{hi - 1}Hz" for g in range(GROUPS) for lo, hi in MOD_BANDS]
    names += ["level_mean", "level_max", "level_std", "pause10", "pause20"]
    names += [f"stability_lag{k}" for k in STABLE_LAGS]
    return names + voice_feature_names()


@functools.lru_cache(maxsize=None)
def n_features(n_mels: int = DEFAULT_PARAMS.n_mels) -> int:
    return len(feature_names(n_mels))


def run_features(frames: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Features [S, D] of the contexts ``frames[s:s + CONTEXT]`` for ``s`` in ``starts``, from a run of
    floored log-mel frames [F, n_mels].  Everything that is a mean over a context comes from running
    sums over the run, so the frames shared by overlapping contexts are visited once."""
    x = np.asarray(frames, np.float32)
    c, (f, m) = CONTEXT, x.shape
    s = np.asarray(starts, np.int64)

    a, b = STABLE_BANDS   # the relative spectrum's shape (the context's top cancels out)
    v = x[:, a:b] - x[:, a:b].mean(axis=1, keepdims=True)
    v = v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-3)   # a flat spectrum (< 1e-3 dB) has no shape
    # one running sum over the run of every per-frame quantity averaged over a context
    per = np.zeros((f, 3 * m + len(STABLE_LAGS)), np.float64)
    per[:, :m] = x
    per[:, m:2 * m] = np.square(x, dtype=np.float64)
    per[:-1, 2 * m:3 * m] = np.abs(np.diff(x, axis=0))
    for i, k in enumerate(STABLE_LAGS):
        per[:-k, 3 * m + i] = (v[k:] * v[:-k]).sum(axis=1)
    cs = np.concatenate([np.zeros((1, per.shape[1])), np.cumsum(per, axis=0)])

    def window_mean(cols: slice, length: int) -> np.ndarray:   # mean over frames [s, s + length)
        return (cs[s + length, cols] - cs[s, cols]) / length

    mean = window_mean(slice(0, m), c)
    std = np.sqrt(np.maximum(window_mean(slice(m, 2 * m), c) - mean ** 2, 0.0))
    flux = window_mean(slice(2 * m, 3 * m), c - 1)
    level = x.mean(axis=1)                                              # [F]
    lw = np.lib.stride_tricks.sliding_window_view(level, c)[s]         # [S, C]
    top = lw.max(axis=1)
    out = [mean - top[:, None], std, flux]
    groups = x.reshape(f, GROUPS, m // GROUPS).mean(axis=2)            # [F, G]
    g = np.lib.stride_tricks.sliding_window_view(groups, c, axis=0)[s]  # [S, G, C]
    g = (g - g.mean(axis=2, keepdims=True)) * dsp.hann(c)
    spec = np.abs(np.fft.rfft(g, axis=2)) ** 2                          # [S, G, C/2+1]
    total = spec[:, :, 1:].sum(axis=2) + 1e-6
    out.append(np.stack([np.log(spec[:, :, lo:hi].sum(axis=2) / total + 1e-6) for lo, hi in MOD_BANDS],
                        axis=2).reshape(s.size, -1))
    rl = lw - top[:, None]
    out.append(np.stack([lw.mean(axis=1), top, lw.std(axis=1), (rl < -10).mean(axis=1), (rl < -20).mean(axis=1)],
                        axis=1))
    out.append(np.stack([window_mean(slice(3 * m + i, 3 * m + i + 1), c - k)[:, 0]
                         for i, k in enumerate(STABLE_LAGS)], axis=1))
    return np.concatenate(out, axis=1).astype(np.float32)


def voice_feature_names() -> list[str]:
    names = [f"voice_sim_lag{k}" for k in VOICE_LAGS] + [f"voice_held_lag{k}_{t}" for k, t in VOICE_HELD]
    return names + ["centroid_mean", "centroid_std", "centroid_flux", "tilt_mean", "tilt_std", "tilt_flux5",
                    "envelope_peaks", "peak_band_held"]


def voice_features(frames: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """What tells a talking voice from a singing one, per context ``frames[s:s + CONTEXT]`` (as
    :func:`run_features`; every quantity stays inside the context): how long the shape of the
    voice's low harmonics is held (mean similarity at 10-300 ms and the share of frames held: sung
    notes are held, spoken syllables glide), the spectral centroid and tilt and how they move
    (fricatives, consonant-vowel changes), syllable-like peaks of the level envelope, and how often
    the loudest low band stays put."""
    x = np.asarray(frames, np.float32)
    c, (f, m) = CONTEXT, x.shape
    s = np.asarray(starts, np.int64)
    a, b = VOICE_BANDS
    v = x[:, a:b] - x[:, a:b].mean(axis=1, keepdims=True)
    v = v / (np.sqrt(np.einsum("fb,fb->f", v, v))[:, None] + 1e-3)
    lags = np.array(VOICE_LAGS + tuple(k for k, _ in VOICE_HELD) + (0, 0, 1, 0, 0, 5, PEAK_LAG))
    # per frame f, each quantity of the frames f and f + lag; its mean over the frames of a context
    # with f + lag inside it
    per = np.zeros((f, lags.size), np.float64)
    sims = {k: np.einsum("fb,fb->f", v[k:], v[:-k]) for k in sorted(set(VOICE_LAGS) | {k for k, _ in VOICE_HELD})}
    for i, k in enumerate(VOICE_LAGS):
        per[:f - k, i] = sims[k]
    for i, (k, t) in enumerate(VOICE_HELD, len(VOICE_LAGS)):
        per[:f - k, i] = sims[k] > t
    i = len(VOICE_LAGS) + len(VOICE_HELD)
    w = np.maximum(x - x.max(axis=1, keepdims=True) + 40.0, 0.0)    # the bands within 40 dB of the frame's top
    cen = (w @ np.arange(m, dtype=np.float32)) / (w.sum(axis=1) + 1e-6)
    tilt = x[:, 40:].mean(axis=1) - x[:, 4:24].mean(axis=1)
    pb = np.argmax(x[:, 4:32], axis=1)
    per[:, i], per[:, i + 1], per[:-1, i + 2] = cen, np.square(cen, dtype=np.float64), np.abs(np.diff(cen))
    per[:, i + 3], per[:, i + 4], per[:-5, i + 5] = tilt, np.square(tilt, dtype=np.float64), np.abs(tilt[5:] - tilt[:-5])
    per[:-PEAK_LAG, i + 6] = pb[PEAK_LAG:] == pb[:-PEAK_LAG]
    cs = np.concatenate([np.zeros((1, lags.size)), np.cumsum(per, axis=0)])
    means = (cs[s[:, None] + c - lags, np.arange(lags.size)] - cs[s]) / (c - lags)      # [S, quantities]
    cm, c2, cd, tm, t2, td, held = means[:, i:].T
    # syllable-like peaks of the level envelope inside the context: its 5-frame mean highest within
    # +-70 ms and 6 dB above its lowest within +-120 ms (each decided once per frame of the run, from
    # that frame's neighbours only; a context counts the peaks whose neighbours are all inside it)
    e = np.lib.stride_tricks.sliding_window_view(x[:, 4:40].mean(axis=1), 5).mean(axis=1)   # [F-4]
    win = np.lib.stride_tricks.sliding_window_view(e, 25)                                  # [F-28, 25]
    pk = (win[:, 12] >= win[:, 5:20].max(axis=1)) & (win[:, 12] - win.min(axis=1) > 6.0)
    cp = np.concatenate([[0], np.cumsum(pk)])
    peaks = cp[s + c - 28] - cp[s]
    out = np.column_stack([means[:, :i], cm, np.sqrt(np.maximum(c2 - cm ** 2, 0.0)), cd, tm,
                           np.sqrt(np.maximum(t2 - tm ** 2, 0.0)), td, peaks, held])
    return out.astype(np.float32)


def step_features(frames: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """All features of a step [S, n_features()]: :func:`run_features` then :func:`voice_features`."""
    return np.concatenate([run_features(frames, starts), voice_features(frames, starts)], axis=1)


def step_centre(j, params: FeatureParams = DEFAULT_PARAMS):
    """Stream sample at the centre of step ``j`` (its centre frame's centre)."""
    return np.asarray(j) * STEP * params.hop_length + params.win_length // 2


class StepFeatures:
    """The steps of a stream and their features, computed as its log-mel frames arrive: from the
    samples (:meth:`push`) or from frames computed elsewhere (:meth:`push_frames`: the pipeline's
    frame cache).  Frame ``k`` covers samples ``[k*hop, k*hop + win)`` and exists once they have all
    arrived; frames after the stream's last complete one are silence."""

    def __init__(self, params: FeatureParams = DEFAULT_PARAMS):
        self.p = params
        self.reset()

    def reset(self) -> None:
        half = CONTEXT // 2
        self._buf = np.zeros(0, np.float32)   # samples from self._buf0 on
        self._buf0 = 0
        self.n_in = 0                         # samples of the stream so far
        # log-mel frames from frame index self._f0 (silent frames before the stream)
        self._frames = np.full((half, self.p.n_mels), FLOOR_DB, np.float32)
        self._f0 = -half
        self._steps = 0                       # steps computed so far

    @property
    def latency_samples(self) -> int:
        """Samples after a step's centre that must have arrived before it is computed."""
        p = self.p
        return (CONTEXT // 2 - 1) * p.hop_length + p.win_length - p.win_length // 2

    @property
    def frames_done(self) -> int:
        """Frames received so far (the next frame index)."""
        return self._f0 + self._frames.shape[0]

    def push(self, block: np.ndarray) -> np.ndarray:
        """Add samples; returns the features [S, D] of the steps completed (in order)."""
        p = self.p
        block = np.asarray(block, np.float32).reshape(-1)
        self.n_in += block.size
        self._buf = np.concatenate([self._buf, block])
        done = self.frames_done
        avail = (self._buf0 + self._buf.size - p.win_length) // p.hop_length + 1 - done
        if avail <= 0:
            return self._ready(limit=None)
        start = done * p.hop_length - self._buf0
        fr = dsp.frames(self._buf[start:start + (avail - 1) * p.hop_length + p.win_length], p.win_length,
                        p.hop_length)
        self._buf = self._buf[start + avail * p.hop_length:]
        self._buf0 += start + avail * p.hop_length
        return self.push_frames(frame_log_mel(fr, p))

    def push_frames(self, lm: np.ndarray) -> np.ndarray:
        """Add the stream's next log-mel frames (:func:`streamer.features.frame_log_mel`); returns the
        features of the steps completed."""
        if lm.shape[0]:
            self._frames = np.concatenate([self._frames, np.maximum(lm, np.float32(FLOOR_DB))])
        return self._ready(limit=None)

    def flush(self, n_samples: Optional[int] = None) -> np.ndarray:
        """Features of the remaining steps centred inside the stream of ``n_samples`` (default: the
        samples pushed), with silent frames after its last complete one."""
        p = self.p
        n = self.n_in if n_samples is None else int(n_samples)
        last = (n - p.win_length // 2 - 1) // (STEP * p.hop_length) if n > p.win_length // 2 else -1
        need = last * STEP + CONTEXT // 2 - self.frames_done
        if need > 0:
            self._frames = np.concatenate([self._frames, np.full((need, p.n_mels), FLOOR_DB, np.float32)])
        return self._ready(limit=last + 1)

    @property
    def steps(self) -> int:
        return self._steps

    def _ready(self, limit: Optional[int]) -> np.ndarray:
        half = CONTEXT // 2
        have = self.frames_done
        n = (have - half) // STEP + 1 - self._steps if have >= half else 0
        if limit is not None:
            n = min(n, limit - self._steps)
        if n <= 0:
            return np.zeros((0, n_features(self.p.n_mels)), np.float32)
        idx = (self._steps + np.arange(n)) * STEP - half - self._f0
        feats = step_features(self._frames[:idx[-1] + CONTEXT], idx)
        self._steps += n
        keep = self._steps * STEP - half - self._f0           # frames no later step needs
        if keep > 0:
            self._frames = self._frames[keep:]
            self._f0 += keep
        return feats


def stack_steps(feats: np.ndarray, first: int = 0, last: Optional[int] = None) -> np.ndarray:
    """Model input of steps ``first .. last - 1`` of a run of step features [S, D]: the features of
    steps ``j - STACK .. j + STACK`` side by side [., (2 STACK + 1) D], steps outside the run replaced by
    its first / last one (as at the start and end of a stream)."""
    n = feats.shape[0]
    last = n if last is None else last
    j = np.arange(first, last)
    return np.concatenate([feats[np.clip(j + d, 0, n - 1)] for d in range(-STACK, STACK + 1)], axis=1)


def past_columns(n_mels: int = DEFAULT_PARAMS.n_mels) -> np.ndarray:
    """Indices of the summary features (all but the per-band ones) averaged over the past steps."""
    return np.arange(3 * n_mels, n_features(n_mels))


def model_input(feats: np.ndarray, first: int = 0, last: Optional[int] = None) -> np.ndarray:
    """Model input of steps ``first .. last - 1`` of a run of step features [S, D]: :func:`stack_steps`,
    then the mean of the summary features (:func:`past_columns`) over the steps ``j - PAST .. j - 1``
    (causal; steps before the run are its first one, as at the start of a stream)."""
    n = feats.shape[0]
    last = n if last is None else last
    j = np.arange(first, last)
    idx = np.clip(j[:, None] - np.arange(1, PAST + 1), 0, n - 1)           # [N, PAST]
    past = feats[:, past_columns()][idx].mean(axis=1)
    return np.concatenate([stack_steps(feats, first, last), past.astype(np.float32)], axis=1)


def input_names() -> list[str]:
    names = feature_names()
    return ([f"{n}@{d:+d}" for d in range(-STACK, STACK + 1) for n in names]
            + [f"{names[i]}@past{PAST}" for i in past_columns()])


def features_of(x: np.ndarray, params: FeatureParams = DEFAULT_PARAMS) -> tuple[np.ndarray, np.ndarray]:
    """(step centres in samples [S], features [S, D]) of a whole signal: the stream's values."""
    sf = StepFeatures(params)
    a = sf.push(x)
    b = sf.flush()
    feats = np.concatenate([a, b])
    return step_centre(np.arange(feats.shape[0]), params), feats



def default_model_path() -> Path:
    from engines.cards import MODELS_DIR

    return MODELS_DIR / "presence.onnx"


class PresenceDetector:
    """Per-step speech / music presence of the stream (the model of :mod:`training.presence`), with a
    separator's interface: :meth:`process` blocks, :meth:`activity` of a span, :meth:`flush`, :meth:`close`."""

    name = "presence"
    identity = False
    #: process, activity, flush may be called from different threads (one lock): a replay feeds it on
    #: the separator's thread (:class:`streamer.separation.Ahead`) while windows ask for activity
    thread_safe = True

    def __init__(self, model_path: Optional[str | Path] = None, backend: str = "onnxruntime",
                 threads: Optional[int] = None, history_s: float = 120.0):
        from engines.backends import select_backend
        from engines.cards import read_card

        path = Path(model_path) if model_path else default_model_path()
        try:
            self.card = read_card(path)
        except ModelError as exc:
            raise ModelError(f"presence detector: {exc}; train one with `python -m training.presence` "
                             "or use --activity separator") from None
        got = (self.card.get("input_versions") or {}).get("presence_features")
        if got != PRESENCE_VERSION or self.card.get("features") != DEFAULT_PARAMS.to_dict():
            raise ModelError(f"presence detector {path.name} was trained on other features (presence_features "
                             f"version {got}, this emotrack computes {PRESENCE_VERSION}); retrain it with "
                             "`python -m training.presence`")
        self.backend = select_backend(backend, path, threads=threads)
        self.id = self.card.get("id", path.stem)
        self.feats = StepFeatures(DEFAULT_PARAMS)
        self.latency_samples = self.feats.latency_samples + STACK * STEP * DEFAULT_PARAMS.hop_length
        self._history = int(history_s * 4)
        self._mel = None
        self._lock = threading.RLock()
        self.reset()

    #: samples :meth:`process` holds before computing their frames and steps (else they wait until
    #: :meth:`activity` asks): steps computed many at a time cost far less than a few per block
    HOLD_SAMPLES = 8 * DEFAULT_PARAMS.sample_rate

    def reset(self) -> None:
        self.feats.reset()
        self._held: list[np.ndarray] = []   # samples given to process, not yet framed
        self._n_held = 0
        self._probs = np.zeros((0, 2), np.float32)
        self._p0 = 0      # step index of self._probs[0]
        self._f = np.zeros((0, n_features()), np.float32)   # step features from step self._f0 on
        self._f0 = 0

    def _add(self, f: np.ndarray, final: bool = False) -> None:
        """Step features ``f`` (the next steps of the stream) in; presence of every step whose
        neighbours up to ``STACK`` steps later are known (all of them when ``final``) out."""
        self._f = np.concatenate([self._f, f]) if f.shape[0] else self._f
        total = self._f0 + self._f.shape[0]
        done = self._p0 + self._probs.shape[0]
        upto = total if final else total - STACK
        if upto > done and self._f.shape[0]:
            # the held run keeps the PAST steps before `done` (none before the stream's first step)
            x = model_input(self._f, done - self._f0, upto - self._f0)
            out = np.asarray(self.backend.run({"presence_features": x})["presence"], np.float32).reshape(-1, 2)
            self._probs = np.concatenate([self._probs, out])
            if self._probs.shape[0] > 2 * self._history:
                cut = self._probs.shape[0] - self._history
                self._probs = self._probs[cut:]
                self._p0 += cut
            keep = max(0, upto - max(STACK, PAST) - self._f0)      # features no later step reads
            self._f = self._f[keep:]
            self._f0 += keep

    def follow(self, mel) -> "Callable":
        """Read the stream's log-mel frames from ``mel`` (a :class:`streamer.features.LogMelStream` of the
        same samples, e.g. the pipeline's frame cache of the mix) instead of computing them: returns the
        callable to run after every update of ``mel``; :meth:`process` then only counts samples."""
        self._mel = mel

        def written(m) -> None:   # steps are computed when asked for; before ``m`` forgets frames
            if m.done - self.feats.frames_done > m.cap // 2:
                self._pull()
        return written

    def _pull(self) -> None:
        """Steps of every frame ``follow``'s frame cache holds, or of the samples :meth:`process`
        holds, that this detector has not read."""
        with self._lock:
            m, k0 = self._mel, self.feats.frames_done
            if m is not None and m.done > k0:
                self._add(self.feats.push_frames(m.frames(k0, m.done)))
            if self._held:
                held = np.concatenate(self._held) if len(self._held) > 1 else self._held[0]
                self._held, self._n_held = [], 0
                self._add(self.feats.push(held))

    def process(self, block: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:
            if self._mel is None:  # held until asked for (or HOLD_SAMPLES): the same steps, fewer calls
                block = np.array(block, np.float32).reshape(-1)
                self._held.append(block)
                self._n_held += block.size
                if self._n_held >= self.HOLD_SAMPLES:
                    self._pull()
            else:
                self.feats.n_in += int(np.asarray(block).size)
        empty = np.zeros(0, np.float32)
        return {"speech": empty, "music": empty}

    def flush(self) -> dict[str, np.ndarray]:
        with self._lock:
            self._pull()
            self._add(self.feats.flush(), final=True)
        empty = np.zeros(0, np.float32)
        return {"speech": empty, "music": empty}

    def probabilities(self) -> tuple[np.ndarray, np.ndarray]:
        """(step centres in samples, presence [S, 2]) of the steps still held."""
        with self._lock:
            return step_centre(self._p0 + np.arange(self._probs.shape[0])), self._probs

    def activity(self, stem: str, start: int, end: int) -> Optional[float]:
        """Mean presence of ``stem`` over the steps centred in samples ``[start, end)`` (the step
        nearest the span's middle when none is centred inside), None before any is computed."""
        with self._lock:
            return self._activity(stem, start, end)

    def _activity(self, stem: str, start: int, end: int) -> Optional[float]:
        self._pull()
        if not self._probs.shape[0]:
            return None
        hop = STEP * DEFAULT_PARAMS.hop_length
        c0 = DEFAULT_PARAMS.win_length // 2
        j0 = max(-(-(start - c0) // hop) - self._p0, 0)
        j1 = min(-(-(end - c0) // hop) - self._p0, self._probs.shape[0])
        col = STEMS.index(stem)
        if j1 <= j0:
            j = int(np.clip(round(((start + end) / 2 - c0) / hop) - self._p0, 0, self._probs.shape[0] - 1))
            return float(self._probs[j, col])
        return float(self._probs[j0:j1, col].mean())

    def close(self) -> None:
        self.backend.close()
