"""``emotrack record``: subscribe and write every message to JSONL or CSV as it comes.

Every line is flushed when written, so a crash loses at most the line being
written.  Gaps in ``seq`` and publisher restarts are reported on stderr as they
happen and in a summary at exit; ZeroMQ reconnects on its own when the
publisher comes back, and the snapshot server (if any) back-fills what went
missing while it still holds it.  SIGINT/SIGTERM end the recording cleanly
(exit 0).
"""

from __future__ import annotations

import csv
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, Optional

from streamer import schema
from streamer.errors import EmotrackError, ParameterError

from .feed import Feed, body_json, check_sub_endpoint, curve_client

CSV_COLUMNS = ("topic", "stream", "seq", "source", "t_start", "t_end", "wall_time", "activity", "valence",
               "arousal", "quadrant", "Q1", "Q2", "Q3", "Q4", "model", "event", "reason", "counters")


def csv_row(topic: str, body: dict) -> list:
    """One CSV row; a status row's ``reason`` (end) and ``counters`` (heartbeat, end; as JSON) included."""
    probs = body.get("probs") or {}
    row = {k: body.get(k, "") for k in CSV_COLUMNS}
    row["topic"] = topic
    for q in schema.QUADRANTS:
        row[q] = probs.get(q, "")
    if "counters" in body:
        row["counters"] = json.dumps(body["counters"], separators=(",", ":"), sort_keys=True)
    return [row[k] for k in CSV_COLUMNS]


class Writer:
    """JSONL (the streamer's --out format) or CSV, chosen by the file's extension."""

    def __init__(self, path: str, fmt: Optional[str] = None):
        fmt = fmt or ("csv" if path.lower().endswith(".csv") else "jsonl" if path.lower().endswith(
            (".jsonl", ".json", ".ndjson")) or path == "-" else None)
        if fmt not in ("jsonl", "csv"):
            raise ParameterError(f"--out {path!r}: give a .jsonl or .csv file (or --format jsonl|csv)")
        self.fmt, self.path = fmt, path
        try:
            self.fh: IO[str] = sys.stdout if path == "-" else open(path, "w", buffering=1, encoding="utf-8",
                                                                   newline="")
        except OSError as exc:
            raise EmotrackError(f"cannot write --out {path}: {exc.strerror}") from None
        self.lines = 0
        if fmt == "csv":
            self.csv = csv.writer(self.fh, lineterminator="\n")
            self.csv.writerow(CSV_COLUMNS)
            self.fh.flush()

    def write(self, topic: str, body: dict) -> None:
        if self.fmt == "csv":
            self.csv.writerow(csv_row(topic, body))
        else:
            self.fh.write(body_json(topic, body) + "\n")
        self.fh.flush()
        self.lines += 1

    def close(self) -> None:
        if self.fh is not sys.stdout:
            self.fh.close()
        else:
            self.fh.flush()


def run(args) -> int:
    sub = check_sub_endpoint(args.sub)
    snapshot = None if args.no_snapshot else (args.snapshot or "auto")
    if args.snapshot:
        check_sub_endpoint(args.snapshot, "--snapshot")
    writer = Writer(args.out, args.format)
    quiet = args.quiet

    def notice(kind: str, text: str) -> None:
        if not quiet or kind in ("gap", "restart"):
            print(f"emotrack record: {text}", file=sys.stderr, flush=True)

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    feed = Feed(sub, snapshot=snapshot, on_message=lambda t, b, o: writer.write(t, b), on_notice=notice,
                curve=curve_client(args))
    if not quiet:
        print(f"emotrack record: subscribed to {sub}"
              + (f" (snapshot {feed.snapshot_endpoint})" if feed.snapshot_endpoint else "")
              + f", writing {args.out}; Ctrl-C to stop", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    ends = 0
    try:
        while not stop.is_set():
            feed.poll(200)
            if args.exit_after_end:
                ends = sum(1 for s in feed.streams.values() if s.ended)
                if ends and feed._req is None:
                    break
            if args.duration and time.monotonic() - t0 >= args.duration:
                break
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise EmotrackError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        writer.close()
        totals = feed.totals()
        lines = feed.summary_lines()
        feed.close()
    print("emotrack record: " + "\n".join(lines) + f"\nemotrack record: {writer.lines} lines written to {args.out}",
          file=sys.stderr, flush=True)
    if args.summary:
        totals["lines"] = writer.lines
        totals["keys"] = {f"{n} {t}": {"received": k.received, "last_seq": k.last, "lost": k.lost,
                                       "recovered": k.recovered, "gaps": k.gaps,
                                       "lost_while_down": k.lost_while_down, "history": k.history}
                          for (n, t), k in feed.keys.items()}
        try:
            Path(args.summary).write_text(json.dumps(totals, indent=1) + "\n")
        except OSError as exc:
            raise EmotrackError(f"cannot write --summary {args.summary}: {exc.strerror}") from None
    return 0
