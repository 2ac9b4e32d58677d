"""A schema-1 subscriber with the Clone pattern's snapshot, de-duplication and loss accounting.

:class:`Feed` connects a SUB socket to a streamer (ZeroMQ reconnects on its own
when the publisher goes away and comes back), asks the streamer's snapshot
server for recent history on connect and whenever messages went missing, and
hands every message exactly once to its caller, in order where it can.

Accounting is per ``(stream, topic)``: ``seq`` counts from 0 without gaps, so a
jump is a loss (filled later if a snapshot still holds it), and ``seq`` going
back with a newer ``wall_time`` (or a status ``start``) is a publisher
restart.  After a restart, what the new publisher sent before we reconnected
is counted as lost while down unless the snapshot returns it.

Depends on the standard library, pyzmq and :mod:`streamer.schema` only.
"""

from __future__ import annotations

import bisect
import json
import time
from dataclasses import dataclass, field
from typing import Callable, Optional
from urllib.parse import urlparse

import zmq

from streamer import schema

#: Seconds to wait for a snapshot reply before going on live only.
SNAPSHOT_TIMEOUT_S = 1.5
#: Fewest seconds between two snapshot requests (a persistent gap must not storm the server).
SNAPSHOT_MIN_INTERVAL_S = 0.5
#: Largest gap whose seq numbers are remembered for back-filling.  A jump forward by more
#: than this is held until the next message of its (stream, topic) confirms it: one forged
#: message with a huge seq cannot make the real ones that follow look like duplicates.
MAX_MISSING = 1_000_000
#: Most streams tracked at once; messages naming more are dropped and counted as invalid.
MAX_STREAMS = 1000
#: A wall_time further ahead of our clock than this is implausible (dropped, counted).
MAX_CLOCK_AHEAD_S = 86400.0


def _safe(text: str, limit: int = 80) -> str:
    """A name from the wire as it may appear in a one-line notice."""
    return text if text.isprintable() and len(text) <= limit else repr(text[:limit])


class SeqSet:
    """A set of seq numbers kept as sorted half-open ranges (memory grows with ranges, not numbers)."""

    def __init__(self):
        self._lo: list[int] = []
        self._hi: list[int] = []
        self._n = 0

    def update(self, r: range) -> None:
        lo, hi = r.start, r.stop
        if hi <= lo:
            return
        i = bisect.bisect_left(self._hi, lo)          # first range that ends at/after lo
        j = bisect.bisect_right(self._lo, hi)         # ranges starting at/before hi
        if i < j:
            lo, hi = min(lo, self._lo[i]), max(hi, self._hi[j - 1])
            self._n -= sum(self._hi[k] - self._lo[k] for k in range(i, j))
        self._lo[i:j] = [lo]
        self._hi[i:j] = [hi]
        self._n += hi - lo

    def __contains__(self, x: int) -> bool:
        i = bisect.bisect_right(self._lo, x) - 1
        return i >= 0 and x < self._hi[i]

    def discard(self, x: int) -> None:
        i = bisect.bisect_right(self._lo, x) - 1
        if i < 0 or x >= self._hi[i]:
            return
        lo, hi = self._lo[i], self._hi[i]
        parts = [(a, b) for a, b in ((lo, x), (x + 1, hi)) if b > a]
        self._lo[i:i + 1] = [a for a, _ in parts]
        self._hi[i:i + 1] = [b for _, b in parts]
        self._n -= 1

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0


#: the streamer's default snapshot endpoint for a --sub endpoint (:func:`streamer.schema.snapshot_endpoint`)
default_snapshot = schema.snapshot_endpoint


def curve_client(args):
    """A CurveClient from ``--curve-key``/``--curve-server-key``, or None."""
    key, server = getattr(args, "curve_key", None), getattr(args, "curve_server_key", None)
    if not key and not server:
        return None
    if not (key and server):
        from streamer.errors import ParameterError

        raise ParameterError("CURVE needs both --curve-key (your .key_secret) and --curve-server-key (the server's .key)")
    from streamer.security import CurveClient

    return CurveClient(key, server)


def check_sub_endpoint(endpoint: str, option: str = "--sub") -> str:
    from streamer.errors import ParameterError

    u = urlparse(endpoint)
    if u.scheme == "tcp":
        try:
            ok = bool(u.hostname) and bool(u.port)
        except ValueError:
            ok = False
        if not ok:
            raise ParameterError(f"{option} {endpoint!r}: expected tcp://HOST:PORT")
    elif u.scheme not in ("ipc", "inproc"):
        raise ParameterError(f"{option} {endpoint!r}: expected tcp://HOST:PORT, ipc://PATH or inproc://NAME")
    return endpoint


@dataclass
class KeyState:
    """What we know of one (stream, topic)."""

    last: int = -1
    last_wall: float = 0.0
    last_t: float = -1.0    # t_start of the newest emotion message
    epoch: int = 0
    missing: SeqSet = field(default_factory=SeqSet)
    received: int = 0
    recovered: int = 0
    lost: int = 0          # still missing (gaps not filled)
    gaps: int = 0
    lost_while_down: int = 0
    duplicates: int = 0
    prejoin: SeqSet = field(default_factory=SeqSet)   # before we joined: history, not a loss
    history: int = 0                            # of those, how many a snapshot gave us


@dataclass
class StreamState:
    epoch: int = 0
    floor: float = 0.0      # wall_time at which the current epoch began
    restarts: int = 0
    ended: bool = False
    start: Optional[dict] = None
    last_status: Optional[dict] = None
    max_wall: float = 0.0


class Feed:
    """Subscribe, snapshot, de-duplicate, account.

    ``on_message(topic, body, origin)`` gets every new message once (origin is
    ``"live"`` or ``"snapshot"``); ``on_notice(kind, text)`` gets one-line
    notices: ``gap``, ``restart``, ``snapshot``, ``invalid``, ``connected``,
    ``disconnected``, ``join``.
    """

    def __init__(self, sub: str, *, snapshot: Optional[str] = "auto", topics=(b"",),
                 on_message: Callable[[str, dict, str], None],
                 on_notice: Optional[Callable[[str, str], None]] = None,
                 ctx: Optional[zmq.Context] = None, rcvhwm: int = 100_000, curve=None):
        self.sub_endpoint = sub
        self.curve = curve  # streamer.security.CurveClient, for CURVE-encrypted publishers
        self.snapshot_endpoint = default_snapshot(sub) if snapshot == "auto" else snapshot
        self.on_message = on_message
        self.on_notice = on_notice or (lambda kind, text: None)
        self.ctx = ctx or zmq.Context.instance()
        self.keys: dict[tuple[str, str], KeyState] = {}
        self.streams: dict[str, StreamState] = {}
        self.invalid = 0
        self.invalid_last = ""
        self.snapshots = {"requested": 0, "answered": 0, "timed_out": 0, "messages": 0, "refused": 0}
        self.connected = False
        self.last_message_at: Optional[float] = None
        self._buffer: list[tuple[str, dict]] = []
        self._pending: dict[tuple[str, str], tuple[str, dict, str]] = {}  # unconfirmed big seq jumps
        self._reconnect_at: Optional[float] = None
        self._req: Optional[zmq.Socket] = None
        self._req_deadline = 0.0
        self._last_request = -1e9
        self._timeouts_in_row = 0   # 3 in a row: no server there; ask again after a reconnect
        self._snapshot_wanted = self.snapshot_endpoint is not None
        # The first request waits for the SUB connection (or 1 s), so that live
        # messages overlap the snapshot instead of leaving a hole after it.
        self._request_at: Optional[float] = time.monotonic() + 1.0 if self._snapshot_wanted else None

        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        # ZeroMQ refuses a bigger frame before reading it into memory (and drops that connection).
        self.sock.setsockopt(zmq.MAXMSGSIZE, schema.MAX_FRAME_BYTES)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 100)
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
        for t in topics:
            self.sock.setsockopt(zmq.SUBSCRIBE, t)
        if curve is not None:
            curve.apply(self.sock)
        self.monitor = self.sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self.sock.connect(sub)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.poller.register(self.monitor, zmq.POLLIN)

    # ------------------------------------------------------------------ loop
    def poll(self, timeout_ms: int = 200) -> int:
        """Wait up to ``timeout_ms`` and handle what arrived; returns messages handled."""
        n = 0
        if self._request_at is not None and self._req is None:
            timeout_ms = max(0, min(timeout_ms, int((self._request_at - time.monotonic()) * 1000) + 1))
        if self._req is not None:
            timeout_ms = max(0, min(timeout_ms, int((self._req_deadline - time.monotonic()) * 1000) + 1))
        events = dict(self.poller.poll(timeout_ms))
        if self.monitor in events:
            self._on_monitor()
        if self._req is not None and self._req in events:
            n += self._on_snapshot_reply()
        if self.sock in events:
            for _ in range(10_000):
                try:
                    frames = self.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                n += self._on_live(frames)
        if self._req is not None and time.monotonic() >= self._req_deadline:
            self.snapshots["timed_out"] += 1
            self._timeouts_in_row += 1
            self.on_notice("snapshot", f"no snapshot from {self.snapshot_endpoint} within "
                                       f"{SNAPSHOT_TIMEOUT_S:g} s; going on with live messages")
            self._close_req()
            n += self._drain_buffer()
        if self._request_at is not None and self._req is None and time.monotonic() >= self._request_at:
            self._request_snapshot()
        if self._reconnect_at is not None and time.monotonic() >= self._reconnect_at and not self.connected:
            self._reconnect_at = time.monotonic() + 2.0
            try:
                self.sock.disconnect(self.sub_endpoint)
            except zmq.ZMQError:
                pass
            self.sock.connect(self.sub_endpoint)
        return n

    def _on_monitor(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        while True:
            try:
                ev = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if ev["event"] == zmq.EVENT_CONNECTED:
                self._reconnect_at = None
            if ev["event"] == zmq.EVENT_CONNECTED and not self.connected:
                self.connected = True
                self._timeouts_in_row = 0
                self.on_notice("connected", f"connected to {self.sub_endpoint}")
                if self._request_at is not None and self.snapshots["requested"] == 0:
                    self._request_at = time.monotonic() + 0.1  # let the subscription reach the publisher
            elif ev["event"] == zmq.EVENT_DISCONNECTED:
                # ZeroMQ does not reconnect by itself after a protocol error (a frame over
                # MAXMSGSIZE): connect again ourselves shortly unless it has by then
                self._reconnect_at = time.monotonic() + 0.5
                if self.connected:
                    self.connected = False
                    self.on_notice("disconnected", f"lost {self.sub_endpoint}; reconnecting")

    def _drop(self, why: str) -> int:
        """Count one dropped message; a one-line notice for the first few and every 100th."""
        self.invalid += 1
        self.invalid_last = why[:200]
        if self.invalid <= 5 or self.invalid % 100 == 0:
            self.on_notice("invalid", f"dropped invalid message #{self.invalid}: {self.invalid_last}")
        return 0

    def _on_live(self, frames: list[bytes]) -> int:
        try:
            topic, body = schema.decode(frames)
        except schema.SchemaError as exc:
            return self._drop(str(exc))
        if body["wall_time"] > time.time() + MAX_CLOCK_AHEAD_S:
            return self._drop(f"wall_time {body['wall_time']} is more than a day ahead of this clock")
        self.last_message_at = time.monotonic()
        if self._req is not None:
            if len(self._buffer) < 100_000:
                self._buffer.append((topic, body))
                return 0
        elif self._snapshot_wanted and self._timeouts_in_row < 3 and \
                (self.snapshots["requested"] == 0 or self._wants_backfill(topic, body)):
            wait = self._last_request + SNAPSHOT_MIN_INTERVAL_S - time.monotonic()
            if self.snapshots["requested"] == 0 or wait <= 0:
                self._buffer.append((topic, body))
                self._request_snapshot()
                return 0
            self._request_at = time.monotonic() + wait   # fill the hole a little later
        return self._apply(topic, body, "live")

    # ------------------------------------------------------------- snapshot
    def _request_snapshot(self) -> None:
        self._close_req()
        self._req = self.ctx.socket(zmq.REQ)
        self._req.setsockopt(zmq.LINGER, 0)
        self._req.setsockopt(zmq.RCVHWM, 0)
        self._req.setsockopt(zmq.MAXMSGSIZE, schema.MAX_FRAME_BYTES)
        if self.curve is not None:
            self.curve.apply(self._req)
        self._req.connect(self.snapshot_endpoint)
        self._req.send(schema_request())
        self._request_at = None
        self._req_deadline = time.monotonic() + SNAPSHOT_TIMEOUT_S
        self._last_request = time.monotonic()
        self.snapshots["requested"] += 1
        self.poller.register(self._req, zmq.POLLIN)

    def _close_req(self) -> None:
        if self._req is not None:
            self.poller.unregister(self._req)
            self._req.close(0)
            self._req = None

    def _on_snapshot_reply(self) -> int:
        try:
            frames = self._req.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return 0
        self._close_req()
        n = 0
        refused = _refusal(frames)
        if refused is not None and self.snapshots["refused"] < 20:
            # the server is busy: ask again when it says, meanwhile go on with live messages
            self.snapshots["refused"] += 1
            self._request_at = time.monotonic() + refused
            return self._drain_buffer()
        if len(frames) >= 2 and frames[0] == schema_request() and len(frames) % 2 == 0:
            self.snapshots["answered"] += 1
            self._timeouts_in_row = 0
            got = 0
            for i in range(2, len(frames), 2):
                try:
                    topic, body = schema.decode(frames[i:i + 2])
                    if body["wall_time"] > time.time() + MAX_CLOCK_AHEAD_S:
                        raise schema.SchemaError("wall_time more than a day ahead of this clock")
                except schema.SchemaError as exc:
                    self.invalid += 1
                    self.invalid_last = str(exc)[:200]
                    continue
                got += 1
                n += self._apply(topic, body, "snapshot")
            self.snapshots["messages"] += n
            self.on_notice("snapshot", f"snapshot from {self.snapshot_endpoint}: {got} messages, {n} new")
        else:
            self.invalid += 1
            self.on_notice("invalid", "malformed snapshot reply dropped")
        return n + self._drain_buffer()

    def _drain_buffer(self) -> int:
        buf, self._buffer = self._buffer, []
        return sum(self._apply(t, b, "live") for t, b in buf)

    def _wants_backfill(self, topic: str, body: dict) -> bool:
        st = self.keys.get((body["stream"], topic))
        if st is None or self.streams[body["stream"]].epoch != st.epoch:
            return body["seq"] > 0
        return body["seq"] != st.last + 1

    # ------------------------------------------------------------ accounting
    def _apply(self, topic: str, body: dict, origin: str, confirmed: bool = False) -> int:
        name, s, w = body["stream"], body["seq"], float(body["wall_time"])
        ss = self.streams.get(name)
        if ss is None:
            if len(self.streams) >= MAX_STREAMS:
                return self._drop(f"more than {MAX_STREAMS} streams: {_safe(name)} ignored")
            ss = self.streams[name] = StreamState()
        key = (name, topic)
        st = self.keys.get(key)
        t = body.get("t_start", -1.0)
        if st is not None and st.epoch == ss.epoch and not confirmed:
            pend = self._pending.get(key)
            if s - st.last > MAX_MISSING:
                if pend is not None and 0 < s - pend[1]["seq"] <= MAX_MISSING:
                    # the next message continues the jump: it was real (a long outage)
                    del self._pending[key]
                    n = self._apply(*pend, confirmed=True)
                    return n + self._apply(topic, body, origin)
                if pend is not None:
                    self._drop(f"{_safe(name)}/{topic}: seq jump to {pend[1]['seq']} not confirmed")
                self._pending[key] = (topic, body, origin)   # hold it: confirmed or dropped by the next one
                return 0
            if pend is not None:
                del self._pending[key]
                self._drop(f"{_safe(name)}/{topic}: implausible seq jump {st.last} -> {pend[1]['seq']} "
                           f"not confirmed by the stream")
        if st is not None and st.epoch == ss.epoch and w > st.last_wall and w > ss.floor and (
                (s <= st.last and (origin == "live" or (s not in st.missing and s not in st.prejoin)))
                or (s > st.last and 0 <= t < st.last_t)):
            # seq (or stream time) went back with a newer wall clock: the publisher restarted.
            ss.epoch += 1
            ss.floor = ss.max_wall
            ss.restarts += 1
            how = "after its end of stream" if ss.ended else "without an end of stream (crashed or killed?)"
            self.on_notice("restart", f"stream {_safe(name)!r} restarted {how}: {topic} seq {st.last} -> {s}")
            ss.ended = False
        if st is not None and st.epoch != ss.epoch and w <= ss.floor:
            st.duplicates += 1   # a late copy from before the restart
            return 0
        if st is None or st.epoch != ss.epoch:
            fresh = KeyState(epoch=ss.epoch)
            if st is not None:   # keep the running totals across epochs
                for f in ("received", "recovered", "lost", "gaps", "lost_while_down", "duplicates"):
                    setattr(fresh, f, getattr(st, f))
            restarted = st is not None or ss.restarts > 0
            st = self.keys[key] = fresh
            if s > 0:
                seqs = range(max(0, s - MAX_MISSING), s)
                if restarted:
                    st.missing.update(seqs)
                    st.lost += s
                    st.lost_while_down += s
                    self.on_notice("gap", f"{_safe(name)}/{topic}: {s} messages (seq 0..{s - 1}) were published "
                                          f"while we were disconnected")
                else:
                    st.prejoin.update(seqs)
                    if origin == "live":
                        self.on_notice("join", f"{_safe(name)}/{topic}: joined at seq {s}")
        elif s == st.last + 1:
            pass
        elif s > st.last + 1 and origin == "snapshot":
            # the snapshot keeps less of some topics (status): older history, not a loss
            st.prejoin.update(range(max(st.last + 1, s - MAX_MISSING), s))
        elif s > st.last + 1:
            n = s - st.last - 1
            st.missing.update(range(max(st.last + 1, s - MAX_MISSING), s))
            st.lost += n
            st.gaps += 1
            self.on_notice("gap", f"{_safe(name)}/{topic}: {n} messages missing (seq {st.last + 1}..{s - 1})")
        elif s in st.missing:
            st.missing.discard(s)
            st.lost -= 1
            st.recovered += 1
            if origin == "live":   # cannot happen on one PUB connection; count it anyway
                st.lost_while_down = max(0, st.lost_while_down - 1)
            elif st.lost_while_down > len(st.missing):
                st.lost_while_down -= 1
        elif s in st.prejoin:
            st.prejoin.discard(s)
            st.history += 1
        else:
            st.duplicates += 1
            return 0
        st.received += 1
        if s > st.last:
            st.last = s
            st.last_t = max(st.last_t, t) if topic != schema.TOPIC_STATUS else st.last_t
        st.last_wall = max(st.last_wall, w)
        ss.max_wall = max(ss.max_wall, w)
        if topic == schema.TOPIC_STATUS:
            ev = body.get("event")
            if ev == "start":
                ss.start = body
                ss.ended = False
            elif ev == "end":
                ss.ended = True
            ss.last_status = body
        self.on_message(topic, body, origin)
        return 1

    # ----------------------------------------------------------------- report
    def totals(self) -> dict:
        keys = self.keys.values()
        return {
            "received": sum(k.received for k in keys),
            "recovered": sum(k.recovered for k in keys),
            "history": sum(k.history for k in keys),
            "lost": sum(k.lost for k in keys),
            "lost_while_down": sum(k.lost_while_down for k in keys),
            "gaps": sum(k.gaps for k in keys),
            "duplicates": sum(k.duplicates for k in keys),
            "restarts": sum(s.restarts for s in self.streams.values()),
            "invalid": self.invalid,
            "snapshots": dict(self.snapshots),
        }

    def summary_lines(self) -> list[str]:
        t = self.totals()
        lines = [f"{t['received']} messages ({t['snapshots']['messages']} from snapshots, {t['recovered']} of "
                 f"them filling gaps), {t['lost']} lost "
                 f"({t['lost_while_down']} published while disconnected, {t['gaps']} gaps), "
                 f"{t['restarts']} publisher restarts, {t['invalid']} invalid, {t['duplicates']} duplicates"]
        for (name, topic), k in sorted(self.keys.items()):
            lines.append(f"  {_safe(name)} {topic}: {k.received} received, last seq {k.last}, {k.lost} lost, "
                         f"{k.recovered} recovered, {k.gaps} gaps")
        return lines

    def close(self) -> None:
        self._close_req()
        for s in (self.monitor, self.sock):
            try:
                if s is self.monitor:
                    self.sock.disable_monitor()
                s.close(0)
            except zmq.ZMQError:
                pass


def _refusal(frames: list[bytes]) -> Optional[float]:
    """Seconds to wait before asking again, if ``frames`` is a snapshot server's refusal."""
    if len(frames) != 2 or frames[0] != schema_request() or len(frames[1]) > 1024:
        return None
    try:
        meta = schema.parse_json(frames[1])
    except schema.SchemaError:
        return None
    if not isinstance(meta, dict) or not meta.get("refused"):
        return None
    wait = meta.get("retry_after_s")
    ok = isinstance(wait, (int, float)) and not isinstance(wait, bool) and 0 <= wait <= 60
    return min(max(float(wait) if ok else 1.0, 0.05), 60.0)


def schema_request() -> bytes:
    return b"SNAPSHOT"


def body_json(topic: str, body: dict) -> str:
    line = dict(body)
    line["topic"] = topic
    return json.dumps(line, separators=(",", ":"), allow_nan=False)
