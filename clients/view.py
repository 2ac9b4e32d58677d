"""``emotrack view``: a live dashboard served to browsers with server-sent events.

One thread (the main one) reads ZeroMQ through :class:`clients.feed.Feed` and
keeps the recent curves; a ThreadingHTTPServer serves the static page from
``clients/static`` and ``/events`` (text/event-stream).  Every browser has its
own bounded queue: a browser too slow to keep up is disconnected and counted
(its EventSource reconnects and starts again from the history), never waited
for.  Binds 127.0.0.1 unless told otherwise.

Endpoints: ``/`` the page, ``/static/<file>``, ``/events`` (events ``history``,
``msg``, ``state``, ``reset``), ``/api/state`` (the same history as JSON),
``/healthz``.
"""

from __future__ import annotations

import collections
import json
import queue
import signal
import sys
import threading
import time
import selectors
import socket
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Optional

from streamer import schema
from streamer.errors import ParameterError

from .feed import Feed, check_sub_endpoint, curve_client

STATIC = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
                 ".txt": "text/plain; charset=utf-8", ".ico": "image/x-icon"}
#: Events a browser may have queued before it is considered too slow and dropped.
CLIENT_QUEUE = 2000
KEEPALIVE_S = 10.0
#: Worker threads: every open /events stream holds one; beyond, requests get 503.
MAX_WORKERS = 256
#: A connection must send its request within this (idle and slow-header connections are closed).
HEADER_TIMEOUT_S = 5.0
#: Connections one client address may hold open before sending a request; its oldest are closed first.
MAX_IDLE_PER_CLIENT = 64
#: Pending connections the kernel keeps for us (listen backlog).
BACKLOG = 1024


def point(body: dict) -> list:
    """The compact form the page draws: [t_start, t_end, valence, arousal, activity, quadrant, wall_time],
    then, when the message has ``tracked``, [tracked valence, tracked arousal, tracked quadrant, confidence]."""
    p = [body["t_start"], body["t_end"], body["valence"], body["arousal"], body["activity"],
         body["quadrant"], body["wall_time"]]
    tr = body.get("tracked")
    if isinstance(tr, dict):
        p += [tr["valence"], tr["arousal"], tr["quadrant"], tr["confidence"]]
    return p


class Client:
    def __init__(self):
        self.q: queue.Queue = queue.Queue(maxsize=CLIENT_QUEUE)
        self.dropped = threading.Event()


class Hub:
    """The dashboard's state and the browsers subscribed to it."""

    def __init__(self, window_s: float, sub: str):
        self.window_s = window_s
        self.sub = sub
        self.lock = threading.Lock()
        self.points = {s: collections.deque() for s in schema.SOURCES}
        self.clients: set[Client] = set()
        self.browser_drops = 0
        self.browsers_served = 0
        self.stream: Optional[str] = None
        self.models: dict = {}
        self.start: Optional[dict] = None
        self.counters: dict = {}
        self.last_event: Optional[str] = None
        self.feed_totals: dict = {}
        self.connected = False
        self.last_message_wall: Optional[float] = None
        self.notices = collections.deque(maxlen=5)

    # ---- called from the ZeroMQ thread
    def ingest(self, topic: str, body: dict) -> None:
        with self.lock:
            self.stream = body["stream"]
            self.last_message_wall = time.time()
            if topic == schema.TOPIC_STATUS:
                ev = body["event"]
                self.last_event = ev
                if ev == "start":
                    self.start = {k: body.get(k) for k in ("models", "backend", "separator", "live", "windows")}
                    self.models = body.get("models") or {}
                if isinstance(body.get("counters"), dict):
                    self.counters = body["counters"]
                msg = {"topic": topic, "event": ev, "stream": body["stream"], "seq": body["seq"]}
            else:
                src = body["source"]
                self.models.setdefault(src, body["model"])
                pts = self.points[src]
                pts.append(point(body))
                while pts and pts[0][1] < body["t_end"] - self.window_s:
                    pts.popleft()
                msg = {"topic": topic, "source": src, "p": point(body), "stream": body["stream"],
                       "seq": body["seq"], "model": body["model"]}
        self.broadcast("msg", msg)

    def reset(self, why: str) -> None:
        with self.lock:
            for pts in self.points.values():
                pts.clear()
            self.counters = {}
        self.broadcast("reset", {"why": why})

    def notice(self, kind: str, text: str) -> None:
        with self.lock:
            self.notices.append({"kind": kind, "text": text, "at": time.time()})

    def state(self) -> dict:
        with self.lock:
            age = None if self.last_message_wall is None else round(time.time() - self.last_message_wall, 1)
            return {"stream": self.stream, "models": dict(self.models), "start": self.start, "sub": self.sub,
                    "connected": self.connected, "last_message_age": age, "last_event": self.last_event,
                    "counters": self.counters, "feed": self.feed_totals, "window_s": self.window_s,
                    "browsers": len(self.clients), "browser_drops": self.browser_drops,
                    "notices": list(self.notices)}

    def history(self) -> dict:
        st = self.state()
        with self.lock:
            return {"points": {s: sorted(p, key=lambda x: x[1]) for s, p in self.points.items()}, "state": st}

    def broadcast(self, event: str, data: dict) -> None:
        frame = f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode("utf-8")
        with self.lock:
            clients = list(self.clients)
        for c in clients:
            try:
                c.q.put_nowait(frame)
            except queue.Full:
                self.drop(c)

    # ---- browsers
    def add(self) -> Client:
        c = Client()
        with self.lock:
            self.clients.add(c)
            self.browsers_served += 1
        return c

    def drop(self, c: Client, slow: bool = True) -> None:
        with self.lock:
            if c in self.clients:
                self.clients.discard(c)
                if slow:
                    self.browser_drops += 1
        c.dropped.set()


def _token_ok(handler, token: Optional[str]) -> bool:
    """The access token, from ``?token=`` or the cookie the first page set."""
    if not token:
        return True
    import hmac
    from http.cookies import SimpleCookie
    from urllib.parse import parse_qs, urlsplit

    given = parse_qs(urlsplit(handler.path).query).get("token", [""])[0]
    if not given:
        morsel = SimpleCookie(handler.headers.get("Cookie", "")).get("emotrack_token")
        given = morsel.value if morsel else ""
    return hmac.compare_digest(given.encode(), token.encode())


def make_handler(hub: Hub, stopping: threading.Event, token: Optional[str] = None):
    class Handler(BaseHTTPRequestHandler):
        server_version = "emotrack-view"
        protocol_version = "HTTP/1.1"
        timeout = HEADER_TIMEOUT_S   # reading the request, and any write a browser does not take

        def log_message(self, fmt, *args):  # quiet: the dashboard is not a web log
            pass

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            if token and code == 200:
                self.send_header("Set-Cookie", f"emotrack_token={token}; HttpOnly; SameSite=Strict; Path=/")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path != "/healthz" and not _token_ok(self, token):
                return self._send(401, b"emotrack view: access token required (open the URL with ?token=...)\n",
                                  "text/plain; charset=utf-8")
            if path in ("/", "/index.html"):
                return self._static("index.html")
            if path.startswith("/static/"):
                return self._static(path[len("/static/"):])
            if path == "/events":
                if self.command == "HEAD":
                    return self._send(200, b"", "text/event-stream; charset=utf-8")
                return self._events()
            if path == "/api/state":
                return self._send(200, json.dumps(hub.history()).encode("utf-8"), "application/json")
            if path == "/healthz":
                return self._send(200, b"ok\n", "text/plain; charset=utf-8")
            return self._send(404, b"not found\n", "text/plain; charset=utf-8")

        def _static(self, name: str) -> None:
            f = STATIC / name
            if "/" in name or "\\" in name or name.startswith(".") or not f.is_file():
                return self._send(404, b"not found\n", "text/plain; charset=utf-8")
            self._send(200, f.read_bytes(), CONTENT_TYPES.get(f.suffix, "application/octet-stream"))

        def _events(self) -> None:
            client = hub.add()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Connection", "close")
                self.end_headers()
                hello = json.dumps(hub.history(), separators=(",", ":"))
                self.wfile.write(f"retry: 1000\nevent: history\ndata: {hello}\n\n".encode("utf-8"))
                self.wfile.flush()
                while not stopping.is_set() and not client.dropped.is_set():
                    try:
                        frame = client.q.get(timeout=KEEPALIVE_S)
                    except queue.Empty:
                        frame = b": keepalive\n\n"
                    chunks = [frame]
                    while len(chunks) < 200:  # batch what is queued into one write
                        try:
                            chunks.append(client.q.get_nowait())
                        except queue.Empty:
                            break
                    self.wfile.write(b"".join(chunks))
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
                pass
            finally:
                hub.drop(client, slow=False)
                self.close_connection = True

    return Handler


class DashboardServer(HTTPServer):
    """HTTP with a bounded cost per connection.

    One selector thread accepts connections and holds them until their request
    arrives; only then does one of ``MAX_WORKERS`` threads serve it (an open
    /events stream keeps its worker).  A connection that sends nothing within
    ``HEADER_TIMEOUT_S`` is closed; one address may hold at most
    ``MAX_IDLE_PER_CLIENT`` such waiting connections (its oldest go first); when
    every worker is busy the request is answered 503 at once.  Counters:
    ``refused`` (503), ``idle_closed``.
    """

    request_queue_size = BACKLOG
    allow_reuse_address = True

    def __init__(self, addr, handler, workers: int = MAX_WORKERS):
        super().__init__(addr, handler)
        self.socket.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.socket, selectors.EVENT_READ, None)
        self._waiting: dict[socket.socket, tuple[float, str]] = {}
        self._per_client: dict[str, collections.deque] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="emotrack-view")
        self._free = threading.BoundedSemaphore(workers)
        self._stop = threading.Event()
        self.refused = 0
        self.idle_closed = 0

    def serve_forever(self, poll_interval: float = 0.2) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(timeout=poll_interval):
                if key.fileobj is self.socket:
                    self._accept()
                else:
                    self._ready(key.fileobj)
            self._expire(time.monotonic())
        for conn in list(self._waiting):
            self._forget(conn)
            conn.close()

    def _accept(self) -> None:
        for _ in range(256):
            try:
                conn, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:   # out of file descriptors: leave the rest in the backlog
                return
            client = addr[0]
            q = self._per_client.setdefault(client, collections.deque())
            if len(q) >= MAX_IDLE_PER_CLIENT:
                self._dispatch_ready()   # a burst of real requests: serve those that have arrived first
                q = self._per_client.setdefault(client, collections.deque())
            while len(q) >= MAX_IDLE_PER_CLIENT:
                old = q.popleft()
                if old in self._waiting:
                    self._forget(old, drop_from_client=False)
                    old.close()
                    self.idle_closed += 1
            q.append(conn)
            self._waiting[conn] = (time.monotonic() + HEADER_TIMEOUT_S, client)
            self._sel.register(conn, selectors.EVENT_READ, None)

    def _dispatch_ready(self) -> None:
        for key, _ in self._sel.select(timeout=0):
            if key.fileobj is not self.socket:
                self._ready(key.fileobj)

    def _forget(self, conn, drop_from_client: bool = True) -> None:
        _, client = self._waiting.pop(conn, (0.0, None))
        try:
            self._sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        if drop_from_client and client is not None:
            q = self._per_client.get(client)
            if q is not None:
                try:
                    q.remove(conn)
                except ValueError:
                    pass
                if not q:
                    del self._per_client[client]

    def _expire(self, now: float) -> None:
        late = [c for c, (deadline, _) in self._waiting.items() if deadline <= now]
        for conn in late:
            self._forget(conn)
            conn.close()
            self.idle_closed += 1

    def _ready(self, conn) -> None:
        self._forget(conn)
        if not self._free.acquire(blocking=False):
            self.refused += 1
            try:
                conn.setblocking(False)
                conn.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            conn.close()
            return
        conn.setblocking(True)
        self._pool.submit(self._work, conn)

    def _work(self, conn) -> None:
        try:
            addr = conn.getpeername()
        except OSError:
            addr = ("?", 0)
        try:
            self.finish_request(conn, addr)
        except Exception:
            pass
        finally:
            self.shutdown_request(conn)
            self._free.release()

    def shutdown(self) -> None:
        self._stop.set()

    def server_close(self) -> None:
        super().server_close()
        if hasattr(self, "_pool"):   # (not there when the bind failed)
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._sel.close()


def serve(host: str, port: int, hub: Hub, stopping: threading.Event,
          token: Optional[str] = None) -> DashboardServer:
    class Server(DashboardServer):
        pass

    if ":" in host and not host.startswith("["):
        Server.address_family = socket.AF_INET6
    try:
        httpd = Server((host, port), make_handler(hub, stopping, token))
    except OSError as exc:
        from streamer.errors import EndpointError

        raise EndpointError(f"cannot serve on {host}:{port}: {exc.strerror or exc}; choose another --port") from None
    return httpd


def run(args) -> int:
    sub = check_sub_endpoint(args.sub)
    if args.snapshot:
        check_sub_endpoint(args.snapshot, "--snapshot")
    snapshot = None if args.no_snapshot else (args.snapshot or "auto")
    hub = Hub(args.minutes * 60.0, sub)
    stopping = threading.Event()
    token = getattr(args, "token", None)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not token and not getattr(args, "no_token", False):
        raise ParameterError(f"--host {args.host} serves beyond this machine: give --token TOKEN (or pass "
                             f"--no-token to serve it to anyone who can connect, on purpose)")
    httpd = serve(args.host, args.port, hub, stopping, token)
    host, port = httpd.server_address[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/" + (f"?token={token}" if token else "")

    def notice(kind: str, text: str) -> None:
        hub.notice(kind, text)
        if kind == "restart":
            hub.reset(text)
        if kind in ("connected", "disconnected"):
            hub.connected = kind == "connected"
        if not args.quiet:
            print(f"emotrack view: {text}", file=sys.stderr, flush=True)

    def on_signal(signum, frame):
        stopping.set()

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    feed = Feed(sub, snapshot=snapshot, on_message=lambda t, b, o: hub.ingest(t, b), on_notice=notice,
                curve=curve_client(args))
    server_thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                     name="emotrack-view-http", daemon=True)
    server_thread.start()
    print(f"emotrack view: serving {url} (subscribed to {sub}); Ctrl-C to stop", file=sys.stderr, flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not token:
        print(f"emotrack view: warning: serving on {args.host} without --token (--no-token): anyone who can reach "
              f"it can watch", file=sys.stderr, flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(url)
    try:
        next_state = 0.0
        while not stopping.is_set():
            feed.poll(200)
            now = time.monotonic()
            if now >= next_state:
                hub.feed_totals = feed.totals()
                hub.broadcast("state", hub.state())
                next_state = now + 1.0
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        stopping.set()
        httpd.shutdown()
        httpd.server_close()
        feed.close()
    if not args.quiet:
        print("emotrack view: " + "\n".join(feed.summary_lines()), file=sys.stderr, flush=True)
    return 0
