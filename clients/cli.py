"""``emotrack record | view | report``: the client subcommands of the one ``emotrack`` CLI.

:func:`add_parsers` registers them on the main parser's subparsers; each sets
``client_main`` to a function that imports its module only when run, so the
main CLI stays light.  Errors a user can cause raise EmotrackError subclasses
(one line, non-zero exit).
"""

from __future__ import annotations

import argparse

from engines.argtypes import number as _number


def _lazy(module: str):
    def main(args) -> int:
        import importlib

        return importlib.import_module(f"clients.{module}").run(args)
    return main


_seconds = _number(float, "a number of seconds", lambda v: v > 0, "> 0")
_port = _number(int, "a port number", lambda v: 0 <= v <= 65535, "in 0..65535")


def _sub_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sub", metavar="ENDPOINT", required=True,
                   help="the streamer's PUB endpoint, e.g. tcp://127.0.0.1:5556")
    p.add_argument("--snapshot", metavar="ENDPOINT", default=None,
                   help="the streamer's snapshot endpoint for recent history (default: the --sub port + 1 on tcp)")
    p.add_argument("--no-snapshot", action="store_true", help="do not ask for history or back-fill gaps")
    p.add_argument("--curve-key", metavar="FILE.key_secret", default=None,
                   help="your CURVE secret certificate, for a streamer that encrypts (see emotrack keys)")
    p.add_argument("--curve-server-key", metavar="FILE.key", default=None,
                   help="the streamer's CURVE public certificate")


def _make_keys(args) -> int:
    from streamer.security import generate

    pub, sec = generate(args.dir, args.name)
    print(f"public: {pub}\nsecret: {sec}")
    return 0


def add_parsers(sub) -> None:
    r = sub.add_parser("record", help="subscribe and write every message to JSONL or CSV",
                       description="Subscribe to an emotrack stream and write every message as it comes (flushed "
                                   "line by line) to FILE.jsonl (the streamer's --out format) or FILE.csv. Reports "
                                   "seq gaps and publisher restarts as they happen and in a summary at exit; "
                                   "reconnects on its own; back-fills from the streamer's snapshot server. "
                                   "Ctrl-C (or SIGTERM) stops it cleanly.")
    _sub_options(r)
    r.add_argument("--out", metavar="FILE", required=True, help="FILE.jsonl or FILE.csv (- for JSONL on stdout)")
    r.add_argument("--format", choices=("jsonl", "csv"), default=None,
                   help="override the format the file's extension implies")
    r.add_argument("--summary", metavar="FILE.json", help="also write the summary at exit as JSON")
    r.add_argument("--exit-after-end", action="store_true", help="stop after a stream's end of stream")
    r.add_argument("--duration", type=_seconds, default=None, metavar="S", help="stop after S seconds")
    r.add_argument("--quiet", "-q", action="store_true", help="only gaps, restarts and the summary on stderr")
    r.set_defaults(client_main=_lazy("record"))

    v = sub.add_parser("view", help="live dashboard in the browser (local web server)",
                       description="Subscribe to an emotrack stream and serve a live dashboard: speech and music "
                                   "valence/arousal curves, the valence-arousal plane, activity, counters and "
                                   "connection state, pushed to any number of browsers with server-sent events. "
                                   "Binds 127.0.0.1 unless --host says otherwise.")
    _sub_options(v)
    v.add_argument("--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1)")
    v.add_argument("--port", type=_port, default=8080, help="HTTP port (default: 8080; 0 picks a free one)")
    v.add_argument("--minutes", type=_seconds, default=5.0,
                   help="minutes of stream time the curves show (default: 5)")
    v.add_argument("--token", default=None,
                   help="require this access token (the page is opened as /?token=TOKEN; then a cookie)")
    v.add_argument("--no-token", action="store_true",
                   help="serve a non-loopback --host without --token, on purpose (anyone who can connect can watch)")
    v.add_argument("--open", action="store_true", help="open the page in the default browser")
    v.add_argument("--quiet", "-q", action="store_true", help="no notices on stderr")
    v.set_defaults(client_main=_lazy("view"))

    k = sub.add_parser("keys", help="make a CURVE key pair (for --allow-remote publishing)",
                       description="Write NAME.key (public: give it to the other side) and NAME.key_secret "
                                   "(keep it) into DIR. The streamer takes --curve-secret SERVER.key_secret and "
                                   "--curve-allow DIR_OF_CLIENT_KEYS; clients take --curve-key CLIENT.key_secret "
                                   "and --curve-server-key SERVER.key.")
    k.add_argument("name", help="name of the key pair, e.g. server or monitor-3")
    k.add_argument("--dir", default=".", help="where to write the two files (default: .)")
    k.set_defaults(client_main=_make_keys)

    p = sub.add_parser("report", help="programme report (HTML or PNG) from a results JSONL",
                       description="Write a programme report from the JSONL that `emotrack replay --out` or "
                                   "`emotrack record` wrote: the speech and music emotion timelines, the "
                                   "valence-arousal plane, time per quadrant per source and the most positive, "
                                   "negative and aroused passages. Needs matplotlib (pip install 'emotrack[report]').")
    p.add_argument("results", metavar="RESULTS.jsonl")
    p.add_argument("-o", "--out", metavar="REPORT", required=True,
                   help="report.html (self-contained) or report.png; both with --png too")
    p.add_argument("--png", metavar="FILE.png", default=None, help="also write the figure as a PNG")
    p.add_argument("--stream", default=None, help="which stream to report if the file holds several")
    p.add_argument("--passage", type=_seconds, default=10.0, metavar="S",
                   help="length of the passages ranked as most positive/negative/aroused (default: 10)")
    p.add_argument("--active", type=float, default=0.5, metavar="A",
                   help="activity from which a window counts as speech (or music) (default: 0.5)")
    p.set_defaults(client_main=_lazy("report"))


#: the convention of every emotrack command (streamer.cli): add_parser(subparsers), run(args)
add_parser = add_parsers


def run(args) -> int:
    return args.client_main(args)
