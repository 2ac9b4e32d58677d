"""``emotrack proxy``: many publishers, one endpoint for subscribers (ZeroMQ XSUB/XPUB).

``emotrack replay|stream --pub-connect tcp://PROXY:5560`` publishers, on any
number of hosts, connect to the proxy's XSUB socket; subscribers connect to its
XPUB socket (default port 5561) exactly as they would to one streamer.  The
proxy itself subscribes to everything upstream (so it can count and keep
history of every stream) and filters by topic for its subscribers, as a
publisher's PUB socket would.  Streams stay apart because every body carries its
``stream`` name and its own per-(stream, topic) ``seq``; the proxy forwards
valid frames untouched.

One thread relays: it parses every message with :func:`streamer.schema.decode`
(bounded size and depth) and drops what is not schema 1 (counted as
``invalid``), so one hostile publisher cannot reach every subscriber; it counts
messages and seq gaps per stream and, unless ``--no-snapshot``, keeps recent history to answer late joiners on the XPUB port
+ 1 with the same snapshot protocol as a streamer.  Binding beyond loopback
needs ``--allow-remote``, as for ``replay --pub``.  The proxy does not speak
CURVE: run it on a trusted network or behind a tunnel.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Optional

from .. import schema
from ..errors import EmotrackError
from ..publish import SnapshotServer, bound_socket, check_endpoint, snapshot_endpoint_for

DEFAULT_XSUB = "tcp://127.0.0.1:5560"
DEFAULT_XPUB = "tcp://127.0.0.1:5561"
#: Most streams counted at once (forged stream names must not grow the proxy without bound).
MAX_STREAMS = 1000


class Proxy:
    """XSUB (publishers connect) -> XPUB (subscribers connect), with per-stream counts.

    ``start()`` runs the forwarding in a background thread; ``close()`` stops it.
    ``stats()`` returns ``{stream: {"messages", "gaps", "topics": {topic: n}}}``.
    """

    def __init__(self, xsub: str = DEFAULT_XSUB, xpub: str = DEFAULT_XPUB, *, allow_remote: bool = False,
                 snapshot: Optional[str] = None, hwm: int = 100_000, ctx=None):
        import zmq

        check_endpoint(xsub, allow_remote, "--xsub")
        check_endpoint(xpub, allow_remote, "--xpub")
        self._zmq = zmq
        self._ctx = ctx or zmq.Context.instance()
        self._lock = threading.Lock()
        self._counts: dict[str, dict] = {}
        self._last_seq: dict[tuple, int] = {}
        self.messages = 0
        self.invalid = 0            # messages that are not schema 1: dropped here, never relayed
        self.invalid_last = ""
        self.dropped = 0            # valid messages XPUB could not queue (a subscriber at its high-water mark)
        socks = []
        try:
            self._front = bound_socket(self._ctx, zmq.XSUB, xsub, hwm=hwm, linger_ms=0, curve=None,
                                       what="--xsub", advice="choose another --xsub")
            socks.append(self._front)
            self._front.setsockopt(zmq.RCVHWM, hwm)
            # A publisher that sends a frame bigger than this is disconnected before it is read.
            self._front.setsockopt(zmq.MAXMSGSIZE, schema.MAX_FRAME_BYTES)
            # Subscribe to everything upstream ourselves: publishers send every message here from the
            # moment they connect, so counts and snapshots cover all streams, whoever subscribes below.
            self._front.send(b"\x01")
            self._back = bound_socket(self._ctx, zmq.XPUB, xpub, hwm=hwm, linger_ms=0, curve=None,
                                      what="--xpub", advice="choose another --xpub")
            socks.append(self._back)
            self.xsub = self._front.getsockopt_string(zmq.LAST_ENDPOINT)
            self.xpub = self._back.getsockopt_string(zmq.LAST_ENDPOINT)
            self.snapshot: Optional[SnapshotServer] = None
            if snapshot:
                check_endpoint(snapshot, allow_remote, "--snapshot")
                self.snapshot = SnapshotServer(self._ctx, snapshot, "proxy", per_topic=20_000, status_keep=300)
        except BaseException:
            for s in socks:
                s.close(0)
            raise
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -------------------------------------------------------------- running
    def start(self) -> "Proxy":
        t = threading.Thread(target=self._forward, name="emotrack-proxy", daemon=True)
        self._threads = [t]
        t.start()
        return self

    def _forward(self) -> None:
        """Relay valid schema-1 messages downstream and subscriptions upstream, counting as it goes.

        Every message is parsed (bounded: :func:`streamer.schema.decode`) before it is relayed,
        so an invalid one is dropped and counted here instead of reaching every subscriber.
        """
        zmq = self._zmq
        poller = zmq.Poller()
        poller.register(self._front, zmq.POLLIN)
        poller.register(self._back, zmq.POLLIN)
        while not self._stop.is_set():
            try:
                events = dict(poller.poll(100))
                if self._back in events:
                    for _ in range(1000):   # subscriptions (one frame each) go upstream
                        try:
                            self._front.send_multipart(self._back.recv_multipart(zmq.NOBLOCK), zmq.NOBLOCK)
                        except zmq.Again:
                            break
                if self._front in events:
                    for _ in range(10_000):
                        try:
                            frames = self._front.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._relay(frames)
            except zmq.ZMQError:
                if self._stop.is_set():
                    return
            except Exception as exc:  # never let one message end the relay
                self._invalid(f"{type(exc).__name__}: {exc}")

    def _relay(self, frames: list[bytes]) -> None:
        try:
            topic, body = schema.decode(frames)
        except schema.SchemaError as exc:
            return self._invalid(str(exc))
        try:
            self._back.send_multipart(frames, self._zmq.NOBLOCK)
        except self._zmq.Again:
            self.dropped += 1
        self._account(topic, body, frames[1])

    def _invalid(self, why: str) -> None:
        with self._lock:
            self.invalid += 1
            self.invalid_last = why[:200]

    def _account(self, topic: str, body: dict, frame: bytes) -> None:
        stream, seq = body["stream"], body["seq"]
        if stream not in self._counts and len(self._counts) >= MAX_STREAMS:
            return self._invalid(f"more than {MAX_STREAMS} streams")
        with self._lock:
            self.messages += 1
            c = self._counts.setdefault(stream, {"messages": 0, "gaps": 0, "topics": {}})
            c["messages"] += 1
            c["topics"][topic] = c["topics"].get(topic, 0) + 1
            last = self._last_seq.get((stream, topic))
            if last is not None and seq > last + 1:
                c["gaps"] += 1
            self._last_seq[(stream, topic)] = seq
        if self.snapshot is not None:
            self.snapshot.add(topic, body, frame)

    def stats(self) -> dict:
        with self._lock:
            return {s: {"messages": c["messages"], "gaps": c["gaps"], "topics": dict(c["topics"])}
                    for s, c in self._counts.items()}

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2.0)
        if self.snapshot is not None:
            self.snapshot.close()
        for s in (self._front, self._back):
            s.close(0)


# ----------------------------------------------------------------------------- CLI


def add_parser(sub) -> None:
    """Register ``emotrack proxy`` on the CLI's subparsers (:func:`run` runs it)."""
    from engines.argtypes import positive

    p = sub.add_parser("proxy", help="one endpoint for many publishers (ZeroMQ XSUB/XPUB proxy)",
                       description="Forward every message from publishers that connect to --xsub (emotrack "
                                   "replay/stream --pub-connect) to subscribers that connect to --xpub, "
                                   "counting messages per stream, until interrupted.")
    p.add_argument("--xsub", metavar="ENDPOINT", default=DEFAULT_XSUB,
                   help=f"endpoint publishers connect to (default: {DEFAULT_XSUB})")
    p.add_argument("--xpub", metavar="ENDPOINT", default=DEFAULT_XPUB,
                   help=f"endpoint subscribers connect to (default: {DEFAULT_XPUB})")
    p.add_argument("--snapshot", metavar="ENDPOINT", default=None,
                   help="answer late joiners with recent history of every stream here "
                        "(default: the --xpub port + 1 on tcp)")
    p.add_argument("--no-snapshot", action="store_true", help="serve no history")
    p.add_argument("--allow-remote", action="store_true", help="allow binding addresses other than loopback")
    p.add_argument("--stats", type=positive(float), default=10.0, metavar="S",
                   help="print per-stream message counts every S seconds (default: 10)")
    p.add_argument("--quiet", "-q", action="store_true", help="no statistics on stderr")


def _line(stats: dict, invalid: int = 0) -> str:
    total = sum(c["messages"] for c in stats.values())
    gaps = sum(c["gaps"] for c in stats.values())
    per = ", ".join(f"{s if s.isprintable() and len(s) <= 80 else repr(s[:80])} {c['messages']}"
                    for s, c in sorted(stats.items())[:20])
    more = f" and {len(stats) - 20} more" if len(stats) > 20 else ""
    return (f"{len(stats)} stream(s), {total} messages{' (' + per + more + ')' if per else ''}, {gaps} seq gap(s)"
            + (f", {invalid} invalid dropped" if invalid else ""))


def run(args) -> int:
    snap = None if args.no_snapshot else (args.snapshot or snapshot_endpoint_for(args.xpub))
    try:
        proxy = Proxy(args.xsub, args.xpub, allow_remote=args.allow_remote, snapshot=snap)
    except EmotrackError as exc:
        if args.snapshot or not snap or "snapshot" not in str(exc):
            raise
        print(f"emotrack: warning: {exc}; serving no snapshots", file=sys.stderr, flush=True)
        proxy = Proxy(args.xsub, args.xpub, allow_remote=args.allow_remote)
    stop = threading.Event()
    old = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    proxy.start()
    if not args.quiet:
        snap_txt = f", snapshots on {proxy.snapshot.endpoint}" if proxy.snapshot else ""
        print(f"emotrack: proxy: publishers connect to {proxy.xsub}, subscribers to {proxy.xpub}{snap_txt}",
              file=sys.stderr, flush=True)
    try:
        next_print = time.monotonic() + args.stats
        while not stop.wait(0.2):
            if not args.quiet and time.monotonic() >= next_print:
                print(f"emotrack: proxy: {_line(proxy.stats(), proxy.invalid)}", file=sys.stderr, flush=True)
                next_print = time.monotonic() + args.stats
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        proxy.close()
    if not args.quiet:
        print(f"emotrack: proxy: stopped; {_line(proxy.stats(), proxy.invalid)}", file=sys.stderr, flush=True)
    return 0
