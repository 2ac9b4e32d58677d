"""The emotrack command line, run as a user runs it: a real process."""

import json
import subprocess
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import zmq

from streamer import schema

from conftest import DATA, REPO, emotrack_cmd, needs_data, tone

MIX = REPO / "examples" / "heldout_mix.ogg"


def run(*args, timeout=180, **kw):
    return subprocess.run(emotrack_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO, **kw)


def _tiny_args(tiny_models):
    return ["--speech-model", str(tiny_models["speech"]), "--music-model", str(tiny_models["music"])]


def assert_one_line_error(proc, match):
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("emotrack: ") and match in err, err
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("make, code, match", [
    (None, 3, "no such file"),
    (lambda p: p.write_bytes(b""), 3, "empty"),
    (lambda p: p.write_text("definitely not audio " * 100), 3, "cannot decode"),
])
def test_bad_input_one_line_nonzero(tmp_path, tiny_models, make, code, match):
    p = tmp_path / "in.wav"
    if make:
        make(p)
    proc = run("replay", str(p), "--no-pub", "--out", str(tmp_path / "o.jsonl"), *_tiny_args(tiny_models))
    assert proc.returncode == code
    assert_one_line_error(proc, match)


def test_corrupt_input_still_ends_the_jsonl_with_end_of_stream(tmp_path, tiny_models):
    p = tmp_path / "in.mp4"
    p.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    out = tmp_path / "o.jsonl"
    proc = run("replay", str(p), "--no-pub", "--out", str(out), *_tiny_args(tiny_models))
    assert_one_line_error(proc, "cannot decode")
    last = json.loads(out.read_text().splitlines()[-1])
    assert last["event"] == "end" and last["reason"].startswith("error:")


@pytest.mark.parametrize("args, match", [
    (["replay", "x.wav", "--bogus"], "unrecognized arguments"),
    (["replay", "x.wav", "--speech-hop", "-1"], "must be > 0"),
    (["replay", "x.wav", "--backend", "gpu"], "invalid choice"),
    (["predict", "x.wav"], "--source"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_options_one_line_exit_2(args, match):
    proc = run(*args)
    assert proc.returncode == 2
    assert_one_line_error(proc, match)


def test_tensorrt_backend_without_gpu(tmp_path, tiny_models):
    p = tmp_path / "a.wav"
    sf.write(p, tone(300, 4.0), 16000)
    proc = run("replay", str(p), "--no-pub", "--backend", "tensorrt", *_tiny_args(tiny_models))
    assert proc.returncode == 5
    assert_one_line_error(proc, "--backend tensorrt is not usable on this host")


def test_missing_model_is_a_clear_error(tmp_path):
    p = tmp_path / "a.wav"
    sf.write(p, tone(300, 4.0), 16000)
    proc = run("replay", str(p), "--no-pub", "--speech-model", str(tmp_path / "none.onnx"))
    assert proc.returncode == 4
    assert_one_line_error(proc, "model file not found")


def test_every_subcommand_has_help():
    for cmd in ("replay", "stream", "predict", "train", "record", "view", "report", "keys", "engines", "separate",
                "features"):
        proc = run(cmd, "--help")
        assert proc.returncode == 0 and "usage: emotrack " + cmd in proc.stdout


def test_stdin_replay(tmp_path, tiny_models):
    p = tmp_path / "a.flac"
    sf.write(p, tone(300, 12.0), 16000)
    with open(p, "rb") as fh:
        proc = subprocess.run(emotrack_cmd("replay", "-", "--no-pub", "--out", "-", "-q", *_tiny_args(tiny_models)),
                              stdin=fh, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(ln) for ln in proc.stdout.splitlines()]
    assert sum(ln["topic"] == "emotion.speech" for ln in lines) == 10
    assert lines[0]["stream"] == "stdin"


def test_stream_live_path_with_paced_file(tmp_path, tiny_models):
    p = tmp_path / "a.wav"
    sf.write(p, tone(300, 3.5), 16000)
    out = tmp_path / "o.jsonl"
    proc = run("stream", "--input", str(p), "--no-pub", "--out", str(out), *_tiny_args(tiny_models))
    assert proc.returncode == 0, proc.stderr
    assert "hop latency p50" in proc.stderr
    end = json.loads(out.read_text().splitlines()[-1])
    assert end["event"] == "end" and end["counters"]["blocks_dropped"] == 0


def test_sigterm_flushes_and_ends_cleanly(tmp_path, tiny_models):
    p = tmp_path / "a.wav"
    sf.write(p, tone(300, 30.0), 16000)
    out = tmp_path / "o.jsonl"
    proc = subprocess.Popen(emotrack_cmd("stream", "--input", str(p), "--no-pub", "--out", str(out),
                                         *_tiny_args(tiny_models)), cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if out.exists() and out.read_text().count("emotion.speech") >= 2:
            break
        time.sleep(0.1)
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert lines[-1]["event"] == "end" and lines[-1]["reason"] == "interrupted"
    speech = [ln for ln in lines if ln["topic"] == "emotion.speech"]
    assert len(speech) >= 2 and [m["seq"] for m in speech] == list(range(len(speech)))


@pytest.mark.skipif(not MIX.exists(), reason="examples/heldout_mix.ogg missing")
def test_replay_of_heldout_mix_reaches_a_subscriber_started_before_it(tmp_path, endpoint):
    """Shipped models, real decode, real PUB/SUB on loopback: nothing lost, in order."""
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    received = []

    def listen():
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        while True:
            if not poller.poll(30000):
                return
            topic, body = schema.decode(sub.recv_multipart())
            received.append((topic, body))
            if topic == "status" and body["event"] == "end":
                return

    th = threading.Thread(target=listen)
    th.start()
    out = tmp_path / "mix.jsonl"
    proc = run("replay", str(MIX), "--pub", endpoint, "--out", str(out))
    th.join(timeout=60)
    sub.close()
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    for ln in lines:
        t = ln.pop("topic")
        schema.validate(t, ln)
    emo_file = [ln for ln in lines if "source" in ln]
    emo_sub = [b for t, b in received if t.startswith("emotion.")]
    assert emo_sub == emo_file
    for src, n_expected in (("speech", 88), ("music", 41)):
        msgs = [m for m in emo_file if m["source"] == src]
        assert [m["seq"] for m in msgs] == list(range(len(msgs)))
        assert len(msgs) == n_expected
    assert all(b["model"].startswith("emotrack-") for b in emo_file)
    # honest models react to the programme: not one constant prediction
    assert len({m["quadrant"] for m in emo_file if m["source"] == "speech"}) > 1


@needs_data("speech_ravdess")
def test_predict_on_heldout_ravdess(tmp_path):
    import csv

    with open(DATA / "speech_ravdess" / "manifest.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["speaker"] in ("actor19", "actor24")][:6]
    files = [str(DATA / "speech_ravdess" / r["path"]) for r in rows]
    out = tmp_path / "p.jsonl"
    proc = run("predict", *files, "--source", "speech", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    preds = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [p["path"] for p in preds] == files
    for p in preds:
        assert set(p) >= {"path", "source", "valence", "arousal", "quadrant", "probs"}
        assert p["quadrant"] in schema.QUADRANTS and abs(sum(p["probs"].values()) - 1) < 1e-3
        # rounded to 4 digits, as replay's messages are
        for v in (p["valence"], p["arousal"], p["activity"], *p["probs"].values()):
            assert v == round(v, 4)


def test_predict_reports_unreadable_files_and_keeps_the_rest(tmp_path, tiny_models):
    good = tmp_path / "a.wav"
    sf.write(good, tone(300, 2.0), 16000)
    proc = run("predict", str(good), str(tmp_path / "missing.wav"), "--source", "speech",
               "--model", str(tiny_models["speech"]))
    assert proc.returncode == 3
    assert len(proc.stdout.splitlines()) == 1
    assert "no such file" in proc.stderr and "Traceback" not in proc.stderr


def test_stream_without_a_capture_device_is_one_clear_line(tiny_models):
    import sounddevice as sd

    if any(d["max_input_channels"] > 0 for d in sd.query_devices()):
        pytest.skip("this host has a capture device")
    proc = run("stream", "--no-pub", *_tiny_args(tiny_models))
    assert proc.returncode == 3
    assert_one_line_error(proc, "no capture device")


def test_replay_with_the_descriptor_music_model(tmp_path):
    """The alternative music model (handcrafted descriptors) through the real CLI on the shipped example:
    every music window published, and the windows inside the held-out Q2 song called Q2 more often than
    the windows inside the other songs."""
    out = tmp_path / "dnn.jsonl"
    proc = run("replay", str(MIX), "--no-pub", "--sources", "music", "--music-model",
               str(REPO / "engines" / "models" / "music_dnn.onnx"), "--out", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    msgs = [json.loads(ln) for ln in out.read_text().splitlines()]
    music = [m for m in msgs if m.get("source") == "music"]
    assert len(music) == 41 and {m["model"] for m in music} == {"emotrack-dnn_music"}
    truth = json.loads((REPO / "examples" / "heldout_mix.ogg.truth.json").read_text())["songs"]
    q2 = next(s for s in truth if s["quadrant"] == "Q2")
    inside = [m["quadrant"] == "Q2" for m in music if q2["t_start"] <= m["t_start"] and m["t_end"] <= q2["t_end"]]
    outside = [m["quadrant"] == "Q2" for m in music if m["t_start"] >= q2["t_end"]]
    assert inside and outside and np.mean(inside) > np.mean(outside)
