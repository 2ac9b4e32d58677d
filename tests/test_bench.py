"""emotrack bench --smoke: the JSON has every section and its numbers are positive and finite.

Speed is measured by the bench, never asserted here.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


def _numbers(obj, path=""):
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")


def test_bench_smoke_json(tmp_path):
    out = tmp_path / "bench.json"
    cp = subprocess.run([sys.executable, "-m", "streamer.cli", "bench", "--quick", "--smoke", "--json", str(out)],
                        cwd=str(REPO), capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr[-2000:]
    assert "pipeline replay" in cp.stdout and "target:" in cp.stdout
    res = json.loads(out.read_text())
    for key in ("machine", "stages", "pipeline", "targets", "tensorflow_vs_onnxruntime", "repeats"):
        assert key in res
    assert res["machine"]["cores"] >= 1 and res["machine"]["onnxruntime"]
    st = res["stages"]
    for key in ("decode_soundfile_ogg", "decode_ffmpeg_ogg", "resample_44k1_to_16k", "separation_none",
                "features_extract_speech", "features_extract_music", "features_logmelstream_both",
                "publish_zmq_loopback"):
        assert key in st, key
    assert "skipped" in st["separation_spleeter"]
    assert "onnxruntime_speech" in st["inference"] and "onnxruntime_music" in st["inference"]
    assert "tensorrt" in st["inference"]
    rep, live = res["pipeline"]["replay"], res["pipeline"]["live"]
    for key in ("wall_s", "rtf_wall", "rtf_in_process", "peak_rss_mb"):
        assert rep[key]["median"] > 0
    for key in ("hop_p50_ms", "hop_p95_ms", "hop_p99_ms", "first_message_s", "peak_rss_mb"):
        assert live[key]["median"] > 0
    assert live["hop_p50_ms"]["median"] <= live["hop_p99_ms"]["median"]
    for s in (rep["rtf_wall"], live["hop_p99_ms"]):
        assert s["min"] <= s["median"] <= s["max"]
    nums = list(_numbers({k: v for k, v in res.items() if k != "targets"}))
    assert nums
    for path, v in nums:
        assert math.isfinite(v), path
        if "minus_fill" not in path:  # first message minus the window fill may be < 0
            assert v >= 0, path
    for name, t in res["targets"].items():
        assert isinstance(t["met"], bool) and math.isfinite(t["value"]), name
