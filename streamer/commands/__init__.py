"""The ``emotrack`` commands of the streaming core, one module each.

The convention every command follows (here, in :mod:`streamer.ops`, :mod:`engines.cli`,
:mod:`clients.cli` and :mod:`training.cli`): a module with

    def add_parser(subparsers) -> None     # adds its subparser(s): options, help
    def run(args) -> int                   # runs the parsed command, returns the exit code

and one line in :data:`streamer.cli.COMMANDS` (command name -> module).  Options shared by
several commands, the publisher and models they build, signal handling and the run summary
are in :mod:`.common`.
"""
