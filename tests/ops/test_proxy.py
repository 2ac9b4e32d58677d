"""emotrack proxy: many publishers, one endpoint; real ZeroMQ sockets on loopback."""

import json
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf
import zmq

from streamer import schema
from streamer.errors import ParameterError
from streamer.ops.proxy import Proxy
from streamer.publish import SNAPSHOT_REQUEST, Publisher

from conftest import REPO, SR, emotrack_cmd, free_tcp_endpoint, tone


def _sub(ctx, endpoint, topics=(b"",)):
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 5000)
    for t in topics:
        s.setsockopt(zmq.SUBSCRIBE, t)
    s.connect(endpoint)
    return s


def _receive(sock, until, timeout_s=20.0):
    """(topic, body) pairs until ``until(received)`` holds; fails instead of hanging."""
    got, t_end = [], time.monotonic() + timeout_s
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    while not until(got):
        assert time.monotonic() < t_end, f"timed out after {len(got)} messages"
        if poller.poll(200):
            got.append(schema.decode(sock.recv_multipart()))
    return got


@pytest.fixture
def proxy():
    p = Proxy(free_tcp_endpoint(), free_tcp_endpoint(), snapshot=free_tcp_endpoint()).start()
    yield p
    p.close()


def _emotion(pub, stream, i):
    return pub.emotion("speech" if i % 3 else "music", stream=stream, t_start=float(i), t_end=i + 3.0,
                       activity=0.5, valence=0.1, arousal=-0.2, quadrant="Q4",
                       probs={"Q1": 0.1, "Q2": 0.2, "Q3": 0.3, "Q4": 0.4}, model="m")


def test_two_publishers_through_the_proxy_reach_one_subscriber_apart(proxy):
    ctx = zmq.Context.instance()
    sub = _sub(ctx, proxy.xpub)
    pubs = {name: Publisher(name, proxy.xsub, connect=True, linger_ms=0, start_grace_s=0.2)
            for name in ("news", "sport")}
    try:
        # handshake: heartbeats until the subscriber hears both streams (ZeroMQ's slow joiner)
        seen, t_end = set(), time.monotonic() + 20
        while seen != set(pubs):
            assert time.monotonic() < t_end, f"only heard {seen}"
            for name, pub in pubs.items():
                pub.status("heartbeat", counters={})
            try:
                topic, body = schema.decode(sub.recv_multipart())
                seen.add(body["stream"])
            except zmq.Again:
                pass
        n = 40
        for i in range(n):
            for name, pub in pubs.items():
                _emotion(pub, name, i)
        got = _receive(sub, lambda g: sum(t.startswith("emotion.") for t, _ in g) >= 2 * n)
    finally:
        for pub in pubs.values():
            pub.close()
        sub.close(0)
    emo = [(t, b) for t, b in got if t.startswith("emotion.")]
    assert {b["stream"] for _, b in emo} == {"news", "sport"}
    for name in pubs:
        for topic, count in (("emotion.speech", sum(1 for i in range(n) if i % 3)),
                             ("emotion.music", sum(1 for i in range(n) if not i % 3))):
            seqs = [b["seq"] for t, b in emo if t == topic and b["stream"] == name]
            assert seqs == list(range(count)), (name, topic, seqs)
            assert [b["t_start"] for t, b in emo if t == topic and b["stream"] == name] == \
                   [float(i) for i in range(n) if bool(i % 3) == (topic == "emotion.speech")]
    # the proxy counted both streams, with no seq gaps
    deadline = time.monotonic() + 5
    while sum(proxy.stats().get(s, {}).get("messages", 0) for s in pubs) < 2 * n and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = proxy.stats()
    for name in pubs:
        assert stats[name]["topics"]["emotion.speech"] + stats[name]["topics"]["emotion.music"] == n
        assert stats[name]["gaps"] == 0


def test_topic_filtering_and_late_joiner_snapshot(proxy):
    ctx = zmq.Context.instance()
    pub = Publisher("radio", proxy.xsub, connect=True, linger_ms=0, start_grace_s=0.2)
    sub = _sub(ctx, proxy.xpub, topics=(b"emotion.music", b"status"))
    try:
        t_end = time.monotonic() + 20
        while True:  # handshake: heartbeats until the subscriber hears one (ZeroMQ's slow joiner)
            assert time.monotonic() < t_end
            pub.status("heartbeat", counters={})
            if sub.poll(200):
                break
        for i in range(12):
            _emotion(pub, "radio", i)
        got = _receive(sub, lambda g: sum(t == "emotion.music" for t, _ in g) >= 4)
        assert {t for t, _ in got} == {"emotion.music", "status"}  # no speech: filtered by topic
        assert [b["seq"] for t, b in got if t == "emotion.music"] == [0, 1, 2, 3]
        # a late joiner asks the proxy for history: it holds every message it forwarded
        deadline = time.monotonic() + 5
        while proxy.stats().get("radio", {}).get("topics", {}).get("emotion.speech", 0) < 8:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.setsockopt(zmq.RCVTIMEO, 5000)
        req.connect(proxy.snapshot.endpoint)
        req.send(SNAPSHOT_REQUEST)
        frames = req.recv_multipart()
        req.close(0)
        assert frames[0] == SNAPSHOT_REQUEST
        pairs = [schema.decode([frames[i], frames[i + 1]]) for i in range(2, len(frames), 2)]
        assert [b["seq"] for t, b in pairs if t == "emotion.speech"] == list(range(8))  # i % 3 != 0 in 0..11
        assert [b["seq"] for t, b in pairs if t == "emotion.music"] == list(range(4))
    finally:
        pub.close()
        sub.close(0)


def test_proxy_refuses_remote_binds_without_allow_remote():
    with pytest.raises(ParameterError, match="--allow-remote"):
        Proxy("tcp://0.0.0.0:0", free_tcp_endpoint())
    with pytest.raises(ParameterError, match="--xpub"):
        Proxy(free_tcp_endpoint(), "tcp://0.0.0.0:0")


def test_pub_connect_option_errors_are_one_line(tmp_path):
    wav = tmp_path / "t.wav"
    sf.write(wav, tone(440, 1.0), SR)
    proc = subprocess.run(emotrack_cmd("replay", str(wav), "--pub-connect", "tcp://127.0.0.1:5560", "--no-pub"),
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "--pub-connect" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_proxy_with_two_replay_publishers(tmp_path, tiny_models):
    """emotrack proxy + two emotrack replay --pub-connect processes, one subscriber on the proxy."""
    xsub, xpub = free_tcp_endpoint(), free_tcp_endpoint()
    files = {}
    for name, f0, seconds in (("chan-a", 220.0, 6.0), ("chan-b", 330.0, 8.0)):
        files[name] = tmp_path / f"{name}.wav"
        sf.write(files[name], tone(f0, seconds) + 0.01 * np.random.default_rng(1).standard_normal(int(seconds * SR)).astype(np.float32), SR)
    ctx = zmq.Context.instance()
    proxy = subprocess.Popen(emotrack_cmd("proxy", "--xsub", xsub, "--xpub", xpub, "--no-snapshot", "--stats", "0.5"),
                             stderr=subprocess.PIPE, text=True, cwd=REPO)
    replays = []
    first = proxy.stderr.readline()  # printed once it is bound and forwarding (EOF if it failed)
    sub = _sub(ctx, xpub)
    try:
        assert "publishers connect to" in first, first + proxy.stderr.read()
        time.sleep(0.3)  # our subscription reaches the proxy; the replays take longer to start anyway
        for name, path in files.items():
            replays.append(subprocess.Popen(
                emotrack_cmd("replay", str(path), "--pub-connect", xsub, "--no-snapshot", "-q",
                             "--speech-model", str(tiny_models["speech"]), "--music-model", str(tiny_models["music"]),
                             "--out", str(tmp_path / f"{name}.jsonl")),
                stderr=subprocess.PIPE, text=True, cwd=REPO))
        ends = lambda g: sum(1 for t, b in g if t == "status" and b.get("event") == "end") >= 2  # noqa: E731
        got = _receive(sub, ends, timeout_s=120)
        for r in replays:
            assert r.wait(timeout=60) == 0, r.stderr.read()
    finally:
        for r in replays:
            if r.poll() is None:
                r.kill()
                r.wait()
        proxy.terminate()
        _, err = proxy.communicate(timeout=20)
        sub.close(0)
    assert proxy.returncode == 0, err
    for name in files:
        # what came through the proxy equals what each replay wrote to its own --out
        want = [json.loads(ln) for ln in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        want = [(w.pop("topic"), w) for w in want if w["topic"].startswith("emotion.")]
        mine = [(t, b) for t, b in got if t.startswith("emotion.") and b["stream"] == name]
        assert mine == want and len(mine) > 0
    assert "chan-a" in err and "chan-b" in err and "0 seq gap(s)" in err.splitlines()[-1]
