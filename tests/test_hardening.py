"""Hostile messages, floods and odd files (issue 26): each numbered item, on real sockets and files.

Every test here failed on the code before the hardening; the figures (RSS, real-time
factor under floods) come from scripts/hardening_bench.py, not from timed tests.
"""

import json
import socket
import subprocess
import threading
import time
import urllib.request

import numpy as np
import pytest
import soundfile as sf
import zmq
from hypothesis import HealthCheck, given, settings, strategies as st

from clients.feed import Feed
from streamer import schema
from streamer.errors import InputError, ParameterError
from streamer.ops.proxy import Proxy
from streamer.publish import SNAPSHOT_REQUEST, Publisher, SnapshotServer
from streamer.sources import open_source

from conftest import REPO, SR, emotrack_cmd, free_tcp_endpoint, tone

NESTED = b"[" * 30000 + b"]" * 30000   # 60 KB: under the 64 KB body limit


def _emotion(stream="s", seq=0, t=0.0, wall=None):
    return schema.emotion_body(stream=stream, seq=seq, source="speech", t_start=t, t_end=t + 3.0,
                               wall_time=time.time() if wall is None else wall, activity=0.5, valence=0.1,
                               arousal=0.2, quadrant="Q1", probs={"Q1": 0.7, "Q2": 0.1, "Q3": 0.1, "Q4": 0.1},
                               model="m")


def _raw_pub(ctx, endpoint):
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(endpoint)
    return pub


def _feed(endpoint, got, notices=None, **kw):
    return Feed(endpoint, snapshot=None, on_message=lambda t, b, o: got.append((t, b)),
                on_notice=(lambda k, m: notices.append((k, m))) if notices is not None else None, **kw)


def _pump(feed, until, timeout_s=10.0):
    end = time.monotonic() + timeout_s
    while not until() and time.monotonic() < end:
        feed.poll(50)


def _send_until_joined(pub, feed, got):
    """Publish probes until the slow-joining subscriber has one (stream 'probe', seq 0, 1, ...)."""
    end, seq = time.monotonic() + 10, 0
    while not got and time.monotonic() < end:
        # each probe its own seq: one that lands after the first is not a duplicate in the feed's counters
        pub.send_multipart(schema.encode("status", schema.status_body(stream="probe", seq=seq, wall_time=time.time(),
                                                                        event="start")))
        seq += 1
        feed.poll(100)
    assert got, "subscriber never joined"
    # probes sent before the first one arrived are still in flight: let them land, so that they are not
    # counted as the test's own messages (seen under load)
    n = -1
    while len(got) != n:
        n = len(got)
        feed.poll(200)
    got.clear()


# ----------------------------------------------------------------------- 1: deep nesting


def test_1_nested_json_is_a_counted_drop_in_every_parser(tmp_path):
    with pytest.raises(schema.SchemaError, match="nests deeper"):
        schema.decode([b"emotion.speech", NESTED])
    with pytest.raises(schema.SchemaError):
        schema.parse_json(b'{"schema": 1, "x": ' + b"[" * 20 + b"]" * 20 + b"}")

    # the recorder/viewer's Feed on a real socket: the bomb is dropped, the next real message arrives
    ep = free_tcp_endpoint()
    ctx = zmq.Context.instance()
    pub = _raw_pub(ctx, ep)
    got, notices = [], []
    feed = _feed(ep, got, notices)
    try:
        _send_until_joined(pub, feed, got)
        pub.send_multipart([b"emotion.speech", NESTED])
        pub.send_multipart(schema.encode("emotion.speech", _emotion()))
        _pump(feed, lambda: got)
        assert [b["seq"] for _, b in got] == [0] and feed.invalid == 1
        assert any(k == "invalid" and "nests deeper" in m for k, m in notices)
    finally:
        feed.close()
        pub.close(0)

    # the proxy: it survives, goes on counting, neither relays nor keeps the bomb
    proxy = Proxy(free_tcp_endpoint(), free_tcp_endpoint(), snapshot=free_tcp_endpoint()).start()
    up = ctx.socket(zmq.PUB)
    up.setsockopt(zmq.LINGER, 0)
    up.connect(proxy.xsub)
    down = ctx.socket(zmq.SUB)
    down.setsockopt(zmq.LINGER, 0)
    down.setsockopt(zmq.SUBSCRIBE, b"")
    down.connect(proxy.xpub)
    try:
        time.sleep(0.5)
        up.send_multipart([b"emotion.speech", NESTED])
        up.send_multipart(schema.encode("emotion.speech", _emotion()))
        end = time.monotonic() + 10
        while proxy.messages < 1 and time.monotonic() < end:
            time.sleep(0.05)
        assert proxy.messages == 1 and proxy.invalid == 1
        assert all(t.is_alive() for t in proxy._threads)
        assert len(proxy.snapshot.items()) == 1
        relayed = []
        while down.poll(500):
            relayed.append(down.recv_multipart())
        assert [f[0] for f in relayed] == [b"emotion.speech"] and len(relayed[0][1]) < 1000
    finally:
        up.close(0)
        down.close(0)
        proxy.close()

    # report: the line is skipped and counted, the rest is reported
    from clients.report import load

    f = tmp_path / "r.jsonl"
    good = dict(_emotion(), topic="emotion.speech")
    f.write_text(json.dumps(good) + "\n" + NESTED.decode() + "\n" + json.dumps(dict(good, seq=1, t_start=1.0,
                                                                                      t_end=4.0)) + "\n")
    run, notes = load(str(f))
    assert notes["invalid"] == 1 and run.n == 2


# ----------------------------------------------------------------------- 2: snapshot floods


def test_2_snapshot_requests_that_are_never_read_cost_a_bounded_amount():
    ctx = zmq.Context.instance()
    ep = free_tcp_endpoint()
    snap = SnapshotServer(ctx, ep, "s", max_inflight=8, inflight_s=1.0)
    body = _emotion()
    for i in range(1500):
        b = dict(body, seq=i)
        snap.add("emotion.speech", b, schema.encode("emotion.speech", b)[1])
    peers = []
    try:
        for _ in range(50):
            d = ctx.socket(zmq.DEALER)
            d.setsockopt(zmq.LINGER, 0)
            d.setsockopt(zmq.RCVHWM, 1)
            d.setsockopt(zmq.RCVBUF, 4096)
            d.connect(ep)
            peers.append(d)
        t_end = time.monotonic() + 3.0
        while time.monotonic() < t_end:
            for d in peers:
                try:
                    d.send_multipart([b"", SNAPSHOT_REQUEST], zmq.NOBLOCK)
                except zmq.Again:   # the server reads at a bounded rate: the flood backs up here
                    pass
            time.sleep(0.02)
        time.sleep(0.3)
        stats = snap.stats()
        # at most 8 replies in the first instant, then 8 per second: never one per request
        assert stats["served"] <= 8 + 8 * 4
        # requests are read at most 500 per second (50 at once), the rest wait in bounded queues
        handled = stats["served"] + sum(stats["refused"].values())
        assert 100 <= handled <= 50 + 500 * 4
        assert stats["refused"]["rate"] + stats["refused"]["busy"] >= handled - stats["served"] - 5
        # a well-behaved client is still answered once the flood stops
        for d in peers:
            d.close(0)
        time.sleep(1.5)
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.setsockopt(zmq.RCVTIMEO, 5000)
        req.connect(ep)
        req.send(SNAPSHOT_REQUEST)
        reply = req.recv_multipart()
        req.close(0)
        assert json.loads(reply[1])["count"] == 1500 and len(reply) == 2 + 2 * 1500
    finally:
        snap.close()


def test_2_snapshot_refusals_are_reported_in_status_heartbeats(tmp_path):
    ep, sep = free_tcp_endpoint(), free_tcp_endpoint()
    out = tmp_path / "o.jsonl"
    pub = Publisher("s", ep, str(out), snapshot=sep, start_grace_s=0)
    ctx = zmq.Context.instance()
    try:
        pub.status("start")
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.connect(sep)
        for _ in range(20):
            d.send_multipart([b"", SNAPSHOT_REQUEST])
        time.sleep(0.5)
        d.close(0)
        pub.status("heartbeat", counters={})
    finally:
        pub.close()
    hb = [json.loads(ln) for ln in out.read_text().splitlines()][-1]
    assert hb["snapshot"]["served"] >= 1 and hb["snapshot"]["refused"]["rate"] >= 1
    schema.validate("status", {k: v for k, v in hb.items() if k != "topic"})


# ----------------------------------------------------------------------- 3: chained Ogg


@pytest.mark.parametrize("codec, rate", [("libopus", 48000), ("libvorbis", 44100)])
def test_3_chained_ogg_is_decoded_to_its_end(tmp_path, codec, rate):
    parts = []
    for i, f in enumerate((300, 500, 700)):
        p = tmp_path / f"p{i}.ogg"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", f"sine=f={f}:d=8", "-ar", str(rate),
                        "-c:a", codec, str(p)], check=True)
        parts.append(p.read_bytes())
    chained = tmp_path / "radio.ogg"
    chained.write_bytes(b"".join(parts))
    with open_source(str(chained)) as src:
        n = sum(b.size for b in src.blocks())
        assert src.warning is None
    assert abs(n / SR - 24.0) < 0.1


# ----------------------------------------------------------------------- 4: forged seq


def test_4_a_forged_huge_seq_does_not_make_real_messages_duplicates():
    with pytest.raises(schema.SchemaError, match="seq"):
        schema.validate("emotion.speech", dict(_emotion(), seq=10 ** 30))
    ep = free_tcp_endpoint()
    ctx = zmq.Context.instance()
    pub = _raw_pub(ctx, ep)
    got, notices = [], []
    feed = _feed(ep, got, notices)
    try:
        _send_until_joined(pub, feed, got)
        for i in range(5):
            pub.send_multipart(schema.encode("emotion.speech", _emotion(seq=i, t=float(i))))
        pub.send_multipart(schema.encode("emotion.speech", _emotion(seq=10 ** 12, t=5.0)))   # forged
        for i in range(5, 10):
            pub.send_multipart(schema.encode("emotion.speech", _emotion(seq=i, t=float(i))))
        _pump(feed, lambda: len(got) >= 10)
        feed.poll(200)
        assert [b["seq"] for _, b in got] == list(range(10))
        assert feed.invalid == 1 and feed.totals()["duplicates"] == 0 and feed.totals()["lost"] == 0
        assert any("not confirmed" in m for _, m in notices)
    finally:
        feed.close()
        pub.close(0)


def test_4_a_real_long_jump_is_confirmed_by_the_next_message():
    from clients.feed import MAX_MISSING

    got = []
    feed = _feed("inproc://nobody-h26", got)
    try:
        for s in (0, 1, 2, 2 + MAX_MISSING + 10, 3 + MAX_MISSING + 10):
            feed._apply("emotion.speech", _emotion(seq=s), "live")
        assert [b["seq"] for _, b in got] == [0, 1, 2, 2 + MAX_MISSING + 10, 3 + MAX_MISSING + 10]
        assert feed.invalid == 0 and feed.totals()["gaps"] == 1
    finally:
        feed.close()


def test_seqset_keeps_ranges_not_numbers():
    from clients.feed import SeqSet

    s = SeqSet()
    s.update(range(0, 10 ** 6))
    s.update(range(2 * 10 ** 6, 3 * 10 ** 6))
    s.discard(5)
    assert len(s) == 2 * 10 ** 6 - 1 and 5 not in s and 4 in s and 6 in s and 2 * 10 ** 6 in s
    assert len(s._lo) == 3
    s.update(range(10 ** 6, 2 * 10 ** 6))
    assert len(s._lo) == 2 and len(s) == 3 * 10 ** 6 - 1


# ----------------------------------------------------------------------- 5: huge frames


def test_5_a_huge_frame_is_refused_before_it_is_read():
    ep = free_tcp_endpoint()
    ctx = zmq.Context.instance()
    pub = _raw_pub(ctx, ep)
    got = []
    feed = _feed(ep, got)
    try:
        assert feed.sock.getsockopt(zmq.MAXMSGSIZE) == schema.MAX_FRAME_BYTES
        _send_until_joined(pub, feed, got)
        pub.send_multipart([b"emotion.speech", b"x" * (8 * 1024 * 1024)])
        feed.poll(300)
        # ZeroMQ dropped that connection; it reconnects and real messages flow again
        end = time.monotonic() + 10
        while not got and time.monotonic() < end:
            pub.send_multipart(schema.encode("emotion.speech", _emotion()))
            feed.poll(100)
        assert got and all(len(json.dumps(b)) < 1000 for _, b in got)
    finally:
        feed.close()
        pub.close(0)


# ----------------------------------------------------------------------- 6: the viewer


def _serve_view(monkeypatch, **patch):
    from clients import view

    for k, v in patch.items():
        monkeypatch.setattr(view, k, v)
    hub = view.Hub(60.0, "tcp://127.0.0.1:1")
    stopping = threading.Event()
    httpd = view.serve("127.0.0.1", 0, hub, stopping)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, stopping


def _health(port):
    t0 = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        assert r.read() == b"ok\n"
    return time.monotonic() - t0


def test_6_idle_connections_time_out_are_capped_and_do_not_hold_threads(monkeypatch):
    httpd, stopping = _serve_view(monkeypatch, HEADER_TIMEOUT_S=1.0)
    port = httpd.server_address[1]
    threads0 = threading.active_count()
    idle = []
    try:
        assert httpd.request_queue_size >= 1024
        for _ in range(300):
            idle.append(socket.create_connection(("127.0.0.1", port)))
        time.sleep(0.3)
        assert _health(port) < 1.0
        assert threading.active_count() <= threads0 + 4   # waiting connections hold no thread
        assert httpd.idle_closed >= 300 - 64                # at most 64 waiting per client address
        time.sleep(1.5)
        assert httpd.idle_closed >= 300                     # and none beyond the header timeout
    finally:
        for s in idle:
            s.close()
        stopping.set()
        httpd.shutdown()
        httpd.server_close()


def test_6_view_on_a_public_host_needs_a_token():
    proc = subprocess.run(emotrack_cmd("view", "--sub", "tcp://127.0.0.1:1", "--host", "0.0.0.0", "--port", "0"),
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2 and "--token" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------- 7: the small ones


def _one_line(proc, code, match):
    err = proc.stderr.strip()
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in err and len(err.splitlines()) == 1 and match in err, err


@pytest.mark.parametrize("opt", [["--speech-hop", "nan"], ["--speech-hop", "inf"], ["--pub", "tcp://127.0.0.1:99999"],
                                 ["--pub", "tcp://127.0.0.1:abc"]])
def test_7_bad_option_values_exit_2(tmp_path, tiny_models, opt):
    wav = tmp_path / "a.wav"
    sf.write(wav, tone(300, 2.0), SR)
    proc = subprocess.run(emotrack_cmd("replay", str(wav), "-q", "--speech-model", str(tiny_models["speech"]),
                                       "--music-model", str(tiny_models["music"]), *opt),
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    _one_line(proc, 2, opt[1])


def test_7_endpoint_parser():
    from streamer.publish import parse_endpoint

    for ok in ("tcp://127.0.0.1:0", "tcp://127.0.0.1:65535", "tcp://[::1]:5556", "tcp://*:*", "ipc:///tmp/x",
               "inproc://a"):
        assert parse_endpoint(ok) == ok
    for bad in ("tcp://127.0.0.1:65536", "tcp://127.0.0.1:-1", "tcp://127.0.0.1", "tcp://:5556", "udp://x:1",
                "tcp://127.0.0.1:５５", "ipc://", "tcp://127.0.0.1:1\n"):
        with pytest.raises(ParameterError):
            parse_endpoint(bad)


def test_7_busy_pub_port_is_an_endpoint_error_exit_6(tmp_path, tiny_models, endpoint):
    from streamer.errors import EndpointError

    a = Publisher("s", endpoint)
    try:
        with pytest.raises(EndpointError):
            Publisher("s", endpoint)
        wav = tmp_path / "a.wav"
        sf.write(wav, tone(300, 2.0), SR)
        proc = subprocess.run(emotrack_cmd("replay", str(wav), "-q", "--no-snapshot", "--pub", endpoint,
                                           "--speech-model", str(tiny_models["speech"]),
                                           "--music-model", str(tiny_models["music"])),
                              capture_output=True, text=True, timeout=120, cwd=REPO)
        _one_line(proc, 6, "cannot bind")
    finally:
        a.close()


def test_7_allow_remote_without_curve_warns(capsys):
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port = s.getsockname()[1]
    pub = Publisher("s", f"tcp://0.0.0.0:{port}", allow_remote=True, start_grace_s=0)
    pub.close()
    err = capsys.readouterr().err
    assert "warning" in err and "without encryption" in err and len(err.strip().splitlines()) == 1


def test_7_keys_never_overwrite_and_never_leave_dir(tmp_path):
    run = lambda *a: subprocess.run(emotrack_cmd("keys", *a), capture_output=True, text=True, timeout=60,
                                    cwd=REPO)
    assert run("server", "--dir", str(tmp_path)).returncode == 0
    before = (tmp_path / "server.key_secret").read_bytes()
    _one_line(run("server", "--dir", str(tmp_path)), 2, "already exists")
    assert (tmp_path / "server.key_secret").read_bytes() == before
    (tmp_path / "sub").mkdir()
    _one_line(run("../escape", "--dir", str(tmp_path / "sub")), 2, "key name")
    assert not (tmp_path / "escape.key").exists()


def test_7_garbage_onnx_without_checksum_is_a_model_error(tmp_path, tiny_models):
    card = json.loads(tiny_models["speech"].with_suffix(".json").read_text())
    card.pop("onnx_sha256", None)
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"this is not an onnx model" * 10)
    bad.with_suffix(".json").write_text(json.dumps(card))
    wav = tmp_path / "a.wav"
    sf.write(wav, tone(300, 2.0), SR)
    proc = subprocess.run(emotrack_cmd("predict", str(wav), "--source", "speech", "--model", str(bad),
                                       "--backend", "onnxruntime"),
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    _one_line(proc, 4, "not a usable ONNX model")


def test_7_a_one_hertz_header_is_refused(tmp_path):
    p = tmp_path / "slow.wav"
    sf.write(p, np.zeros(16000 * 120, np.int16), 16000, subtype="PCM_16")
    data = bytearray(p.read_bytes())
    data[24:28] = (1).to_bytes(4, "little")   # sample rate
    data[28:32] = (2).to_bytes(4, "little")   # byte rate
    p.write_bytes(bytes(data))
    with pytest.raises(InputError, match="sample rate of 1 Hz"):
        open_source(str(p))


# ----------------------------------------------------------------------- issue 25: truncation warnings


def test_truncated_opus_and_mp3_warn_once_with_our_line(tmp_path, tiny_models):
    wav = tmp_path / "src.wav"
    sf.write(wav, tone(300, 20.0), SR)
    outs = {}
    for ext, codec in ((".opus", "libopus"), (".mp3", "libmp3lame")):
        full = tmp_path / f"full{ext}"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(wav), "-c:a", codec, str(full)], check=True)
        cut = tmp_path / f"cut{ext}"
        cut.write_bytes(full.read_bytes()[:len(full.read_bytes()) // 3])
        proc = subprocess.run(emotrack_cmd("predict", str(cut), "--source", "speech",
                                           "--model", str(tiny_models["speech"])),
                              capture_output=True, text=True, timeout=120, cwd=REPO)
        outs[ext] = proc
        assert proc.returncode == 0, proc.stderr
        err = proc.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("emotrack: warning: ") and "truncated" in err[0], err
        assert "Xing" not in proc.stderr and "@ 0x" not in proc.stderr


# ----------------------------------------------------------------------- fuzz: every wire parser

_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10 ** 400), max_value=10 ** 400),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
_json = st.recursive(_scalars, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8),
                                                                                               c, max_size=4)),
                     max_leaves=30)


def _bodies():
    good = _emotion()
    mutated = st.builds(lambda k, v: {**good, k: v}, st.sampled_from(sorted(good) + ["extra"]), _json)
    nested = st.integers(1, 40000).map(lambda d: (b"[" * d + b"]" * d)[:70000])
    as_bytes = st.one_of(
        mutated.map(lambda b: json.dumps(b, allow_nan=True).encode()),
        _json.map(lambda b: json.dumps(b, allow_nan=True).encode()),
        nested,
        st.binary(max_size=512),
        st.integers(60000, 70000).map(lambda n: b'{"s":"' + b"a" * n + b'"}'),
        st.text(max_size=64).map(lambda t: t.encode("utf-16")),
    )
    return as_bytes


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_bodies(), st.sampled_from([b"emotion.speech", b"emotion.music", b"status", b"\xff\xfe", b"x" * 100]))
def test_fuzz_every_wire_parser(body, topic):
    """schema.decode, the Feed (record/view), the proxy's accounting, report's line parser and the
    snapshot request handler: each either accepts a valid schema-1 message or drops it, counted."""
    frames = [topic, body]
    try:
        t, b = schema.decode(frames)
        schema.validate(t, b)
        valid = True
    except schema.SchemaError:
        valid = False
    _FUZZ["feed"]._on_live(frames)
    _FUZZ["proxy"]._relay(frames)
    from clients.report import load

    good = json.dumps(dict(_emotion(), topic="emotion.speech")).encode()
    _FUZZ["file"].write_bytes(good + b"\n" + body.replace(b"\n", b" ").replace(b"\r", b" ") + b"\n")
    run, notes = load(str(_FUZZ["file"]))
    assert run.n >= 1 and notes["lines"] >= 1
    _FUZZ["snap"]._handle([b"peer", b"", body])
    assert valid or _FUZZ["feed"].invalid > 0


_FUZZ: dict = {}


@pytest.fixture(autouse=True, scope="module")
def _fuzz_targets(tmp_path_factory):
    ctx = zmq.Context.instance()
    _FUZZ["feed"] = Feed("inproc://fuzz-h26", snapshot=None, on_message=lambda *a: None)
    _FUZZ["proxy"] = Proxy(free_tcp_endpoint(), free_tcp_endpoint(), snapshot=free_tcp_endpoint())
    _FUZZ["snap"] = SnapshotServer(ctx, free_tcp_endpoint(), "s")
    _FUZZ["file"] = tmp_path_factory.mktemp("fuzz") / "f.jsonl"
    yield
    _FUZZ["feed"].close()
    _FUZZ["proxy"].close()
    _FUZZ["snap"].close()
