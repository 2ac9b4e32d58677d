"""What several commands share: options, models, separator, publisher, signal handling and
the run summary (each written once)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from typing import Iterable, Optional, Sequence

from engines.argtypes import positive

from ..errors import EmotrackError, ParameterError
from ..publish import DEFAULT_PUB


def stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def add_model_options(p: argparse.ArgumentParser, sources=("speech", "music")) -> None:
    from engines.backends import BACKENDS

    for s in sources:
        p.add_argument(f"--{s}-model", metavar="ONNX", default=None,
                       help=f"{s} emotion model (ONNX with its card .json beside it; default: the shipped one)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="inference backend: auto picks TensorRT when usable, else ONNX Runtime (default: auto)")
    p.add_argument("--threads", type=positive(int), default=None,
                   help="ONNX Runtime threads per model (default: 1)")


def add_separation_options(p: argparse.ArgumentParser) -> None:
    """--separator, --separator-model, --sources, --speech-hop, --music-hop."""
    from ..separation import SEPARATORS

    p.add_argument("--separator", choices=sorted(SEPARATORS), default="none",
                   help="speech/music separation before the emotion models: builtin (the shipped "
                        "mask network), spleeter (2stems, needs its weights and the separation "
                        "extra) or none (default: none)")
    p.add_argument("--separator-model", metavar="PATH",
                   help="builtin: another separator ONNX file (card beside it); spleeter: the "
                        "2stems model folder (default: $MODEL_PATH/2stems)")
    p.add_argument("--sources", default="speech,music",
                   help="which emotion curves to compute: speech, music or both (default: speech,music)")
    p.add_argument("--speech-hop", type=positive(float), metavar="S", help="hop between speech windows in s (default: the model's)")
    p.add_argument("--music-hop", type=positive(float), metavar="S", help="hop between music windows in s (default: the model's)")


def add_stream_options(p: argparse.ArgumentParser) -> None:
    """The options of the commands that run the pipeline and publish (replay, stream)."""
    p.add_argument("--out", metavar="FILE.jsonl", help="write every published body as a JSON line (with 'topic'); - for stdout")
    p.add_argument("--pub", metavar="ENDPOINT", default=DEFAULT_PUB,
                   help=f"ZeroMQ PUB endpoint to bind (default: {DEFAULT_PUB})")
    p.add_argument("--no-pub", action="store_true", help="do not publish over ZeroMQ")
    p.add_argument("--pub-connect", metavar="ENDPOINT", default=None,
                   help="connect to an emotrack proxy's XSUB endpoint (e.g. tcp://HOST:5560) instead of binding --pub")
    p.add_argument("--snapshot", metavar="ENDPOINT", default=None,
                   help="ZeroMQ ROUTER endpoint answering late joiners with recent history "
                        "(default: the --pub port + 1 on tcp; off with --no-pub)")
    p.add_argument("--no-snapshot", action="store_true", help="do not serve history snapshots")
    p.add_argument("--curve-secret", metavar="SERVER.key_secret", default=None,
                   help="encrypt with ZeroMQ CURVE using this secret certificate (see emotrack keys)")
    p.add_argument("--curve-allow", metavar="DIR", default=None,
                   help="with --curve-secret: only clients whose public .key file is in DIR may connect")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow --pub to bind an address other than loopback")
    p.add_argument("--name", help="stream name in messages (default: the input's file name)")
    add_separation_options(p)
    p.add_argument("--heartbeat", type=positive(float), default=1.0, metavar="S",
                   help="seconds between status heartbeats (default: 1)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or summary on stderr")
    add_model_options(p)
    add_tracking_options(p)


def add_tracking_options(p: argparse.ArgumentParser) -> None:
    """--smooth (the tracked curves' time constants) and --activity (where activity comes from)."""
    from ..tracking import DEFAULT_SMOOTH_S, METHOD

    default = ",".join(f"{k}={v:g}" for k, v in DEFAULT_SMOOTH_S.items())
    p.add_argument("--smooth", default=default, metavar="S",
                   help="time constant in s of the tracked curves (the 'tracked' field of every message: a causal "
                        f"filter, {METHOD}, gated by activity, with hysteresis of the tracked quadrant inside a "
                        "passage, no added latency): S for both sources or speech=S,music=S; "
                        f"0 turns tracking off (default: {default})")
    p.add_argument("--activity", choices=("detector", "separator", "model"), default="detector",
                   help="where 'activity' comes from: the presence detector on the mix, which tells speech from "
                        "singing (default; engines/models/presence.onnx), the built-in separator's per-frame "
                        "presence on the mix, or the emotion models' activity heads")


def load_models(args, sources: Sequence[str]) -> dict:
    """The emotion model of each source, from ``--<source>-model`` (or ``--model``), ``--backend``, ``--threads``."""
    from ..inputs import load_streamable

    return {s: load_streamable(getattr(args, f"{s}_model", None) if hasattr(args, f"{s}_model") else args.model,
                               s, backend=args.backend, threads=args.threads) for s in sources}


def parse_sources(text: str) -> list[str]:
    out = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in out if s not in ("speech", "music")]
    if bad or not out:
        raise ParameterError(f"--sources {text!r}: use speech, music or speech,music")
    return out


def make_separator(args):
    """The separator the options name (``--separator``, ``--separator-model``, ``--backend``), with
    the presence estimate ``--activity`` names running beside it on the mix: ``detector`` (the
    default: :class:`streamer.presence.PresenceDetector`, whatever the separator), ``separator``
    (with ``--separator none``: the built-in separator for its presence only; other separators give
    their own presence) or ``model`` (none: the emotion models' activity heads)."""
    from ..presence import PresenceDetector
    from ..separation import Beside, BuiltinSeparator, NoneSeparator, separator_from_options

    activity = getattr(args, "activity", "model")
    backend = "onnxruntime" if args.backend in ("auto", "tensorrt") else args.backend
    sep = separator_from_options(args.separator, args.separator_model, args.backend, args.threads)
    if activity == "detector":
        det = PresenceDetector(backend=backend, threads=args.threads)
        return NoneSeparator(presence=det) if args.separator == "none" else Beside(sep, det)
    if activity != "separator" or args.separator != "none":
        return sep
    return NoneSeparator(presence=BuiltinSeparator(backend=args.backend, threads=args.threads, presence_only=True))


def smooth_of(args) -> "dict | None":
    """The tracked curves' time constants from ``--smooth`` (None: tracking off)."""
    from ..tracking import parse_smooth

    return parse_smooth(str(args.smooth))


def hops(args) -> dict:
    return {"speech": args.speech_hop, "music": args.music_hop}


def _curve_server(args):
    """CurveServer from --curve-secret/--curve-allow (both or neither), else None."""
    if not args.curve_secret and not args.curve_allow:
        return None
    if not (args.curve_secret and args.curve_allow):
        raise ParameterError("CURVE needs both --curve-secret (the server's .key_secret) and --curve-allow (a folder "
                             "of allowed clients' .key files); make keys with: emotrack keys NAME --dir DIR")
    if args.no_pub:
        raise ParameterError("--curve-secret/--curve-allow need publishing: drop --no-pub")
    import zmq

    from ..security import CurveServer

    return CurveServer(zmq.Context.instance(), args.curve_secret, args.curve_allow)


def make_publisher(args, label: str):
    """The Publisher for a run: PUB socket, --out file, snapshot server and CURVE as asked."""
    from ..publish import Publisher, snapshot_endpoint_for

    if args.pub_connect:  # through a proxy: it serves the snapshots, unless --snapshot asks for a local one
        if args.no_pub:
            raise ParameterError("--pub-connect and --no-pub contradict each other; drop one")
        snap = None if args.no_snapshot else args.snapshot
        return Publisher(label, args.pub_connect, args.out, allow_remote=args.allow_remote, snapshot=snap,
                         curve=_curve_server(args), connect=True)
    snap = None if args.no_pub or args.no_snapshot else (args.snapshot or snapshot_endpoint_for(args.pub))
    pub = None if args.no_pub else args.pub
    try:
        return Publisher(label, pub, args.out, allow_remote=args.allow_remote, snapshot=snap,
                         curve=_curve_server(args))
    except EmotrackError as exc:
        if not snap or args.snapshot or "snapshot" not in str(exc):
            raise
        stderr(f"emotrack: warning: {exc}; serving no snapshots")  # the derived default is busy
        return Publisher(label, pub, args.out, allow_remote=args.allow_remote, curve=_curve_server(args))


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event, sources: Iterable = (),
                    signals=(signal.SIGINT, signal.SIGTERM)):
    """While the block runs, SIGINT/SIGTERM set ``stop`` and stop every source that can be stopped
    (a live device, a paced input), so the run ends cleanly and its summary is printed."""
    sources = list(sources)

    def on_signal(signum, frame):
        stop.set()
        for src in sources:
            if hasattr(src, "stop"):
                src.stop()

    old = {sig: signal.signal(sig, on_signal) for sig in signals}
    try:
        yield stop
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def run_summary(name: str, stats, *, latency: bool = True) -> str:
    """The one line a run ends with: audio seconds, wall seconds, real-time factor, windows, why it ended."""
    lat = stats.latency_percentiles() if latency else None
    lat_txt = f", hop latency p50 {lat['p50']} ms p99 {lat['p99']} ms" if lat else ""
    return (f"emotrack: {name}: {stats.stream_seconds:.1f} s of audio in {stats.wall_seconds:.1f} s "
            f"({stats.realtime_factor:.1f}x real time), {stats.windows['speech']} speech and "
            f"{stats.windows['music']} music windows, {stats.reason}{lat_txt}")


class Progress:
    """A one-line progress display on a terminal."""

    def __init__(self, label: str, duration: Optional[float]):
        import time

        self._time = time
        self.label, self.duration = label, duration
        self.t0 = time.monotonic()
        self.last = 0.0

    def __call__(self, t: float) -> None:
        now = self._time.monotonic()
        if now - self.last < 0.2:
            return
        self.last = now
        speed = t / max(now - self.t0, 1e-6)
        if self.duration:
            frac = min(1.0, t / self.duration)
            bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
            msg = f"\r{self.label} [{bar}] {t:7.1f}/{self.duration:.1f} s  {speed:5.1f}x real time"
        else:
            msg = f"\r{self.label} {t:8.1f} s  {speed:5.1f}x real time"
        sys.stderr.write(msg)
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\n")


#: windows per model per inference call in replay (a live stream infers every hop at once)
REPLAY_BATCH = 8


def run_pipeline(args, source) -> int:
    """One source through the pipeline to the publisher, until its end or a signal (replay, stream);
    with ``--segments FILE`` the passages are written at the end (also after an interruption)."""
    from ..pipeline import Pipeline

    sources = parse_sources(args.sources)
    smooth_s = smooth_of(args)
    seg_files = getattr(args, "segments", None) or []
    if seg_files:  # imported only when asked for (csv & co. are not on a replay's start-up path)
        from ..segments import Collector, format_of, segments_of, write

        for f in seg_files:
            format_of(f)
    publisher = make_publisher(args, args.name or source.name)
    if seg_files:
        publisher = Collector(publisher)
    stop = threading.Event()
    progress = None
    try:
        models = load_models(args, sources)
        separator = make_separator(args)
        if not args.quiet and sys.stderr.isatty() and not source.live:
            progress = Progress(f"replay {source.name}", getattr(source, "duration", None))
        pipe = Pipeline(models, publisher, separator, hops_s=hops(args), heartbeat_s=args.heartbeat,
                        progress=progress, block_max_s=0.1 if source.live else 4.0, smooth_s=smooth_s,
                        replay_batch=REPLAY_BATCH)
        with stop_on_signals(stop, [source]):
            stats = pipe.run(source, stop=stop)
    finally:
        if progress is not None:
            progress.done()
        source.close()
        publisher.close()
    if seg_files:
        segs = segments_of(publisher.bodies)
        for f in seg_files:
            write(f, segs, stats.stream_seconds)
    if stats.warning:
        stderr(f"emotrack: warning: {stats.warning}")
    if not args.quiet:
        stderr(run_summary(source.name, stats))
    return 0
