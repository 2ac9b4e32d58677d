import json

import numpy as np
import pytest
import zmq

from streamer import schema
from streamer.errors import EmotrackError, ParameterError
from streamer.publish import Publisher


def _body(**over):
    b = schema.emotion_body(stream="s", seq=0, source="speech", t_start=0.0, t_end=3.0, wall_time=1.7e9,
                            activity=0.5, valence=-0.2, arousal=0.4, quadrant="Q2",
                            probs={"Q1": 0.1, "Q2": 0.6, "Q3": 0.2, "Q4": 0.1}, model="m")
    b.update(over)
    return b


def test_example_from_design_validates():
    example = {"schema": 1, "stream": "<name>", "seq": 17, "source": "speech",
               "t_start": 12.0, "t_end": 15.0, "wall_time": 1763798400.123,
               "activity": 0.93, "valence": -0.41, "arousal": 0.62, "quadrant": "Q2",
               "probs": {"Q1": 0.1, "Q2": 0.7, "Q3": 0.1, "Q4": 0.1}, "model": "<model id>"}
    schema.validate("emotion.speech", example)
    assert set(example) == set(schema.EMOTION_FIELDS)


@pytest.mark.parametrize("over", [
    {"schema": 2}, {"seq": -1}, {"seq": 1.5}, {"valence": 1.5}, {"activity": -0.1},
    {"quadrant": "Q5"}, {"probs": {"Q1": 1.0}}, {"source": "music"}, {"t_end": -1.0},
    {"model": 3}, {"arousal": "high"},
])
def test_invalid_bodies_are_rejected(over):
    with pytest.raises(schema.SchemaError):
        schema.validate("emotion.speech", _body(**over))


def test_decode_rejects_nan_oversize_and_garbage():
    frames = schema.encode("emotion.speech", _body())
    assert schema.decode(frames) == ("emotion.speech", _body())
    with pytest.raises(schema.SchemaError):
        schema.decode([b"emotion.speech", frames[1].replace(b'"valence":-0.2', b'"valence":NaN')])
    with pytest.raises(schema.SchemaError):
        schema.decode([b"emotion.speech", b"{" + b" " * schema.MAX_BODY_BYTES + b"}"])
    with pytest.raises(schema.SchemaError):
        schema.decode([b"emotion.speech", b"\xff\xfe"])
    with pytest.raises(schema.SchemaError):
        schema.decode([b"emotion.speech"])
    with pytest.raises(ValueError):
        schema.encode("emotion.speech", _body(valence=float("nan")))


def _sub(endpoint, topics=(b"",)):
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 3000)
    for t in topics:
        s.setsockopt(zmq.SUBSCRIBE, t)
    s.connect(endpoint)
    return s


def test_publisher_sends_in_order_with_per_topic_seq_and_mirrors_jsonl(tmp_path, endpoint):
    out = tmp_path / "o.jsonl"
    sub = _sub(endpoint)
    pub = Publisher("tv1", endpoint, str(out), start_grace_s=0.3)
    sent = []
    for i in range(5):
        sent.append(("emotion.speech", pub.emotion("speech", t_start=i, t_end=i + 3, activity=0.5, valence=0.1,
                                                    arousal=0.1, quadrant="Q1",
                                                    probs={"Q1": .7, "Q2": .1, "Q3": .1, "Q4": .1}, model="m")))
        if i % 2 == 0:
            sent.append(("status", pub.status("heartbeat", counters={"windows": i})))
    pub.close()
    got = [schema.decode(sub.recv_multipart()) for _ in sent]
    sub.close()
    assert got == sent
    assert [b["seq"] for t, b in got if t == "emotion.speech"] == [0, 1, 2, 3, 4]
    assert [b["seq"] for t, b in got if t == "status"] == [0, 1, 2]
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [(ln.pop("topic"), ln) for ln in lines] == sent


def test_non_loopback_bind_needs_allow_remote():
    with pytest.raises(ParameterError, match="allow-remote"):
        Publisher("s", "tcp://0.0.0.0:5599")


def test_bind_conflict_is_one_clear_error(endpoint):
    a = Publisher("s", endpoint)
    try:
        with pytest.raises(EmotrackError, match="cannot bind"):
            Publisher("s", endpoint)
    finally:
        a.close()


def test_publishing_never_blocks_without_subscribers_or_with_a_frozen_one(endpoint):
    frozen = _sub(endpoint)  # connected, never reads
    frozen.setsockopt(zmq.RCVHWM, 10)
    pub = Publisher("s", endpoint, hwm=10, start_grace_s=0.2, linger_ms=0)
    big = {"payload": "x" * 2000}
    for _ in range(5000):
        pub.status("heartbeat", **big)
    assert pub.counters["published"] + pub.counters["pub_dropped"] == 5000
    pub.close()
    frozen.close()
