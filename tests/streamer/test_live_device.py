"""Live capture through real PortAudio: a PulseAudio server with a null sink gives
a capture device (its monitor) on a machine without a sound card.  Killing and
restarting the server while emotrack streams is a real device loss."""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import REPO, emotrack_cmd

PA_ARGS = ["--daemonize=yes", "--exit-idle-time=-1", "-n", "--load=module-null-sink sink_name=emotrack_null",
           "--load=module-native-protocol-unix"]


def _pa(*args):
    return subprocess.run(["pulseaudio", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def pulse_device():
    if shutil.which("pulseaudio") is None:
        pytest.skip("pulseaudio not installed (scripts/setup.sh --test installs it)")
    _pa("-k")
    if _pa(*PA_ARGS).returncode != 0:
        pytest.skip("cannot start a PulseAudio server here")
    import sounddevice as sd

    sd._terminate()
    sd._initialize()
    if not any(d["name"] == "pulse" and d["max_input_channels"] > 0 for d in sd.query_devices()):
        _pa("-k")
        pytest.skip("PortAudio sees no 'pulse' capture device (libasound2-plugins missing?)")
    yield "pulse"
    _pa("-k")


def _lines(path):
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


def _wait_for(path, n_speech, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if sum(ln["topic"] == "emotion.speech" for ln in _lines(path)) >= n_speech:
            return True
        time.sleep(0.2)
    return False


def _stream(device, out, tiny_models, stall, reopen):
    return subprocess.Popen(emotrack_cmd("stream", "--device", device, "--no-pub", "--out", str(out),
                                         "--stall-timeout", str(stall), "--reopen", str(reopen),
                                         "--speech-model", str(tiny_models["speech"]),
                                         "--music-model", str(tiny_models["music"])),
                            cwd=REPO, stderr=subprocess.PIPE, text=True)


def test_capture_survives_a_lost_device_and_stops_cleanly(tmp_path, pulse_device, tiny_models):
    out = tmp_path / "live.jsonl"
    proc = _stream(pulse_device, out, tiny_models, 1.5, 8)
    try:
        assert _wait_for(out, 2, 30), "no speech windows from the live device"
        _pa("-k")  # the device goes away
        time.sleep(2.5)
        assert _pa(*PA_ARGS).returncode == 0  # and comes back
        before = sum(ln["topic"] == "emotion.speech" for ln in _lines(out))
        assert _wait_for(out, before + 3, 40), "capture did not resume after the device came back"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    lines = _lines(out)
    end = lines[-1]
    assert end["event"] == "end" and end["reason"] == "interrupted"
    assert end["counters"]["device_reopens"] >= 1
    speech = [ln for ln in lines if ln["topic"] == "emotion.speech"]
    assert [m["seq"] for m in speech] == list(range(len(speech)))


def test_a_device_that_never_comes_back_ends_with_one_line(tmp_path, pulse_device, tiny_models):
    out = tmp_path / "live.jsonl"
    proc = _stream(pulse_device, out, tiny_models, 1, 2)
    assert _wait_for(out, 1, 30)
    _pa("-k")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3
    ours = [ln for ln in err.splitlines() if ln.startswith("emotrack:")]
    assert len(ours) == 1 and "could not be reopened" in ours[0], err[-2000:]
    end = _lines(out)[-1]
    assert end["event"] == "end" and end["reason"].startswith("error:")
