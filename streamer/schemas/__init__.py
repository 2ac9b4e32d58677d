"""JSON Schema files (draft 2020-12) of the schema-1 messages, for clients in any language.

``emotion.schema.json`` (topics ``emotion.speech`` / ``emotion.music``),
``status.schema.json`` (topic ``status``) and ``snapshot_reply.schema.json`` (the
metadata frame of a snapshot reply; the request/reply protocol is in its
description and in docs/MESSAGES.md).  They state the documented core fields with
their types and ranges and allow additional ones: schema 1 grows by adding fields.
:mod:`streamer.schema` stays the validator the Python clients use (standard library
only); the tests check both accept every message a real run publishes.
"""

from __future__ import annotations

import json
from pathlib import Path

DIR = Path(__file__).resolve().parent
NAMES = ("emotion", "status", "snapshot_reply")


def path(name: str) -> Path:
    """The file of schema ``name`` (one of :data:`NAMES`)."""
    if name not in NAMES:
        raise ValueError(f"schema {name!r} unknown; one of {', '.join(NAMES)}")
    return DIR / f"{name}.schema.json"


def load(name: str) -> dict:
    return json.loads(path(name).read_text(encoding="utf-8"))


def for_topic(topic: str) -> dict:
    """The schema of a message body on ``topic``."""
    return load("status" if topic == "status" else "emotion" if topic.startswith("emotion.") else "")
