"""emotrack batch: archive replay on a local Ray cluster equals single-process replay; resumable.

Real files cut from examples/heldout_mix.ogg (ogg, 44.1 kHz stereo flac, wav, mp3 through
ffmpeg), the shipped models on ONNX Runtime, a real local Ray cluster (ray.init with the
machine's cores), real worker processes killed with SIGKILL.
"""

import json
import math
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamer.ops.batch import INDEX_NAME, TMP_PREFIX, RunConfig, plan_chunks, run_batch
from streamer.cli import main as cli_main

from conftest import REPO, emotrack_cmd

MIX = REPO / "examples" / "heldout_mix.ogg"
CHUNK_S = "20"  # small, so 45 s and longer files take the chunked and stitched path

try:
    import ray
except ImportError:  # pragma: no cover - ray is in the test extra
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed (pip install 'emotrack[batch]')")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A folder of real mixed files, and each one's single-process `emotrack replay --out` lines."""
    import soxr

    root = tmp_path_factory.mktemp("archive")
    folder = root / "in"
    folder.mkdir()
    x, sr = sf.read(MIX, dtype="float32")
    sf.write(folder / "a30.ogg", x[:30 * sr], sr)
    y = soxr.resample(x[20 * sr:65 * sr], sr, 44100)
    sf.write(folder / "b45.flac", np.stack([y, 0.6 * y], axis=1), 44100)  # resampled, downmixed
    sf.write(folder / "c90.wav", x, sr)
    sf.write(root / "d67.wav", x[10 * sr:int(77.3 * sr)], sr)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(root / "d67.wav"),
                    "-c:a", "libmp3lame", "-b:a", "96k", str(folder / "d67.mp3")], check=True, timeout=60)
    refs = {}
    for f in sorted(folder.iterdir()):
        out = root / f"ref-{f.stem}.jsonl"
        proc = subprocess.run(emotrack_cmd("replay", str(f), "--no-pub", "-q", "--activity", "model", "--smooth", "0",
                                           "--out", str(out)),
                              capture_output=True, text=True, timeout=180, cwd=REPO)
        assert proc.returncode == 0, proc.stderr
        refs[f.stem] = _lines(out)
    return folder, refs


@pytest.fixture(scope="module")
def ray_cluster():
    if ray is None:
        pytest.skip("ray is not installed (pip install 'emotrack[batch]')")
    ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False,
             object_store_memory=128 << 20)
    yield
    ray.shutdown()


def _lines(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def _close(a, b, tol=1.01e-4) -> bool:
    """Equal, floats to one unit of the wire's 4th decimal: the same window inferred in another
    batch can differ in float32's last bit, which may round the published value the other way."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= tol
    return a == b


def _no_wall(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "wall_time"}


def assert_same_as_replay(got: list[dict], ref: list[dict]) -> None:
    """Emotion bodies equal (but wall_time) in the same order; start status equal; end counts equal."""
    emo = lambda rows: [_no_wall(r) for r in rows if r["topic"].startswith("emotion.")]  # noqa: E731
    g, r = emo(got), emo(ref)
    assert len(g) == len(r) and len(g) > 0
    bad = [(x, y) for x, y in zip(g, r) if not _close(x, y)]
    assert not bad, f"{len(bad)} messages differ, first: {bad[0]}"
    for topic in ("emotion.speech", "emotion.music"):  # seq counts from 0 without gaps or repeats
        assert [b["seq"] for b in g if b["topic"] == topic] == list(range(sum(b["topic"] == topic for b in g)))
    gs, rs = [b for b in got if b["topic"] == "status"], [b for b in ref if b["topic"] == "status"]
    assert _no_wall(gs[0]) == _no_wall(rs[0]) and gs[0]["event"] == "start"
    assert gs[-1]["event"] == "end" == rs[-1]["event"]
    for k in ("windows", "stream_time", "samples_in", "samples_sanitised"):
        assert gs[-1]["counters"][k] == rs[-1]["counters"][k], k
    assert [b["event"] for b in gs] == ["start", "end"]


def _index(out: Path) -> dict:
    return json.loads((out / INDEX_NAME).read_text())["files"]


# ----------------------------------------------------------------------------- chunk planning


@pytest.mark.parametrize("specs", [
    {"speech": (48000, 16000), "music": (160000, 32000)},   # the shipped models: 3 s / 1 s, 10 s / 2 s
    {"speech": (48000, 12000), "music": (160000, 40000)},   # other hops: a coarser common grid
])
def test_chunks_own_every_window_of_the_whole_file_once(specs):
    """Simulate the windowers: the kept windows of all chunks are exactly those of the whole file."""
    def windows(total, length, hop):  # WindowStream: full windows, then a tail (padded if short)
        full = [(s, s + length) for s in range(0, total - length + 1, hop)]
        end = full[-1][1] if full else 0
        tail = [] if total <= end else [(max(0, total - length), total)]
        return full, tail

    for total in [5000, 159_999, 160_000, 330_000, 1_440_000, 1_077_123, 4_800_321]:
        for chunk in [16000, 320_000, 480_000, 9_600_000]:
            tasks = plan_chunks("f", "f.wav", total, specs, chunk)
            assert tasks[-1].last and all(not t.last for t in tasks[:-1])
            for length, hop in specs.values():
                whole = sum(windows(total, length, hop), [])
                kept = []
                for t in tasks:
                    seg = (t.stop or total) - t.start
                    assert seg >= min(length, total) and t.start % hop == 0
                    full, tail = windows(seg, length, hop)
                    shifted = [(t.start + a, t.start + b) for a, b in full]
                    if t.last:
                        kept += shifted + [(t.start + a, t.start + b) for a, b in tail]
                    else:
                        kept += [w for w in shifted if w[0] < t.own_end]
                assert kept == whole, (total, chunk, length, hop, len(tasks))
            step = max(chunk, math.lcm(160, *(h for _, h in specs.values())))
            if total >= 3 * step + 160_000 + 16000:  # room for 3 chunks and a last window
                assert len(tasks) >= 3


# ----------------------------------------------------------------------------- equality with replay


@needs_ray
def test_ray_batch_equals_single_process_replay(archive, ray_cluster, tmp_path, capsys):
    folder, refs = archive
    out = tmp_path / "out"
    rc = cli_main(["batch", str(folder), "--out", str(out), "--chunk", CHUNK_S])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "4 done, 0 skipped" in err and "Ray" in err
    index = _index(out)
    assert sorted(index) == sorted(refs)
    for name, ref in refs.items():
        assert index[name]["status"] == "done" and index[name]["error"] is None
        assert_same_as_replay(_lines(out / f"{name}.jsonl"), ref)
    assert index["c90"]["chunks"] == 4 and index["d67"]["chunks"] == 3 and index["a30"]["chunks"] == 1
    assert index["c90"]["duration_s"] == 90.0 and index["c90"]["windows"] == {"speech": 88, "music": 41}
    assert not list(out.glob(f"{TMP_PREFIX}*"))


@needs_ray
def test_stateful_separator_is_passed_to_the_workers_and_files_are_not_split(archive, ray_cluster, tmp_path):
    from streamer.separation import SEPARATORS

    if "builtin" not in SEPARATORS:
        pytest.skip("no builtin separator in this tree")
    folder, _ = archive
    flac = folder / "b45.flac"  # split in two with --separator none and --chunk 20
    ref = tmp_path / "ref.jsonl"
    # batch takes activity from the separator's own presence: replay's --activity separator
    proc = subprocess.run(emotrack_cmd("replay", str(flac), "--separator", "builtin", "--activity", "separator", "--no-pub",
                                       "-q", "--smooth", "0", "--out", str(ref)),
                          capture_output=True, text=True, timeout=180, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    s = run_batch([str(flac)], tmp_path / "out", RunConfig(separator="builtin"), chunk_s=float(CHUNK_S))
    assert s.exit_code == 0 and s.done == ["b45"]
    assert _index(tmp_path / "out")["b45"]["chunks"] == 1
    got = _lines(tmp_path / "out" / "b45.jsonl")
    assert got[0]["separator"] == "builtin"
    assert_same_as_replay(got, _lines(ref))


# ----------------------------------------------------------------------------- failures and resuming


def _ray_descendants_running(task_name: str) -> list[int]:
    """Ray worker processes of this test process that are executing ``task_name`` now."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(d))
    found, todo = [], [os.getpid()]
    while todo:
        for c in children.get(todo.pop(), []):
            todo.append(c)
            try:
                cmd = Path(f"/proc/{c}/cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(f"ray::{task_name}".encode()):
                found.append(c)
    return found


@needs_ray
def test_worker_killed_mid_task_is_retried_and_nothing_is_lost(archive, ray_cluster, tmp_path):
    folder, refs = archive
    out = tmp_path / "out"
    killed, stop = [], threading.Event()

    def killer():  # SIGKILL the first worker seen executing a chunk
        while not stop.is_set() and not killed:
            for pid in _ray_descendants_running("run_chunk"):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.01)

    t = threading.Thread(target=killer)
    t.start()
    try:
        s = run_batch([str(p) for p in sorted(folder.iterdir())], out, RunConfig(), chunk_s=float(CHUNK_S),
                      retries=2)
    finally:
        stop.set()
        t.join()
    assert killed, "no worker was seen running a task"
    assert s.exit_code == 0 and not s.failed and sorted(s.done) == sorted(refs)
    for name, ref in refs.items():
        assert_same_as_replay(_lines(out / f"{name}.jsonl"), ref)


@needs_ray
def test_interrupted_batch_resumes_with_nothing_missing_or_twice(archive, ray_cluster, tmp_path):
    folder, refs = archive
    out = tmp_path / "out"
    # 1) a single-process batch, SIGKILLed once its first file is in the index
    proc = subprocess.Popen(emotrack_cmd("batch", str(folder), "--out", str(out), "--no-ray", "--chunk", CHUNK_S, "-q"),
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    done_before = []
    while not done_before and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
        try:
            done_before = [n for n, e in _index(out).items() if e["status"] == "done"]
        except (OSError, ValueError):
            pass  # not written yet (it is replaced atomically, never seen half-written)
    proc.kill()
    proc.wait()
    assert 0 < len(done_before) < len(refs), f"killed too late: {done_before}"
    outputs_before = {n: (out / f"{n}.jsonl").stat().st_mtime_ns for n in done_before}

    # 2) the re-run on the Ray cluster skips what finished and does the rest
    paths = [str(p) for p in sorted(folder.iterdir())]
    s = run_batch(paths, out, RunConfig(), chunk_s=float(CHUNK_S))
    assert s.exit_code == 0 and not s.failed
    assert sorted(s.skipped) == sorted(done_before)
    assert sorted(s.done) == sorted(set(refs) - set(done_before))
    for name, ref in refs.items():
        assert_same_as_replay(_lines(out / f"{name}.jsonl"), ref)
    assert {n: (out / f"{n}.jsonl").stat().st_mtime_ns for n in done_before} == outputs_before
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == \
        sorted([INDEX_NAME] + [f"{n}.jsonl" for n in refs])  # no temporary or duplicate files

    # 3) a third run has nothing to do; a changed input is done again
    s = run_batch(paths, out, RunConfig(), chunk_s=float(CHUNK_S), ray=None)
    assert sorted(s.skipped) == sorted(refs) and not s.done
    a30 = folder / "a30.ogg"
    os.utime(a30, ns=(a30.stat().st_atime_ns, a30.stat().st_mtime_ns + 1_000_000_000))
    s = run_batch(paths, out, RunConfig(), chunk_s=float(CHUNK_S), ray=None)
    assert s.done == ["a30"] and len(s.skipped) == len(refs) - 1
    assert_same_as_replay(_lines(out / "a30.jsonl"), refs["a30"])


def test_failed_files_are_reported_retried_and_then_done(tmp_path, capsys):
    x, sr = sf.read(MIX, dtype="float32", frames=12 * 16000)
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "good.wav", x, sr)
    (folder / "broken.wav").write_text("not audio at all " * 200)
    out = tmp_path / "out"
    args = ["batch", str(folder), str(tmp_path / "missing.wav"), "--out", str(out), "--no-ray"]
    assert cli_main(args) == 3  # InputError's exit code
    err = capsys.readouterr().err
    assert "1 done, 0 skipped" in err and "2 failed" in err
    assert "emotrack: broken: cannot decode" in err and "emotrack: missing: no such file" in err
    index = _index(out)
    assert index["good"]["status"] == "done"
    assert index["broken"]["status"] == "failed" and "cannot decode" in index["broken"]["error"]
    assert index["broken"]["exit_code"] == 3 and not (out / "broken.jsonl").exists()

    # failed ones are tried again (and fail again); the finished one is skipped
    assert cli_main(args) == 3
    assert "0 done, 1 skipped" in capsys.readouterr().err
    # once repaired, the file is done
    sf.write(folder / "broken.wav", x[:5 * sr], sr)
    (tmp_path / "missing.wav").write_bytes((folder / "good.wav").read_bytes())
    assert cli_main(args) == 0
    index = _index(out)
    assert all(e["status"] == "done" for e in index.values()) and len(index) == 3
    assert index["broken"]["duration_s"] == 5.0


@pytest.mark.parametrize("args, code, match", [
    (["batch", "--no-ray"], 2, "no inputs"),
    (["batch", "-", "--no-ray"], 2, "batch takes files"),
    (["batch", "x.wav", "--gpu-fraction", "0"], 2, "must be > 0"),
    (["batch", "x.wav", "--no-ray", "--workers", "2"], 2, "--workers"),
    (["batch", "--list", "no-such-list.txt", "--no-ray"], 3, "cannot read --list"),
    (["batch", "x.wav", "--sources", "noise", "--no-ray"], 2, "--sources"),
])
def test_bad_batch_options_are_one_line(tmp_path, args, code, match):
    proc = subprocess.run(emotrack_cmd(*args, "--out", str(tmp_path / "o")), capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == code, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("emotrack: ") and match in err, err


def test_batch_and_proxy_have_help():
    for cmd in ("batch", "proxy"):
        proc = subprocess.run(emotrack_cmd(cmd, "--help"), capture_output=True, text=True, timeout=60, cwd=REPO)
        assert proc.returncode == 0 and f"usage: emotrack {cmd}" in proc.stdout
