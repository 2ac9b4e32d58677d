"""Handcrafted descriptors of a window or a clip: the classical baselines' features
(RF, MLP, SVM in :mod:`training.results`) and the input of descriptor models
(``handcrafted`` input of a model card), defined once for training and streaming.

Seed 001 fed its speech models openSMILE ``emobase2010`` (1582 features; its
Table 2.4: "Mel frequency cepstrum coefficients 630, Log mel frequency band 336,
Line spectral pair frequencies 336, Fundamental frequency 82, Jitter 76,
Loudness 42, Voicing 42, Shimmer 38") and its music models Essentia's music
extractor (2651 features; Table 2.5: loudness, dynamic complexity, silence
rates, spectral rms/flux/centroid/kurtosis/spread/skewness/rolloff/decrease/
energy bands/entropy/complexity/contrast, bark/mel/erb bands, MFCC, GFCC,
dissonance, pitch salience, rhythm: beats loudness, BPM histogram, onset rate,
danceability; tonal: HPCP, key, chords, tuning).  Seed 003's SVM baseline used
Panda et al.'s "1714 features found relevant for emotion recognition" and "the
top 100 features obtained after feature selection" (its Section 4.1).  Neither
toolkit is a dependency here; this module computes a compact set of the same
families with numpy/scipy, from the streamer's own log-mel (:mod:`streamer.features`), so
the mel filterbank and framing stay defined once:

* MFCC 0-19 (DCT-II of the streamer's 64-band log-mel dB) and their deltas;
  the 64 log-mel bands themselves;
* spectral centroid, bandwidth, 85 % roll-off, flatness, flux, entropy,
  contrast and valleys in 7 octave bands (as librosa's ``spectral_contrast``),
  alpha ratio (energy below / above 1 kHz) and Hammarberg index;
* zero-crossing rate, frame RMS (dB) and its dynamics (low-energy fraction,
  5-95 % range);
* F0 by normalised autocorrelation (40 ms frames, 60-500 Hz, Boersma's window
  correction and octave cost), voicing strength, voiced fraction, HNR, a
  jitter-like and a shimmer-like frame-to-frame variation, F0 slope;
* chroma (12 pitch classes, 4096-point STFT), key clarity and mode
  (Krumhansl-Kessler profiles: best major minus best minor correlation);
* onset strength (positive log-mel flux), tempo and pulse clarity from its
  autocorrelation, onset rate.

Frame descriptors are summarised over the clip's active frames (frame RMS above
-40 dB re its loudest frame; F0 statistics over voiced frames) by mean, std and
10/50/90th percentiles (fewer for the long vectors).  Every clip is first
loudness-normalised to -23 LUFS (EBU R128), as every streamer window is.

Feature caches for whole corpora live in :mod:`training.data.handcrafted`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import dsp
from .features import DEFAULT_PARAMS, delta, frame_log_mel, frames_of, loudness_normalise, mfcc_from_logmel

#: bump when the feature definition changes (invalidates the caches)
HANDCRAFTED_VERSION = 4

SR = DEFAULT_PARAMS.sample_rate
N_MFCC = 20
F0_MIN, F0_MAX = 60.0, 500.0
F0_FRAME = 640             # 40 ms: two periods of 60 Hz
F0_HOP = 320               # 20 ms
CHROMA_FFT, CHROMA_HOP = 4096, 2048
ACTIVE_DB = -40.0
CONTRAST_EDGES = (0.0, 200.0, 400.0, 800.0, 1600.0, 3200.0, 8000.0)  # 6 octave bands + lowest
ACF_LAGS_S = (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.25, 1.5, 2.0)  # rhythm periodicity profile
MOD_BAND_GROUPS = 8                      # log-mel bands 0-7, 8-15, ... for the modulation spectrum
MOD_EDGES_HZ = ((0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 8.0), (8.0, 16.0), (16.0, 32.0))



def _stats5(a: np.ndarray) -> np.ndarray:
    """mean, std, p10, p50, p90 of each column of ``a`` [shape=(T, D)] -> [5 * D]."""
    p = np.percentile(a, [10, 50, 90], axis=0)
    return np.concatenate([a.mean(0), a.std(0), p[0], p[1], p[2]])


def _stats2(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a.mean(0), a.std(0)])


def _chroma_map(n_fft: int = CHROMA_FFT) -> np.ndarray:
    """Bins 55 Hz - 5 kHz of an ``n_fft`` STFT -> 12 pitch classes (C=0) [shape=(12, bins)]."""
    return dsp.chroma_map(n_fft, 55.0, 5000.0)


@lru_cache(maxsize=2)
def _f0_window_acf() -> tuple[np.ndarray, np.ndarray]:
    w = dsp.hann(F0_FRAME, periodic=False)
    r = np.fft.irfft(np.abs(np.fft.rfft(w, 2 * F0_FRAME)) ** 2)[:F0_FRAME]
    return w, (r / r[0]).astype(np.float32)


def pitch_track(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """F0 (Hz, 0 where unvoiced), voicing strength (0..1) and frame energy, every 20 ms.

    Normalised autocorrelation of 40 ms Hann frames divided by the window's own
    autocorrelation (Boersma 1993); the lag in 60-500 Hz maximising
    ``r(lag) - 0.01 * log2(lag)`` (a small octave cost against sub-harmonics),
    refined by parabolic interpolation.  Voiced: strength >= 0.45 and frame
    energy above -40 dB re the loudest frame.
    """
    hop = F0_HOP
    if x.size < F0_FRAME:
        x = np.pad(x, (0, F0_FRAME - x.size))
    fr = np.lib.stride_tricks.sliding_window_view(x, F0_FRAME)[::hop]
    w, rw = _f0_window_acf()
    fw = fr * w
    fw = fw - fw.mean(1, keepdims=True) * w
    spec = dsp.rfft(fw, 2 * F0_FRAME, axis=1)
    r = dsp.irfft(spec.real ** 2 + spec.imag ** 2, axis=1)[:, :F0_FRAME]
    e = r[:, 0].copy()
    lo, hi = int(SR / F0_MAX), int(SR / F0_MIN)
    rn = r[:, lo:hi + 2] / np.maximum(e[:, None], 1e-12) / rw[lo:hi + 2]
    lags = np.arange(lo, hi + 2)
    score = rn[:, :-1] - 0.01 * np.log2(lags[:-1] / lo)
    k = score.argmax(1)
    strength = np.clip(rn[np.arange(len(k)), k], 0.0, 1.0)
    # parabolic refinement
    km = np.clip(k, 1, rn.shape[1] - 2)
    a, b, c = rn[np.arange(len(k)), km - 1], rn[np.arange(len(k)), km], rn[np.arange(len(k)), km + 1]
    den = a - 2 * b + c
    shift = np.where(np.abs(den) > 1e-9, 0.5 * (a - c) / np.where(np.abs(den) > 1e-9, den, 1.0), 0.0)
    lag = lags[km] + np.clip(shift, -1, 1)
    edb = 10 * np.log10(np.maximum(e, 1e-12))
    voiced = (strength >= 0.45) & (edb > edb.max() + ACTIVE_DB)
    f0 = np.where(voiced, SR / lag, 0.0)
    return f0.astype(np.float32), strength.astype(np.float32), edb.astype(np.float32)


def _tempo(onset: np.ndarray, fps: float) -> tuple[float, float]:
    """Tempo (BPM) and pulse clarity from the autocorrelation of an onset envelope."""
    o = onset - onset.mean()
    n = o.size
    lo, hi = int(fps * 60 / 240), int(fps * 60 / 40)
    if n < hi + 2 or not np.any(o):
        return 0.0, 0.0
    ac = np.fft.irfft(np.abs(np.fft.rfft(o, 2 * n)) ** 2)[:hi + 1]
    ac = ac / max(ac[0], 1e-12)
    lags = np.arange(lo, hi + 1)
    bpm = 60.0 * fps / lags
    prior = np.exp(-0.5 * (np.log2(bpm / 120.0)) ** 2)  # log-normal around 120 BPM, 1 octave
    k = int(np.argmax(ac[lo:hi + 1] * prior))
    return float(bpm[k]), float(ac[lo + k])


def _spectral(S: np.ndarray) -> np.ndarray:
    """Per-frame spectral descriptors of magnitude spectra [T, bins] -> [T, 10]."""
    f = np.fft.rfftfreq(DEFAULT_PARAMS.n_fft, 1.0 / SR).astype(np.float32)
    P = S ** 2 + 1e-12
    tot = P.sum(1)
    Sn = S / np.maximum(S.sum(1, keepdims=True), 1e-12)
    centroid = (Sn * f).sum(1)
    bandwidth = np.sqrt((Sn * (f - centroid[:, None]) ** 2).sum(1))
    cum = np.cumsum(P, 1)
    rolloff = f[np.minimum((cum < 0.85 * tot[:, None]).sum(1), f.size - 1)]
    flatness = 10 * np.log10(np.exp(np.log(P).mean(1)) / P.mean(1))
    Pn = P / tot[:, None]
    entropy = -(Pn * np.log2(Pn)).sum(1) / np.log2(P.shape[1])
    u = S / np.maximum(np.linalg.norm(S, axis=1, keepdims=True), 1e-12)
    flux = np.concatenate([[0.0], np.linalg.norm(np.diff(u, axis=0), axis=1)])
    lo = P[:, f < 1000].sum(1)
    hi = P[:, (f >= 1000) & (f < 5000)].sum(1)
    alpha = 10 * np.log10(lo / np.maximum(hi, 1e-12))
    hammarberg = 10 * np.log10(P[:, f < 2000].max(1) / np.maximum(P[:, (f >= 2000) & (f < 5000)].max(1), 1e-12))
    # spectral slope (dB per kHz, least squares over 0-5 kHz)
    sel = f < 5000
    fd = (f[sel] - f[sel].mean()) / 1000.0
    ldb = 10 * np.log10(P[:, sel])
    slope = ((ldb - ldb.mean(1, keepdims=True)) * fd).sum(1) / (fd ** 2).sum()
    return np.stack([centroid, bandwidth, rolloff, flatness, entropy, flux, alpha, hammarberg, slope,
                     np.log10(tot)], 1)


def _contrast(S: np.ndarray) -> np.ndarray:
    """Spectral contrast and valley (dB) in octave bands [T, 2 * 6]."""
    f = np.fft.rfftfreq(DEFAULT_PARAMS.n_fft, 1.0 / SR)
    P = 10 * np.log10(S ** 2 + 1e-10)
    con, val = [], []
    for lo, hi in zip(CONTRAST_EDGES[:-1], CONTRAST_EDGES[1:]):
        b = np.sort(P[:, (f >= lo) & (f < hi)], axis=1)
        q = max(1, int(round(0.2 * b.shape[1])))
        peak, valley = b[:, -q:].mean(1), b[:, :q].mean(1)
        con.append(peak - valley)
        val.append(valley)
    return np.stack(con + val, 1)


def _rhythm_extra(lm: np.ndarray, fps: float, dur: float) -> np.ndarray:
    """Onset strength of low / mid / high mel bands (mean, std, onset rate) and the onset
    envelope's normalised autocorrelation at :data:`ACF_LAGS_S` (a rhythm periodicity profile)."""
    n = lm.shape[1]
    out = []
    for a, b in ((0, n // 4), (n // 4, 5 * n // 8), (5 * n // 8, n)):
        o = np.maximum(0.0, np.diff(lm[:, a:b], axis=0)).mean(1)
        thr = o.mean() + o.std()
        pk = (o[1:-1] > thr) & (o[1:-1] >= o[:-2]) & (o[1:-1] > o[2:])
        out += [o.mean(), o.std(), pk.sum() / dur]
    o = np.maximum(0.0, np.diff(lm, axis=0)).mean(1)
    o = o - o.mean()
    m = o.size
    ac = np.fft.irfft(np.abs(np.fft.rfft(o, 2 * m)) ** 2)[:m]
    ac = ac / max(ac[0], 1e-12)
    lags = [int(round(t * fps)) for t in ACF_LAGS_S]
    out += [float(ac[k]) if k < m else 0.0 for k in lags]
    return np.array(out)


def _tonnetz(Cn: np.ndarray) -> np.ndarray:
    """Tonal centroid (Harte et al. 2006: fifths, minor thirds, major thirds as 3 circles)
    of L1-normalised chroma frames: mean and std of the 6 coordinates, and the entropy of
    the mean chroma."""
    k = np.arange(12)
    basis = np.stack([np.sin(k * 7 * np.pi / 6), np.cos(k * 7 * np.pi / 6),
                      np.sin(k * 3 * np.pi / 2), np.cos(k * 3 * np.pi / 2),
                      0.5 * np.sin(k * 2 * np.pi / 3), 0.5 * np.cos(k * 2 * np.pi / 3)], 1)
    c1 = Cn / np.maximum(Cn.sum(1, keepdims=True), 1e-12)
    tz = c1 @ basis
    pm = c1.mean(0)
    ent = -np.sum(pm * np.log2(np.maximum(pm, 1e-12))) / np.log2(12)
    return np.concatenate([tz.mean(0), tz.std(0), [ent]])


def _modulation(lm: np.ndarray, fps: float) -> np.ndarray:
    """Modulation spectrum: for :data:`MOD_BAND_GROUPS` groups of log-mel bands, the share of
    the group's envelope power (mean removed) in each band of :data:`MOD_EDGES_HZ`
    (syllable rate in speech, beat and tremolo rates in music)."""
    T, n = lm.shape
    g = lm[:, :n - n % MOD_BAND_GROUPS].reshape(T, MOD_BAND_GROUPS, -1).mean(2)
    g = g - g.mean(0)
    nfft = 1 << max(8, int(np.ceil(np.log2(max(T, 2)))))
    P = np.abs(np.fft.rfft(g * np.hanning(T)[:, None], nfft, axis=0)) ** 2
    f = np.fft.rfftfreq(nfft, 1.0 / fps)
    tot = P[(f >= MOD_EDGES_HZ[0][0]) & (f < MOD_EDGES_HZ[-1][1])].sum(0) + 1e-12
    out = [P[(f >= lo) & (f < hi)].sum(0) / tot for lo, hi in MOD_EDGES_HZ]
    return np.stack(out, 1).ravel()  # band-group major


def feature_names() -> list[str]:
    """Names of the entries of :func:`features`, in order."""
    n = []
    s5 = ("mean", "std", "p10", "p50", "p90")
    for s in s5:
        n += [f"mfcc{i}_{s}" for i in range(N_MFCC)]
    for s in ("std", "absmean"):
        n += [f"dmfcc{i}_{s}" for i in range(N_MFCC)]
    for s in ("mean", "std"):
        n += [f"mel{i}_{s}" for i in range(DEFAULT_PARAMS.n_mels)]
    spec = ("centroid", "bandwidth", "rolloff", "flatness", "entropy", "flux", "alpha_ratio", "hammarberg",
            "slope", "log_energy", "zcr", "rms_db")
    for s in s5:
        n += [f"{d}_{s}" for d in spec]
    n += [f"{d}_dabsmean" for d in spec]
    for s in ("mean", "std"):
        n += [f"contrast{i}_{s}" for i in range(6)] + [f"valley{i}_{s}" for i in range(6)]
    n += ["rms_low_energy_frac", "rms_range_5_95", "active_frac"]
    n += ["f0_mean_st", "f0_std_st", "f0_p10_st", "f0_p50_st", "f0_p90_st", "f0_range_st", "f0_slope_st_per_s",
          "f0_jitter", "voiced_frac", "voicing_mean", "voicing_std", "hnr_mean", "hnr_std", "shimmer_db",
          "voiced_rate_per_s"]
    for s in ("mean", "std"):
        n += [f"chroma{i}_{s}" for i in range(12)]
    n += ["key_clarity", "mode_major_minus_minor", "chroma_flux"]
    n += ["onset_mean", "onset_std", "onset_rate_per_s", "tempo_bpm", "pulse_clarity"]
    for b in ("low", "mid", "high"):
        n += [f"onset_{b}_mean", f"onset_{b}_std", f"onset_{b}_rate_per_s"]
    n += [f"onset_acf_{lag:g}s" for lag in ACF_LAGS_S]
    n += [f"tonnetz{i}_{s}" for s in ("mean", "std") for i in range(6)] + ["chroma_entropy"]
    n += [f"mod_b{b}_{lo:g}_{hi:g}hz" for b in range(MOD_BAND_GROUPS) for lo, hi in MOD_EDGES_HZ]
    return n


def features(x: np.ndarray) -> np.ndarray:
    """Handcrafted feature vector of mono 16 kHz audio ``x`` [shape=(n,)] -> [shape=(len(feature_names()),)].

    ``x`` is loudness-normalised to -23 LUFS first; shorter clips are zero-padded
    to 0.3 s.  float32, finite.
    """
    x = np.asarray(x, np.float32)
    if x.ndim != 1:
        raise ValueError(f"features expect mono audio, got shape {x.shape}")
    if x.size < int(0.3 * SR):
        x = np.pad(x, (0, int(0.3 * SR) - x.size))
    x = loudness_normalise(x)
    p = DEFAULT_PARAMS
    fr = frames_of(x, p)
    S = np.abs(dsp.rfft_frames(fr, dsp.hann(p.win_length + 1, periodic=False)[:-1], p.n_fft)).astype(np.float32)
    lm = np.maximum(frame_log_mel(fr, p), 20 * np.log10(p.amin))            # [T, 64] dB
    rms_db = 10 * np.log10(np.mean(fr.astype(np.float64) ** 2, 1) + 1e-12)
    act = rms_db > rms_db.max() + ACTIVE_DB
    if act.sum() < 5:
        act[:] = True
    zcr = np.mean(np.abs(np.diff(np.signbit(fr).astype(np.int8), axis=1)), 1)
    mf = mfcc_from_logmel(lm, N_MFCC)
    dmf = delta(mf, 9)
    spec = np.concatenate([_spectral(S), zcr[:, None], rms_db[:, None]], 1)
    out = [_stats5(mf[act]), dmf[act].std(0), np.abs(dmf[act]).mean(0), _stats2(lm[act]),
           _stats5(spec[act]), np.abs(np.diff(spec[act], axis=0)).mean(0) if act.sum() > 1 else np.zeros(spec.shape[1]),
           _stats2(_contrast(S[act]))]
    ra = rms_db[act]
    out.append(np.array([np.mean(ra < ra.mean()), np.percentile(ra, 95) - np.percentile(ra, 5), act.mean()]))

    f0, strength, edb = pitch_track(x)
    v = f0 > 0
    dur = x.size / SR
    if v.sum() >= 3:
        st = 12 * np.log2(f0[v] / 100.0)                  # semitones re 100 Hz
        t = np.flatnonzero(v) * F0_HOP / SR
        slope = np.polyfit(t, st, 1)[0] if np.ptp(t) > 0 else 0.0
        cons = v[1:] & v[:-1]
        jit = np.mean(np.abs(np.diff(f0)[cons]) / f0[1:][cons]) if cons.any() else 0.0
        shim = np.mean(np.abs(np.diff(edb)[cons])) if cons.any() else 0.0
        sv = np.clip(strength[v], 1e-3, 1 - 1e-3)
        hnr = 10 * np.log10(sv / (1 - sv))
        runs = np.sum(np.diff(v.astype(np.int8)) == 1) + int(v[0])
        pf = [st.mean(), st.std(), *np.percentile(st, [10, 50, 90]), np.percentile(st, 95) - np.percentile(st, 5),
              slope, jit, v.mean(), strength[v].mean(), strength[v].std(), hnr.mean(), hnr.std(), shim, runs / dur]
    else:
        pf = [0.0] * 8 + [v.mean(), strength.mean(), strength.std(), -10.0, 0.0, 0.0, 0.0]
    out.append(np.array(pf, np.float64))

    # chroma and key
    C = dsp.magnitude_stft(x, CHROMA_FFT, CHROMA_HOP, dsp.hann(CHROMA_FFT, periodic=False)) ** 2 @ _chroma_map().T
    ce = C.sum(1)
    keep = ce > ce.max() * 1e-3 if ce.max() > 0 else np.ones(len(C), bool)
    Cn = C[keep] / np.maximum(C[keep].max(1, keepdims=True), 1e-12)
    out.append(_stats2(Cn))
    prof = Cn.mean(0)
    if np.ptp(prof) > 0:
        maj = max(np.corrcoef(prof, np.roll(dsp.KK_MAJOR, k))[0, 1] for k in range(12))
        mnr = max(np.corrcoef(prof, np.roll(dsp.KK_MINOR, k))[0, 1] for k in range(12))
    else:
        maj = mnr = 0.0
    cflux = np.mean(np.linalg.norm(np.diff(Cn, axis=0), axis=1)) if len(Cn) > 1 else 0.0
    out.append(np.array([max(maj, mnr), maj - mnr, cflux]))

    # rhythm
    fps = SR / p.hop_length
    onset = np.maximum(0.0, np.diff(lm, axis=0)).mean(1)
    thr = onset.mean() + onset.std()
    peaks = (onset[1:-1] > thr) & (onset[1:-1] >= onset[:-2]) & (onset[1:-1] > onset[2:])
    tempo, clarity = _tempo(onset, fps)
    out.append(np.array([onset.mean(), onset.std(), peaks.sum() / dur, tempo, clarity]))
    out.append(_rhythm_extra(lm, fps, dur))
    out.append(_tonnetz(Cn))
    out.append(_modulation(lm, fps))

    vec = np.concatenate([np.ravel(o) for o in out]).astype(np.float32)
    return np.nan_to_num(vec, nan=0.0, posinf=0.0, neginf=0.0)
