#!/usr/bin/env bash
# Live per-hop latency with and without the default presence estimator and tracker (issue 24):
# the same paced input through `emotrack stream --input` (the live capture path, as `emotrack bench`
# measures it), once with the defaults (--activity separator, tracking on) and once as before
# (--activity model --smooth 0). Prints each run's end-of-stream hop latency percentiles.
#   scripts/bench_tracking_latency.sh INPUT [REPEATS]
set -euo pipefail
input=${1:?usage: $0 INPUT [REPEATS]}
reps=${2:-1}
py=${PYTHON:-python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for r in $(seq "$reps"); do
  for mode in default before; do
    extra=()
    [ "$mode" = before ] && extra=(--activity model --smooth 0)
    "$py" -m streamer.cli stream --input "$input" --no-pub -q --backend onnxruntime --heartbeat 5 \
      --out "$tmp/$mode.jsonl" "${extra[@]}"
    "$py" - "$tmp/$mode.jsonl" "$mode" <<'PY'
import json, sys
end = [json.loads(l) for l in open(sys.argv[1]) if '"event":"end"' in l][-1]
print(sys.argv[2], "hop_latency_ms", json.dumps(end.get("hop_latency_ms")), "rtf", end.get("realtime_factor"))
PY
  done
done
