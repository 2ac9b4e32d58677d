"""Publishing: a ZeroMQ PUB socket and a JSONL file, fed the same bodies.

The streaming path never blocks on a consumer: the PUB socket drops at its
high-water mark (per subscriber; that is ZeroMQ's design) and every send is
non-blocking, a failed send counted in ``pub_dropped``.  seq numbers are kept
per topic, so subscribers see their own drops as gaps.  The JSONL file is
line-buffered: a crash loses at most the line being written.
"""

from __future__ import annotations

import collections
import errno
import ipaddress
import json
import sys
import threading
import time
from typing import IO, Optional
from urllib.parse import urlparse

from . import schema
from .errors import EmotrackError, EndpointError, ParameterError

DEFAULT_PUB = "tcp://127.0.0.1:5556"
#: First frame of a snapshot request and of its reply (the Clone pattern's state request).
SNAPSHOT_REQUEST = b"SNAPSHOT"


#: the PUB port + 1 on tcp, else None (:func:`streamer.schema.snapshot_endpoint`)
snapshot_endpoint_for = schema.snapshot_endpoint


def bound_socket(ctx, kind: int, endpoint: str, *, hwm: int, linger_ms: int, curve, what: str, advice: str):
    """A ZeroMQ socket of ``kind`` bound to ``endpoint`` (CURVE applied first, if given)."""
    import zmq

    sock = ctx.socket(kind)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.LINGER, linger_ms)
    if curve is not None:
        curve.apply(sock)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        sock.close(0)
        msg = f"cannot bind {what + ' ' if what else ''}{endpoint}: {exc}; {advice}"
        if exc.errno in (zmq.EADDRINUSE, zmq.EADDRNOTAVAIL, errno.EACCES):  # busy or not ours: exit 6
            raise EndpointError(msg) from None
        raise ParameterError(msg) from None  # a malformed endpoint: exit 2
    return sock


class SnapshotServer:
    """Answers late joiners with recent history (ZeroMQ ROUTER, the guide's Clone pattern).

    ``add`` (called by Publisher.send) appends the encoded body to a bounded
    per-topic history under a lock held for an append; a background thread
    answers requests, so publishing never waits on a client.  Request: one
    frame ``SNAPSHOT`` (REQ or DEALER with an empty delimiter).  Reply:
    ``[SNAPSHOT, meta JSON, topic, body, topic, body, ...]`` in publication
    order; meta holds ``stream``, ``count`` and ``history_s``.
    """

    def __init__(self, ctx, endpoint: str, stream: str, *, history_s: float = 600.0,
                 per_topic: int = 1500, status_keep: int = 30, curve=None):
        import zmq

        self._zmq, self.stream, self.history_s = zmq, stream, history_s
        self._lock = threading.Lock()
        self._n = 0
        self._hist: dict[str, collections.deque] = {}
        self._per_topic, self._status_keep = per_topic, status_keep
        self._start = None  # the last status "start": always part of a snapshot
        self.served = 0
        self._sock = bound_socket(ctx, zmq.ROUTER, endpoint, hwm=100, linger_ms=0, curve=curve,
                                  what="snapshot endpoint", advice="choose another --snapshot or pass --no-snapshot")
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="emotrack-snapshot", daemon=True)
        self._thread.start()

    def add(self, topic: str, body: dict, frame: bytes) -> None:
        now = time.monotonic()
        with self._lock:
            self._n += 1
            keep = self._status_keep if topic == schema.TOPIC_STATUS else self._per_topic
            dq = self._hist.setdefault(topic, collections.deque(maxlen=keep))
            dq.append((self._n, now, topic.encode("utf-8"), frame))
            if topic == schema.TOPIC_STATUS and body.get("event") == "start":
                self._start = (self._n, now, topic.encode("utf-8"), frame)
            while dq and now - dq[0][1] > self.history_s:
                dq.popleft()

    def items(self) -> list[tuple[bytes, bytes]]:
        now = time.monotonic()
        with self._lock:
            rows = [r for dq in self._hist.values() for r in dq if now - r[1] <= self.history_s]
            if self._start is not None and self._start not in rows:
                rows.append(self._start)
        rows.sort(key=lambda r: r[0])
        return [(r[2], r[3]) for r in rows]

    def _serve(self) -> None:
        zmq = self._zmq
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop.is_set():
            try:
                if not poller.poll(100):
                    continue
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.ZMQError:
                continue
            sep = frames.index(b"") if b"" in frames[:-1] else 0
            envelope, request = frames[:sep + 1], frames[sep + 1:]
            if request[:1] != [SNAPSHOT_REQUEST]:
                continue
            items = self.items()
            meta = json.dumps({"stream": self.stream, "count": len(items),
                               "history_s": self.history_s}).encode("utf-8")
            reply = envelope + [SNAPSHOT_REQUEST, meta] + [f for pair in items for f in pair]
            try:
                self._sock.send_multipart(reply, zmq.NOBLOCK)
                self.served += 1
            except zmq.ZMQError:
                pass
        self._sock.close(0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


def _is_loopback(endpoint: str) -> bool:
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = urlparse(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(endpoint: str, allow_remote: bool = False, option: str = "--pub") -> None:
    if not endpoint.startswith(("tcp://", "ipc://", "inproc://")):
        raise ParameterError(f"{option} {endpoint!r}: expected tcp://HOST:PORT, ipc://PATH or inproc://NAME")
    if endpoint.startswith("tcp://"):
        port = endpoint.rsplit(":", 1)[-1] if endpoint.count(":") >= 2 else ""
        if port != "*" and not (port.isdigit() and int(port) <= 65535):
            raise ParameterError(f"{option} {endpoint!r}: the port must be a number 0-65535 (or *)")
    if not allow_remote and not _is_loopback(endpoint):
        raise ParameterError(f"{option} {endpoint!r} binds beyond this machine; pass --allow-remote to do that on purpose")


class Publisher:
    """Sends schema-1 bodies to a PUB socket and/or a JSONL file."""

    def __init__(self, stream: str, endpoint: Optional[str] = DEFAULT_PUB, out: Optional[str] = None,
                 *, hwm: int = 10000, start_grace_s: float = 0.5, allow_remote: bool = False,
                 linger_ms: int = 2000, snapshot: Optional[str] = None, curve=None, connect: bool = False):
        """``connect``: connect the PUB socket to ``endpoint`` (an ``emotrack proxy``'s XSUB) instead of binding it."""
        self.stream = stream
        self.curve = curve  # security.CurveServer: encrypt, and accept allowed clients only
        self.counters = {"published": 0, "pub_dropped": 0}
        self._seq: dict[tuple, int] = {}  # (stream, topic) -> next seq
        self._sock = None
        self._ctx = None
        self._file: Optional[IO[str]] = None
        self._grace_until = 0.0
        if endpoint:
            # connecting sends to a proxy the user named; only binds are kept to loopback by default
            check_endpoint(endpoint, allow_remote or connect, "--pub-connect" if connect else "--pub")
            import zmq

            self._zmq = zmq
            self._ctx = zmq.Context.instance()
            try:
                if connect:
                    if curve is not None:
                        raise ParameterError("--pub-connect does not encrypt: CURVE needs a bound --pub")
                    self._sock = self._ctx.socket(zmq.PUB)
                    self._sock.setsockopt(zmq.SNDHWM, hwm)
                    self._sock.setsockopt(zmq.LINGER, linger_ms)
                    try:
                        self._sock.connect(endpoint)
                    except zmq.ZMQError as exc:
                        self._sock.close(0)
                        self._sock = None
                        raise ParameterError(f"--pub-connect {endpoint!r}: {exc}") from None
                else:
                    self._sock = bound_socket(self._ctx, zmq.PUB, endpoint, hwm=hwm, linger_ms=linger_ms,
                                              curve=curve, what="", advice="choose another --pub")
            except EmotrackError:
                if curve is not None:
                    curve.stop()
                raise
            self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
            # Subscribers that were waiting need a moment to connect and
            # subscribe ("slow joiner"); the first message waits for it.
            self._grace_until = time.monotonic() + start_grace_s
        else:
            self.endpoint = None
        self.snapshot: Optional[SnapshotServer] = None
        if snapshot and self._sock is not None:
            try:
                check_endpoint(snapshot, allow_remote, "--snapshot")
                self.snapshot = SnapshotServer(self._ctx, snapshot, stream, curve=curve)
            except EmotrackError:
                self.close()
                raise
        if out:
            try:
                self._file = sys.stdout if out == "-" else open(out, "w", buffering=1, encoding="utf-8")
            except OSError as exc:
                self.close()
                raise EmotrackError(f"cannot write --out {out}: {exc.strerror}") from None

    def next_seq(self, topic: str, stream: Optional[str] = None) -> int:
        key = (self.stream if stream is None else stream, topic)
        s = self._seq.get(key, 0)
        self._seq[key] = s + 1
        return s

    def send(self, topic: str, body: dict) -> None:
        frames = schema.encode(topic, body)
        if self.snapshot is not None:
            self.snapshot.add(topic, body, frames[1])
        if self._file is not None:
            line = dict(body)
            line["topic"] = topic
            self._file.write(json.dumps(line, separators=(",", ":"), allow_nan=False) + "\n")
        if self._sock is not None:
            wait = self._grace_until - time.monotonic()
            if wait > 0:
                time.sleep(wait)
                self._grace_until = 0.0
            try:
                self._sock.send_multipart(frames, flags=self._zmq.NOBLOCK)
            except self._zmq.Again:
                self.counters["pub_dropped"] += 1
                return
        self.counters["published"] += 1

    def emotion(self, source: str, stream: Optional[str] = None, **fields) -> dict:
        """Publish one emotion body; ``stream`` (default: this publisher's) keys its seq."""
        topic = schema.topic_for(source)
        stream = self.stream if stream is None else stream
        body = schema.emotion_body(stream=stream, seq=self.next_seq(topic, stream), source=source,
                                   wall_time=time.time(), **fields)
        self.send(topic, body)
        return body

    def status(self, event: str, stream: Optional[str] = None, **fields) -> dict:
        stream = self.stream if stream is None else stream
        body = schema.status_body(stream=stream, seq=self.next_seq(schema.TOPIC_STATUS, stream),
                                  wall_time=time.time(), event=event, **fields)
        self.send(schema.TOPIC_STATUS, body)
        return body

    def close(self) -> None:
        if self._file is not None and self._file is not sys.stdout:
            self._file.close()
        elif self._file is not None:
            self._file.flush()
        self._file = None
        if self._sock is not None:
            self._sock.close()  # lingers up to linger_ms to deliver queued messages
            self._sock = None
        if getattr(self, "snapshot", None) is not None:
            self.snapshot.close()
            self.snapshot = None
        if getattr(self, "curve", None) is not None:
            self.curve.stop()
            self.curve = None
