"""Segments (streamer.segments): cutting, and the CSV / Praat TextGrid / Audacity writers."""

import csv
import io
import json
import re
import subprocess
import sys

import pytest

from streamer import segments
from streamer.tracking import track_messages


def bodies(pattern, source="speech", hop=1.0, win=3.0):
    """Messages of one source: pattern is a string of '.', '1'..'4' (quadrant) per hop; '.' = silence."""
    out = []
    for i, c in enumerate(pattern):
        q = "Q1" if c == "." else f"Q{c}"
        probs = {k: 0.05 for k in ("Q1", "Q2", "Q3", "Q4")}
        probs[q] = 0.85
        out.append({"stream": "news", "seq": i, "source": source, "t_start": i * hop, "t_end": i * hop + win,
                    "valence": 0.5, "arousal": 0.5, "quadrant": q, "probs": probs,
                    "activity": 0.05 if c == "." else 0.9})
    return track_messages(out, 4.0)


def test_segments_cut_on_presence():
    segs = segments.segments_of(bodies("....2222222222....3333333333333..."))
    assert [(s.start, s.end) for s in segs] == [(5.0, 15.0), (19.0, 32.0)]
    assert [s.quadrant for s in segs] == ["Q2", "Q3"]
    for s in segs:
        assert 0.25 <= s.confidence <= 1 and s.windows == round(s.end - s.start)


def test_csv_textgrid_audacity_formats(tmp_path):
    segs = segments.segments_of(bodies("..1111111....4444444..") + bodies("2222222222222222222222", "music", 2.0, 10.0))
    paths = {ext: tmp_path / f"s{ext}" for ext in (".csv", ".TextGrid", ".txt")}
    for p in paths.values():
        segments.write(str(p), segs, duration=60.0)
    rows = list(csv.DictReader(io.StringIO(paths[".csv"].read_text())))
    assert list(rows[0]) == list(segments.CSV_COLUMNS) and len(rows) == len(segs) == 3
    assert {r["source"] for r in rows} == {"speech", "music"}
    for r in rows:
        assert float(r["end"]) - float(r["start"]) == pytest.approx(float(r["duration"]))
    # Praat TextGrid: long format, one interval tier per source, intervals tile [0, xmax] with no gap
    tg = paths[".TextGrid"].read_text()
    assert tg.startswith('File type = "ooTextFile"\nObject class = "TextGrid"\n')
    assert tg.count('class = "IntervalTier"') == 2 and 'name = "speech"' in tg and 'name = "music"' in tg
    for tier in tg.split('class = "IntervalTier"')[1:]:
        xs = [float(x) for x in re.findall(r"^\s+xmin = ([\d.]+)$|^\s+xmax = ([\d.]+)$", tier, re.M) for x in x if x]
        bounds = list(zip(xs[2::2], xs[3::2]))
        assert bounds[0][0] == 0 and bounds[-1][1] == 60.0
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert int(re.search(r"intervals: size = (\d+)", tier).group(1)) == len(bounds)
    labels = re.findall(r'text = "(.*)"', tg)
    assert set(labels) <= {"", "Q1", "Q2", "Q3", "Q4"} and {"Q1", "Q4", "Q2"} <= set(labels)
    # Audacity: start<TAB>end<TAB>label, in time order
    lines = paths[".txt"].read_text().splitlines()
    assert len(lines) == 3
    starts = []
    for ln in lines:
        a, b, label = ln.split("\t")
        assert float(a) < float(b) and re.match(r"(speech|music) Q[1-4] v=[+-]\d\.\d\d a=[+-]\d\.\d\d conf=\d\.\d\d$", label)
        starts.append(float(a))
    assert starts == sorted(starts)


def test_unknown_extension_is_a_clear_error(tmp_path):
    with pytest.raises(segments.ParameterError, match="TextGrid"):
        segments.write(str(tmp_path / "x.doc"), [])


def test_segments_command_on_results_jsonl(tmp_path):
    rows = bodies("...111111111111....")
    res = tmp_path / "r.jsonl"
    res.write_text("".join(json.dumps({"topic": "emotion.speech", **b}) + "\n" for b in rows) + "not json\n")
    out = tmp_path / "s.csv"
    p = subprocess.run([sys.executable, "-m", "streamer.cli", "segments", str(res), "--out", str(out)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert len(out.read_text().splitlines()) == 2
    bad = subprocess.run([sys.executable, "-m", "streamer.cli", "segments", str(tmp_path / "missing.jsonl")],
                         capture_output=True, text=True)
    assert bad.returncode == 3 and bad.stderr.count("\n") == 1 and "not found" in bad.stderr


def _replay(tiny_models, wav, tmp_path, *extra):
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "streamer.cli", "replay", str(wav), "--no-pub", "-q", "--out", str(out),
           "--speech-model", str(tiny_models["speech"]), "--music-model", str(tiny_models["music"]), *extra]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return [json.loads(ln) for ln in out.read_text().splitlines()]


def test_replay_defaults_track_and_write_segments(tiny_models, tmp_path, rng):
    """Default replay: activity from the built-in separator's presence (not the model head), a
    'tracked' object on every emotion message whose quadrant follows the taxonomy, and --segments."""
    import numpy as np
    import soundfile as sf

    from conftest import SR, tone
    from streamer import schema, taxonomy, tracking

    x = np.concatenate([tone(220, 6.0, amp=0.2), np.zeros(6 * SR, np.float32), tone(330, 8.0, amp=0.2)])
    x = x + (rng.standard_normal(x.size) * 0.003).astype(np.float32)
    wav = tmp_path / "a.wav"
    sf.write(wav, x, SR)
    segs = [tmp_path / "s.csv", tmp_path / "s.TextGrid", tmp_path / "s.txt"]
    rows = _replay(tiny_models, wav, tmp_path, *[a for s in segs for a in ("--segments", str(s))])
    emo = [r for r in rows if r["topic"].startswith("emotion.")]
    start = next(r for r in rows if r.get("event") == "start")
    assert start["tracking"]["smooth_s"] == {"speech": 0.5, "music": 5.0}
    assert start["tracking"]["method"] == tracking.METHOD
    assert start["tracking"]["params"] == tracking.DEFAULT_PARAMS
    for r in emo:
        schema.validate(r.pop("topic"), r)
        tr = r["tracked"]
        assert tr["quadrant"] == taxonomy.quadrant_of(tr["valence"], tr["arousal"])
        assert 0.25 <= tr["confidence"] <= 1
    model_act = _replay(tiny_models, wav, tmp_path, "--activity", "model", "--smooth", "0")
    emo_m = [r for r in model_act if r["topic"].startswith("emotion.")]
    assert all("tracked" not in r for r in emo_m)
    assert [r["valence"] for r in emo_m] == [r["valence"] for r in emo]          # raw fields unchanged
    assert [r["activity"] for r in emo_m] != [r["activity"] for r in emo]        # activity: another estimate
    assert all(s.is_file() for s in segs)
    assert segs[0].read_text().splitlines()[0] == ",".join(segments.CSV_COLUMNS)


def test_bad_smooth_is_one_line(tiny_models, tmp_path):
    wav = tmp_path / "a.wav"
    import numpy as np
    import soundfile as sf

    sf.write(wav, np.zeros(16000, np.float32), 16000)
    for bad in ("-1", "x", "speech=0", "voice=2"):
        p = subprocess.run([sys.executable, "-m", "streamer.cli", "replay", str(wav), "--no-pub", "--smooth", bad,
                            "--speech-model", str(tiny_models["speech"]), "--music-model", str(tiny_models["music"])],
                           capture_output=True, text=True)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and "--smooth" in p.stderr, p.stderr
