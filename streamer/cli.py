"""The ``emotrack`` command line: one parser, one dispatch, one way to fail.

Every command is a module with ``add_parser(subparsers)`` and ``run(args) -> int`` (see
:mod:`streamer.commands`), named in :data:`COMMANDS`.  This module is the program's
composition root, above every room: it names the command modules as strings and imports
them by name, so the streamer's library code never imports training or clients (checked by
tests/test_architecture.py), and heavy imports (onnxruntime, TensorFlow) happen inside the
commands that need them.

Every error a user can cause ends with one line on stderr,
``emotrack: <what went wrong and what to do>``, and a non-zero exit code from the
one table in docs/CLI.md: 2 for a bad option or value, 3 for an input that cannot
be read, 4 for a model problem, 5 for a backend that cannot run here, 6 for a
busy or unreachable endpoint, 130 when interrupted, 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from . import __version__
from .errors import EmotrackError

#: command -> the module that parses and runs it (a module may register several commands)
COMMANDS = {
    "replay": "streamer.commands.replay",
    "stream": "streamer.commands.stream",
    "predict": "streamer.commands.predict",
    "separate": "streamer.commands.separate",
    "features": "streamer.commands.features",
    "segments": "streamer.commands.segments",
    "train": "training.cli",
    "export": "training.cli",
    "evaluate": "training.cli",
    "record": "clients.cli",
    "view": "clients.cli",
    "keys": "clients.cli",
    "report": "clients.cli",
    "engines": "engines.cli",
    "bench": "streamer.ops.bench",
    "batch": "streamer.ops.batch",
    "proxy": "streamer.ops.proxy",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line (exit code 2)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"emotrack: {message} (see: {self.prog} --help)\n")


def build_parser(commands: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """The parser of every command, or of the modules of ``commands`` only: a command line that
    names its command parses alike with either (options come after the command), and
    :func:`main` builds just that one, so that ``emotrack replay`` does not import the
    modules of the other commands (bench, batch, engines...) to start."""
    p = _Parser(prog="emotrack", description="Real-time speech and music emotion tracking, published over ZeroMQ.")
    p.add_argument("--version", action="version", version=f"emotrack {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    names = COMMANDS if commands is None else commands
    for module in dict.fromkeys(COMMANDS[c] for c in names):  # each module once, in the order given
        importlib.import_module(module).add_parser(sub)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv[:1] and argv[0] in COMMANDS else None
    module = importlib.import_module(COMMANDS[command]) if command else None
    if module is not None and getattr(module, "PASS_THROUGH", False):  # the rest (--help too) is the command's
        args = argparse.Namespace(command=argv[0], args=argv[1:])
    else:  # no command named (--help, --version, a typo): every command's parser, for the listing
        args = build_parser([command] if command else None).parse_args(argv)
        module = importlib.import_module(COMMANDS[args.command])
    try:
        return module.run(args)
    except EmotrackError as exc:
        print(f"emotrack: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print("emotrack: interrupted", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
