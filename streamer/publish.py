"""Publishing: a ZeroMQ PUB socket and a JSONL file, fed the same bodies.

The streaming path never blocks on a consumer: the PUB socket drops at its
high-water mark (per subscriber; that is ZeroMQ's design) and every send is
non-blocking, a failed send counted in ``pub_dropped``.  seq numbers are kept
per topic, so subscribers see their own drops as gaps.  The JSONL file is
line-buffered: a crash loses at most the line being written.
"""

from __future__ import annotations

import ipaddress
import json
import sys
import time
from typing import IO, Optional
from urllib.parse import urlparse

from . import schema
from .errors import ParameterError, EmotrackError

DEFAULT_PUB = "tcp://127.0.0.1:5556"


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


def check_endpoint(endpoint: str, allow_remote: bool = False) -> None:
    if not endpoint.startswith(("tcp://", "ipc://", "inproc://")):
        raise ParameterError(f"--pub {endpoint!r}: expected tcp://HOST:PORT, ipc://PATH or inproc://NAME")
    if not allow_remote and not _is_loopback(endpoint):
        raise ParameterError(f"--pub {endpoint!r} binds beyond this machine; pass --allow-remote to do that on purpose")


class Publisher:
    """Sends schema-1 bodies to a PUB socket and/or a JSONL file."""

    def __init__(self, stream: str, endpoint: Optional[str] = DEFAULT_PUB, out: Optional[str] = None,
                 *, hwm: int = 10000, start_grace_s: float = 0.5, allow_remote: bool = False,
                 linger_ms: int = 2000):
        self.stream = stream
        self.counters = {"published": 0, "pub_dropped": 0}
        self._seq: dict[str, int] = {}
        self._sock = None
        self._ctx = None
        self._file: Optional[IO[str]] = None
        self._grace_until = 0.0
        if endpoint:
            check_endpoint(endpoint, allow_remote)
            import zmq

            self._zmq = zmq
            self._ctx = zmq.Context.instance()
            self._sock = self._ctx.socket(zmq.PUB)
            self._sock.setsockopt(zmq.SNDHWM, hwm)
            self._sock.setsockopt(zmq.LINGER, linger_ms)
            try:
                self._sock.bind(endpoint)
            except zmq.ZMQError as exc:
                self._sock.close(0)
                raise EmotrackError(f"cannot bind {endpoint}: {exc}; choose another --pub") from None
            self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
            # Subscribers that were waiting need a moment to connect and
            # subscribe ("slow joiner"); the first message waits for it.
            self._grace_until = time.monotonic() + start_grace_s
        else:
            self.endpoint = None
        if out:
            try:
                self._file = sys.stdout if out == "-" else open(out, "w", buffering=1, encoding="utf-8")
            except OSError as exc:
                self.close()
                raise EmotrackError(f"cannot write --out {out}: {exc.strerror}") from None

    def next_seq(self, topic: str) -> int:
        s = self._seq.get(topic, 0)
        self._seq[topic] = s + 1
        return s

    def send(self, topic: str, body: dict) -> None:
        frames = schema.encode(topic, body)
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

    def emotion(self, source: str, **fields) -> dict:
        topic = schema.topic_for(source)
        body = schema.emotion_body(stream=self.stream, seq=self.next_seq(topic), source=source,
                                   wall_time=time.time(), **fields)
        self.send(topic, body)
        return body

    def status(self, event: str, **fields) -> dict:
        body = schema.status_body(stream=self.stream, seq=self.next_seq(schema.TOPIC_STATUS),
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
