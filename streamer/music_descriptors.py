"""Music descriptors: harmony, sensory dissonance, melody and texture of a clip or a window.

:mod:`streamer.descriptors` holds the generic low-level families (MFCC, spectral
shape, F0 of the loudest voice, average chroma and key, rhythm).  What it lacks
are the musical dimensions that Panda et al.'s "novel" features measure (seed
003 section 1; Panda, Malheiro & Paiva, IEEE TAFFC 2018, whose 4Q dataset
this is): harmony over time, dissonance, the melody and its expressive
techniques, and texture.  This module computes a compact set of them with
numpy/scipy, defined once for training and streaming (a model card's
``music_descriptors`` input):

* harmonic / percussive balance: median-filter HPSS (Fitzgerald 2010) of a
  4096-point STFT below 4 kHz; harmonic-to-percussive energy ratio (dB) and the
  percussive part's spectral flux;
* chords and local key, from the harmonic part's chroma (55 Hz - 2 kHz,
  square-root compressed, median-smoothed over 5 frames): the best of 24
  major/minor triad templates per frame (share of major chords weighted by fit,
  major-minus-minor fit, chord changes per second, entropy of the chord
  histogram, chords covering 80 % of the frames), and the Krumhansl-Kessler
  major-minus-minor key correlation in 3 s windows (mean, spread, extremes, how
  often the local key is the clip's), chroma flux;
* sensory dissonance (Sethares 1993, after Plomp & Levelt 1965) of each
  frame's 24 strongest spectral peaks, on the whole spectrum and on the
  harmonic part;
* the predominant melody, on a shorter STFT (1024 points, 16 ms hop, so that
  a 5-7 Hz vibrato is resolved): a harmonic-summation pitch salience of the
  harmonic part's peaks (8 harmonics, weights 0.8^(h-1), 10-cent bins from
  55 Hz; after Salamon & Gomez 2012), then the smoothest high-salience path
  through 110-880 Hz (Viterbi, a cost per 10 cents of jump); voiced where its
  salience reaches half the clip's 90th percentile.  From it: register and
  range; notes (runs of the contour, median-smoothed over 176 ms, that stay
  within 50 cents of their median, 80 ms or longer): rate, duration, intervals
  (size, steps vs leaps, direction); vibrato (a 4-8 Hz modulation deeper than
  30 cents peak to peak in the unsmoothed contour of notes of a quarter second
  or more: how often, how deep, how fast); contour smoothness;
* texture: how many salience peaks reach half the melody's salience (a count
  of simultaneous layers), and spectral skewness and kurtosis.

Every clip is loudness-normalised to -23 LUFS first, as in
:mod:`streamer.descriptors`.  About 1.6 s of one core per 30 s clip.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import dsp
from .features import DEFAULT_PARAMS, loudness_normalise


def median_filter(*args, **kw):
    """``scipy.ndimage.median_filter``, imported when first used (not on a stream's start-up path)."""
    from scipy.ndimage import median_filter as mf

    return mf(*args, **kw)

#: bump when the definition changes (invalidates the caches)
MUSIC_DESCRIPTOR_VERSION = 1

SR = DEFAULT_PARAMS.sample_rate
NFFT, HOP = 4096, 512                     # 256 ms frames, 32 ms hop: harmony, dissonance, shape
FPS = SR / HOP
MELODY_NFFT, MELODY_HOP = 1024, 256       # 64 ms frames, 16 ms hop: melody and texture
MELODY_FPS = SR / MELODY_HOP
HPSS_BINS = 1025                          # harmonic/percussive split below 4 kHz (of the 4096-point STFT)
ACTIVE_DB = -40.0
KEY_WINDOW_S = 3.0
MELODY_BINS = (120, 480)                  # 10-cent salience bins: 110 Hz .. 880 Hz
SALIENCE_F0 = 55.0 * 2 ** (np.arange(600) / 120.0)   # 55 Hz .. 1.76 kHz in 10 cents
_FREQS = np.fft.rfftfreq(NFFT, 1.0 / SR)



def feature_names() -> list[str]:
    """Names of the entries of :func:`features`, in order."""
    return ["hp_ratio_mean", "hp_ratio_std", "perc_flux_mean", "perc_flux_std",
            "chord_major_frac", "chord_dmm_mean", "chord_dmm_std", "chord_dmm_p10", "chord_dmm_p90",
            "chord_fit_mean", "chord_fit_std", "chord_change_rate", "chord_entropy", "chord_n80",
            "lkey_dmm_mean", "lkey_dmm_std", "lkey_dmm_min", "lkey_dmm_max", "key_stability", "harm_flux",
            "diss_mean", "diss_std", "diss_p10", "diss_p50", "diss_p90", "hdiss_mean", "hdiss_std",
            "mel_voiced", "sal_mean", "layers_mean", "layers_std", "mel_st_mean", "mel_st_std", "mel_range",
            "note_rate", "note_dur_mean", "note_dur_std", "iv_abs_mean", "iv_step_frac", "iv_leap_frac",
            "iv_updown", "iv_abs_std", "vib_frac", "vib_ext", "vib_rate", "contour_dev", "sal_voiced",
            "skew_mean", "skew_std", "skew_p50", "logkurt_mean", "logkurt_std", "logkurt_p50"]


def _stft(x: np.ndarray, n_fft: int = NFFT, hop: int = HOP) -> np.ndarray:
    """Magnitude STFT [frames, n_fft // 2 + 1] (Hann frames of ``n_fft`` samples every ``hop``)."""
    return dsp.magnitude_stft(x, n_fft, hop, dsp.hann(n_fft, periodic=False))


def hpss(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Harmonic and percussive magnitudes of ``S`` [frames, bins]: Wiener-like soft masks from a median
    over 17 frames (harmonic: steady in time) and over 13 bins (percussive: flat in frequency)."""
    H = median_filter(S, size=(17, 1), mode="nearest")
    P = median_filter(S, size=(1, 13), mode="nearest")
    m = H ** 2 / np.maximum(H ** 2 + P ** 2, 1e-20)
    return S * m, S * (1 - m)


def _chroma_map() -> np.ndarray:
    """STFT bins 55 Hz - 2 kHz (below :data:`HPSS_BINS`) -> 12 pitch classes, C = 0 [12, HPSS_BINS]."""
    return dsp.chroma_map(NFFT, 55.0, 2000.0, HPSS_BINS)


@lru_cache(maxsize=1)
def _triads() -> np.ndarray:
    """Unit-norm major (even rows) and minor (odd rows) triad templates on every root [24, 12]."""
    t = np.zeros((24, 12))
    for r in range(12):
        for j, third in enumerate((4, 3)):
            t[2 * r + j, [r, (r + third) % 12, (r + 7) % 12]] = 1
    return t / np.linalg.norm(t, axis=1, keepdims=True)


def _key_correlations(profile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of a chroma profile with the 12 major and the 12 minor key profiles."""
    maj = np.array([np.corrcoef(profile, np.roll(dsp.KK_MAJOR, k))[0, 1] for k in range(12)])
    mnr = np.array([np.corrcoef(profile, np.roll(dsp.KK_MINOR, k))[0, 1] for k in range(12)])
    return maj, mnr


def _harmony(H: np.ndarray) -> np.ndarray:
    """Chord, local-key and harmonic-change descriptors of the harmonic part [frames, HPSS_BINS] -> [16]."""
    C = (H ** 2) @ _chroma_map().T
    e = C.sum(1)
    if len(C) < 4 or e.max() <= 0:
        return np.zeros(16)
    C = np.sqrt(C[e > e.max() * 1e-3])
    if len(C) < 4:
        return np.zeros(16)
    C = median_filter(C, size=(5, 1), mode="nearest")
    Cn = C / np.maximum(np.linalg.norm(C, axis=1, keepdims=True), 1e-12)
    fit = Cn @ _triads().T                                   # [T, 24] cosine with each triad
    best, bfit = fit.argmax(1), fit.max(1)
    dmm = fit[:, 0::2].max(1) - fit[:, 1::2].max(1)          # best major minus best minor
    hist = np.bincount(best, minlength=24) / len(best)
    h = hist[hist > 0]
    n80 = int(np.searchsorted(np.cumsum(np.sort(hist)[::-1]), 0.8) + 1)
    win = max(4, int(KEY_WINDOW_S * FPS))
    local = []                                               # (major - minor, key index) per 3 s window
    for s in range(0, len(C) - win + 1, max(1, win // 2)):
        maj, mnr = _key_correlations(C[s:s + win].mean(0))
        local.append((maj.max() - mnr.max(), int(np.argmax(np.concatenate([maj, mnr])))))
    gmaj, gmin = _key_correlations(C.mean(0))
    if not local:
        local = [(gmaj.max() - gmin.max(), int(np.argmax(np.concatenate([gmaj, gmin]))))]
    dk = np.array([d for d, _ in local])
    stable = np.mean(np.array([k for _, k in local]) == int(np.argmax(np.concatenate([gmaj, gmin]))))
    return np.array([np.sum((best % 2 == 0) * bfit) / max(bfit.sum(), 1e-12), dmm.mean(), dmm.std(), np.percentile(dmm, 10),
                     np.percentile(dmm, 90), bfit.mean(), bfit.std(), np.sum(best[1:] != best[:-1]) / (len(best) / FPS),
                     -np.sum(h * np.log2(h)) / np.log2(24), n80, dk.mean(), dk.std(), dk.min(), dk.max(), stable,
                     np.mean(np.linalg.norm(np.diff(Cn, axis=0), axis=1))])


def spectral_peaks(S: np.ndarray, n: int = 24, floor_db: float = -50.0,
                   n_fft: int = NFFT) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` strongest local maxima of each frame of ``S`` [frames, bins of an ``n_fft``-point STFT]
    above 50 Hz and within ``floor_db`` of the frame's maximum: frequencies (Hz, parabolic interpolation on
    the log magnitude) and magnitudes [frames, n] (magnitude 0 where a frame has fewer peaks)."""
    B = S.shape[1]
    loc = np.zeros(S.shape, bool)
    loc[:, 1:-1] = (S[:, 1:-1] > S[:, :-2]) & (S[:, 1:-1] >= S[:, 2:])
    loc &= S > S.max(1, keepdims=True) * 10 ** (floor_db / 20)
    loc[:, np.arange(B) * SR / n_fft < 50] = False
    A = np.where(loc, S, 0.0)
    idx = np.argsort(-A, axis=1)[:, :n]
    amp = np.take_along_axis(A, idx, 1)
    ls = np.log(np.maximum(S, 1e-12))
    i = np.clip(idx, 1, B - 2)
    a, b, c = (np.take_along_axis(ls, i - 1, 1), np.take_along_axis(ls, i, 1), np.take_along_axis(ls, i + 1, 1))
    den = a - 2 * b + c
    shift = np.where(np.abs(den) > 1e-9, 0.5 * (a - c) / np.where(np.abs(den) > 1e-9, den, 1), 0)
    return (i + np.clip(shift, -0.5, 0.5)) * SR / n_fft, amp


def dissonance(f: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Sethares' sensory dissonance of each frame's partials (frequencies ``f``, magnitudes ``a``
    [frames, n]): the sum over pairs of a_i a_j (exp(-3.5 s df) - exp(-5.75 s df)), s = 0.24 / (0.0207
    f_min + 18.96), with magnitudes normalised to sum to 1 per frame."""
    an = a / np.maximum(a.sum(1, keepdims=True), 1e-12)
    s = 0.24 / (0.0207 * np.minimum(f[:, :, None], f[:, None, :]) + 18.96)
    df = np.abs(f[:, None, :] - f[:, :, None])
    d = np.exp(-3.5 * s * df) - np.exp(-5.75 * s * df)
    valid = (a[:, :, None] > 0) & (a[:, None, :] > 0)
    return np.where(valid, an[:, :, None] * an[:, None, :] * d, 0).sum((1, 2)) / 2


def pitch_salience(f: np.ndarray, a: np.ndarray, harmonics: int = 8) -> np.ndarray:
    """Harmonic-summation salience [frames, 600] on :data:`SALIENCE_F0`: each peak (``f``, ``a`` from
    :func:`spectral_peaks`) votes for f / h, h = 1..``harmonics``, with weight 0.8^(h-1) times its
    square-root magnitude (re the frame's strongest), spread over +-20 cents."""
    T, n = f.shape
    K = SALIENCE_F0.size
    amp = np.where(a > 0, a / np.maximum(a.max(1, keepdims=True), 1e-12), 0) ** 0.5
    rows = np.repeat(np.arange(T)[:, None], n, 1) * K
    cells, votes = [], []
    for h in range(1, harmonics + 1):
        f0 = f / h
        ok = (a > 0) & (f0 >= SALIENCE_F0[0] * 2 ** (-5 / 120)) & (f0 <= SALIENCE_F0[-1])
        k = np.round(120 * np.log2(np.maximum(f0, 1e-3) / SALIENCE_F0[0])).astype(int)
        w = amp * 0.8 ** (h - 1)
        for off, spread in ((-2, 0.5), (-1, 0.85), (0, 1.0), (1, 0.85), (2, 0.5)):
            cells.append((rows + np.clip(k + off, 0, K - 1))[ok])
            votes.append((w * spread)[ok])
    return np.bincount(np.concatenate(cells), np.concatenate(votes), minlength=T * K).reshape(T, K)


def melody_path(sal: np.ndarray, jump: float = 0.02, width: int = 60) -> np.ndarray:
    """Salience bin of the melody in each frame: the path through :data:`MELODY_BINS` maximising the sum
    of frame-normalised salience minus ``jump`` per 10 cents of step, steps of at most ``width`` bins."""
    lo, hi = MELODY_BINS
    s = sal[:, lo:hi]
    s = s / np.maximum(s.max(1, keepdims=True), 1e-12)
    T, K = s.shape
    offs = np.arange(-width, width + 1)
    cost = jump * np.abs(offs)
    idx = np.arange(K)
    src = np.clip(idx[:, None] + offs[None, :], 0, K - 1)
    acc = s[0].copy()
    back = np.zeros((T, K), np.int32)
    for t in range(1, T):
        cand = acc[src] - cost[None, :]
        j = cand.argmax(1)
        back[t] = src[idx, j]
        acc = cand[idx, j] + s[t]
    path = np.empty(T, np.int32)
    path[-1] = int(acc.argmax())
    for t in range(T - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path + lo


def _notes(cents: np.ndarray, voiced: np.ndarray) -> tuple[list, list]:
    """Notes (first frame, end frame, median cents) of the melody contour ``cents`` [frames]: runs of voiced
    frames whose contour, median-smoothed over 11 frames (176 ms: one vibrato cycle and more), stays within
    50 cents of the run's median, 5 frames (80 ms) or longer; and (vibrato?, peak-to-peak extent in cents,
    rate in Hz) of every note of 16 frames (a quarter second) or more, from its unsmoothed, detrended
    contour: a vibrato when over half of its modulation power lies at 4-8 Hz and the extent exceeds 30 cents."""
    smooth = median_filter(cents, size=11, mode="nearest")
    notes, vib = [], []
    i, T = 0, len(cents)
    while i < T:
        if not voiced[i]:
            i += 1
            continue
        j = i + 1
        while j < T and voiced[j] and abs(smooth[j] - np.median(smooth[i:j])) < 50:
            j += 1
        if j - i >= 5:
            notes.append((i, j, np.median(cents[i:j])))
            if j - i >= 16:
                seg = cents[i:j]
                t = np.arange(j - i)
                d = seg - np.polyval(np.polyfit(t, seg, 1), t)
                n_fft = max(128, 1 << int(np.ceil(np.log2(d.size))))
                P = np.abs(np.fft.rfft(d * np.hanning(d.size), n_fft)) ** 2
                fr = np.fft.rfftfreq(n_fft, 1 / MELODY_FPS)
                band = (fr >= 4) & (fr <= 8)
                share = P[band].sum() / max(P[1:].sum(), 1e-12)
                extent = 2 * np.sqrt(2) * d.std()
                vib.append((share > 0.5 and extent > 30, extent, fr[band][np.argmax(P[band])]))
        i = j
    return notes, vib


def _melody(sal: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Melody and texture descriptors from the salience [frames, 600] -> [20]."""
    best = melody_path(sal)
    smax = sal[np.arange(len(best)), best]
    thr = 0.5 * np.percentile(smax[active], 90)
    voiced = active & (smax >= thr) & (smax > 0)
    loc = (sal[:, 1:-1] > sal[:, :-2]) & (sal[:, 1:-1] >= sal[:, 2:]) & (sal[:, 1:-1] > 0.5 * smax[:, None])
    layers = loc.sum(1)[active]
    out = [voiced.mean(), smax[active].mean() / max(np.percentile(smax, 99), 1e-9), layers.mean(), layers.std()]
    if voiced.sum() < 8:
        return np.array(out + [0.0] * 16)
    cents = best * 10.0
    st = cents[voiced] / 100.0
    out += [st.mean(), st.std(), np.percentile(st, 95) - np.percentile(st, 5)]
    notes, vib = _notes(cents, voiced)
    if len(notes) >= 2:
        p = np.array([n[2] for n in notes]) / 100.0
        dur = np.array([(n[1] - n[0]) / MELODY_FPS for n in notes])
        iv = np.diff(p)
        out += [len(notes) / (len(cents) / MELODY_FPS), dur.mean(), dur.std(), np.abs(iv).mean(), np.mean(np.abs(iv) <= 2.5),
                np.mean(np.abs(iv) > 4.5), np.mean(iv > 0.5) - np.mean(iv < -0.5), np.abs(iv).std()]
    else:
        out += [0.0] * 8
    if vib:
        on = np.array([v[0] for v in vib], float)
        out += [on.mean(), np.mean([v[1] for v in vib]), np.mean([v[2] for v in vib if v[0]]) if on.any() else 0.0]
    else:
        out += [0.0, 0.0, 0.0]
    cons = voiced[1:] & voiced[:-1]
    out += [np.mean(np.abs(np.diff(cents))[cons]) / 100 if cons.any() else 0.0, np.mean(smax[voiced]) / max(smax.max(), 1e-9)]
    return np.array(out)


def _shape(S: np.ndarray) -> np.ndarray:
    """Spectral skewness and log kurtosis of the power spectrum: mean, std and median of each -> [6]."""
    P = S.astype(np.float64) ** 2 + 1e-12
    Pn = P / P.sum(1, keepdims=True)
    c = (Pn * _FREQS).sum(1)
    dev = _FREQS[None, :] - c[:, None]
    sd = np.sqrt((Pn * dev ** 2).sum(1))
    sk = (Pn * dev ** 3).sum(1) / np.maximum(sd ** 3, 1e-9)
    ku = np.log((Pn * dev ** 4).sum(1) / np.maximum(sd ** 4, 1e-9))
    return np.array([sk.mean(), sk.std(), np.median(sk), ku.mean(), ku.std(), np.median(ku)])


def features(x: np.ndarray) -> np.ndarray:
    """Music descriptor vector of mono 16 kHz audio ``x`` [shape=(n,)] -> [shape=(len(feature_names()),)].

    ``x`` is loudness-normalised to -23 LUFS first; shorter clips than one 4096-sample frame are
    zero-padded.  Statistics are over the active frames (energy above -40 dB re the loudest); silence
    gives finite values.  float32, finite.
    """
    x = np.asarray(x, np.float32)
    if x.ndim != 1:
        raise ValueError(f"music descriptors expect mono audio, got shape {x.shape}")
    x = loudness_normalise(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0))
    S = _stft(x)
    edb = 10 * np.log10((S.astype(np.float64) ** 2).sum(1) + 1e-12)
    active = edb > edb.max() + ACTIVE_DB
    if active.sum() < 4:
        active[:] = True
    H, P = hpss(S[:, :HPSS_BINS])
    hp = 10 * np.log10(((H ** 2).sum(1) + 1e-12) / ((P ** 2).sum(1) + 1e-12))[active]
    pflux = np.linalg.norm(np.diff(np.log1p(P * 100), axis=0), axis=1) if len(P) > 1 else np.zeros(1)
    d = dissonance(*spectral_peaks(S[active]))
    dh = dissonance(*spectral_peaks(H[active]))
    Sm = _stft(x, MELODY_NFFT, MELODY_HOP)
    em = 10 * np.log10((Sm.astype(np.float64) ** 2).sum(1) + 1e-12)
    active_m = em > em.max() + ACTIVE_DB
    if active_m.sum() < 4:
        active_m[:] = True
    Hm, _ = hpss(Sm[:, :MELODY_NFFT // 4 + 1])
    sal = pitch_salience(*spectral_peaks(Hm, n=20, floor_db=-40.0, n_fft=MELODY_NFFT))
    out = [np.array([hp.mean(), hp.std(), pflux.mean(), pflux.std()]), _harmony(H),
           np.array([d.mean(), d.std(), *np.percentile(d, [10, 50, 90]), dh.mean(), dh.std()]),
           _melody(sal, active_m), _shape(S[active])]
    vec = np.concatenate(out).astype(np.float32)
    return np.nan_to_num(vec, nan=0.0, posinf=0.0, neginf=0.0)
