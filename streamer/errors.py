"""One root exception for emotrack, and the few kinds users see.

Every error a user can cause (bad path, undecodable audio, bad option value, a
missing model) is an :class:`EmotrackError` whose message is one line that names
the bad value and says what to do.  The CLI prints ``emotrack: <message>`` and
exits non-zero; it never shows a traceback for these.
"""


class EmotrackError(Exception):
    """Root of every error emotrack raises on purpose."""

    exit_code = 1


class ParameterError(EmotrackError, ValueError):
    """A parameter value is out of range or of the wrong kind."""

    exit_code = 2


class InputError(EmotrackError):
    """An input (file, URL, device, stdin) cannot be opened or decoded."""

    exit_code = 3


class ModelError(EmotrackError):
    """A model file or its card is missing, inconsistent or unusable."""

    exit_code = 4


class BackendError(EmotrackError):
    """An inference backend is unavailable on this host."""

    exit_code = 5


class EndpointError(EmotrackError):
    """A network endpoint is busy, cannot be bound or cannot be reached."""

    exit_code = 6
