"""The separation stage: mix in, one stream per stem (speech, music) out.

A separator works on the stream, block by block, so stems feed their own
window rings; real separators keep their own overlap state and add latency,
reported by ``latency_samples``.  Output sample ``i`` of a stem is input sample
``i`` (stems stay on the stream's time line, only later), and the total output
length equals the input length once :meth:`Separator.flush` has run.

``none`` passes the mix to both stems: the speech and music models then see
mixed audio, which is what they were trained on (seed 001: train on what you
will hear).

``builtin`` (:mod:`.builtin`) is a small mask network (``engines/models/separator.onnx``, trained
by :mod:`training.separator`) on a 16 kHz STFT defined here, once, for training
and streaming:

* STFT: ``n_fft`` 512 (32 ms), hop 256, square-root periodic Hann for analysis
  and synthesis (their product sums to one at 50 % overlap: perfect
  reconstruction); the signal is preceded by ``n_fft - hop`` zeros so that
  frame ``k`` covers input samples ``[(k-1)*hop, (k+1)*hop)``.
* Network input: ``log10(|X|^2 + 1e-8)`` of ``chunk + 2*context`` frames; its
  convolutions are "valid", so the output is the ``chunk`` centre frames: a soft
  speech mask per bin (music gets ``1 - mask``, so the stems add up to the mix)
  and per-frame speech / music presence.
* Streaming: masks are computed for fixed chunks of frames on a grid that
  starts with the stream (context before the first frame is silence), so the
  output does not depend on how the input was cut into blocks (tested), and a
  whole file is just one big block.  Latency: ``(chunk + context) * hop +
  (n_fft - hop)`` samples.

``spleeter`` (:mod:`streamer.separation.spleeter`, the ``separation`` extra) runs
Spleeter 2stems with its graph built once.
"""

from __future__ import annotations

from typing import Optional

from ..errors import BackendError, ParameterError
from .base import STEMS, Ahead, Beside, NoneSeparator, Separator, separate  # noqa: F401 - the package API
from .builtin import (DEFAULT_SEPARATOR_MODEL, STFT, BuiltinSeparator, StftParams, istft, log_power,  # noqa: F401
                      stft)


def _spleeter(**kw) -> Separator:
    try:
        from .spleeter import SpleeterSeparator
    except ImportError as exc:
        raise BackendError(f"--separator spleeter needs the separation extra "
                           f"(pip install 'emotrack[separation]'): {exc}") from None
    return SpleeterSeparator(**kw)


SEPARATORS = {"none": NoneSeparator, "builtin": BuiltinSeparator, "spleeter": _spleeter}


def make_separator(name: str, **kw) -> Separator:
    try:
        factory = SEPARATORS[name]
    except KeyError:
        raise ParameterError(f"separator={name!r} unknown; available: {', '.join(SEPARATORS)}") from None
    return factory(**kw)


def separator_from_options(name: str, model: Optional[str] = None, backend: str = "onnxruntime",
                           threads: Optional[int] = None) -> Separator:
    """The separator the CLI options name (``--separator``, ``--separator-model``, ``--backend``,
    ``--threads``): ``model`` is the builtin's ONNX file or Spleeter's model folder."""
    kw: dict = {}
    if name == "builtin":
        kw = {"model_path": model, "backend": backend, "threads": threads}
    elif name == "spleeter" and model:
        kw = {"model_dir": model}
    return make_separator(name, **kw)
