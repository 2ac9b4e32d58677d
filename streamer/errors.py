"""The exception tree users see, re-exported from :mod:`engines.errors` (its one definition).

streamer, clients and training import it from here or from engines.errors: the
classes are the same objects.
"""

from engines.errors import (BackendError, EmotrackError, EndpointError, InputError, ModelError,  # noqa: F401
                            ParameterError)

__all__ = ["EmotrackError", "ParameterError", "InputError", "ModelError", "BackendError", "EndpointError"]
