"""clients/: recorder, viewer (SSE), report, and the streamer's snapshot server.

Real ZeroMQ on loopback (random ports, linger 0, timeouts) and real
`emotrack` processes with the tiny ONNX models, so everything runs in seconds.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import zmq

from streamer import schema
from streamer.publish import Publisher, snapshot_endpoint_for

from conftest import REPO, SR, emotrack_cmd, free_tcp_endpoint, modules_after, tone

PROBS = {"Q1": 0.1, "Q2": 0.6, "Q3": 0.2, "Q4": 0.1}


def tiny_args(tiny_models):
    return ["--speech-model", str(tiny_models["speech"]), "--music-model", str(tiny_models["music"])]


def free_pair() -> str:
    """A tcp endpoint whose port and port + 1 (the default snapshot port) are free.

    Drawn below Linux's ephemeral range (32768-60999), so that the outgoing
    connections of other processes (the browser, chromedriver) cannot take
    either port between this check and the bind.
    """
    import random
    import socket

    for _ in range(200):
        port = random.randrange(20000, 32000)
        try:
            for p in (port, port + 1):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return f"tcp://127.0.0.1:{port}"
    raise RuntimeError("no free port pair")


def audio(path: Path, seconds: float) -> Path:
    rng = np.random.default_rng(7)
    n = int(seconds * SR)
    x = tone(220, seconds) * np.linspace(0.2, 1, n, dtype=np.float32)
    x[n // 2:] += 0.1 * rng.standard_normal(n - n // 2).astype(np.float32)
    sf.write(path, x, SR)
    return path


def start(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen(emotrack_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, **kw)


def first_line(proc: subprocess.Popen, timeout: float = 30) -> str:
    """The first stderr line (the clients announce themselves at once)."""
    box = []
    th = threading.Thread(target=lambda: box.append(proc.stderr.readline()), daemon=True)
    th.start()
    th.join(timeout)
    assert box, "no output from " + " ".join(proc.args)
    return box[0]


def interrupt(proc: subprocess.Popen, timeout: float = 30, sig=signal.SIGINT) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"{proc.args} did not stop on {sig!r}: {err}")
    return proc.returncode, err


def wait_for(pred, timeout: float = 30, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def replay(tiny_models, wav, endpoint, out, *extra, timeout=90):
    cmd = emotrack_cmd("replay", str(wav), "--pub", endpoint, "--out", str(out), "-q", *tiny_args(tiny_models), *extra)
    proc = subprocess.Popen([cmd[0], "-X", "faulthandler", *cmd[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)   # faulthandler prints every thread's stack
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"replay hung for {timeout} s; its threads:\n{err[-6000:]}")
    assert proc.returncode == 0, err
    return lines_of(out)


def one_line_error(proc, code, match):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("emotrack: ") and match in err, err
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- dependencies
def test_clients_import_no_inference_runtime():
    # engines' exception tree and option types are the bottom layer every room shares; nothing else of engines
    code = "import clients, clients.cli, clients.feed, clients.record, clients.view, clients.report"
    loaded = modules_after(code, ["onnxruntime", "tensorflow", "tensorrt", "pycuda", "engines", "onnx", "keras"])
    assert [m for m in loaded if m not in ("engines", "engines.errors", "engines.argtypes")] == []


def test_client_help_and_bad_options(tmp_path):
    for cmd in ("record", "view", "report"):
        proc = subprocess.run(emotrack_cmd(cmd, "--help"), capture_output=True, text=True, cwd=REPO, timeout=60)
        assert proc.returncode == 0 and "usage: emotrack " + cmd in proc.stdout
    run = lambda *a: subprocess.run(emotrack_cmd(*a), capture_output=True, text=True, cwd=REPO, timeout=60)
    one_line_error(run("record", "--sub", "localhost:5556", "--out", str(tmp_path / "x.jsonl")), 2, "tcp://HOST:PORT")
    one_line_error(run("record", "--sub", "tcp://127.0.0.1:5556", "--out", str(tmp_path / "x.txt")), 2, ".csv")
    one_line_error(run("record", "--sub", "tcp://127.0.0.1:5556", "--out", str(tmp_path / "no/x.csv")), 1,
                   "cannot write")
    one_line_error(run("view", "--sub", "tcp://127.0.0.1:5556", "--port", "70000"), 2, "0..65535")
    one_line_error(run("report", str(tmp_path / "none.jsonl"), "-o", str(tmp_path / "r.html")), 3, "no such file")
    (tmp_path / "empty.jsonl").write_text("")
    one_line_error(run("report", str(tmp_path / "empty.jsonl"), "-o", str(tmp_path / "r.html")), 3, "empty")
    (tmp_path / "junk.jsonl").write_text("not json\n{\"schema\": 2}\n")
    one_line_error(run("report", str(tmp_path / "junk.jsonl"), "-o", str(tmp_path / "r.html")), 3,
                   "no schema-1 emotion messages")
    one_line_error(run("report", str(tmp_path / "junk.jsonl"), "-o", str(tmp_path / "r.pdf")), 2, ".html or .png")


# --------------------------------------------------------------------------- snapshot server
def test_snapshot_endpoint_default_is_pub_port_plus_one():
    assert snapshot_endpoint_for("tcp://127.0.0.1:5556") == "tcp://127.0.0.1:5557"
    assert snapshot_endpoint_for("tcp://[::1]:7000") == "tcp://[::1]:7001"
    assert snapshot_endpoint_for("ipc:///tmp/x") is None
    assert snapshot_endpoint_for("tcp://127.0.0.1:0") is None
    assert snapshot_endpoint_for(None) is None


def _request_snapshot(endpoint: str, timeout_ms: int = 3000) -> list[bytes]:
    req = zmq.Context.instance().socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.setsockopt(zmq.RCVTIMEO, timeout_ms)
    req.connect(endpoint)
    try:
        req.send(b"SNAPSHOT")
        return req.recv_multipart()
    finally:
        req.close(0)


def _emotion(pub, i, t=None):
    t = float(i) if t is None else t
    return pub.emotion("speech", t_start=t, t_end=t + 3, activity=0.8, valence=0.1, arousal=-0.2, quadrant="Q4",
                       probs=PROBS, model="m")


def test_snapshot_server_answers_bounded_history_in_order():
    pub_ep, snap_ep = free_tcp_endpoint(), free_tcp_endpoint()
    pub = Publisher("tv", pub_ep, start_grace_s=0, snapshot=snap_ep, linger_ms=0)
    try:
        pub.snapshot._per_topic = 50
        pub.snapshot._hist.clear()
        start = pub.status("start", models={"speech": "m"})
        sent = [_emotion(pub, i) for i in range(120)]
        for i in range(40):
            pub.status("heartbeat", counters={"published": i})
        frames = _request_snapshot(pub.snapshot.endpoint)
        assert frames[0] == b"SNAPSHOT"
        meta = json.loads(frames[1])
        items = [schema.decode(frames[i:i + 2]) for i in range(2, len(frames), 2)]
        assert meta["stream"] == "tv" and meta["count"] == len(items)
        speech = [b for t, b in items if t == "emotion.speech"]
        assert speech == sent[-50:]                      # bounded per topic, in order
        status = [b for t, b in items if t == "status"]
        assert status[0] == start and len(status) == 31  # the start is always kept
        assert pub.snapshot.served == 1
        # a client that asks and never reads does not hold up publishing
        for _ in range(5):
            lazy = zmq.Context.instance().socket(zmq.DEALER)
            lazy.setsockopt(zmq.LINGER, 0)
            lazy.connect(pub.snapshot.endpoint)
            lazy.send_multipart([b"", b"SNAPSHOT"])
            lazy.close(0)
        t0 = time.monotonic()
        for i in range(200):
            _emotion(pub, 200 + i)
        assert time.monotonic() - t0 < 2.0
    finally:
        pub.close()


def test_cli_rejects_remote_snapshot_without_allow_remote(tmp_path, tiny_models):
    wav = audio(tmp_path / "a.wav", 2)
    proc = subprocess.run(emotrack_cmd("replay", str(wav), "--pub", free_tcp_endpoint(), "--snapshot",
                                       "tcp://0.0.0.0:5999", *tiny_args(tiny_models)),
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    one_line_error(proc, 2, "--snapshot")


# --------------------------------------------------------------------------- recorder
def test_record_jsonl_and_csv_match_what_was_published(tmp_path, tiny_models):
    ep = free_pair()
    rec_j = start("record", "--sub", ep, "--out", str(tmp_path / "r.jsonl"), "--exit-after-end",
                  "--summary", str(tmp_path / "j.json"))
    rec_c = start("record", "--sub", ep, "--out", str(tmp_path / "r.csv"), "--exit-after-end",
                  "--summary", str(tmp_path / "c.json"))
    try:
        assert "subscribed to" in first_line(rec_j) and "subscribed to" in first_line(rec_c)
        ref = replay(tiny_models, audio(tmp_path / "a.wav", 14), ep, tmp_path / "ref.jsonl")
        for p in (rec_j, rec_c):
            p.wait(timeout=30)
    finally:
        codes = [interrupt(p) for p in (rec_j, rec_c)]
    assert [c for c, _ in codes] == [0, 0], codes
    # JSONL: byte for byte what the streamer's own --out wrote
    assert lines_of(tmp_path / "r.jsonl") == ref
    # CSV: one row per message, the documented columns
    with open(tmp_path / "r.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    from clients.record import CSV_COLUMNS

    assert tuple(rows[0].keys()) == CSV_COLUMNS
    refs = [json.loads(x) for x in ref]
    assert len(rows) == len(refs)
    for row, body in zip(rows, refs):
        assert row["topic"] == body["topic"] and int(row["seq"]) == body["seq"]
        if "source" in body:
            assert float(row["valence"]) == body["valence"] and float(row["Q2"]) == body["probs"]["Q2"]
            assert row["quadrant"] == body["quadrant"] and row["event"] == ""
        else:
            assert row["event"] == body["event"] and row["valence"] == ""
    # the end row keeps the reason and the final counters (JSON), as the JSONL does
    assert rows[-1]["event"] == "end" and rows[-1]["reason"] == refs[-1]["reason"] == "end of input"
    assert json.loads(rows[-1]["counters"]) == refs[-1]["counters"]
    assert refs[-1]["counters"]["windows"]["speech"] > 0
    for name in ("j.json", "c.json"):
        summary = json.loads((tmp_path / name).read_text())
        assert summary["lost"] == 0 and summary["restarts"] == 0 and summary["lines"] == len(ref)


def test_record_across_a_real_publisher_restart_loses_nothing(tmp_path, tiny_models):
    ep = free_pair()
    out = tmp_path / "r.jsonl"
    rec = start("record", "--sub", ep, "--out", str(out), "--summary", str(tmp_path / "s.json"))
    try:
        first_line(rec)
        wav = audio(tmp_path / "a.wav", 8)
        ref1 = replay(tiny_models, wav, ep, tmp_path / "ref1.jsonl", "--name", "tv")
        ref2 = replay(tiny_models, wav, ep, tmp_path / "ref2.jsonl", "--name", "tv")
        wait_for(lambda: len(lines_of(out)) >= len(ref1) + len(ref2), what="both runs recorded")
        time.sleep(0.3)
    finally:
        code, err = interrupt(rec)
    assert code == 0, err
    assert lines_of(out) == ref1 + ref2
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["restarts"] == 1 and summary["lost"] == 0 and summary["gaps"] == 0
    assert "restarted after its end of stream" in err


def rebind(make, timeout=5.0):
    """ZeroMQ unbinds a closed socket asynchronously: retry until the port is free again."""
    from streamer.errors import EmotrackError

    end = time.monotonic() + timeout
    while True:
        try:
            return make()
        except EmotrackError:
            if time.monotonic() > end:
                raise
            time.sleep(0.02)


@pytest.mark.parametrize("with_snapshot", [False, True], ids=["live-only", "snapshot-backfill"])
def test_record_counts_what_was_published_while_disconnected(tmp_path, with_snapshot):
    """Publisher A dies without an end of stream; B starts and publishes before the
    recorder has reconnected.  Without a snapshot server exactly those messages are
    lost and the recorder says how many; with one they are back-filled."""
    ep, snap = free_pair(), None
    if with_snapshot:
        snap = snapshot_endpoint_for(ep)
    out = tmp_path / "r.jsonl"
    rec = start("record", "--sub", ep, "--out", str(out), "--summary", str(tmp_path / "s.json"),
                *([] if with_snapshot else ["--no-snapshot"]))
    sent_b = []
    try:
        first_line(rec)
        a = Publisher("tv", ep, start_grace_s=1.0, linger_ms=1000, snapshot=snap)
        sent_a = [("status", a.status("start"))] + [("emotion.speech", _emotion(a, i)) for i in range(10)]
        wait_for(lambda: len(lines_of(out)) >= len(sent_a), what="run A recorded")
        a.close()   # no end of stream: as if it crashed
        b = rebind(lambda: Publisher("tv", ep, start_grace_s=0, linger_ms=1000, snapshot=snap))
        down = [("status", b.status("start"))] + [("emotion.speech", _emotion(b, i)) for i in range(3)]
        time.sleep(1.5)  # the recorder reconnects meanwhile
        up = [("emotion.speech", _emotion(b, i)) for i in range(3, 8)]
        up.append(("status", b.status("heartbeat", counters={"published": 9})))
        sent_b = down + up
        wait_for(lambda: any('"event":"heartbeat"' in ln for ln in lines_of(out)), what="run B recorded")
        time.sleep(0.5)
        b.close()
    finally:
        code, err = interrupt(rec)
    assert code == 0, err
    got = [json.loads(x) for x in lines_of(out)]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["restarts"] == 1
    assert "without an end of stream" in err
    assert got[:len(sent_a)] == [dict(b, topic=t) for t, b in sent_a]
    got_b = got[len(sent_a):]
    if with_snapshot:
        assert sorted(json.dumps(x, sort_keys=True) for x in got_b) == \
            sorted(json.dumps(dict(b, topic=t), sort_keys=True) for t, b in sent_b)
        assert summary["lost"] == 0 and summary["snapshots"]["messages"] >= len(down)
        assert [x["seq"] for x in got_b if x["topic"] == "emotion.speech"] == list(range(8))  # in order
    else:
        # exactly what B sent while we were away is missing, and the summary says how much
        assert [x for x in got_b] == [dict(b, topic=t) for t, b in up]
        assert summary["lost"] == summary["lost_while_down"] == len(down) == 4
        assert "4 lost (4 published while disconnected" in err


def test_record_counts_gaps_and_drops_invalid_messages(tmp_path):
    ep = free_tcp_endpoint()
    out = tmp_path / "r.csv"
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(ep)
    rec = start("record", "--sub", ep, "--out", str(out), "--no-snapshot", "--summary", str(tmp_path / "s.json"))
    try:
        first_line(rec)
        time.sleep(1.0)
        body = lambda s: schema.emotion_body(stream="tv", seq=s, source="music", t_start=s, t_end=s + 10,
                                             wall_time=time.time(), activity=0.5, valence=0.2, arousal=0.3,
                                             quadrant="Q1", probs=PROBS, model="m")
        for s in [0, 1, 2, 6, 7, 9]:
            pub.send_multipart(schema.encode("emotion.music", body(s)))
        pub.send_multipart([b"emotion.music", b'{"schema":1,"valence":NaN}'])
        pub.send_multipart([b"emotion.music", b"x" * (schema.MAX_BODY_BYTES + 1)])
        pub.send_multipart([b"status"])
        wait_for(lambda: len(lines_of(out)) >= 7, what="rows")
        time.sleep(0.3)
    finally:
        code, err = interrupt(rec, sig=signal.SIGTERM)
        pub.close(0)
    assert code == 0, err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["gaps"] == 2 and summary["lost"] == 4 and summary["invalid"] == 3
    assert "3 messages missing (seq 3..5)" in err and "1 messages missing (seq 8..8)" in err
    assert len(lines_of(out)) == 7


def test_late_joiner_gets_the_history_from_the_snapshot(tmp_path, tiny_models):
    """A recorder started mid-programme writes the whole programme: history + live."""
    ep = free_pair()
    wav = audio(tmp_path / "a.wav", 8)
    ref = tmp_path / "ref.jsonl"
    streamer = start("replay", str(wav), "--realtime", "--pub", ep, "--out", str(ref), "-q", "--name", "tv",
                     *tiny_args(tiny_models))
    try:
        wait_for(lambda: sum('"emotion.speech"' in ln for ln in lines_of(ref)) >= 2, timeout=60,
                 what="the programme to be under way")
        out = tmp_path / "late.jsonl"
        rec = start("record", "--sub", ep, "--out", str(out), "--exit-after-end", "--summary",
                    str(tmp_path / "s.json"))
        rec.wait(timeout=60)
        _, err = rec.communicate()
        assert rec.returncode == 0, err
        assert streamer.wait(timeout=60) == 0
    finally:
        if streamer.poll() is None:
            streamer.kill()
        streamer.communicate()
    assert lines_of(out) == lines_of(ref)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["snapshots"]["messages"] >= 3 and summary["lost"] == 0 and summary["snapshots"]["answered"] >= 1


# --------------------------------------------------------------------------- report
def test_report_html_and_png_from_a_real_replay(tmp_path, tiny_models):
    results = tmp_path / "results.jsonl"
    proc = subprocess.run(emotrack_cmd("replay", str(audio(tmp_path / "a.wav", 40)), "--no-pub", "--out",
                                       str(results), "-q", "--name", "news at ten", *tiny_args(tiny_models)),
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    with open(results, "a") as fh:
        fh.write("garbage line\n")
    html_out, png_out = tmp_path / "report.html", tmp_path / "report.png"
    proc = subprocess.run(emotrack_cmd("report", str(results), "-o", str(html_out), "--png", str(png_out)),
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    page = html_out.read_text()
    assert "news at ten" in page and "<svg" in page and "Time per quadrant" in page
    for kind in ("most positive", "most negative", "most aroused"):
        assert kind in page
    for q in ("Q1 happy / excited", "Q2 angry / afraid", "Q3 sad / bored", "Q4 calm / serene"):
        assert q in page
    assert "1 invalid skipped" in page
    for ref in ('src="http', "src='http", 'href="http', "url(http", "<script", "<link"):
        assert ref not in page   # self-contained: nothing fetched from anywhere
    data = png_out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 20_000 < len(data) < 600_000


def test_report_numbers(tmp_path):
    from clients.report import load, passages, quadrant_time

    lines = []
    for i in range(60):
        v = 0.8 if 20 <= i < 30 else (-0.7 if 40 <= i < 50 else 0.0)
        body = schema.emotion_body(stream="s", seq=i, source="speech", t_start=i, t_end=i + 3, wall_time=1.7e9 + i,
                                   activity=0.0 if i >= 55 else 0.9, valence=v, arousal=0.5 if i < 10 else -0.1,
                                   quadrant="Q1" if v > 0 else "Q3", probs=PROBS, model="m")
        lines.append(json.dumps(dict(body, topic="emotion.speech")))
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n")
    run, notes = load(str(tmp_path / "r.jsonl"))
    qt = quadrant_time(run.emotion["speech"], 0.5)
    assert qt["Q1"] == 10 and qt["inactive"] == 5 and qt["Q3"] == 45
    p = passages(run.emotion["speech"], 10, 0.5)
    # passages are placed by window centres (t_start + 1.5 s here), each window standing for one hop
    best = p["most positive"][0]
    assert (best["t0"], best["t1"]) == (21, 31) and best["valence"] == pytest.approx(0.8)
    assert p["most negative"][0]["t0"] == 41 and p["most negative"][0]["valence"] == pytest.approx(-0.7)
    assert p["most aroused"][0]["t0"] == 1 and len(p["most aroused"]) == 3


# --------------------------------------------------------------------------- viewer
def start_viewer(ep: str, *extra) -> tuple[subprocess.Popen, str]:
    view = start("view", "--sub", ep, "--port", "0", *extra)
    line = first_line(view)
    assert "serving http://127.0.0.1:" in line, line
    return view, line.split("serving ", 1)[1].split()[0]


class SSE:
    """A minimal server-sent-events reader (one per simulated browser)."""

    def __init__(self, url: str):
        self.resp = urllib.request.urlopen(url + "events", timeout=30)
        assert self.resp.headers["Content-Type"].startswith("text/event-stream")
        self.events: list[tuple[str, dict]] = []
        self.th = threading.Thread(target=self._read, daemon=True)
        self.th.start()

    def _read(self):
        ev, data = "message", []
        try:
            for raw in self.resp:
                line = raw.decode("utf-8").rstrip("\n")
                if line.startswith("event: "):
                    ev = line[7:]
                elif line.startswith("data: "):
                    data.append(line[6:])
                elif line == "":
                    if data:
                        self.events.append((ev, json.loads("\n".join(data))))
                    ev, data = "message", []
        except (OSError, ValueError):
            pass

    def msgs(self, source):
        return [d for e, d in self.events if e == "msg" and d.get("source") == source]

    def close(self):
        self.resp.close()


def test_viewer_serves_the_page_and_pushes_to_several_browsers(tmp_path, tiny_models):
    ep = free_pair()
    view, url = start_viewer(ep)
    try:
        page = urllib.request.urlopen(url, timeout=10).read().decode()
        assert "<canvas" in page and "/static/app.js" in page
        for asset in ("app.js", "style.css"):
            assert urllib.request.urlopen(url + "static/" + asset, timeout=10).status == 200
        for bad in ("static/../feed.py", "static/%2e%2e/feed.py", "nope"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(url + bad, timeout=10)
            assert e.value.code == 404
        browsers = [SSE(url), SSE(url)]
        wait_for(lambda: all(b.events and b.events[0][0] == "history" for b in browsers), what="history")
        ref = replay(tiny_models, audio(tmp_path / "a.wav", 12), ep, tmp_path / "ref.jsonl")
        n_speech = sum('"emotion.speech"' in ln for ln in ref)
        n_music = sum('"emotion.music"' in ln for ln in ref)
        for b in browsers:
            wait_for(lambda: len(b.msgs("speech")) == n_speech and len(b.msgs("music")) == n_music,
                     what="every emotion message pushed to each browser")
            wait_for(lambda: any(e == "state" and d["browsers"] == 2 for e, d in b.events), what="state")
        p = browsers[0].msgs("speech")[-1]["p"]
        last = json.loads([ln for ln in ref if '"emotion.speech"' in ln][-1])
        assert p[:5] == [last["t_start"], last["t_end"], last["valence"], last["arousal"], last["activity"]]
        state = json.loads(urllib.request.urlopen(url + "api/state", timeout=10).read())
        assert len(state["points"]["speech"]) == n_speech and len(state["points"]["music"]) == n_music
        assert state["state"]["stream"] == "a" and state["state"]["models"]["speech"].startswith("tiny-speech")
        for b in browsers:
            b.close()
        # a browser that opens late gets the curves in its first event
        late = SSE(url)
        wait_for(lambda: late.events, what="late history")
        ev, hist = late.events[0]
        assert ev == "history" and len(hist["points"]["speech"]) == n_speech
        # the publisher restarts: the page is told to start its curves again
        replay(tiny_models, tmp_path / "a.wav", ep, tmp_path / "ref2.jsonl")
        wait_for(lambda: any(e == "reset" for e, _ in late.events) and len(late.msgs("speech")) == n_speech,
                 what="reset and the second run")
        kinds = [e for e, d in late.events if e in ("reset", "msg")]
        assert kinds.index("reset") < kinds.index("msg")
        get_state = lambda: json.loads(urllib.request.urlopen(url + "api/state", timeout=10).read())
        state = wait_for(lambda: (lambda st: st if st["state"]["feed"]["restarts"] == 1 else None)(get_state()),
                         what="the restart counted")   # totals are refreshed once a second
        assert len(state["points"]["speech"]) == n_speech
        late.close()
    finally:
        code, err = interrupt(view)
    assert code == 0, err


def test_a_slow_browser_is_dropped_not_waited_for():
    from clients.view import CLIENT_QUEUE, Hub

    hub = Hub(300, "tcp://127.0.0.1:1")
    slow, ok = hub.add(), hub.add()
    t0 = time.monotonic()
    for i in range(CLIENT_QUEUE + 10):
        hub.broadcast("state", {"i": i})
        if i % 100 == 0:   # the healthy browser keeps reading
            while not ok.q.empty():
                ok.q.get_nowait()
    assert time.monotonic() - t0 < 2
    assert slow.dropped.is_set() and not ok.dropped.is_set()
    assert hub.browser_drops == 1 and hub.state()["browsers"] == 1


def test_viewer_rejects_a_busy_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run(emotrack_cmd("view", "--sub", "tcp://127.0.0.1:5556", "--port", str(port)),
                              capture_output=True, text=True, timeout=60, cwd=REPO)
    one_line_error(proc, 6, f"cannot serve on 127.0.0.1:{port}")


def test_feed_late_join_takes_the_trimmed_history_without_counting_losses():
    """The snapshot keeps only the newest status messages: older ones are history, not losses."""
    from clients.feed import Feed

    pub_ep = free_pair()
    pub = Publisher("tv", pub_ep, start_grace_s=0, snapshot=snapshot_endpoint_for(pub_ep), linger_ms=0)
    got, notices = [], []
    feed = None
    try:
        pub.status("start")
        for i in range(60):
            _emotion(pub, i)
            pub.status("heartbeat", counters={"published": i})
        feed = Feed(pub_ep, on_message=lambda t, b, o: got.append((t, b["seq"], o)),
                    on_notice=lambda k, t: notices.append((k, t)))
        wait_for(lambda: feed.poll(100) is not None and feed.snapshots["answered"], timeout=10, what="snapshot")
        for i in range(60, 63):
            _emotion(pub, i)
        wait_for(lambda: feed.poll(100) is not None and sum(t == "emotion.speech" for t, _, _ in got) == 63,
                 timeout=10, what="live messages after the snapshot")
        totals = feed.totals()
    finally:
        if feed is not None:
            feed.close()
        pub.close()
    assert [s for t, s, _ in got if t == "emotion.speech"] == list(range(63))
    assert [o for t, s, o in got if t == "emotion.speech"] == ["snapshot"] * 60 + ["live"] * 3
    assert totals["lost"] == 0 and totals["gaps"] == 0, (totals, notices)
    assert not [n for n in notices if n[0] == "gap"]
