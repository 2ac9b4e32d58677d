"""Clip-level prediction: one result per file (``emotrack predict``).

The clip is cut into the model's windows at its hop (a clip shorter than one
window is zero-padded, centred) and the window outputs are averaged.  A model that
adapts per stream (:mod:`streamer.adapt`) hears each file as one stream of its own.
"""

from __future__ import annotations

import numpy as np

from . import adapt, features as F
from .inputs import stack_inputs, window_inputs
from .pipeline import summarise
from .sources import SAMPLE_RATE, open_source


def window_starts(n: int, window: int, hop: int) -> list[int]:
    """First samples of the windows :func:`clip_windows` cuts from ``n`` samples (``[0]`` when
    the clip is no longer than one window)."""
    if n <= window:
        return [0]
    starts = list(range(0, n - window + 1, hop))
    if starts[-1] + window < n:
        starts.append(n - window)
    return starts


def clip_windows(x: np.ndarray, window: int, hop: int) -> np.ndarray:
    """Windows [shape=(n, window)] covering ``x``; the last one ends at the clip's end."""
    if x.size <= window:
        out = np.zeros((1, window), np.float32)
        off = (window - x.size) // 2
        out[0, off:off + x.size] = x
        return out
    return np.stack([x[s:s + window] for s in window_starts(x.size, window, hop)])


def predict_array(x: np.ndarray, model, params: F.FeatureParams = F.DEFAULT_PARAMS,
                  batch: int = 16) -> dict:
    """Clip-level fields (valence, arousal, quadrant, probs, activity, windows)."""
    window = int(round(float(model.card["window_s"]) * SAMPLE_RATE))
    hop = int(round(float(model.card["hop_s"]) * SAMPLE_RATE))
    wins = clip_windows(np.asarray(x, np.float32), window, hop)
    ad = adapt.from_card(model.card)
    stream = ad.new_stream() if ad else None  # a model that adapts: the clip is one stream
    outs = {"quadrant": [], "va": [], "activity": []}
    for i in range(0, len(wins), batch):
        per = [window_inputs(w, model.input_names, params) for w in wins[i:i + batch]]
        if stream is not None:
            per = [stream.adapt_inputs(p) for p in per]
        o = model.predict(stack_inputs(per))
        for k in outs:
            outs[k].append(o[k])
    mean = {k: np.concatenate(v).mean(axis=0, keepdims=True) for k, v in outs.items()}
    res = summarise(mean, 0)
    res["windows"] = int(len(wins))
    return res


def read_clip(path: str, warn=None) -> np.ndarray:
    """Whole clip at 16 kHz mono (any input emotrack can open); ``warn(line)`` hears of truncation."""
    with open_source(path) as src:
        blocks = list(src.blocks())
        if src.warning and warn is not None:
            warn(src.warning)
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def predict_file(path: str, model, params: F.FeatureParams = F.DEFAULT_PARAMS, warn=None) -> dict:
    res = predict_array(read_clip(path, warn), model, params)
    r4 = lambda v: round(float(v), 4)  # noqa: E731 - as replay's messages (streamer.schema.emotion_body)
    return {"path": path, "source": model.source, "valence": r4(res["valence"]), "arousal": r4(res["arousal"]),
            "quadrant": res["quadrant"], "probs": {q: r4(p) for q, p in res["probs"].items()},
            "activity": r4(res["activity"]), "windows": res["windows"], "model": model.id}
