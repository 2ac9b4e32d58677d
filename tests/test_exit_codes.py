"""The exit-code table of docs/CLI.md, each code produced by a real command."""

import re
import signal
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf
import zmq

from conftest import REPO, emotrack_cmd, free_tcp_endpoint, tone

MIX = REPO / "examples" / "heldout_mix.ogg"


def run(*args, timeout=180):
    return subprocess.run(emotrack_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO)


def check(proc, code, match):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    if code:
        err = proc.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("emotrack: ") and match in err[0], proc.stderr
        assert "Traceback" not in proc.stderr


@pytest.fixture
def wav(tmp_path):
    p = tmp_path / "a.wav"
    sf.write(p, np.concatenate([tone(220, 6.0), tone(440, 6.0)]), 16000)
    return p


def test_the_table_is_documented_once_and_complete():
    text = (REPO / "docs" / "CLI.md").read_text()
    rows = dict(re.findall(r"^\| (\d+) \| ([^|]+)\|", text, re.M))
    assert sorted(int(k) for k in rows) == [0, 1, 2, 3, 4, 5, 6, 130]
    from streamer import errors

    for cls, code in ((errors.ParameterError, 2), (errors.InputError, 3), (errors.ModelError, 4),
                      (errors.BackendError, 5), (errors.EndpointError, 6)):
        assert cls.exit_code == code and str(code) in rows


def test_0_ok(tmp_path, wav, tiny_models):
    check(run("replay", str(wav), "--no-pub", "--out", str(tmp_path / "o.jsonl"), "--speech-model",
              str(tiny_models["speech"]), "--music-model", str(tiny_models["music"])), 0, "")


def test_1_anything_else_such_as_an_output_that_cannot_be_written(tmp_path, wav):
    check(run("features", str(wav), "--kind", "handcrafted", "-o", str(tmp_path / "no" / "such" / "x.csv")), 1,
          "cannot write")


@pytest.mark.parametrize("args, match", [
    (["replay", "x.wav", "--bogus"], "unrecognized arguments"),
    (["replay", "x.wav", "--speech-hop", "-1"], "must be > 0"),
    (["replay", str(MIX), "--no-pub", "--sources", "noise"], "--sources"),
    (["replay", str(MIX), "--pub", "tcp://127.0.0.1:notaport"], "port"),
    (["replay", str(MIX), "--pub", "udp://127.0.0.1:5000"], "expected tcp://"),
    (["features", str(MIX), "--kind", "mfcc", "-o", "x.csv"], "--kind"),
])
def test_2_bad_option_or_value(args, match):
    check(run(*args), 2, match)


@pytest.mark.parametrize("make, match", [
    (None, "no such file"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_text("not audio at all " * 200), "cannot decode"),
])
def test_3_unreadable_input(tmp_path, tiny_models, make, match):
    p = tmp_path / "in.ogg"
    if make:
        make(p)
    check(run("replay", str(p), "--no-pub", "--speech-model", str(tiny_models["speech"]), "--music-model",
              str(tiny_models["music"])), 3, match)
    check(run("separate", str(p), "-o", str(tmp_path / "stems")), 3, match)


def test_4_model_problem(tmp_path, wav):
    check(run("replay", str(wav), "--no-pub", "--speech-model", str(tmp_path / "missing.onnx")), 4,
          "model file not found")
    broken = tmp_path / "m.onnx"
    broken.write_bytes(b"not onnx")
    broken.with_suffix(".json").write_text("{")
    check(run("predict", str(wav), "--source", "music", "--model", str(broken)), 4, "m")


def test_5_backend_cannot_run_here(wav, tiny_models):
    pytest.importorskip("zmq")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here: --backend tensorrt may run")
    except ImportError:
        pass
    check(run("replay", str(wav), "--no-pub", "--backend", "tensorrt", "--speech-model", str(tiny_models["speech"]),
              "--music-model", str(tiny_models["music"])), 5, "tensorrt")


def test_6_endpoint_busy(tmp_path, wav, tiny_models):
    ep = free_tcp_endpoint()
    ctx = zmq.Context.instance()
    holder = ctx.socket(zmq.PUB)
    holder.setsockopt(zmq.LINGER, 0)
    holder.bind(ep)
    try:
        check(run("replay", str(wav), "--pub", ep, "--no-snapshot", "--out", str(tmp_path / "o.jsonl"),
                  "--speech-model", str(tiny_models["speech"]), "--music-model", str(tiny_models["music"])), 6,
              "Address already in use")
        snap = free_tcp_endpoint()
        holder2 = ctx.socket(zmq.ROUTER)
        holder2.setsockopt(zmq.LINGER, 0)
        holder2.bind(snap)
        try:  # an explicit --snapshot endpoint that is busy (the derived default only warns)
            check(run("replay", str(wav), "--pub", free_tcp_endpoint(), "--snapshot", snap, "--speech-model",
                      str(tiny_models["speech"]), "--music-model", str(tiny_models["music"])), 6,
                  "snapshot endpoint")
        finally:
            holder2.close(0)
    finally:
        holder.close(0)


def test_130_interrupted():
    proc = subprocess.Popen(emotrack_cmd("features", str(MIX), "--kind", "music_descriptors", "--hop", "1",
                                         "-o", "-"),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline().startswith("t_start,t_end,")  # it is working
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "emotrack: interrupted" and "Traceback" not in err


def test_list_devices_says_when_there_is_none():
    import sys

    proc = run("stream", "--list-devices", timeout=60)
    # the devices as a fresh process sees them now (PortAudio's list is fixed when a process first
    # asks, and another test may have started and stopped a sound server since)
    probe = subprocess.run([sys.executable, "-c", "import sounddevice as sd; print('\\n'.join(d['name'] for d in "
                            "sd.query_devices() if d['max_input_channels'] > 0))"],
                           capture_output=True, text=True, timeout=60)
    inputs = [n for n in probe.stdout.splitlines() if n] if probe.returncode == 0 else []  # no PortAudio: 3 too
    if inputs:
        assert proc.returncode == 0 and inputs[0] in proc.stdout
    else:
        check(proc, 3, "no capture device")
        assert "emotrack stream --input FILE" in proc.stderr


def test_training_without_its_extra_or_its_corpora(tmp_path):
    import os
    import sys

    # the training extra absent (TensorFlow hidden from this interpreter): 5, before any corpus is loaded
    hide = ("import sys; sys.modules['tensorflow'] = None; from streamer.cli import main; "
            "sys.exit(main(['train', 'speech', '--out', %r]))" % str(tmp_path / "run"))
    check(subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True, timeout=120, cwd=REPO), 5,
          "training extra")
    # the corpora not where EMOTRACK_DATA says: 3, naming the missing manifest
    pytest.importorskip("tensorflow", reason="the training extra is not installed")
    env = dict(os.environ, EMOTRACK_DATA=str(tmp_path / "no-data"))
    proc = subprocess.run(emotrack_cmd("train", "speech", "--out", str(tmp_path / "run")), capture_output=True,
                          text=True, timeout=300, cwd=REPO, env=env)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("emotrack: corpus") and "Traceback" not in proc.stderr
