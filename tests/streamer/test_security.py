"""CURVE encryption with an allow-list, on real ZeroMQ sockets on loopback."""

import time

import pytest
import zmq

from streamer import schema, security
from streamer.errors import ParameterError
from streamer.publish import Publisher


@pytest.fixture
def keys(tmp_path):
    server = security.generate(tmp_path / "server", "server")
    allowed = security.generate(tmp_path / "allowed", "client")
    stranger = security.generate(tmp_path / "stranger", "client")
    return {"server": server, "allowed": allowed, "stranger": stranger, "allow_dir": tmp_path / "allowed"}


def _sub(endpoint, client=None):
    s = zmq.Context.instance().socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    if client is not None:
        client.apply(s)
    s.connect(endpoint)
    return s


def _received(sock, seconds=1.5):
    got, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        if sock.poll(100):
            got.append(schema.decode(sock.recv_multipart()))
    return got


def test_only_allowed_clients_receive(keys, endpoint):
    ctx = zmq.Context.instance()
    server = security.CurveServer(ctx, keys["server"][1], keys["allow_dir"])
    allowed = _sub(endpoint, security.CurveClient(keys["allowed"][1], keys["server"][0]))
    stranger = _sub(endpoint, security.CurveClient(keys["stranger"][1], keys["server"][0]))
    plain = _sub(endpoint)
    pub = Publisher("secure", endpoint, None, start_grace_s=0.5, curve=server)
    try:
        for i in range(5):
            pub.status("heartbeat", counters={"i": i})
        got = {name: _received(s) for name, s in (("allowed", allowed), ("stranger", stranger), ("plain", plain))}
    finally:
        pub.close()
        for s in (allowed, stranger, plain):
            s.close()
    assert [b["counters"]["i"] for _, b in got["allowed"]] == [0, 1, 2, 3, 4]
    assert got["stranger"] == [] and got["plain"] == []


def test_bad_key_files_are_clear_errors(keys, tmp_path):
    ctx = zmq.Context.instance()
    with pytest.raises(ParameterError, match="no secret key"):
        security.CurveServer(ctx, keys["server"][0], keys["allow_dir"])
    with pytest.raises(ParameterError, match="not found"):
        security.CurveClient(tmp_path / "nope.key_secret", keys["server"][0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ParameterError, match="allowed clients"):
        security.CurveServer(ctx, keys["server"][1], tmp_path / "empty")


def test_viewer_access_token(endpoint):
    import re
    import subprocess
    import urllib.error
    import urllib.request

    from conftest import REPO, emotrack_cmd

    proc = subprocess.Popen(emotrack_cmd("view", "--sub", endpoint, "--no-snapshot", "--port", "0", "--token", "s3cret"),
                            cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        m = re.search(r"serving (http://127\.0\.0\.1:\d+/)\?token=s3cret", line)
        assert m, line
        base = m.group(1)

        def get(path, headers=None):
            req = urllib.request.Request(base + path, headers=headers or {})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, r.headers.get("Set-Cookie"), r.read()
            except urllib.error.HTTPError as e:
                return e.code, None, b""

        assert get("")[0] == 401
        assert get("api/state")[0] == 401
        assert get("?token=wrong")[0] == 401
        code, cookie, body = get("?token=s3cret")
        assert code == 200 and b"<" in body and cookie.startswith("emotrack_token=s3cret")
        assert get("api/state", {"Cookie": "emotrack_token=s3cret"})[0] == 200
        assert get("healthz")[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cli_curve_end_to_end(tmp_path, endpoint, tiny_models):
    """emotrack keys + replay --curve-secret/--curve-allow + record --curve-key: only the allowed recorder gets data."""
    import json
    import subprocess

    import soundfile as sf

    from conftest import REPO, emotrack_cmd, tone

    def cli(*a, **kw):
        return subprocess.run(emotrack_cmd(*a), capture_output=True, text=True, cwd=REPO, timeout=120, **kw)

    assert cli("keys", "server", "--dir", str(tmp_path / "srv")).returncode == 0
    assert cli("keys", "monitor", "--dir", str(tmp_path / "allow")).returncode == 0
    assert cli("keys", "intruder", "--dir", str(tmp_path / "other")).returncode == 0
    wav = tmp_path / "a.wav"
    sf.write(wav, tone(300, 6.0), 16000)
    recs = {}
    for who, key in (("monitor", tmp_path / "allow" / "monitor.key_secret"),
                     ("intruder", tmp_path / "other" / "intruder.key_secret")):
        out = tmp_path / f"{who}.jsonl"
        recs[who] = (out, subprocess.Popen(emotrack_cmd("record", "--sub", endpoint, "--no-snapshot", "--out", str(out),
                                                        "--exit-after-end", "--duration", "30", "-q",
                                                        "--curve-key", str(key),
                                                        "--curve-server-key", str(tmp_path / "srv" / "server.key")),
                                           cwd=REPO, stderr=subprocess.PIPE, text=True))
    proc = cli("replay", str(wav), "--pub", endpoint, "--no-snapshot", "-q", "--out", str(tmp_path / "ref.jsonl"),
               "--curve-secret", str(tmp_path / "srv" / "server.key_secret"), "--curve-allow", str(tmp_path / "allow"),
               "--speech-model", str(tiny_models["speech"]), "--music-model", str(tiny_models["music"]))
    assert proc.returncode == 0, proc.stderr
    out, p = recs["monitor"]
    p.wait(timeout=60)
    ref = (tmp_path / "ref.jsonl").read_text().splitlines()
    assert out.read_text().splitlines() == ref
    out, p = recs["intruder"]
    p.terminate()
    p.wait(timeout=30)
    assert not out.exists() or out.read_text().strip() == ""
    bad = cli("replay", str(wav), "--no-pub", "--curve-secret", str(tmp_path / "srv" / "server.key_secret"))
    assert bad.returncode == 2 and "--curve-allow" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
