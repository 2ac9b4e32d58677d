"""Bad and unusual input: each case ends in output or one clear error, never a traceback."""

import json
import subprocess

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings, strategies as st

from streamer import schema
from streamer.errors import EmotrackError, InputError
from streamer.sources import open_source

from conftest import REPO, SR, emotrack_cmd, tone


def replay(path, tiny_models, *extra):
    out = path.parent / (path.name + ".jsonl")
    pub = [] if "--pub" in extra else ["--no-pub"]
    proc = subprocess.run(emotrack_cmd("replay", str(path), *pub, "--out", str(out), "-q",
                                       "--speech-model", str(tiny_models["speech"]),
                                       "--music-model", str(tiny_models["music"]), *extra),
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    lines = [json.loads(ln) for ln in out.read_text().splitlines()] if out.exists() else []
    return proc, lines


def test_8khz_mono_and_96khz_8_channels(tmp_path, tiny_models):
    a = tmp_path / "phone.wav"
    sf.write(a, tone(300, 5.0, sr=8000), 8000, subtype="PCM_16")
    b = tmp_path / "studio.flac"
    t = np.arange(96000 * 5) / 96000
    sf.write(b, np.stack([0.1 * np.sin(2 * np.pi * (200 + 50 * c) * t) for c in range(8)], axis=1), 96000)
    for p in (a, b):
        proc, lines = replay(p, tiny_models)
        assert proc.returncode == 0, proc.stderr
        end = lines[-1]
        assert end["event"] == "end" and end["counters"]["stream_time"] == pytest.approx(5.0, abs=0.01)


def test_nan_inf_samples_are_sanitised_and_counted(tmp_path, tiny_models):
    x = tone(300, 4.0)
    x[1000:1100] = np.nan
    x[5000] = np.inf
    p = tmp_path / "nan.wav"
    sf.write(p, x, SR, subtype="FLOAT")
    proc, lines = replay(p, tiny_models)
    assert proc.returncode == 0, proc.stderr
    assert lines[-1]["counters"]["samples_sanitised"] == 101
    for ln in lines:
        if ln["topic"].startswith("emotion"):
            assert all(np.isfinite([ln["valence"], ln["arousal"], ln["activity"]]))


@pytest.mark.parametrize("signal", ["silence", "clipping"])
def test_silence_and_clipping(tmp_path, tiny_models, signal):
    x = np.zeros(SR * 12, np.float32) if signal == "silence" else np.clip(tone(200, 12.0, amp=5.0), -1, 1)
    p = tmp_path / f"{signal}.wav"
    sf.write(p, x, SR)
    proc, lines = replay(p, tiny_models)
    assert proc.returncode == 0, proc.stderr
    emo = [ln for ln in lines if ln["topic"].startswith("emotion")]
    assert len(emo) == 10 + 2  # speech starts 0..9, music 0 and 2 (the last ends at 12 s: no tail)
    for ln in emo:
        t = ln.pop("topic")
        schema.validate(t, ln)


def test_video_without_audio_track(tmp_path, tiny_models):
    p = tmp_path / "mute.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=red:s=32x32:d=1",
                    "-c:v", "libx264", str(p)], check=True)
    proc, lines = replay(p, tiny_models)
    assert proc.returncode == 3
    assert len(proc.stderr.strip().splitlines()) == 1 and "cannot decode" in proc.stderr
    assert lines[-1]["event"] == "end" and lines[-1]["reason"].startswith("error")


def test_unreachable_url(tmp_path, tiny_models):
    proc = subprocess.run(emotrack_cmd("replay", "http://127.0.0.1:9/stream.mp3", "--no-pub", "-q",
                                       "--speech-model", str(tiny_models["speech"]),
                                       "--music-model", str(tiny_models["music"])),
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 3
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("emotrack: cannot decode http://127.0.0.1:9/stream.mp3")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=4096), st.sampled_from(["emotion.speech", "emotion.music", "status", "x"]))
def test_fuzz_message_parser_only_raises_schema_error(body, topic):
    try:
        t, b = schema.decode([topic.encode(), body])
    except schema.SchemaError:
        return
    schema.validate(t, b)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=3000), st.sampled_from([".wav", ".flac", ".ogg", ".mp3", ".mp4", ".bin"]),
       st.booleans())
def test_fuzz_decoder_front(tmp_path, data, suffix, wav_header):
    """Random bytes (optionally behind a valid WAV header) decode or raise InputError."""
    p = tmp_path / f"f{suffix}"
    if wav_header:
        h = tmp_path / "h.wav"
        sf.write(h, tone(300, 0.2), SR)
        data = h.read_bytes()[:44] + data
    p.write_bytes(data)
    try:
        with open_source(str(p)) as src:
            blocks = list(src.blocks())
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    y = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    assert y.dtype == np.float32 and np.isfinite(y).all()


class _StallingServer:
    """HTTP on loopback: the first request gets a WAV whose body stops after
    ``seconds`` of audio and then stalls; later requests get 503."""

    def __init__(self, seconds: float):
        import http.server
        import io
        import threading

        buf = io.BytesIO()
        sf.write(buf, tone(300, 60.0), SR, format="WAV", subtype="PCM_16")
        wav = buf.getvalue()
        part = wav[:44 + int(seconds * SR) * 2]
        self.requests = 0
        self.release = threading.Event()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                if outer.requests > 1:
                    self.send_error(503)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "audio/wav")
                self.send_header("Content-Length", str(len(wav)))
                self.end_headers()
                self.wfile.write(part)
                self.wfile.flush()
                outer.release.wait(30)  # stall with the connection open

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/live.wav"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()


def test_stalled_stream_times_out_reconnects_with_backoff_and_ends_cleanly(tmp_path, tiny_models):
    from streamer.sources import FFmpegSource

    srv = _StallingServer(4.0)
    try:
        src = FFmpegSource(srv.url, retries=2, backoff_s=0.2, io_timeout_s=1.5)
        with src:
            y = np.concatenate(list(src.blocks()))
    finally:
        srv.close()
    assert abs(y.size - 4 * SR) < 0.1 * SR  # everything that arrived was delivered
    assert src.counters["reconnects"] == 2 and srv.requests >= 3  # ffmpeg retries HTTP itself too
    assert "decoding stopped after" in src.warning


@pytest.mark.parametrize("ext, codec", [(".mp3", "libmp3lame"), (".ogg", "libopus"), (".m4a", "aac")])
def test_truncated_compressed_audio_keeps_what_is_there(tmp_path, tiny_models, ext, codec):
    wav = tmp_path / "src.wav"
    sf.write(wav, tone(300, 20.0), SR)
    full = tmp_path / f"full{ext}"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(wav), "-c:a", codec, str(full)], check=True)
    cut = tmp_path / f"cut{ext}"
    data = full.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    proc, lines = replay(cut, tiny_models)
    assert "Traceback" not in proc.stderr
    if proc.returncode != 0:  # a container whose index is at the end (m4a): nothing decodable
        assert proc.returncode == 3 and len(proc.stderr.strip().splitlines()) == 1
        return
    end = lines[-1]
    assert end["event"] == "end"
    assert 5.0 < end["counters"]["stream_time"] < 15.0  # about the first half
    assert sum(ln["topic"] == "emotion.speech" for ln in lines) >= 3


def test_a_network_playlist_cannot_make_ffmpeg_read_local_files(tmp_path):
    """Our URL protocol list leaves out "file" (ffmpeg's HLS demuxer refuses such
    segments too: this checks the outcome, whichever layer stops it)."""
    import http.server
    import threading

    from streamer.sources import FFMPEG_URL_PROTOCOL_WHITELIST, FFmpegSource

    assert "file" not in FFMPEG_URL_PROTOCOL_WHITELIST.split(",")

    secret = tmp_path / "secret.wav"
    sf.write(secret, tone(300, 3.0), SR)
    playlist = (f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:3\n#EXTINF:3.0,\nfile://{secret}\n"
                "#EXT-X-ENDLIST\n").encode()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.apple.mpegurl")
            self.send_header("Content-Length", str(len(playlist)))
            self.end_headers()
            self.wfile.write(playlist)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        src = FFmpegSource(f"http://127.0.0.1:{httpd.server_address[1]}/live.m3u8", retries=0, io_timeout_s=3)
        with pytest.raises(InputError, match="cannot decode"):
            with src:
                list(src.blocks())
    finally:
        httpd.shutdown()
    # the same file given as a file:// URL by the user is read as a local path
    with open_source(f"file://{secret}") as local:
        assert sum(b.size for b in local.blocks()) == 3 * SR


def test_fifty_subscribers_get_every_message(tmp_path, tiny_models, endpoint):
    import zmq

    ctx = zmq.Context.instance()
    subs = []
    for _ in range(50):
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SUBSCRIBE, b"")
        s.connect(endpoint)
        subs.append(s)
    wav = tmp_path / "a.wav"
    sf.write(wav, tone(300, 20.0), SR)
    proc, lines = replay(wav, tiny_models, "--pub", endpoint, "--no-snapshot")
    assert proc.returncode == 0, proc.stderr
    try:
        for s in subs:
            got = 0
            while s.poll(500):
                s.recv_multipart()
                got += 1
            assert got == len(lines)
    finally:
        for s in subs:
            s.close()


def test_long_file_streams_with_flat_memory(tmp_path, tiny_models):
    """A 30-minute file is decoded block by block: RSS at the end within 10 % of the middle."""
    import time

    long = tmp_path / "long.flac"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=220:sample_rate=16000:duration=1800",
                    "-af", "volume=0.2", str(long)], check=True)
    out = tmp_path / "long.jsonl"
    proc = subprocess.Popen(emotrack_cmd("replay", str(long), "--no-pub", "-q", "--out", str(out),
                                         "--speech-model", str(tiny_models["speech"]),
                                         "--music-model", str(tiny_models["music"])), cwd=REPO)
    samples = []
    while proc.poll() is None:
        try:
            status = open(f"/proc/{proc.pid}/status").read()
            kb = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmRSS:")))
            done = sum(1 for _ in open(out)) if out.exists() else 0
            samples.append((done, kb))
        except (OSError, StopIteration, ValueError):
            pass
        time.sleep(0.1)
    assert proc.returncode == 0
    total = sum(1 for _ in open(out))
    assert total > 2600  # 1800 speech + 900 music windows, plus status
    mid = [kb for d, kb in samples if 0.4 * total <= d <= 0.6 * total]
    end = [kb for d, kb in samples if d >= 0.85 * total]
    assert mid and end, samples[-5:]
    assert max(end) <= 1.10 * np.median(mid)
