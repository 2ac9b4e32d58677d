import subprocess
import time

import numpy as np
import pytest
import soundfile as sf

from streamer.errors import InputError, ParameterError
from streamer.sources import ArraySource, FFmpegSource, PacedSource, SoundFileSource, open_source

from conftest import SR, tone


def _read(src):
    with src:
        return np.concatenate(list(src.blocks()))


@pytest.fixture
def stereo44(tmp_path):
    t = np.arange(int(2.0 * 44100)) / 44100
    left = 0.3 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "stereo44.wav"
    sf.write(path, np.stack([left, left], axis=1), 44100)
    return path


def test_soundfile_source_downmixes_and_resamples_once(stereo44):
    src = open_source(str(stereo44))
    assert isinstance(src, SoundFileSource)
    y = _read(src)
    assert abs(y.size - 2 * SR) <= 2
    spec = np.abs(np.fft.rfft(y[2000:-2000]))
    assert abs(np.argmax(spec) * SR / (y.size - 4000) - 440) < 3
    assert np.max(np.abs(y)) == pytest.approx(0.3, abs=0.01)


def test_ffmpeg_decodes_video_containers_like_soundfile(tmp_path, stereo44):
    mkv = tmp_path / "clip.mkv"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=black:s=64x64:d=2",
                    "-i", str(stereo44), "-shortest", "-c:v", "libx264", "-c:a", "flac", str(mkv)], check=True)
    src = open_source(str(mkv))
    assert isinstance(src, FFmpegSource)
    a = _read(src)
    b = _read(open_source(str(stereo44)))
    n = min(a.size, b.size)
    assert abs(a.size - b.size) < 0.05 * SR
    # same audio, resampled by two resamplers: close, not identical
    assert np.corrcoef(a[1000:n - 1000], b[1000:n - 1000])[0, 1] > 0.99


def test_stdin_goes_through_ffmpeg(stereo44):
    with open(stereo44, "rb") as fh:
        proc = subprocess.run(["python", "-c", (
            "import sys, numpy as np; from streamer.sources import open_source\n"
            "s = open_source('-'); y = np.concatenate(list(s.blocks())); print(y.size)")],
            stdin=fh, capture_output=True, text=True, check=True)
    assert abs(int(proc.stdout) - 2 * SR) < 0.05 * SR


@pytest.mark.parametrize("make, match", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_text("this is not audio\n" * 50), "cannot decode"),
])
def test_bad_files_raise_one_clear_input_error(tmp_path, make, match):
    p = tmp_path / "bad.wav"
    make(p)
    with pytest.raises(InputError, match=match) as exc:
        _read(open_source(str(p)))
    assert "\n" not in str(exc.value)


def test_truncated_wav_yields_what_is_there_and_warns(tmp_path):
    p = tmp_path / "t.wav"
    sf.write(p, tone(440, 2.0), SR, subtype="PCM_16")
    data = p.read_bytes()
    p.write_bytes(data[:len(data) // 2])
    src = open_source(str(p))
    y = _read(src)
    assert 0.9 * SR < y.size < 1.1 * SR
    assert src.warning and "truncated" in src.warning


def test_disallowed_url_scheme_is_refused():
    with pytest.raises(ParameterError, match="not allowed"):
        open_source("concat:/etc/passwd|/etc/hosts")


def test_nan_and_inf_are_sanitised_and_counted():
    x = tone(300, 1.0)
    x[100:110] = np.nan
    x[500] = np.inf
    src = ArraySource(x)
    y = _read(src)
    assert np.isfinite(y).all() and src.counters["samples_sanitised"] == 11


def test_array_source_resamples_8k_to_16k():
    y = _read(ArraySource(tone(200, 1.0, sr=8000), sample_rate=8000))
    assert abs(y.size - SR) <= 2


def test_paced_source_runs_at_real_time():
    src = PacedSource(ArraySource(tone(300, 0.6)), block_s=0.1)
    t0 = time.monotonic()
    y = _read(src)
    assert y.size == int(0.6 * SR)
    assert time.monotonic() - t0 >= 0.5  # not faster than real time
    assert src.last_arrival is not None


def test_paced_source_drops_and_counts_when_the_consumer_stalls():
    src = PacedSource(ArraySource(tone(300, 1.5)), block_s=0.05, max_queue_s=0.1, speed=4.0)
    got = 0
    with src:
        for i, blk in enumerate(src.blocks()):
            if i == 0:
                time.sleep(0.3)  # the consumer freezes; capture must not wait for it
            got += blk.size
    dropped = src.counters["blocks_dropped"]
    assert dropped > 0
    assert got + dropped * int(0.05 * SR) == int(1.5 * SR)
