#!/usr/bin/env bash
# Live per-hop latency of the defaults against a reference: the same paced input through
# `emotrack stream --input` (the live capture path, as `emotrack bench` measures it), alternating.
# Reference: another checkout's defaults when BEFORE=DIR is set (e.g. the main branch's worktree),
# else this checkout with --activity model --smooth 0 (no presence estimate, no tracking).
# Prints each run's end-of-stream hop latency percentiles, real-time factor and the load average.
#   [BEFORE=DIR] scripts/bench_tracking_latency.sh INPUT [REPEATS]
set -euo pipefail
input=$(realpath "${1:?usage: [BEFORE=DIR] $0 INPUT [REPEATS]}")
reps=${2:-1}
py=${PYTHON:-python}
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for r in $(seq "$reps"); do
  for mode in default before; do
    extra=()
    repo=$here
    if [ "$mode" = before ]; then
      if [ -n "${BEFORE:-}" ]; then repo=$(realpath "$BEFORE"); else extra=(--activity model --smooth 0); fi
    fi
    (cd "$repo" && PYTHONPATH="$repo" "$py" -m streamer.cli stream --input "$input" --no-pub -q \
      --backend onnxruntime --heartbeat 5 --out "$tmp/$mode.jsonl" "${extra[@]}")
    "$py" - "$tmp/$mode.jsonl" "$mode" <<'PY'
import json, os, sys
end = [json.loads(l) for l in open(sys.argv[1]) if '"event":"end"' in l][-1]
print(sys.argv[2], "hop_latency_ms", json.dumps(end.get("hop_latency_ms")), "rtf", end.get("realtime_factor"),
      "load", " ".join(f"{v:.2f}" for v in os.getloadavg()), flush=True)
PY
  done
done
