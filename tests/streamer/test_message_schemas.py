"""The published JSON Schema files (streamer/schemas) against what a real run publishes:
replay with the shipped models, its live messages, its --out lines, a snapshot reply to a
late joiner, and the same late joiner written in Node from docs/examples/node."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import soundfile as sf
import zmq

from streamer import schema, schemas

from conftest import REPO, emotrack_cmd, free_tcp_endpoint

jsonschema = pytest.importorskip("jsonschema", reason="the test extra's jsonschema is not installed")
MIX = REPO / "examples" / "heldout_mix.ogg"
NODE_EXAMPLE = REPO / "docs" / "examples" / "node"


def validator(name):
    return jsonschema.Draft202012Validator(schemas.load(name))


def errors(topic, body):
    v = validator("status" if topic == "status" else "emotion")
    return [e.message for e in v.iter_errors(body)]


def cut(tmp_path, seconds=8.0, offset=30.0):
    """``seconds`` of the held-out mix (speech over music) as a wav file."""
    x, sr = sf.read(MIX, dtype="float32")
    p = tmp_path / "cut.wav"
    sf.write(p, x[int(offset * sr):int((offset + seconds) * sr)], sr)
    return p


def test_schema_files_are_valid_and_say_what_they_promise():
    for name in schemas.NAMES:
        jsonschema.Draft202012Validator.check_schema(schemas.load(name))
    body = schema.emotion_body(stream="news", seq=17, source="speech", t_start=12.0, t_end=15.0,
                               wall_time=1763798400.123, activity=0.93, valence=-0.41, arousal=0.62,
                               quadrant="Q2", probs={"Q1": 0.1, "Q2": 0.7, "Q3": 0.1, "Q4": 0.1}, model="m")
    assert errors("emotion.speech", body) == []
    # schema 1 grows by adding fields: a later field (e.g. a tracked curve) must not be refused
    assert errors("emotion.speech", {**body, "valence_tracked": 0.1, "segment": {"id": 3}}) == []
    # ... but the core fields keep their types and ranges
    for bad in ({"valence": 1.5}, {"activity": -0.1}, {"quadrant": "Q5"}, {"seq": -1}, {"seq": 1.5},
                {"probs": {"Q1": 1.0}}, {"schema": 2}, {"stream": 3}, {"source": "noise"}):
        assert errors("emotion.speech", {**body, **bad}), bad
    missing = dict(body)
    del missing["arousal"]
    assert errors("emotion.speech", missing)
    end = schema.status_body(stream="news", seq=4, wall_time=1.0, event="end", reason="end of input")
    assert errors("status", end)  # an end without its counters
    assert errors("status", {**end, "event": "pause"})


def _snapshot(ctx, endpoint):
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(endpoint)
    req.send(b"SNAPSHOT")
    assert req.poll(5000), "no snapshot reply within 5 s"
    frames = req.recv_multipart()
    req.close(0)
    return frames


def test_real_replay_status_and_snapshot_messages_follow_the_schemas(tmp_path):
    pub, snap = free_tcp_endpoint(), free_tcp_endpoint()
    out = tmp_path / "out.jsonl"
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(pub)
    proc = subprocess.Popen(emotrack_cmd("replay", str(cut(tmp_path)), "--realtime", "--pub", pub, "--snapshot",
                                         snap, "--out", str(out), "--heartbeat", "0.5", "--separator", "builtin",
                                         "-q"),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    live, reply = [], None
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if not sub.poll(200):
                if proc.poll() is not None:
                    break
                continue
            topic, body = sub.recv_multipart()
            live.append((topic.decode(), json.loads(body)))
            if reply is None and sum(t.startswith("emotion.") for t, _ in live) >= 3:
                reply = _snapshot(ctx, snap)  # a late joiner's request while the stream runs
            if live[-1][0] == "status" and live[-1][1]["event"] == "end":
                break
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close(0)
    topics = {t for t, _ in live}
    assert {"emotion.speech", "emotion.music", "status"} <= topics
    events = [b["event"] for t, b in live if t == "status"]
    assert "heartbeat" in events and events[-1] == "end"
    for topic, body in live:
        assert errors(topic, body) == [], (topic, body)
        schema.validate(topic, body)  # the Python validator agrees
        if topic != "status":
            assert body["t_end"] >= body["t_start"]
    # the --out file: the same bodies with "topic"
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == len(live)
    for line in lines:
        assert errors(line["topic"], line) == []
    # the snapshot reply: [SNAPSHOT, meta, topic, body, ...]
    assert reply is not None and reply[0] == b"SNAPSHOT"
    meta = json.loads(reply[1])
    assert list(validator("snapshot_reply").iter_errors(meta)) == []
    pairs = list(zip(reply[2::2], reply[3::2]))
    assert meta["count"] == len(pairs) >= 4
    bodies = [(t.decode(), json.loads(b)) for t, b in pairs]
    assert bodies[0][0] == "status" and bodies[0][1]["event"] == "start"
    for topic, body in bodies:
        assert errors(topic, body) == [], (topic, body)
        assert (topic, body) in live  # history is what was published


def _node_zeromq():
    """A folder holding node_modules/zeromq for the Node example, installing it once with npm."""
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("node and npm are not installed: the Node example is not tested here")
    if (NODE_EXAMPLE / "node_modules" / "zeromq").is_dir():
        return NODE_EXAMPLE
    cache = Path(os.environ.get("EMOTRACK_NODE_CACHE", Path.home() / ".cache" / "emotrack" / "node"))
    if not (cache / "node_modules" / "zeromq").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        shutil.copy(NODE_EXAMPLE / "package.json", cache / "package.json")
        try:
            p = subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=cache, capture_output=True,
                               text=True, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.skip("npm install of zeromq took over 300 s (no registry access?)")
        if p.returncode != 0 or not (cache / "node_modules" / "zeromq").is_dir():
            pytest.skip(f"npm install zeromq failed (no registry access?): {p.stderr.strip()[-300:]}")
    return cache


def test_node_example_joins_late_with_a_snapshot_then_follows_live(tmp_path):
    modules = _node_zeromq()
    work = tmp_path / "node"
    work.mkdir()
    shutil.copy(NODE_EXAMPLE / "subscribe.mjs", work)
    shutil.copy(NODE_EXAMPLE / "package.json", work)
    if modules != work:
        (work / "node_modules").symlink_to(modules / "node_modules", target_is_directory=True)
    pub = free_tcp_endpoint()
    snap = free_tcp_endpoint()
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(emotrack_cmd("replay", str(cut(tmp_path)), "--realtime", "--pub", pub, "--snapshot",
                                         snap, "--out", str(out), "-q"),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum('"emotion.' in x for x in
                                                  (out.read_text().splitlines() if out.exists() else [])) < 4:
            time.sleep(0.2)
        node = subprocess.run(["node", "subscribe.mjs", pub, snap, "--until-end"], cwd=work, capture_output=True,
                              text=True, timeout=60)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert node.returncode == 0, node.stderr
    got = [json.loads(x) for x in node.stdout.splitlines()]
    vias = [g["via"] for g in got]
    assert "snapshot" in vias and "live" in vias, vias
    assert vias.index("live") > max(i for i, v in enumerate(vias) if v == "snapshot")  # history first
    # a late joiner ends up with every message of the run, each once, in order per topic
    ref = [json.loads(x) for x in out.read_text().splitlines()]
    for topic in ("emotion.speech", "emotion.music", "status"):
        seqs = [g["body"]["seq"] for g in got if g["topic"] == topic]
        assert seqs == [r["seq"] for r in ref if r["topic"] == topic], topic
    for g in got:
        assert errors(g["topic"], g["body"]) == []
