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


def bound_socket(ctx, kind: int, endpoint: str, *, hwm: int, linger_ms: int, curve, what: str, advice: str,
                 options: Optional[dict] = None):
    """A ZeroMQ socket of ``kind`` bound to ``endpoint`` (CURVE applied first, if given).

    A busy or unbindable address raises :class:`EndpointError` (exit code 6).
    """
    import zmq

    sock = ctx.socket(kind)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.LINGER, linger_ms)
    for opt, value in (options or {}).items():
        sock.setsockopt(opt, value)
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

    What a reply costs is bounded, whoever asks: bodies are kept as ZeroMQ
    frames that every reply shares (no copy per reply); a peer gets at most one
    reply per ``peer_interval_s``; at most ``max_inflight`` replies go out per
    ``inflight_s`` (a token bucket); the ROUTER queues at most one reply per
    peer (SNDHWM 1, ROUTER_MANDATORY): a peer that does not read its replies is
    refused, not queued for.  A request refused as ``busy`` gets a short reply
    ``[SNAPSHOT, {"stream", "count": 0, "refused": why, "retry_after_s"}]``
    when the peer's queue takes it.  Refusals are counted in :meth:`stats`
    (and so in status heartbeats).
    """

    def __init__(self, ctx, endpoint: str, stream: str, *, history_s: float = 600.0,
                 per_topic: int = 1500, status_keep: int = 30, curve=None,
                 peer_interval_s: float = 0.25, max_inflight: int = 16, inflight_s: float = 1.0,
                 max_requests_per_s: float = 500.0):
        import zmq

        self._zmq, self.stream, self.history_s = zmq, stream, history_s
        self._lock = threading.Lock()
        self._n = 0
        self._hist: dict[str, collections.deque] = {}
        self._topic_frames: dict[str, object] = {}
        self._per_topic, self._status_keep = per_topic, status_keep
        self._start = None  # the last status "start": always part of a snapshot
        self.served = 0
        self.refused = {"rate": 0, "busy": 0, "gone": 0, "bad": 0}
        self.peer_interval_s = peer_interval_s
        self.max_requests_per_s = max_requests_per_s
        self.max_inflight, self.inflight_s = max_inflight, inflight_s
        self._tokens = float(max_inflight)
        self._tokens_at = time.monotonic()
        self._peers: "collections.OrderedDict[bytes, float]" = collections.OrderedDict()
        self._sock = bound_socket(ctx, zmq.ROUTER, endpoint, hwm=1, linger_ms=0, curve=curve,
                                  what="snapshot endpoint", advice="choose another --snapshot or pass --no-snapshot",
                                  options={zmq.ROUTER_MANDATORY: 1, zmq.MAXMSGSIZE: 4096, zmq.RCVHWM: 1000})
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="emotrack-snapshot", daemon=True)
        self._thread.start()

    def add(self, topic: str, body: dict, frame: bytes) -> None:
        now = time.monotonic()
        zframe = self._zmq.Frame(frame)  # one copy, shared by every reply that holds it
        with self._lock:
            self._n += 1
            tframe = self._topic_frames.get(topic)
            if tframe is None:
                tframe = self._topic_frames[topic] = self._zmq.Frame(topic.encode("utf-8"))
            keep = self._status_keep if topic == schema.TOPIC_STATUS else self._per_topic
            dq = self._hist.setdefault(topic, collections.deque(maxlen=keep))
            dq.append((self._n, now, tframe, zframe))
            if topic == schema.TOPIC_STATUS and body.get("event") == "start":
                self._start = (self._n, now, tframe, zframe)
            while dq and now - dq[0][1] > self.history_s:
                dq.popleft()

    def _rows(self) -> list:
        now = time.monotonic()
        with self._lock:
            rows = [r for dq in self._hist.values() for r in dq if now - r[1] <= self.history_s]
            if self._start is not None and self._start not in rows:
                rows.append(self._start)
        rows.sort(key=lambda r: r[0])
        return rows

    def items(self) -> list[tuple[bytes, bytes]]:
        return [(r[2].bytes, r[3].bytes) for r in self._rows()]

    def stats(self) -> dict:
        """``served`` and ``refused`` (by reason: rate, busy, gone, bad) requests."""
        return {"served": self.served, "refused": dict(self.refused)}

    def _admit(self, peer: bytes, now: float) -> Optional[str]:
        """None if ``peer`` may have a reply now, else why not (``rate`` or ``busy``)."""
        last = self._peers.get(peer)
        if last is not None and now - last < self.peer_interval_s:
            return "rate"
        rate = self.max_inflight / self.inflight_s
        self._tokens = min(float(self.max_inflight), self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens < 1.0:
            return "busy"
        return None

    def _send(self, frames: list) -> Optional[str]:
        zmq = self._zmq
        try:
            self._sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return "busy"      # that peer has not read what it was sent: nothing more is queued for it
        except zmq.ZMQError:
            return "gone"      # EHOSTUNREACH: the peer left
        return None

    def _serve(self) -> None:
        zmq = self._zmq
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        budget, budget_at = self.max_requests_per_s / 10, time.monotonic()
        while not self._stop.is_set():
            # Requests are read at a bounded rate: beyond it they wait in ZeroMQ's bounded queues
            # (RCVHWM) and a flooding peer's own sends block, so a flood costs this process little.
            now = time.monotonic()
            budget = min(self.max_requests_per_s / 10, budget + (now - budget_at) * self.max_requests_per_s)
            budget_at = now
            if budget < 1:
                self._stop.wait(0.01)
                continue
            try:
                if not poller.poll(100):
                    continue
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.ZMQError:
                continue
            budget -= 1
            try:
                self._handle(frames)
            except Exception:  # a request must never end the service
                self.refused["bad"] += 1
        self._sock.close(0)

    def _handle(self, frames: list[bytes]) -> None:
        sep = frames.index(b"") if b"" in frames[:-1] else 0
        envelope, request = frames[:sep + 1], frames[sep + 1:]
        if request != [SNAPSHOT_REQUEST] or len(envelope) > 2:
            self.refused["bad"] += 1
            return
        now = time.monotonic()
        peer = envelope[0]
        why = self._admit(peer, now)
        if why is None:
            rows = self._rows()
            meta = json.dumps({"stream": self.stream, "count": len(rows),
                               "history_s": self.history_s}).encode("utf-8")
            reply = envelope + [SNAPSHOT_REQUEST, meta] + [f for r in rows for f in (r[2], r[3])]
            why = self._send(reply)
            if why is None:
                self._tokens -= 1.0
                self.served += 1
                self._peers[peer] = now
                self._peers.move_to_end(peer)
                while len(self._peers) > 4096:
                    self._peers.popitem(last=False)
                return
        self.refused[why] += 1
        if why == "busy":  # (a peer refused for asking too often gets no answer: it asks again later)
            retry = self.peer_interval_s if why == "rate" else 1.0 / (self.max_inflight / self.inflight_s)
            meta = json.dumps({"stream": self.stream, "count": 0, "history_s": self.history_s,
                               "refused": why, "retry_after_s": round(max(retry, 0.05), 3)}).encode("utf-8")
            self._send(envelope + [SNAPSHOT_REQUEST, meta])

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


def parse_endpoint(endpoint: str, option: str = "--pub") -> str:
    """``endpoint`` if it is a well-formed ZeroMQ endpoint, else ParameterError (exit code 2).

    tcp://HOST:PORT with PORT 0..65535 or ``*`` (ZeroMQ would wrap 99999 to 34463
    silently), ipc://PATH or inproc://NAME with something after the ``//``.
    """
    usage = f"{option} {endpoint!r}: expected tcp://HOST:PORT, ipc://PATH or inproc://NAME"
    if not isinstance(endpoint, str) or not endpoint.isprintable():
        raise ParameterError(usage)
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in ("tcp", "ipc", "inproc") or not rest:
        raise ParameterError(usage)
    if scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        if not colon or not host or (host.startswith("[") != host.endswith("]")):
            raise ParameterError(f"{option} {endpoint!r}: expected tcp://HOST:PORT")
        if port != "*" and not (port.isdigit() and port.isascii() and int(port) <= 65535):
            raise ParameterError(f"{option} {endpoint!r}: port {port!r} must be a number in 0..65535 (or *)")
    return endpoint


def check_endpoint(endpoint: str, allow_remote: bool = False, option: str = "--pub") -> None:
    parse_endpoint(endpoint, option)
    if not allow_remote and not _is_loopback(endpoint):
        raise ParameterError(f"{option} {endpoint!r} binds beyond this machine; pass --allow-remote to do that on purpose")


def is_remote(endpoint: Optional[str]) -> bool:
    return bool(endpoint) and not _is_loopback(endpoint)


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
                    if curve is None and is_remote(endpoint):
                        print(f"emotrack: warning: --pub {endpoint} is reachable from other machines without "
                              f"encryption or access control: anyone who can connect can read the stream "
                              f"(use --curve-secret/--curve-allow)", file=sys.stderr, flush=True)
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
        if self.snapshot is not None and event != "start" and "snapshot" not in fields:
            fields["snapshot"] = self.snapshot.stats()  # served and refused history requests
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
