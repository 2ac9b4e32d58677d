"""Share of a default replay's wall time spent in the presence detector (issue 24's budget: < 3 %).

    python scripts/presence_cost.py PROGRAMME [REPEATS] [separator]

``separator``: time the built-in separator beside the mix instead (``--activity separator``, the
default before the detector), the same way.

Replays PROGRAMME in-process with the CLI's defaults (training.experiments.track_eval.replay) and times
every call into the detector (its frames from the pipeline's cache, features, ONNX Runtime, activity
look-ups) with a wall clock, against the whole replay's wall time.
"""

import sys
import time

from streamer import presence
from training.experiments.track_eval import replay

spent = [0.0]


def timed(fn):
    def wrapper(*a, **kw):
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            spent[0] += time.perf_counter() - t
    return wrapper


path, reps = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3
activity = sys.argv[3] if len(sys.argv) > 3 else "detector"
if activity == "detector":
    orig_follow = presence.PresenceDetector.follow
    presence.PresenceDetector.follow = lambda self, mel: timed(orig_follow(self, mel))
    cls = presence.PresenceDetector
else:
    from streamer.separation import BuiltinSeparator as cls
for name in ("process", "flush", "activity"):
    setattr(cls, name, timed(getattr(cls, name)))

replay(path, activity=activity)  # warm-up: models loaded, caches filled
for _ in range(reps):
    spent[0] = 0.0
    t0 = time.perf_counter()
    replay(path, activity=activity)
    wall = time.perf_counter() - t0
    print(f"replay {wall:.2f} s wall, {activity} {spent[0]:.3f} s = {100 * spent[0] / wall:.2f} %", flush=True)
