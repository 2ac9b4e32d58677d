"""Forward-pass timing of the shipped ONNX models (onnxruntime CPU, batch 1).

    python -m training.bench [--models engines/models] [--threads 1] [--repeats 200]

Also prints the per-audio-second cost of running both models as the streamer
does (speech: 1 window/s, music: 0.5 window/s): forward passes, and the
computation of each model's inputs (log-mel or descriptors) on the same windows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from streamer.dsp import SAMPLE_RATE


def main(argv: Optional[list[str]] = None) -> int:
    """Time both models and the feature extraction of their windows; print JSON."""
    from engines.cards import read_card
    from streamer.inputs import stack_inputs, window_inputs

    from .export import time_forward

    ap = argparse.ArgumentParser(prog="python -m training.bench")
    ap.add_argument("--models", default="engines/models")
    ap.add_argument("--repeats", type=int, default=200)
    a = ap.parse_args(sys.argv[1:] if argv is None else argv)
    out = {}
    rng = np.random.default_rng(0)
    for kind, rate in (("speech", 1.0), ("music", 0.5)):
        card = read_card(Path(a.models) / f"{kind}.onnx")
        n = int(card["window_s"] * SAMPLE_RATE)
        names = [i["name"] for i in card["inputs"]]
        x = (rng.standard_normal(n) * 0.05).astype(np.float32)
        t = time_forward(Path(a.models) / card["onnx"], stack_inputs([window_inputs(x, names)]), a.repeats)
        ft = []
        for _ in range(20):
            t0 = time.perf_counter()
            window_inputs(x, names)
            ft.append((time.perf_counter() - t0) * 1e3)
        out[kind] = {"forward_median_ms": t["median_ms"], "forward_p90_ms": t["p90_ms"],
                     "features_median_ms": round(float(np.median(ft)), 3), "windows_per_s": rate}
    per_s = sum(v["windows_per_s"] * (v["forward_median_ms"] + v["features_median_ms"]) for v in out.values())
    out["both_models_ms_per_audio_second"] = round(per_s, 3)
    out["real_time_factor_one_thread"] = round(1000.0 / per_s, 1)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
