"""Audio sources behind one interface.

Every source yields mono float32 blocks at the processing rate (16 kHz), with
NaN/inf replaced by 0 (counted in ``counters["samples_sanitised"]``).  Audio is
resampled once, here, and nowhere else.

- :class:`SoundFileSource`: anything libsndfile reads (wav, flac, ogg/opus, ...)
- :class:`FFmpegSource`: everything else (mp4, ts, mkv, mp3, URLs, stdin ``-``)
  through an ffmpeg subprocess that decodes, downmixes and resamples.
- :class:`ArraySource`: a numpy array or an iterator of blocks (tests, embedding).
- :class:`DeviceSource`: live capture with sounddevice.  The PortAudio callback
  only copies the block into a bounded queue and counts overflows and drops.
- :class:`PacedSource`: replays any source at real time through the same
  bounded queue as live capture, so the live path runs without a sound card.

Live sources set :attr:`Source.last_arrival` (``time.monotonic()`` when the
block last yielded was captured) so the pipeline can measure per-hop latency.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Iterable, Iterator, Optional
from urllib.parse import urlparse

import numpy as np

from .dsp import SAMPLE_RATE
from .errors import InputError, ParameterError

#: Sample rates a file header may declare.  A header that says 1 Hz would turn a
#: 2-minute file into 22 days of audio after resampling: refused as corrupt.
MIN_FILE_RATE, MAX_FILE_RATE = 1000, 768000
#: URL schemes ffmpeg may open for a user; anything else (concat:, subfile:,
#: a playlist pointing at local files...) is refused.
ALLOWED_URL_SCHEMES = ("http", "https", "rtmp", "rtmps", "rtsp", "srt", "udp", "file")
FFMPEG_PROTOCOL_WHITELIST = "file,pipe,http,https,tcp,tls,crypto,rtmp,rtmps,rtsp,rtp,srt,udp"
#: For URL inputs "file" is left out: a playlist fetched from the network must
#: not make ffmpeg read local files.
FFMPEG_URL_PROTOCOL_WHITELIST = "http,https,tcp,tls,crypto,rtmp,rtmps,rtsp,rtp,srt,udp"


class _Resampler:
    """Streaming resampler (soxr), pass-through at the processing rate."""

    def __init__(self, in_rate: float, out_rate: int = SAMPLE_RATE):
        if in_rate <= 0:
            raise InputError(f"invalid sample rate {in_rate}")
        self.passthrough = int(in_rate) == out_rate and float(in_rate).is_integer()
        if not self.passthrough:
            import soxr

            self._rs = soxr.ResampleStream(float(in_rate), float(out_rate), 1, dtype="float32",
                                           quality="HQ")

    def __call__(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        if self.passthrough:
            return x
        return self._rs.resample_chunk(np.ascontiguousarray(x, dtype=np.float32), last=last)


class Source:
    """Base class: ``blocks()`` yields mono float32 blocks at 16 kHz."""

    live = False
    sample_rate = SAMPLE_RATE

    def __init__(self, name: str):
        self.name = name
        self.counters = {"samples_in": 0, "samples_sanitised": 0, "capture_overflows": 0,
                         "blocks_dropped": 0}
        #: One line describing a degradation (truncated input...), set by the source.
        self.warning: Optional[str] = None
        self.last_arrival: Optional[float] = None

    def blocks(self) -> Iterator[np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _clean(self, x: np.ndarray) -> np.ndarray:
        """Downmix to mono float32 and replace non-finite samples (counted)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 2:
            x = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
        bad = ~np.isfinite(x)
        if bad.any():
            x = np.where(bad, np.float32(0.0), x)
            self.counters["samples_sanitised"] += int(bad.sum())
        self.counters["samples_in"] += x.size
        return x


class ArraySource(Source):
    """Blocks from an array or an iterable of arrays at ``sample_rate``."""

    def __init__(self, data, sample_rate: int = SAMPLE_RATE, name: str = "array",
                 block_size: Optional[int] = None):
        super().__init__(name)
        self._data = data
        self._in_rate = sample_rate
        self._block = block_size or int(sample_rate // 10)

    def _chunks(self) -> Iterable[np.ndarray]:
        if isinstance(self._data, np.ndarray):
            for i in range(0, len(self._data), self._block):
                yield self._data[i:i + self._block]
        else:
            yield from self._data

    def blocks(self) -> Iterator[np.ndarray]:
        rs = _Resampler(self._in_rate)
        for chunk in self._chunks():
            y = rs(self._clean(chunk))
            if y.size:
                yield y
        tail = rs(np.zeros(0, np.float32), last=True)
        if tail.size:
            yield tail


class SoundFileSource(Source):
    """A file libsndfile can read, decoded block by block (flat memory)."""

    def __init__(self, path: str, block_s: float = 0.5):
        super().__init__(Path(path).stem)
        import soundfile as sf

        self.path = path
        try:
            self._f = sf.SoundFile(path)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise InputError(f"cannot decode {path}: {exc}") from None
        if self._f.samplerate <= 0 or self._f.channels <= 0:
            self._f.close()
            raise InputError(f"cannot decode {path}: bad header")
        if not MIN_FILE_RATE <= self._f.samplerate <= MAX_FILE_RATE:
            self._f.close()
            raise InputError(f"cannot decode {path}: its header declares a sample rate of {self._f.samplerate} Hz "
                             f"(expected {MIN_FILE_RATE}..{MAX_FILE_RATE}); the file is corrupt")
        self._block = max(1, int(block_s * self._f.samplerate))
        # libsndfile clips a truncated file's length to the data present and
        # notes "(should be N)" in its log: that is how truncation shows.
        log = getattr(self._f, "extra_info", "") or ""
        self._truncated = "should be" in log and any(
            ln.split(":", 1)[0].strip().lower() in ("data", "ssnd", "riff", "form")
            for ln in log.splitlines() if "should be" in ln)
        if self._f.format == "OGG":
            self._truncated = self._truncated or not ogg_layout(path)[1]
        self.duration = self._f.frames / self._f.samplerate if self._f.frames > 0 else None

    def blocks(self) -> Iterator[np.ndarray]:
        import soundfile as sf

        rs = _Resampler(self._f.samplerate)
        expected, got, out = self._f.frames, 0, 0
        while True:
            try:
                x = self._f.read(self._block, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                self.warning = f"{self.path}: decoding stopped after {got / self._f.samplerate:.2f} s ({exc})"
                break
            if x.shape[0] == 0:
                break
            got += x.shape[0]
            y = rs(self._clean(x))
            if y.size:
                out += y.size
                yield y
        if self.warning is None and self._truncated:
            self.warning = (f"{self.path}: truncated file (its header promises more audio); "
                            f"decoded the {got / self._f.samplerate:.2f} s present")
        if 0 < expected and got < expected and self.warning is None:
            self.warning = (f"{self.path}: truncated, decoded {got / self._f.samplerate:.2f} s "
                            f"of {expected / self._f.samplerate:.2f} s")
        tail = rs(np.zeros(0, np.float32), last=True)
        if tail.size:
            out += tail.size
            yield tail
        if self.warning is not None and ffmpeg_available():
            # libsndfile stopped early: ffmpeg may decode further.  Continue with it from where
            # we are (it decodes the start again; what we already gave is skipped), so nothing is lost.
            yield from self._continue_with_ffmpeg(out)

    def _continue_with_ffmpeg(self, skip: int) -> Iterator[np.ndarray]:
        try:
            more = FFmpegSource(self.path)
        except InputError:
            return
        counters = dict(self.counters)
        extra = 0
        try:
            for x in more.blocks():
                if skip >= x.size:
                    skip -= x.size
                    continue
                x, skip = x[skip:], 0
                extra += x.size
                yield x
        except InputError:
            return
        finally:
            more.close()
            self.counters.update({k: counters[k] + (more.counters[k] if k != "samples_in" else extra)
                                  for k in ("samples_in", "samples_sanitised")})
        if extra > SAMPLE_RATE // 10:   # (a few samples more are resampler lengths, not audio)
            self.warning = more.warning  # None: ffmpeg decoded the rest, nothing was lost

    def close(self) -> None:
        self._f.close()


def _looks_like_mpeg(path: Path) -> bool:
    """An MP1/2/3 file by name or by its first bytes (an ID3 tag or an MPEG audio frame sync)."""
    if path.suffix.lower() in (".mp3", ".mp2", ".mp1", ".mpga"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE6 in (0xE2, 0xE4, 0xE6))


def ffmpeg_available() -> bool:
    return shutil.which("ffmpeg") is not None


def ogg_layout(path: str, max_pages: int = 2_000_000) -> tuple[bool, bool]:
    """(chained, complete) for an Ogg file, from its page headers alone.

    ``chained``: a logical stream begins after another one's pages (concatenated
    files, radio captures), which libsndfile stops at silently.  ``complete``: the
    last page carries the end-of-stream flag and ends exactly at the end of the file.
    """
    chained, complete, seen_data, pos = False, False, False, 0
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            for _ in range(max_pages):
                f.seek(pos)
                head = f.read(27)
                if len(head) < 27 or head[:4] != b"OggS":
                    return chained, False
                nseg = head[26]
                lacing = f.read(nseg)
                if len(lacing) < nseg:
                    return chained, False
                end = pos + 27 + nseg + sum(lacing)
                if end > size:
                    return chained, False
                flags = head[5]
                if flags & 0x02 and seen_data:
                    chained = True
                seen_data = seen_data or not flags & 0x02
                complete = bool(flags & 0x04) and end == size
                if end == size:
                    return chained, complete
                pos = end
    except OSError:
        return chained, False
    return chained, complete


def ffmpeg_binary() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise InputError("ffmpeg not found on PATH: install it (Debian: apt-get install ffmpeg)")
    return exe


class FFmpegSource(Source):
    """Decode anything ffmpeg reads to 16 kHz mono float32 through a pipe.

    Network inputs get an I/O timeout (a stalled stream fails instead of
    hanging) and, once they have delivered audio, are reopened after a failure
    with exponential back-off (``retries`` times, counted in
    ``counters["reconnects"]``; a success resets the back-off).  A URL that
    never delivered audio fails at once with one clear line.
    """

    def __init__(self, spec: str, block_s: float = 0.5, name: Optional[str] = None,
                 retries: Optional[int] = None, backoff_s: float = 1.0, io_timeout_s: float = 10.0):
        stem = "stdin" if spec == "-" else (Path(urlparse(spec).path).stem or urlparse(spec).netloc)
        super().__init__(name or stem or "stream")
        self.spec = spec
        self.is_url = spec != "-" and is_url(spec)
        self.retries = (5 if self.is_url else 0) if retries is None else int(retries)
        self.backoff_s = backoff_s
        self.io_timeout_s = io_timeout_s
        self.counters["reconnects"] = 0
        self._block_bytes = int(block_s * SAMPLE_RATE) * 4
        self._closing = threading.Event()
        self._start()

    def _cmd(self) -> list[str]:
        net: list[str] = []
        if self.is_url:
            scheme = urlparse(self.spec).scheme.lower()
            if scheme in ("http", "https"):
                net += ["-reconnect", "1", "-reconnect_streamed", "1", "-reconnect_delay_max", "5"]
            if scheme in ("rtsp", "udp", "srt"):
                net += ["-timeout", str(int(self.io_timeout_s * 1e6))]
            else:
                net += ["-rw_timeout", str(int(self.io_timeout_s * 1e6))]
        cmd = [ffmpeg_binary(), "-nostdin", "-hide_banner", "-nostats", "-loglevel", "+level+info",
               "-protocol_whitelist", FFMPEG_URL_PROTOCOL_WHITELIST if self.is_url else FFMPEG_PROTOCOL_WHITELIST,
               *net,
               "-i", "pipe:0" if self.spec == "-" else self.spec,
               "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", "pipe:1"]
        if self.spec == "-":
            cmd.remove("-nostdin")
        return cmd

    def _start(self) -> None:
        self._proc = subprocess.Popen(self._cmd(), stdin=None if self.spec == "-" else subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._stderr: deque[str] = deque(maxlen=20)   # ffmpeg's errors (never shown raw: see warning)
        self._ffwarnings: deque[str] = deque(maxlen=5)
        self.declared_s: Optional[float] = None          # the container's duration, if it states one
        self._err_thread = threading.Thread(target=self._drain_stderr, args=(self._proc,), daemon=True)
        self._err_thread.start()

    def _drain_stderr(self, proc) -> None:
        for line in iter(proc.stderr.readline, b""):
            text = line.decode("utf-8", "replace").strip()
            m = _FF_LEVEL.search(text)
            if not text or m is None:
                continue
            level, msg = m.group(1), _FF_CONTEXT.sub("", text[:m.start()] + text[m.end():]).strip()
            if level == "info":
                d = _FF_DURATION.search(msg)
                if d and self.declared_s is None:
                    self.declared_s = int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3))
            elif level == "warning":
                self._ffwarnings.append(msg)
            elif msg:
                self._stderr.append(msg)

    def _last_error(self) -> str:
        self._err_thread.join(timeout=2.0)
        return self._stderr[-1] if self._stderr else f"ffmpeg exited with code {self._proc.returncode}"

    def _read(self) -> Iterator[np.ndarray]:
        out, rest = self._proc.stdout, b""
        while True:
            data = out.read(self._block_bytes)
            if not data:
                return
            data = rest + data
            usable = len(data) - len(data) % 4
            rest = data[usable:]
            x = self._clean(np.frombuffer(data[:usable], dtype="<f4"))
            if x.size:
                yield x

    def blocks(self) -> Iterator[np.ndarray]:
        total, attempt = 0, 0
        while True:
            got = 0
            for x in self._read():
                got += x.size
                yield x
            total += got
            rc = self._proc.wait()
            self._err_thread.join(timeout=2.0)
            # ffmpeg ends a broken network read like an end of file (exit 0),
            # but says why on stderr: for a URL that counts as an interruption.
            if rc == 0 and total > 0 and not (self.is_url and self._stderr):
                self._check_complete(total)
                return
            msg = self._last_error()
            if total == 0:
                raise InputError(f"cannot decode {self.spec}: {msg}")
            if got > 0:
                attempt = 0  # it worked for a while: start the back-off again
            if self.is_url and attempt < self.retries and not self._closing.is_set():
                delay = min(self.backoff_s * 2 ** attempt, 30.0)
                attempt += 1
                self.counters["reconnects"] += 1
                self.warning = (f"{self.spec}: stream interrupted after {total / SAMPLE_RATE:.2f} s ({msg}); "
                                f"reconnect {attempt}/{self.retries} in {delay:g} s")
                if self._closing.wait(delay):
                    return
                self._proc.stdout.close()
                self._proc.stderr.close()
                self._start()
                continue
            self.warning = f"{self.spec}: decoding stopped after {total / SAMPLE_RATE:.2f} s ({msg})"
            return

    def _check_complete(self, total: int) -> None:
        """A warning if a file ended before the duration its container declares (audio was lost)."""
        if self.is_url or self.spec == "-" or self.declared_s is None:
            return
        got = total / SAMPLE_RATE
        if got < self.declared_s - max(1.0, 0.02 * self.declared_s):
            why = (self._stderr or self._ffwarnings or ["the rest is missing"])[-1]
            self.warning = (f"{self.spec}: truncated, decoded {got:.2f} s of the {self.declared_s:.2f} s "
                            f"its header declares ({why})")
        elif self._stderr:
            self.warning = f"{self.spec}: decoding errors, some audio may be missing ({self._stderr[-1]})"

    def close(self) -> None:
        self._closing.set()
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        for f in (self._proc.stdout, self._proc.stderr):
            if f:
                f.close()


_FF_LEVEL = __import__("re").compile(r"\[(panic|fatal|error|warning|info)\] ?")
_FF_CONTEXT = __import__("re").compile(r"\[[^\]]* @ 0x[0-9a-f]+\]\s*")
_FF_DURATION = __import__("re").compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")


class _LiveQueue:
    """Bounded queue between a producer (callback/thread) and the pipeline.

    ``put`` never blocks: when full, the block is dropped and counted.
    """

    _END = object()

    def __init__(self, counters: dict, max_blocks: int):
        self.q: queue.Queue = queue.Queue(maxsize=max_blocks)
        self.counters = counters

    def put(self, block: np.ndarray, t: float) -> None:
        try:
            self.q.put_nowait((block, t))
        except queue.Full:
            self.counters["blocks_dropped"] += 1

    def end(self, error: Optional[BaseException] = None) -> None:
        self.q.put((self._END, error))  # blocking on purpose: the end must arrive

    def get(self, timeout: float):
        return self.q.get(timeout=timeout)


class PacedSource(Source):
    """Replays ``inner`` at real time through a bounded live queue.

    A producer thread reads ``inner``, cuts it into ``block_s`` blocks and
    releases each when the wall clock reaches its stream time; if the pipeline
    falls behind, blocks are dropped and counted exactly as with live capture.
    """

    live = True

    def __init__(self, inner: Source, block_s: float = 0.1, max_queue_s: float = 5.0,
                 speed: float = 1.0):
        super().__init__(inner.name)
        if speed <= 0:
            raise ParameterError(f"speed={speed} must be > 0")
        self.inner = inner
        self.counters = inner.counters
        self._block = max(1, int(block_s * SAMPLE_RATE))
        self._speed = speed
        self._q = _LiveQueue(self.counters, max(2, int(max_queue_s / block_s)))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, daemon=True)
        self._started = False

    def _produce(self) -> None:
        err: Optional[BaseException] = None
        try:
            t0, sent = time.monotonic(), 0
            buf = np.zeros(0, np.float32)
            for x in self.inner.blocks():
                buf = np.concatenate([buf, x]) if buf.size else x
                while buf.size >= self._block and not self._stop.is_set():
                    blk, buf = buf[:self._block].copy(), buf[self._block:]
                    sent += blk.size
                    delay = t0 + sent / SAMPLE_RATE / self._speed - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    self._q.put(blk, time.monotonic())
                if self._stop.is_set():
                    return
            if buf.size:
                self._q.put(buf.copy(), time.monotonic())
        except BaseException as exc:  # handed to the consumer, raised there
            err = exc
        finally:
            self.warning = self.inner.warning
            self._q.end(err)

    def blocks(self) -> Iterator[np.ndarray]:
        if not self._started:
            self._started = True
            self._thread.start()
        while True:
            item, t = self._q.get(timeout=None)
            if item is _LiveQueue._END:
                if t is not None:
                    raise t
                return
            self.last_arrival = t
            yield item

    def close(self) -> None:
        self._stop.set()
        if self._started:
            self._thread.join(timeout=5.0)
        self.inner.close()


class DeviceSource(Source):
    """Live capture from a sound device with sounddevice (PortAudio)."""

    live = True

    def __init__(self, device=None, block_s: float = 0.1, max_queue_s: float = 5.0,
                 stall_timeout_s: float = 5.0, retries: int = 5, backoff_s: float = 1.0):
        super().__init__(f"device-{device}" if device is not None else "default-device")
        try:
            import sounddevice as sd
        except OSError as exc:  # PortAudio library missing
            raise InputError(f"live capture needs PortAudio (apt-get install libportaudio2): {exc}") from None
        self._sd = sd
        try:
            info = sd.query_devices(device, "input")
        except (ValueError, sd.PortAudioError) as exc:
            n_in = sum(1 for d in sd.query_devices() if d.get("max_input_channels", 0) > 0)
            which = device if device is not None else "(default)"
            raise InputError(f"no capture device {which}: {exc}; {n_in} input device(s) found "
                             "(see emotrack stream --list-devices)") from None
        self.device = device
        self.device_rate = SAMPLE_RATE
        try:
            sd.check_input_settings(device=device, samplerate=SAMPLE_RATE, channels=1, dtype="float32")
        except Exception:
            self.device_rate = int(info["default_samplerate"])
        self._blocksize = int(block_s * self.device_rate)
        self._q = _LiveQueue(self.counters, max(2, int(max_queue_s / block_s)))
        self._stall = stall_timeout_s
        self.retries, self.backoff_s = retries, backoff_s
        self._stopped = False
        self._failed_reopens = 0
        self.counters["device_reopens"] = 0
        self._stream = None

    def _callback(self, indata, frames, time_info, status) -> None:
        # Real-time thread: copy and enqueue, nothing else.
        if status.input_overflow:
            self.counters["capture_overflows"] += 1
        self._q.put(indata.copy(), time.monotonic())

    def _open(self) -> None:
        sd = self._sd
        self._stream = sd.InputStream(device=self.device, samplerate=self.device_rate, channels=1,
                                      dtype="float32", blocksize=self._blocksize, callback=self._callback)
        self._stream.start()

    def _reopen(self) -> bool:
        """The device went quiet or away: reopen it with back-off; False if it stays gone.

        Reopens that bring no audio count against the same budget, so a device
        that opens but stays silent ends the capture too.
        """
        for attempt in range(self._failed_reopens, self.retries):
            self._failed_reopens = attempt + 1
            if self._stopped:
                return False
            delay = min(self.backoff_s * 2 ** attempt, 30.0)
            self.warning = f"capture device {self.device} lost; reopening ({attempt + 1}/{self.retries}) in {delay:g} s"
            time.sleep(delay)
            try:
                if self._stream is not None:
                    self._stream.close(ignore_errors=True)
                self._open()
            except Exception:  # PortAudio errors while the device is away
                continue
            self.counters["device_reopens"] += 1
            return True
        return False

    def blocks(self) -> Iterator[np.ndarray]:
        try:
            self._open()
        except self._sd.PortAudioError as exc:
            raise InputError(f"cannot open capture device {self.device}: {exc}") from None
        rs = _Resampler(self.device_rate)
        while True:
            try:
                item, t = self._q.get(timeout=self._stall)
            except queue.Empty:
                if self._reopen():
                    continue
                raise InputError(f"capture device {self.device} delivered no audio for {self._stall:.0f} s "
                                 f"and could not be reopened ({self.retries} tries)") from None
            if item is _LiveQueue._END:
                return
            self.last_arrival = t
            self._failed_reopens = 0
            y = rs(self._clean(item))
            if y.size:
                yield y

    def stop(self) -> None:
        """End the capture: the block iterator finishes after queued blocks."""
        self._stopped = True
        if self._stream is not None:
            self._stream.stop()
        self._q.end()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def unique_stream_name(base: str, names: list[str], seen: dict[str, int]) -> str:
    """``base`` the first time, then ``base-2``, ``base-3`` ...; never one already in ``names``.

    ``seen`` counts each base; the caller keeps it (and appends the result to ``names``) across calls.
    """
    seen[base] = seen.get(base, 0) + 1
    name = base if seen[base] == 1 else f"{base}-{seen[base]}"
    while name in names:
        seen[base] += 1
        name = f"{base}-{seen[base]}"
    return name


def is_url(spec: str) -> bool:
    scheme = urlparse(spec).scheme
    return len(scheme) > 1  # one letter is a Windows drive


def open_source(spec: str, *, realtime: bool = False, block_s: float = 0.5,
                name: Optional[str] = None, retries: Optional[int] = None,
                io_timeout_s: float = 10.0) -> Source:
    """Open INPUT as the right source; ``realtime`` paces it like live capture."""
    if spec == "-":
        src: Source = FFmpegSource("-", block_s=block_s, name=name)
    elif is_url(spec) and urlparse(spec).scheme.lower() == "file":
        return open_source(urlparse(spec).path, realtime=realtime, block_s=block_s, name=name)
    elif is_url(spec):
        scheme = urlparse(spec).scheme.lower()
        if scheme not in ALLOWED_URL_SCHEMES:
            raise ParameterError(f"URL scheme {scheme!r} not allowed; use one of {', '.join(ALLOWED_URL_SCHEMES)}")
        src = FFmpegSource(spec, block_s=block_s, name=name, retries=retries, io_timeout_s=io_timeout_s)
    else:
        p = Path(spec)
        if not p.exists():
            raise InputError(f"no such file: {spec}")
        if p.is_dir():
            raise InputError(f"{spec} is a directory, not an audio file")
        if not os.access(p, os.R_OK):
            raise InputError(f"cannot read {spec}: permission denied")
        if p.stat().st_size == 0:
            raise InputError(f"{spec} is empty (0 bytes)")
        import soundfile as sf

        fmt = None
        if not (_looks_like_mpeg(p) and ffmpeg_available()):
            # (MPEG audio goes to ffmpeg: libsndfile's mpg123 prints its own warnings on stderr)
            try:
                fmt = sf.info(str(p)).format
            except (sf.LibsndfileError, RuntimeError):
                fmt = None
        if fmt == "MP3" and ffmpeg_available():
            fmt = None
        elif fmt == "OGG" and ffmpeg_available() and ogg_layout(str(p))[0]:
            fmt = None   # chained Ogg: libsndfile stops after the first stream, ffmpeg decodes them all
        src = None
        if fmt is not None:
            try:
                src = SoundFileSource(str(p), block_s=block_s)
            except InputError:
                if "sample rate" in str(sys.exc_info()[1]):
                    raise
        if src is None:
            src = FFmpegSource(str(p), block_s=block_s)
        if name:
            src.name = name
    if realtime:
        src = PacedSource(src, block_s=min(block_s, 0.1))
    return src
