"""ZeroMQ CURVE encryption and client allow-lists (zmq.auth), for publishing
beyond loopback.

Keys are ZeroMQ certificate files (``zmq.auth.create_certificates``): a public
``NAME.key`` and a secret ``NAME.key_secret``.  The streamer loads its secret
certificate and an allow-list folder of client public certificates; only
clients whose public key is in that folder can connect.  Clients load their
secret certificate and the server's public one.  ``emotrack keys`` makes them.

Imports only pyzmq and the standard library: clients use it too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import zmq
import zmq.auth

from .errors import ParameterError

_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


def generate(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Create ``name.key`` (public) and ``name.key_secret`` in ``directory``."""
    if not _NAME.fullmatch(name or ""):
        raise ParameterError(f"key name {name!r}: use letters, digits, '.', '_' and '-' only, not starting with "
                             f"'.' (no folders: give those with --dir)")
    d = Path(directory)
    existing = [p for p in (d / f"{name}.key", d / f"{name}.key_secret") if p.exists() or p.is_symlink()]
    if existing:
        raise ParameterError(f"{existing[0]} already exists; remove it first or choose another name "
                             f"(a key pair is never overwritten)")
    if not zmq.has("curve"):
        raise ParameterError("this libzmq has no CURVE support")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError(f"--dir {d}: {exc.strerror}") from None
    pub, sec = zmq.auth.create_certificates(str(d), name)
    Path(sec).chmod(0o600)
    return Path(pub), Path(sec)


def _load(path: str | Path, need_secret: bool) -> tuple[bytes, Optional[bytes]]:
    p = Path(path)
    if not p.is_file():
        raise ParameterError(f"key file not found: {p}")
    try:
        public, secret = zmq.auth.load_certificate(str(p))
    except (ValueError, OSError) as exc:
        raise ParameterError(f"not a ZeroMQ certificate: {p} ({exc})") from None
    if need_secret and not secret:
        raise ParameterError(f"{p} holds no secret key: give the .key_secret file")
    return public, secret


class CurveServer:
    """Server side: encryption with our secret key, connections only from allowed clients."""

    def __init__(self, ctx: zmq.Context, secret_file: str | Path, allow_dir: str | Path):
        from zmq.auth.thread import ThreadAuthenticator

        self.public, self.secret = _load(secret_file, need_secret=True)
        allow = Path(allow_dir)
        if not allow.is_dir() or not any(allow.glob("*.key")):
            raise ParameterError(f"--curve-allow {allow}: a folder of allowed clients' public .key files is needed")
        self._auth = ThreadAuthenticator(ctx)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(allow))

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE server (call before bind)."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def stop(self) -> None:
        self._auth.stop()


class CurveClient:
    """Client side: our secret certificate and the server's public key."""

    def __init__(self, secret_file: str | Path, server_public_file: str | Path):
        self.public, self.secret = _load(secret_file, need_secret=True)
        self.server_public, _ = _load(server_public_file, need_secret=False)

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE client (call before connect)."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.server_public
