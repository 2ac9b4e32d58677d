"""Choose the tracker's time constants and gate threshold on make_mix TRAINING / VALIDATION programmes.

    python -m training.data.make_mix --split train --out train_4q_11.flac --seconds 300 --seed 11 --music 4q --music-gap 9
    python -m training.data.make_mix --split train --out train_emopia_12.flac --seconds 300 --seed 12 --music emopia --music-gap 9
    python -m training.data.make_mix --split val --out val_4q_21.flac --seconds 300 --seed 21 --music 4q --music-gap 9
    python -m training.data.make_mix --split val --out val_emopia_22.flac --seconds 300 --seed 22 --music emopia --music-gap 9
    python -m training.experiments.track_tune train_4q_11.flac train_emopia_12.flac val_4q_21.flac val_emopia_22.flac

Each programme is replayed once with the defaults (training.experiments.track_eval.replay) and
re-tracked offline (streamer.tracking.track_messages: the same filter) at every time constant
and gate off-threshold of the grid; scored as track_eval scores (per-second quadrant macro-F1,
changes per minute with gaps bridged), averaged over the programmes.  Prints, per source, the
grid sorted by tracked minus raw macro-F1.  Never run it on the held-out programmes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from streamer.tracking import track_messages
from training.experiments.track_eval import _mean, replay, score


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.experiments.track_tune", description=__doc__.splitlines()[0])
    ap.add_argument("programmes", nargs="+", help="make_mix --split train|val programmes (truth JSON beside)")
    ap.add_argument("--smooth", default="0.25,0.5,0.75,1,1.5,2,3,5", help="time constants (comma list)")
    ap.add_argument("--off", default="0,0.05,0.1,0.25", help="activity off-thresholds (comma list)")
    a = ap.parse_args(argv)
    taus = [float(x) for x in a.smooth.split(",")]
    offs = [float(x) for x in a.off.split(",")]
    runs = []
    for prog in a.programmes:
        truth = json.loads(Path(prog + ".truth.json").read_text())
        bodies = replay(prog)
        runs.append((bodies, truth, int(np.floor(max(b["t_end"] for b in bodies)))))
    rows = {"speech": [], "music": []}
    for off in offs:
        for tau in taus:
            m = _mean([score(track_messages(b, tau, activity_off=off), t, n, "centre") for b, t, n in runs])
            for src, r in rows.items():
                s = m[src]
                r.append({"smooth_s": tau, "activity_off": off,
                          "f1_raw": s["quadrant_raw"]["macro_f1"], "f1_tracked": s["quadrant_tracked"]["macro_f1"],
                          "changes_truth": s["truth_changes_per_min_bridged"],
                          "changes_raw": s["quadrant_raw"]["changes_per_min_bridged"],
                          "changes_tracked": s["quadrant_tracked"]["changes_per_min_bridged"]})
    for r in rows.values():
        r.sort(key=lambda x: x["f1_raw"] - x["f1_tracked"])
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
