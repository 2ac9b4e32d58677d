"""Message schema 1: the contract between the streamer and every client.

Wire format: ZeroMQ multipart ``[topic, body]``, both UTF-8; the body is one
JSON object.  Topics:

- ``emotion.speech`` / ``emotion.music``: one message per analysis window::

    {"schema": 1, "stream": "news", "seq": 17, "source": "speech",
     "t_start": 12.0, "t_end": 15.0, "wall_time": 1763798400.123,
     "activity": 0.93, "valence": -0.41, "arousal": 0.62, "quadrant": "Q2",
     "probs": {"Q1": 0.1, "Q2": 0.7, "Q3": 0.1, "Q4": 0.1}, "model": "<id>",
     "tracked": {"valence": -0.83, "arousal": 0.91, "quadrant": "Q2",
                 "confidence": 0.87, "present": true}}

  ``valence``/``arousal``/``quadrant``/``probs`` are the raw outputs of that one
  window.  ``tracked`` (an added field; optional: absent when tracking is
  off) is the causal tracker's state after this window (:mod:`streamer.tracking`):
  smoothed valence/arousal in [-1, 1], its quadrant (always
  ``taxonomy.quadrant_of(valence, arousal)``), ``confidence`` (posterior
  probability of that quadrant, 0.25..1) and ``present`` (the source is there,
  from ``activity`` with hysteresis).

- ``status``: ``{"schema": 1, "stream", "seq", "wall_time", "event", ...}``
  where event is ``start`` (with the models and windows, and ``adaptation``
  per source whose model standardises its input per stream: streamer.adapt), ``heartbeat``
  (counters), or ``end`` (final counters, ``reason``).  Counters:
  ``windows`` per source, ``published``, ``pub_dropped`` (messages the PUB
  socket could not queue), ``capture_overflows`` / ``blocks_dropped`` (live
  capture), ``samples_sanitised`` (NaN/inf replaced by 0), ``stream_time``,
  ``adapt_updates`` (per adapting source: windows that updated its statistics).

``seq`` counts the messages of one topic of one stream from 0 without gaps, so a
subscriber sees its own drops as gaps.  ``--out`` JSONL lines are the same
bodies with ``"topic"`` added.  Fields are only ever added, never changed.

This module imports only the standard library: clients depend on it alone.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Optional

SCHEMA_VERSION = 1
TOPIC_SPEECH = "emotion.speech"
TOPIC_MUSIC = "emotion.music"
TOPIC_STATUS = "status"
TOPICS = (TOPIC_SPEECH, TOPIC_MUSIC, TOPIC_STATUS)
SOURCES = ("speech", "music")
QUADRANTS = ("Q1", "Q2", "Q3", "Q4")
STATUS_EVENTS = ("start", "heartbeat", "end")
#: Largest body a client accepts; bigger frames are rejected unparsed.
MAX_BODY_BYTES = 64 * 1024
#: Deepest nesting of arrays/objects a body may have (schema 1 needs 3; room for added fields).
MAX_DEPTH = 16
#: Largest ``seq`` (JSON's exact integer range; no real stream gets near it).
MAX_SEQ = 2 ** 53 - 1
#: Largest frame a subscribing socket accepts (ZMQ_MAXMSGSIZE): bigger ones are refused by
#: ZeroMQ before they are read into memory (the sender is disconnected).  Set above
#: MAX_BODY_BYTES so that a slightly too big body is a counted drop, not a disconnect.
MAX_FRAME_BYTES = 1024 * 1024

EMOTION_FIELDS = ("schema", "stream", "seq", "source", "t_start", "t_end", "wall_time",
                  "activity", "valence", "arousal", "quadrant", "probs", "model")
#: Fields of the optional ``tracked`` object of an emotion body (streamer.tracking).
TRACKED_FIELDS = ("valence", "arousal", "quadrant", "confidence", "present")


class SchemaError(ValueError):
    """A message does not follow schema 1."""


def topic_for(source: str) -> str:
    if source not in SOURCES:
        raise SchemaError(f"source={source!r} must be one of {SOURCES}")
    return f"emotion.{source}"


def _r(x: float, nd: int = 4) -> float:
    return round(float(x), nd)


def _r_signed(x: float, nd: int = 4) -> float:
    """``x`` rounded to ``nd`` decimals without losing its sign: a negative value that would round to
    zero is published as ``-10**-nd`` (a value >= 0 counts as positive, DESIGN.md taxonomy)."""
    r = round(float(x), nd)
    if x < 0 and r >= 0:
        return -(10.0 ** -nd)
    return r + 0.0  # no -0.0


def _r_probs(probs: Mapping[str, float], quadrant: str, nd: int = 4) -> dict:
    """Probabilities rounded for the wire, the published quadrant still their first argmax: a quadrant
    listed before it that rounds to the same value is published one unit of the last decimal lower."""
    out = {q: _r(probs[q], nd) for q in QUADRANTS}
    if quadrant in out:
        top = out[quadrant]
        for q in QUADRANTS[:QUADRANTS.index(quadrant)]:
            if out[q] >= top:
                out[q] = max(0.0, round(top - 10.0 ** -nd, nd))
    return out


def emotion_body(*, stream: str, seq: int, source: str, t_start: float, t_end: float,
                 wall_time: float, activity: float, valence: float, arousal: float,
                 quadrant: str, probs: Mapping[str, float], model: str,
                 tracked: Optional[Mapping[str, Any]] = None) -> dict:
    """A schema-1 emotion body with floats rounded for the wire (``tracked``: optional)."""
    body = {
        "schema": SCHEMA_VERSION, "stream": stream, "seq": int(seq), "source": source,
        "t_start": _r(t_start, 3), "t_end": _r(t_end, 3), "wall_time": _r(wall_time, 3),
        "activity": _r(activity), "valence": _r_signed(valence), "arousal": _r_signed(arousal),
        "quadrant": quadrant, "probs": _r_probs(probs, quadrant), "model": model,
    }
    if tracked is not None:
        body["tracked"] = {"valence": _r(tracked["valence"]), "arousal": _r(tracked["arousal"]),
                           "quadrant": tracked["quadrant"], "confidence": _r(tracked["confidence"]),
                           "present": bool(tracked["present"])}
    return body


def status_body(*, stream: str, seq: int, wall_time: float, event: str, **fields: Any) -> dict:
    if event not in STATUS_EVENTS:
        raise SchemaError(f"status event={event!r} must be one of {STATUS_EVENTS}")
    body = {"schema": SCHEMA_VERSION, "stream": stream, "seq": int(seq),
            "wall_time": _r(wall_time, 3), "event": event}
    body.update(fields)
    return body


def encode(topic: str, body: Mapping[str, Any]) -> list[bytes]:
    """Multipart frames for ``body`` on ``topic`` (strict JSON: no NaN)."""
    return [topic.encode("utf-8"),
            json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")]


def _reject_constant(c: str):
    raise SchemaError(f"{c} in body")


def _depth_ok(obj: Any, limit: int) -> bool:
    """Whether ``obj`` nests lists/dicts at most ``limit`` deep (iterative: no recursion)."""
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict):
            o = o.values()
        elif not isinstance(o, list):
            continue
        if d > limit:
            return False
        stack.extend((v, d + 1) for v in o if isinstance(v, (list, dict)))
    return True


def parse_json(data: "bytes | str", *, max_bytes: int = MAX_BODY_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse one JSON document from the wire or a file, cheaply and safely.

    Size is checked before parsing; strict UTF-8 and strict JSON (no NaN/Infinity);
    nesting deeper than ``max_depth`` is refused.  The bracket count bounds the
    depth, so ordinary bodies are never walked; a hostile one is refused by the
    parser's own recursion guard (about 1,000 levels: cheap) or by an iterative
    walk.  Raises :class:`SchemaError` only.
    """
    if len(data) > max_bytes:
        raise SchemaError(f"body of {len(data)} bytes exceeds {max_bytes}")
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SchemaError(f"body is not UTF-8: {exc}") from None
    try:
        obj = json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        raise SchemaError(f"body nests deeper than {max_depth} levels") from None
    except (json.JSONDecodeError, ValueError) as exc:
        raise SchemaError(f"body is not JSON: {str(exc)[:120]}") from None
    if data.count("[") + data.count("{") > max_depth and not _depth_ok(obj, max_depth):
        raise SchemaError(f"body nests deeper than {max_depth} levels")
    return obj


def _num(body: Mapping, key: str, lo: float, hi: float) -> None:
    v = body.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or \
            (isinstance(v, int) and abs(v) > 1e300) or not math.isfinite(v):
        raise SchemaError(f"field {key!r}={str(v)[:40]} must be a finite number")
    if not lo <= v <= hi:
        raise SchemaError(f"field {key!r}={str(v)[:40]} outside [{lo}, {hi}]")


def validate(topic: str, body: Mapping[str, Any]) -> None:
    """Raise SchemaError unless ``body`` is a valid schema-1 body for ``topic``."""
    if not isinstance(body, Mapping):
        raise SchemaError("body must be a JSON object")
    if body.get("schema") != SCHEMA_VERSION:
        raise SchemaError(f"schema={body.get('schema')!r}, expected {SCHEMA_VERSION}")
    if not isinstance(body.get("stream"), str):
        raise SchemaError("field 'stream' must be a string")
    seq = body.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
        raise SchemaError(f"field 'seq'={str(seq)[:40]} must be an integer in 0..2**53-1")
    _num(body, "wall_time", 0, float("inf"))
    if topic == TOPIC_STATUS:
        if body.get("event") not in STATUS_EVENTS:
            raise SchemaError(f"status event={body.get('event')!r} unknown")
        return
    if topic not in (TOPIC_SPEECH, TOPIC_MUSIC):
        raise SchemaError(f"unknown topic {topic!r}")
    missing = [f for f in EMOTION_FIELDS if f not in body]
    if missing:
        raise SchemaError(f"missing fields {missing}")
    if topic != topic_for(body["source"]):
        raise SchemaError(f"source {body['source']!r} sent on topic {topic!r}")
    _num(body, "t_start", 0, float("inf"))
    _num(body, "t_end", body["t_start"], float("inf"))
    _num(body, "activity", 0.0, 1.0)
    _num(body, "valence", -1.0, 1.0)
    _num(body, "arousal", -1.0, 1.0)
    if body["quadrant"] not in QUADRANTS:
        raise SchemaError(f"quadrant={body['quadrant']!r} must be one of {QUADRANTS}")
    probs = body["probs"]
    if not isinstance(probs, Mapping) or set(probs) != set(QUADRANTS):
        raise SchemaError(f"probs must have exactly the keys {QUADRANTS}")
    for q in QUADRANTS:
        _num(probs, q, 0.0, 1.0)
    if not isinstance(body["model"], str):
        raise SchemaError("field 'model' must be a string")
    if "tracked" in body:
        tr = body["tracked"]
        if not isinstance(tr, Mapping):
            raise SchemaError("field 'tracked' must be an object")
        for k in TRACKED_FIELDS:
            if k not in tr:
                raise SchemaError(f"field 'tracked' lacks {k!r}")
        _num(tr, "valence", -1.0, 1.0)
        _num(tr, "arousal", -1.0, 1.0)
        _num(tr, "confidence", 0.0, 1.0)
        if tr["quadrant"] not in QUADRANTS:
            raise SchemaError(f"tracked quadrant={tr['quadrant']!r} must be one of {QUADRANTS}")
        want = ("Q1" if tr["arousal"] >= 0 else "Q4") if tr["valence"] >= 0 else ("Q2" if tr["arousal"] >= 0 else "Q3")
        if tr["quadrant"] != want:  # the taxonomy's rule (streamer.taxonomy.quadrant_of)
            raise SchemaError(f"tracked quadrant {tr['quadrant']} disagrees with its valence/arousal ({want})")
        if not isinstance(tr["present"], bool):
            raise SchemaError("field 'tracked.present' must be true or false")


def decode(frames: list[bytes]) -> tuple[str, dict]:
    """Parse and validate a received multipart message; SchemaError if bad."""
    if len(frames) != 2:
        raise SchemaError(f"expected 2 frames [topic, body], got {len(frames)}")
    topic_b, body_b = frames
    if len(topic_b) > 64:
        raise SchemaError(f"topic of {len(topic_b)} bytes is not a schema-1 topic")
    try:
        topic = bytes(topic_b).decode("utf-8")
    except UnicodeDecodeError:
        raise SchemaError("topic is not UTF-8") from None
    if topic not in TOPICS:
        raise SchemaError(f"unknown topic {topic!r}")
    body = parse_json(body_b)
    validate(topic, body)
    return topic, body


def snapshot_endpoint(pub: Optional[str]) -> Optional[str]:
    """The default snapshot endpoint of a PUB endpoint (the Clone pattern's late-joiner socket): the PUB
    port + 1 on tcp, else None (off).  The streamer binds it, subscribers ask it: one rule for both."""
    from urllib.parse import urlparse

    u = urlparse(pub or "")
    try:
        port = u.port
    except ValueError:
        return None
    if u.scheme != "tcp" or not port or port >= 65535:
        return None
    return f"tcp://{u.netloc.rsplit(':', 1)[0]}:{port + 1}"
