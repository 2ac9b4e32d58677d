"""``emotrack separate`` and ``emotrack features`` run as a user runs them, on the held-out
example mix (held-out RAVDESS speakers over held-out 4Q songs, its truth file beside it)."""

import csv
import json
import subprocess

import numpy as np
import pytest
import soundfile as sf

from streamer import descriptors, music_descriptors
from streamer.inputs import window_inputs
from streamer.predict import read_clip

from conftest import REPO, emotrack_cmd

MIX = REPO / "examples" / "heldout_mix.ogg"
SR = 16000


def run(*args, timeout=300):
    return subprocess.run(emotrack_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO)


def one_line_error(proc, code, match):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("emotrack: ") and match in err, err


@pytest.fixture(scope="module")
def mix():
    return read_clip(str(MIX))


@pytest.mark.parametrize("fmt, tol", [("wav", 1e-6), ("flac", 2e-6)])
def test_separate_writes_stems_that_sum_to_the_input(tmp_path, mix, fmt, tol):
    proc = run("separate", str(MIX), "-o", str(tmp_path / "stems"), "--format", fmt)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "stems" / "heldout_mix"
    assert sorted(p.name for p in folder.iterdir()) == [f"music.{fmt}", f"speech.{fmt}"]  # no .part left
    speech, sr = sf.read(folder / f"speech.{fmt}", dtype="float32")
    music, sr2 = sf.read(folder / f"music.{fmt}", dtype="float32")
    assert sr == sr2 == SR and speech.shape == music.shape == mix.shape
    assert np.abs(speech + music - mix).max() < tol
    # it separates: the speech stem holds more of the energy where the truth file has speech
    truth = json.loads(MIX.with_name(MIX.name + ".truth.json").read_text())
    has_speech = np.zeros(mix.size, bool)
    for clip in truth["speech"]:
        has_speech[int(clip["t_start"] * SR):int(clip["t_end"] * SR)] = True
    n = mix.size // 1600 * 1600
    es, em = (speech[:n] ** 2).reshape(-1, 1600).sum(1), (music[:n] ** 2).reshape(-1, 1600).sum(1)
    share = es / (es + em + 1e-12)
    cover = has_speech[:n].reshape(-1, 1600).mean(1)
    inside, outside = share[cover > 0.9].mean(), share[cover < 0.1].mean()
    assert inside > 1.3 * outside, (inside, outside)


def test_separate_errors_are_one_line(tmp_path):
    one_line_error(run("separate", str(tmp_path / "missing.wav"), "-o", str(tmp_path)), 3, "no such file")
    (tmp_path / "file").write_text("x")
    one_line_error(run("separate", str(MIX), "-o", str(tmp_path / "file")), 2, "not a folder")
    # Spleeter without its weights on disk: a model problem, with what to do
    proc = subprocess.run(emotrack_cmd("separate", str(MIX), "-o", str(tmp_path), "--separator", "spleeter",
                                       "--separator-model", str(tmp_path / "no-2stems")),
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode in (4, 5), proc.stderr  # 5 where the separation extra is not installed
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "heldout_mix" / "speech.wav").exists()


def _read_csv(path):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], np.array(rows[1:], dtype=np.float64)


def test_features_handcrafted_and_music_descriptors_csv(tmp_path, mix):
    out = tmp_path / "d.csv"
    proc = run("features", str(MIX), "--kind", "handcrafted,music_descriptors", "--window", "10", "--hop", "20",
               "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    header, rows = _read_csv(out)
    names = descriptors.feature_names() + music_descriptors.feature_names()
    assert header == ["t_start", "t_end"] + names and len(set(header)) == len(header)
    # windows every 20 s from 0, the last one ending at the end of the input
    assert rows[:, 0].tolist() == [0, 20, 40, 60, 80] and rows[-1, 1] == pytest.approx(90.0)
    assert np.all(rows[:, 1] - rows[:, 0] == 10)
    # each row is exactly what a model of these inputs sees for that window
    for t0, row in ((0, rows[0]), (80, rows[-1])):
        want = window_inputs(mix[t0 * SR:(t0 + 10) * SR], ["handcrafted", "music_descriptors"])
        want = np.concatenate([want["handcrafted"], want["music_descriptors"]])
        np.testing.assert_allclose(row[2:], want, rtol=1e-5, atol=1e-5)
    assert np.isfinite(rows).all() and rows[:, 2:].std(axis=0).max() > 0  # windows differ


def test_features_log_mel_one_row_per_frame(tmp_path, mix):
    out = tmp_path / "f.csv"
    proc = run("features", str(MIX), "--kind", "features", "--window", "3", "--hop", "30", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    header, rows = _read_csv(out)
    assert header[:4] == ["t_start", "t_end", "frame", "t"] and header[4] == "logmel_0"
    assert header[-1] == "delta2_63" and len(header) == 4 + 3 * 64
    starts = sorted(set(rows[:, 0]))
    assert starts == [0, 30, 60, 87]
    first = rows[rows[:, 0] == 30]
    img = window_inputs(mix[30 * SR:33 * SR], ["features"])["features"]
    assert first.shape[0] == img.shape[0] and first[:, 2].tolist() == list(range(img.shape[0]))
    np.testing.assert_allclose(first[:, 4:], img.transpose(0, 2, 1).reshape(img.shape[0], -1), rtol=1e-5,
                               atol=1e-4)
    assert first[0, 3] == pytest.approx(30.0125)  # the first frame's centre, seconds into the input
    assert np.all(np.diff(first[:, 3]) == pytest.approx(0.01))


def test_features_bad_options_are_one_line_exit_2(tmp_path):
    one_line_error(run("features", str(MIX), "--kind", "mfcc", "-o", str(tmp_path / "x.csv")), 2, "--kind")
    one_line_error(run("features", str(MIX), "--kind", "features,handcrafted", "-o", str(tmp_path / "x.csv")), 2,
                   "cannot be combined")
    one_line_error(run("features", str(MIX), "--kind", "handcrafted", "-o", str(tmp_path / "x.txt")), 2, ".csv")
    one_line_error(run("features", str(tmp_path / "nope.ogg"), "--kind", "handcrafted", "-o",
                       str(tmp_path / "x.csv")), 3, "no such file")
