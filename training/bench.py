"""Forward-pass timing of the shipped ONNX models (onnxruntime CPU, batch 1).

    python -m training.bench [--models engines/models] [--threads 1] [--repeats 200]

Also prints the per-audio-second cost of running both models as the streamer
does (speech: 1 window/s, music: 0.5 window/s), model forward passes only
(feature extraction is timed separately, on the same windows).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np


def main(argv: Optional[list[str]] = None) -> int:
    """Time both models and the feature extraction of their windows; print JSON."""
    from streamer.features import extract

    from .export import time_forward

    ap = argparse.ArgumentParser(prog="python -m training.bench")
    ap.add_argument("--models", default="engines/models")
    ap.add_argument("--repeats", type=int, default=200)
    a = ap.parse_args(sys.argv[1:] if argv is None else argv)
    out = {}
    rng = np.random.default_rng(0)
    for kind, rate in (("speech", 1.0), ("music", 0.5)):
        card = json.loads((Path(a.models) / f"{kind}.json").read_text())
        n = int(card["window_s"] * 16000)
        t = time_forward(Path(a.models) / card["onnx"], card["inputs"][0]["shape"][1], a.repeats)
        x = (rng.standard_normal(n) * 0.05).astype(np.float32)
        ft = []
        for _ in range(20):
            t0 = time.perf_counter()
            extract(x)
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
