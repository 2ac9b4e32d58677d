"""The ``emotrack`` command line (argparse).

Every error a user can cause ends with one line on stderr,
``emotrack: <what went wrong and what to do>``, and a non-zero exit code:
2 for a bad option or value, 3 for an input that cannot be read, 4 for a model
problem, 5 for a backend that cannot run here, 1 otherwise.  Heavy imports
(onnxruntime, TensorFlow) happen inside the subcommands that need them.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Optional, Sequence

from . import __version__
from .errors import BackendError, EmotrackError, InputError, ModelError, ParameterError
from .publish import DEFAULT_PUB


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line (exit code 2)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"emotrack: {message} (see: {self.prog} --help)\n")


def _positive(kind):
    def conv(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
        return v
    return conv


def _add_model_options(p: argparse.ArgumentParser, sources=("speech", "music")) -> None:
    from engines.backends import BACKENDS

    for s in sources:
        p.add_argument(f"--{s}-model", metavar="ONNX", default=None,
                       help=f"{s} emotion model (ONNX with its card .json beside it; default: the shipped one)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="inference backend: auto picks TensorRT when usable, else ONNX Runtime (default: auto)")
    p.add_argument("--threads", type=_positive(int), default=None,
                   help="ONNX Runtime threads per model (default: 1)")


def _add_stream_options(p: argparse.ArgumentParser) -> None:
    from .separation import SEPARATORS

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
    p.add_argument("--separator", choices=sorted(SEPARATORS), default="none",
                   help="speech/music separation before the emotion models: builtin (the shipped "
                        "mask network), spleeter (2stems, needs its weights and the separation "
                        "extra) or none (default: none)")
    p.add_argument("--separator-model", metavar="PATH",
                   help="builtin: another separator ONNX file (card beside it); spleeter: the "
                        "2stems model folder (default: $MODEL_PATH/2stems)")
    p.add_argument("--sources", default="speech,music",
                   help="which emotion curves to compute: speech, music or both (default: speech,music)")
    p.add_argument("--speech-hop", type=_positive(float), metavar="S", help="hop between speech windows in s (default: the model's)")
    p.add_argument("--music-hop", type=_positive(float), metavar="S", help="hop between music windows in s (default: the model's)")
    p.add_argument("--heartbeat", type=_positive(float), default=1.0, metavar="S",
                   help="seconds between status heartbeats (default: 1)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or summary on stderr")
    _add_tracking_options(p)
    _add_model_options(p)


# -- tracking and activity (streamer.tracking, streamer.segments) -------------------------------
def _add_tracking_options(p: argparse.ArgumentParser) -> None:
    from .tracking import DEFAULT_SMOOTH_S

    default = ",".join(f"{k}={v:g}" for k, v in DEFAULT_SMOOTH_S.items())
    p.add_argument("--smooth", default=default, metavar="S",
                   help="time constant in s of the tracked curves (the 'tracked' field of every message: a causal "
                        "filter gated by activity, no added latency): S for both sources or speech=S,music=S; "
                        f"0 turns tracking off (default: {default})")
    p.add_argument("--activity", choices=("separator", "model"), default="separator",
                   help="where 'activity' comes from: the built-in separator's per-frame presence on the mix, even "
                        "with --separator none (default), or the emotion models' activity heads")


def with_presence(args, separator):
    """With ``--separator none`` and ``--activity separator`` (the defaults), the built-in separator
    runs beside the models on the mix for its presence only (streamer.separation.NoneSeparator)."""
    if getattr(args, "activity", "separator") != "separator" or args.separator != "none":
        return separator
    from .separation import BuiltinSeparator, NoneSeparator

    return NoneSeparator(presence=BuiltinSeparator(backend=args.backend, threads=args.threads, presence_only=True))


def _smooth(args):
    from .tracking import parse_smooth

    return parse_smooth(str(args.smooth))
# -----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="emotrack", description="Real-time speech and music emotion tracking, published over ZeroMQ.")
    p.add_argument("--version", action="version", version=f"emotrack {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    r = sub.add_parser("replay", help="replay a file, URL or stdin through the pipeline",
                       description="Replay INPUT (audio or video file, stream URL, or - for stdin) in sliding "
                                   "windows and publish speech and music emotion over ZeroMQ.")
    r.add_argument("input", metavar="INPUT", nargs="+",
                   help="one or more inputs; several are replayed in one process as separate streams "
                        "(named after their files) whose windows share batched inference")
    r.add_argument("--realtime", action="store_true",
                   help="pace the input at real time through the live capture path (default: as fast as possible)")
    r.add_argument("--max-batch", type=_positive(int), default=16, metavar="N",
                   help="with several inputs: largest inference batch across their windows (default: 16)")
    r.add_argument("--latency-budget", type=_positive(float), default=20.0, metavar="MS",
                   help="with several inputs and --realtime: longest wait for more windows before a batch "
                        "runs (default: 20 ms)")
    r.add_argument("--segments", action="append", metavar="FILE",
                   help="at the end, write the passages of speech and music with their emotion: .csv, .TextGrid "
                        "(Praat) or .txt (Audacity labels); repeat for several (see emotrack segments)")
    _add_stream_options(r)

    s = sub.add_parser("stream", help="live capture from a sound device",
                       description="Capture from a sound device and publish emotion curves until interrupted.")
    s.add_argument("--device", default=None, help="sounddevice input device index or name (default: the system default)")
    s.add_argument("--list-devices", action="store_true", help="list capture devices and exit")
    s.add_argument("--stall-timeout", type=_positive(float), default=5.0, metavar="S",
                   help="a device silent this long counts as lost and is reopened (default: 5)")
    s.add_argument("--reopen", type=int, default=5, metavar="N",
                   help="reopen a lost device up to N times with back-off before giving up (default: 5)")
    s.add_argument("--input", dest="paced_input", metavar="FILE",
                   help="instead of a device, replay FILE paced at real time through the same live path")
    _add_stream_options(s)

    pr = sub.add_parser("predict", help="one clip-level prediction per file",
                        description="Predict valence, arousal and quadrant of whole clips.")
    pr.add_argument("files", nargs="+", metavar="FILE")
    pr.add_argument("--source", choices=("speech", "music"), required=True)
    pr.add_argument("--model", metavar="ONNX", default=None, help="model (default: the shipped one for --source)")
    pr.add_argument("--out", metavar="FILE.jsonl", help="write predictions here (default: stdout)")
    pr.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"), default="auto")
    pr.add_argument("--threads", type=_positive(int), default=None)

    t = sub.add_parser("train", help="train a model from ../shared/data style corpora (needs the training extra)",
                       description="Train a recipe (training/recipes/*.toml; python -m training.recipe) or, "
                                   "with speech|music, the shipped models (python -m training.train).",
                       add_help=False)
    t.add_argument("args", nargs=argparse.REMAINDER)
    for name, text in (("export", "export a recipe training run to ONNX (parity-checked, with its model card)"),
                       ("evaluate", "clip-level metrics of a recipe model on a held-out split")):
        x = sub.add_parser(name, help=text + " (needs the training extra)", description=text, add_help=False)
        x.add_argument("args", nargs=argparse.REMAINDER)
    from clients.cli import add_parsers

    add_parsers(sub)
    from engines.cli import add_parsers as add_engine_parsers

    add_engine_parsers(sub)
    from .bench import add_parser as add_bench_parser

    add_bench_parser(sub)
    from .batch import add_parsers as add_batch_parsers
    from .proxy import add_parsers as add_proxy_parsers

    add_batch_parsers(sub)
    add_proxy_parsers(sub)
    from .segments import add_parser as add_segments_parser

    add_segments_parser(sub)
    return p


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _load_models(args, sources: Sequence[str]) -> dict:
    from engines.backends import BackendError as EngineBackendError
    from engines.models import ModelCardError, load_model

    models = {}
    for s in sources:
        try:
            models[s] = load_model(getattr(args, f"{s}_model", None) if hasattr(args, f"{s}_model") else args.model,
                                   s, backend=args.backend, threads=args.threads)
        except ModelCardError as exc:
            raise ModelError(str(exc)) from None
        except EngineBackendError as exc:
            raise BackendError(str(exc)) from None
    return models


def _parse_sources(text: str) -> list[str]:
    out = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in out if s not in ("speech", "music")]
    if bad or not out:
        raise ParameterError(f"--sources {text!r}: use speech, music or speech,music")
    return out


class _Progress:
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

    from .security import CurveServer

    return CurveServer(zmq.Context.instance(), args.curve_secret, args.curve_allow)


def _make_publisher(args, label: str):
    """The Publisher for a run: PUB socket, --out file, snapshot server and CURVE as asked."""
    from .publish import Publisher, snapshot_endpoint_for

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
        _stderr(f"emotrack: warning: {exc}; serving no snapshots")  # the derived default is busy
        return Publisher(label, pub, args.out, allow_remote=args.allow_remote, curve=_curve_server(args))


def _make_separator(args):
    """The separator the options name (``--separator``, ``--separator-model``, ``--backend``)."""
    from .separation import make_separator

    kw = {}
    if args.separator == "builtin":
        kw = {"model_path": args.separator_model, "backend": args.backend, "threads": args.threads}
    elif args.separator == "spleeter" and args.separator_model:
        kw = {"model_dir": args.separator_model}
    return make_separator(args.separator, **kw)


def _run_pipeline(args, source) -> int:
    from .pipeline import Pipeline

    sources = _parse_sources(args.sources)
    smooth_s = _smooth(args)
    seg_files = getattr(args, "segments", None) or []
    if seg_files:
        from .segments import Collector, format_of

        for f in seg_files:
            format_of(f)
    publisher = _make_publisher(args, args.name or source.name)
    if seg_files:
        publisher = Collector(publisher)
    stop = threading.Event()
    progress = None
    try:
        models = _load_models(args, sources)
        separator = with_presence(args, _make_separator(args))
        if not args.quiet and sys.stderr.isatty() and not source.live:
            progress = _Progress(f"replay {source.name}", getattr(source, "duration", None))
        pipe = Pipeline(models, publisher, separator,
                        hops_s={"speech": args.speech_hop, "music": args.music_hop},
                        heartbeat_s=args.heartbeat, progress=progress,
                        block_max_s=0.1 if source.live else 4.0, smooth_s=smooth_s)

        def on_signal(signum, frame):
            stop.set()
            if hasattr(source, "stop"):
                source.stop()

        old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            stats = pipe.run(source, stop=stop)
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
    finally:
        if progress is not None:
            progress.done()
        source.close()
        publisher.close()
    if seg_files:  # what was published, also after an interruption
        from .segments import segments_of, write

        segs = segments_of(publisher.bodies)
        for f in seg_files:
            write(f, segs, stats.stream_seconds)
    if stats.warning:
        _stderr(f"emotrack: warning: {stats.warning}")
    if not args.quiet:
        lat = stats.latency_percentiles()
        lat_txt = f", hop latency p50 {lat['p50']} ms p99 {lat['p99']} ms" if lat else ""
        _stderr(f"emotrack: {source.name}: {stats.stream_seconds:.1f} s of audio in {stats.wall_seconds:.1f} s "
                f"({stats.realtime_factor:.1f}x real time), {stats.windows['speech']} speech and "
                f"{stats.windows['music']} music windows, {stats.reason}{lat_txt}")
    return 0


def cmd_replay(args) -> int:
    from .sources import open_source

    if len(args.input) > 1:
        return _run_batched(args)
    source = open_source(args.input[0], realtime=args.realtime, name=args.name)
    return _run_pipeline(args, source)


class _FailedSource:
    """Stands for an input that could not be opened: its stream ends at once with the error."""

    live = False
    warning = None
    last_arrival = None

    def __init__(self, name: str, error: BaseException):
        self.name, self.error = name, error
        self.counters = {"samples_in": 0, "samples_sanitised": 0, "capture_overflows": 0, "blocks_dropped": 0}

    def blocks(self):
        raise self.error
        yield  # pragma: no cover - a generator

    def close(self) -> None:
        pass


def _run_batched(args) -> int:
    """Several inputs in one process: one stream each, one batched inference for all."""
    from .batching import BatchedInference, BatchWorker, StreamPublisher, run_batched, run_live
    from .pipeline import Pipeline
    from .sources import open_source, unique_stream_name

    if args.name:
        raise ParameterError("--name works with one INPUT only; several inputs are named after their files")
    if args.input.count("-") > 1:
        raise ParameterError("stdin (-) can be given only once")
    sources_list = _parse_sources(args.sources)
    smooth_s = _smooth(args)
    if args.segments:
        raise ParameterError("--segments works with one INPUT; run emotrack segments on the --out JSONL instead")
    opened, names, seen = [], [], {}
    try:
        for spec in args.input:
            try:
                src = open_source(spec, realtime=args.realtime)
            except EmotrackError as exc:
                stem = "stdin" if spec == "-" else (Path(spec).stem or spec)
                src = _FailedSource(stem, exc)
            names.append(unique_stream_name(src.name or "stream", names, seen))
            opened.append(src)
        publisher = _make_publisher(args, ",".join(names))
        stop = threading.Event()
        try:
            models = _load_models(args, sources_list)
            engine = BatchedInference(models, max_batch=args.max_batch)
            streams = []
            for name, src in zip(names, opened):
                pipe = Pipeline(models, StreamPublisher(publisher, name), with_presence(args, _make_separator(args)),
                                hops_s={"speech": args.speech_hop, "music": args.music_hop},
                                heartbeat_s=args.heartbeat, block_max_s=0.1 if src.live else 4.0, smooth_s=smooth_s)
                streams.append((name, src, pipe))

            def on_signal(signum, frame):
                stop.set()
                for src in opened:
                    if hasattr(src, "stop"):
                        src.stop()

            old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                if args.realtime:  # live channels: a worker thread batches within the latency budget
                    worker = BatchWorker(engine, latency_budget_ms=args.latency_budget)
                    try:
                        results = run_live(streams, worker, stop=stop)
                    finally:
                        worker.close()
                else:
                    results = run_batched(streams, engine, stop=stop)
            finally:
                for sig, h in old.items():
                    signal.signal(sig, h)
        finally:
            publisher.close()
    finally:
        for src in opened:
            src.close()
    failed = [r for r in results if r.error is not None]
    for r in results:
        if r.error is not None:
            _stderr(f"emotrack: {r.name}: {r.error}")
            continue
        if r.stats.warning:
            _stderr(f"emotrack: warning: {r.stats.warning}")
        if not args.quiet:
            st = r.stats
            _stderr(f"emotrack: {r.name}: {st.stream_seconds:.1f} s of audio in {st.wall_seconds:.1f} s "
                    f"({st.realtime_factor:.1f}x real time), {st.windows['speech']} speech and "
                    f"{st.windows['music']} music windows, {st.reason}")
    if not args.quiet and engine.batches:
        sizes = [n for _, n, _ in engine.batches]
        _stderr(f"emotrack: {len(results)} streams, {len(sizes)} batches, mean size {sum(sizes) / len(sizes):.1f}")
    if failed:
        err = failed[0].error
        return getattr(err, "exit_code", 1)
    return 0


def cmd_stream(args) -> int:
    from .sources import DeviceSource, PacedSource, open_source

    if args.list_devices:
        try:
            import sounddevice as sd
        except OSError as exc:
            raise InputError(f"PortAudio is missing (apt-get install libportaudio2): {exc}") from None
        print(sd.query_devices())
        return 0
    if args.paced_input:
        source = open_source(args.paced_input, realtime=True, name=args.name)
    else:
        dev = args.device
        if dev is not None and dev.isdigit():
            dev = int(dev)
        source = DeviceSource(dev, stall_timeout_s=args.stall_timeout, retries=max(0, args.reopen))
    return _run_pipeline(args, source)


def cmd_predict(args) -> int:
    from .predict import predict_file

    models = _load_models(args, [args.source])
    model = models[args.source]
    from .pipeline import check_model_features

    check_model_features(model)
    out = open(args.out, "w", buffering=1, encoding="utf-8") if args.out else sys.stdout
    failed = 0
    try:
        for path in args.files:
            try:
                res = predict_file(path, model)
            except InputError as exc:
                _stderr(f"emotrack: {exc}")
                failed += 1
                continue
            out.write(json.dumps(res) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    if failed:
        if failed == len(args.files):
            return InputError.exit_code
        _stderr(f"emotrack: {failed} of {len(args.files)} files could not be read")
        return InputError.exit_code
    return 0


def cmd_train(args) -> int:
    """``train speech|music`` -> training.train (the shipped models); anything else -> training.recipe
    (``train RECIPE``, ``export``, ``evaluate``)."""
    try:
        if args.command == "train" and args.args[:1] in (["speech"], ["music"]):
            from training.train import main as train_main
        else:
            from training.recipe import main as recipe_main

            def train_main(a):
                return recipe_main([args.command, *a])
    except ImportError as exc:
        raise EmotrackError(f"training needs the training extra (pip install 'emotrack[training]'): {exc}") from None
    return int(train_main(args.args) or 0)


COMMANDS = {"replay": cmd_replay, "stream": cmd_stream, "predict": cmd_predict, "train": cmd_train,
            "export": cmd_train, "evaluate": cmd_train}
COMMANDS.update(dict.fromkeys(("record", "view", "report", "keys"), lambda args: args.client_main(args)))
COMMANDS["engines"] = lambda args: args.engines_main(args)
COMMANDS["bench"] = lambda args: args.bench_main(args)
COMMANDS["batch"] = lambda args: args.batch_main(args)
COMMANDS["proxy"] = lambda args: args.proxy_main(args)
COMMANDS["segments"] = lambda args: args.segments_main(args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv[:1] in (["train"], ["export"], ["evaluate"]):  # the rest (--help too) belongs to training
        args = argparse.Namespace(command=argv[0], args=argv[1:])
    else:
        args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except EmotrackError as exc:
        _stderr(f"emotrack: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _stderr("emotrack: interrupted")
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
