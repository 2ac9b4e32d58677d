"""Spleeter 2stems as a streaming separator (``--separator spleeter``, extra ``separation``).

Spleeter's ``Separator.separate`` builds a TensorFlow graph (through an Estimator)
on every call.  Here the graph is built once, from Spleeter's own building blocks
(``spleeter.model.EstimatorSpecBuilder``: magnitude patches, the two U-Nets, the
ratio masks), a session restores the checkpoint once, and every chunk of the
stream goes through that session.

How a stream is cut, and why the output equals Spleeter's on the whole signal
-----------------------------------------------------------------------------
Spleeter works at 44.1 kHz: it prepends ``frame_length`` (4096) zeros, takes a
Hann STFT (hop 1024, end padded) and cuts the STFT into segments of T = 512
frames (11.9 s) that the U-Nets see one by one, without overlap; the masks
multiply the STFT, and an inverse STFT (times 2/3) gives each stem.  This module
does exactly the same on the stream: the 16 kHz input is resampled to 44.1 kHz
(soxr, one stream-state resampler, so block borders leave no trace), framed with
the same grid, and whenever 512 new frames are complete the segment goes through
the graph; the masked frames are inverse-transformed and overlap-added, and a
sample is released once every frame that covers it is done.  The segments and
frames are therefore those of a whole-file Spleeter call, whatever the block
sizes, and the output equals Spleeter's own whole-signal output up to float32
rounding (tests: max abs difference below 1e-4 of the signal's peak).  There are
no extra chunk borders: the only borders are Spleeter's own 512-frame segments.

The input is mono, so it is duplicated to stereo (Spleeter's 2-channel U-Nets get
two equal channels); the stems are downmixed (mean of the channels), which, the
STFT being linear, is one inverse STFT of the mean mask per stem.  Speech is
Spleeter's ``vocals``, music its ``accompaniment``; both are resampled back to
16 kHz by one 2-channel resampler, so they always have equal lengths.

Latency: a sample is released when the segment holding the last frame that covers
it is complete: at worst (T - 1) * 1024 + 4096 samples at 44.1 kHz (11.96 s),
plus the two resamplers' delays; ``latency_samples`` is that bound at 16 kHz.

Weights are looked for where Spleeter looks (``$MODEL_PATH/2stems``, default
``pretrained_models/2stems``) and refused, with a one-line :class:`ModelError`
saying how to get them, unless the folder has Spleeter's ``.probe`` and a complete
checkpoint: a failed download leaves an empty folder after which Spleeter silently
runs untrained weights.  Nothing here ever downloads.

``runtime="onnx"`` runs the U-Nets exported by ``python -m training.spleeter_onnx``
with ONNX Runtime instead of TensorFlow (masks and STFT in numpy, same cut).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .. import dsp
from ..dsp import SAMPLE_RATE, overlap_add  # noqa: F401 - overlap_add: part of this module's STFT API
from ..errors import BackendError, ModelError, ParameterError
from .base import STEMS, Separator

MODEL_NAME = "2stems"
RELEASE_URL = "https://github.com/deezer/spleeter/releases/download/v1.4.0/2stems.tar.gz"
PROBE = ".probe"  # spleeter.model.provider.ModelProvider.MODEL_PROBE_PATH
#: Spleeter's stems -> emotrack's
STEM_OF = {"vocals": "speech", "accompaniment": "music"}
#: default ONNX file of the U-Nets, looked for in the model folder when runtime="onnx"
ONNX_NAME = "unet.onnx"
RESAMPLE_QUALITY = "HQ"


# --------------------------------------------------------------------------- weights on disk

def model_root() -> Path:
    """Spleeter's model root: ``$MODEL_PATH``, else ``pretrained_models`` (relative to the cwd)."""
    return Path(os.environ.get("MODEL_PATH") or "pretrained_models")


def _how_to_get(directory: Path, name: str) -> str:
    env = os.environ.get("MODEL_PATH")
    where = f"MODEL_PATH={env}" if env else "MODEL_PATH is unset, so pretrained_models/ in the working directory"
    url = RELEASE_URL.replace("2stems", name)
    return (f"on a machine with internet download {url}, extract it into {directory} ({where}) "
            f"and create the empty file {directory / PROBE}")


def checkpoint_prefix(model_dir, name: str = MODEL_NAME) -> Path:
    """Validate a Spleeter model folder and return its checkpoint prefix (``.../model``).

    The folder must hold ``.probe`` (Spleeter's proof of a complete download), the
    ``checkpoint`` index file, and the ``.index`` and every ``.data-NNNNN-of-MMMMM``
    shard of the checkpoint it names.  Raises :class:`ModelError` (one line: what is
    missing and how to get the weights) otherwise.
    """
    d = Path(model_dir).expanduser().absolute()

    def refuse(problem: str):
        raise ModelError(f"Spleeter {name} model in {d} is unusable: {problem}; {_how_to_get(d, name)}")

    if not d.is_dir():
        refuse("no such folder")
    if not (d / PROBE).is_file():
        refuse(f"it has no {PROBE} file (a failed or interrupted download leaves such a folder, and Spleeter "
               "would then silently run untrained weights)")
    state = d / "checkpoint"
    if not state.is_file():
        refuse("it has no 'checkpoint' file")
    m = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', state.read_text(errors="replace"), re.M)
    if not m:
        refuse("its 'checkpoint' file names no model_checkpoint_path")
    named = Path(m.group(1))
    prefix = named if named.is_absolute() else d / named
    if named.is_absolute() and not Path(f"{prefix}.index").is_file():
        prefix = d / named.name  # a folder moved after saving with absolute paths
    if not Path(f"{prefix}.index").is_file():
        refuse(f"the checkpoint file {prefix.name}.index is missing")
    shards = sorted(prefix.parent.glob(f"{prefix.name}.data-*-of-*"))
    counts = {re.search(r"-of-(\d+)$", s.name).group(1) for s in shards if re.search(r"-of-(\d+)$", s.name)}
    if not shards or len(counts) != 1:
        refuse(f"the checkpoint data file {prefix.name}.data-00000-of-00001 is missing")
    total = int(counts.pop())
    present = {int(re.search(r"\.data-(\d+)-of-", s.name).group(1)) for s in shards}
    missing = sorted(set(range(total)) - present)
    if missing:
        refuse(f"checkpoint data shard {prefix.name}.data-{missing[0]:05d}-of-{total:05d} is missing")
    if any(s.stat().st_size == 0 for s in shards) or Path(f"{prefix}.index").stat().st_size == 0:
        refuse("a checkpoint file is empty (truncated download)")
    return prefix


def find_model_dir(name: str = MODEL_NAME, model_dir=None) -> Path:
    """The validated folder of Spleeter model ``name``: ``model_dir`` if given, else
    ``$MODEL_PATH/<name>`` (default ``pretrained_models/<name>``), as Spleeter looks.

    Raises :class:`ModelError` when the folder is absent or incomplete (see
    :func:`checkpoint_prefix`); never downloads.
    """
    d = Path(model_dir) if model_dir is not None else model_root() / name
    checkpoint_prefix(d, name)
    return d.expanduser().absolute()


# --------------------------------------------------------------------------- Spleeter's config

def load_params(name: str = MODEL_NAME) -> dict:
    """Spleeter's embedded configuration (``spleeter:<name>``), loaded by Spleeter itself."""
    try:
        from spleeter.utils.configuration import load_configuration
    except ImportError as exc:
        raise BackendError(f"the spleeter separator needs Spleeter ({exc}); "
                           "install it with: pip install 'emotrack[separation]'") from None
    params = load_configuration(f"spleeter:{name}")
    if params["frame_length"] % params["frame_step"]:
        raise ModelError(f"spleeter:{name}: frame_length {params['frame_length']} is not a multiple of "
                         f"frame_step {params['frame_step']}")
    return params


def _import_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise BackendError(f"the spleeter separator needs TensorFlow ({exc}); "
                           "install it with: pip install 'emotrack[separation]'") from None
    tf.get_logger().setLevel("ERROR")
    return tf


# --------------------------------------------------------------------------- STFT as Spleeter's

def stft_frames(frames: np.ndarray) -> np.ndarray:
    """frames [n, L] float32 -> Hann-windowed rfft [n, L // 2 + 1] complex64."""
    return dsp.rfft_frames(frames, dsp.hann(frames.shape[-1])).astype(np.complex64, copy=False)


def stft(x: np.ndarray, frame_length: int = 4096, frame_step: int = 1024) -> np.ndarray:
    """Spleeter's STFT of a mono signal x [n]: ``frame_length`` zeros prepended, end
    padded as ``tf.signal.stft(pad_end=True)``; returns [ceil((n + L) / H), L // 2 + 1]."""
    L, H = frame_length, frame_step
    n_frames = -(-(len(x) + L) // H)
    padded = np.zeros((n_frames - 1) * H + L, np.float32)
    padded[L:L + len(x)] = x
    frames = dsp.frames(padded, L, H)
    return stft_frames(frames)


# --------------------------------------------------------------------------- mask runtimes

class _TFMasks:
    """Spleeter's graph from the STFT to the masks, built once; one session restores the checkpoint.

    ``__call__(X)``: X [n, L/2+1] complex64 (mono STFT frames; a whole number of
    T-frame segments, except at the end of a stream, where Spleeter's own
    ``pad_and_partition`` pads the last one) -> masks [2, n, L/2+1] float32
    (vocals, accompaniment; mean of the two channels' masks).
    """

    def __init__(self, prefix: Path, params: dict, threads: Optional[int] = None):
        tf = _import_tf()
        from spleeter.model import EstimatorSpecBuilder

        self.params = params
        self.graph = tf.Graph()
        self.graph_builds = 1
        with self.graph.as_default():
            # the mono STFT, duplicated to Spleeter's channels in the graph; the masks come
            # back as their channel mean (the stems are downmixed, and the STFT is linear)
            self._stft = tf.compat.v1.placeholder(tf.complex64, (None, params["frame_length"] // 2 + 1),
                                                  name="mono_stft")
            mix = tf.stack([self._stft] * params["n_channels"], axis=-1)
            builder = EstimatorSpecBuilder({f"{params['mix_name']}_stft": mix}, params)
            masks = builder.masks
            self.instruments = list(builder.instruments)
            self._fetch = tf.stack([tf.reduce_mean(masks[i], axis=-1) for i in self.instruments])
            saver = tf.compat.v1.train.Saver()
            config = tf.compat.v1.ConfigProto()
            if threads:
                config.intra_op_parallelism_threads = threads
                config.inter_op_parallelism_threads = 1
            self.session = tf.compat.v1.Session(graph=self.graph, config=config)
            try:
                saver.restore(self.session, str(prefix))
            except Exception as exc:  # NotFoundError / InvalidArgumentError: a checkpoint of another model
                self.session.close()
                raise ModelError(f"Spleeter checkpoint {prefix} does not fit the {MODEL_NAME} graph: "
                                 f"{str(exc).splitlines()[0]}") from None
        self.graph.finalize()  # any attempt to add an op from now on raises
        self.runs = 0

    def __call__(self, X: np.ndarray) -> np.ndarray:
        out = self.session.run(self._fetch, {self._stft: X})
        self.runs += 1
        return out

    def close(self) -> None:
        self.session.close()


def ratio_masks(outputs: list[np.ndarray], params: dict, n_frames: int) -> np.ndarray:
    """Spleeter's ratio masks (``EstimatorSpecBuilder._build_masks``) from the U-Nets' outputs
    (``<instrument>_spectrogram``) [segments, T, F, C] per instrument -> [instruments,
    n_frames, L/2+1] (channel mean, bins above F zero as ``mask_extension: zeros``)."""
    if params.get("mask_extension", "zeros") != "zeros":
        raise ModelError(f"mask_extension {params['mask_extension']!r} is not supported by the ONNX runtime")
    e, eps = params["separation_exponent"], 1e-10
    powered = [np.power(o, e, dtype=np.float32) for o in outputs]
    total = np.sum(powered, axis=0) + np.float32(eps)
    n_bins = params["frame_length"] // 2 + 1
    masks = np.zeros((len(outputs), n_frames, n_bins), np.float32)
    for i, p in enumerate(powered):
        r = (p + np.float32(eps / len(outputs))) / total       # [segments, T, F, C]
        m = r[..., 0] if r.shape[-1] == 1 else np.add.reduce([r[..., c] for c in range(r.shape[-1])]) / r.shape[-1]
        masks[i, :, :params["F"]] = m.reshape(-1, params["F"])[:n_frames]
    return masks


class _OnnxMasks:
    """The U-Nets through ONNX Runtime (file from training.spleeter_onnx: magnitude patches
    in, mask logits out); sigmoid, spectrograms and ratio masks in numpy, float32, as
    TensorFlow computes them."""

    def __init__(self, onnx_path: Path, params: dict, threads: Optional[int] = None):
        from engines.backends import ort_session

        self.params = params
        # without --threads, every core (what ONNX Runtime takes by default)
        self.session = ort_session(onnx_path, threads or os.cpu_count(), ["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self._input = inp.name
        self.T = inp.shape[1] if isinstance(inp.shape[1], int) else params["T"]
        self.instruments = [o.name.replace("_logits", "") for o in self.session.get_outputs()]
        if sorted(self.instruments) != sorted(params["instrument_list"]):
            raise ModelError(f"{onnx_path}: outputs {[o.name for o in self.session.get_outputs()]} are not "
                             f"Spleeter's {params['instrument_list']} mask logits (export with training.spleeter_onnx)")
        self.graph_builds = 1
        self.runs = 0

    def __call__(self, X: np.ndarray) -> np.ndarray:
        p, T = self.params, self.T
        n = X.shape[0]
        seg = -(-n // T)
        mag = np.zeros((seg * T, p["F"]), np.float32)
        mag[:n] = np.abs(X[:, :p["F"]])
        patches = np.repeat(mag.reshape(seg, T, p["F"], 1), p["n_channels"], axis=3)
        import scipy.special

        logits = self.session.run(None, {self._input: patches})
        self.runs += 1
        return ratio_masks([scipy.special.expit(z) * patches for z in logits], p, n)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- the streaming core

class SpleeterStream:
    """Spleeter's separation of a mono stream at its own rate (44.1 kHz), chunk by chunk.

    ``push(x)`` takes any number of samples and returns the finished part of each
    stem, [2, k] float32 (vocals, accompaniment); ``finish()`` returns the rest, so
    that the concatenation has the input's length and equals Spleeter's separation
    of the whole (duplicated-to-stereo, then downmixed) signal.  ``masks`` maps
    STFT frames [n, L/2+1] to masks [2, n, L/2+1] (see :class:`_TFMasks`).
    """

    def __init__(self, masks: Callable[[np.ndarray], np.ndarray], params: dict, segment_frames: Optional[int] = None):
        self.masks = masks
        self.L, self.H = params["frame_length"], params["frame_step"]
        self.T = segment_frames or params["T"]
        self.gain = np.float32(2.0 / 3.0)  # EstimatorSpecBuilder.WINDOW_COMPENSATION_FACTOR
        self.reset()

    @property
    def max_delay(self) -> int:
        """Most samples a sample waits for: the last frame covering it may be the
        first of a segment, which runs when its T frames are complete."""
        return (self.T - 1) * self.H + self.L

    def reset(self) -> None:
        self._buf = np.zeros(self.L, np.float32)  # input samples from index _buf_start (zeros before 0)
        self._buf_start = -self.L
        self._n_in = 0
        self._next_frame = 0                       # first frame not yet transformed
        self._frames: list[np.ndarray] = []        # transformed frames waiting for their segment
        self._n_pending = 0
        self._tail = np.zeros((2, self.L - self.H), np.float32)  # overlap-add carry
        self._out_start = -self.L                  # stream index of _tail[0] / of the next group
        self._n_out = 0

    def _transform(self, k_end: int) -> None:
        """STFT frames _next_frame .. k_end - 1 (frame k covers samples [kH - L, kH))."""
        if k_end <= self._next_frame:
            return
        lo = self._next_frame * self.H - self.L - self._buf_start
        hi = (k_end - 1) * self.H - self._buf_start
        frames = np.lib.stride_tricks.sliding_window_view(self._buf[lo:hi], self.L)[::self.H]
        self._frames.append(stft_frames(frames))
        self._n_pending += k_end - self._next_frame
        self._next_frame = k_end
        drop = self._next_frame * self.H - self.L - self._buf_start
        self._buf = self._buf[drop:]
        self._buf_start += drop

    def _separate(self, n_frames: int) -> np.ndarray:
        """Run the first ``n_frames`` pending frames; return the samples they finish."""
        X = np.concatenate(self._frames) if len(self._frames) > 1 else self._frames[0]
        X, rest = X[:n_frames], X[n_frames:]
        self._frames = [rest] if len(rest) else []
        self._n_pending -= n_frames
        import scipy.fft

        m = self.masks(X)                                        # [2, n, bins]
        Y = np.multiply(m, X[None], dtype=np.complex64)
        y = scipy.fft.irfft(Y, n=self.L, axis=-1)                # float32
        np.multiply(y, dsp.hann(self.L), out=y)
        out = overlap_add(y, self.H)
        out[:, :self.L - self.H] += self._tail
        done = n_frames * self.H
        self._tail = out[:, done:].copy()
        ready, start = out[:, :done], self._out_start
        self._out_start += done
        if start < 0:                                            # Spleeter crops the prepended zeros
            ready = ready[:, min(-start, done):]
        return ready * self.gain

    def push(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32).reshape(-1)
        self._buf = np.concatenate([self._buf, x])
        self._n_in += len(x)
        self._transform(self._n_in // self.H + 1)
        n = (self._n_pending // self.T) * self.T
        if n == 0:
            return np.zeros((2, 0), np.float32)
        out = self._separate(n)
        self._n_out += out.shape[1]
        return out

    def finish(self) -> np.ndarray:
        """Everything still held (Spleeter's end padding), then reset for a new stream."""
        if self._n_in == 0:
            self.reset()
            return np.zeros((2, 0), np.float32)
        n_frames = -(-(self._n_in + self.L) // self.H)           # as tf.signal.stft(pad_end=True)
        need = (n_frames - 1) * self.H - (self._buf_start + len(self._buf))
        if need > 0:
            self._buf = np.concatenate([self._buf, np.zeros(need, np.float32)])
        self._transform(n_frames)
        out = self._separate(self._n_pending) if self._n_pending else np.zeros((2, 0), np.float32)
        out = out[:, :self._n_in - self._n_out]
        self.reset()
        return out


# --------------------------------------------------------------------------- resampler lag

@functools.lru_cache(maxsize=8)
def _resampler_lag(src: int, dst: int, channels: int) -> int:
    """Most output samples (at ``dst``) a soxr stream resampler holds back, fed in small blocks."""
    import soxr

    s = soxr.ResampleStream(src, dst, channels, dtype="float32", quality=RESAMPLE_QUALITY)
    step = max(1, src // 400)
    block = np.zeros((step, channels), np.float32)
    fin = fout = 0
    lag = 0.0
    for _ in range(1200):
        fout += len(s.resample_chunk(block))
        fin += step
        lag = max(lag, fin * dst / src - fout)
    return int(np.ceil(lag))


# --------------------------------------------------------------------------- the separator

class SpleeterSeparator(Separator):
    """Spleeter 2stems on a 16 kHz mono stream: speech = vocals, music = accompaniment.

    ``model_dir``: the Spleeter 2stems folder (default: ``$MODEL_PATH/2stems``, as
    Spleeter).  ``runtime``: ``"tf"`` (Spleeter's graph in TensorFlow, default) or
    ``"onnx"`` (the U-Nets exported by ``python -m training.spleeter_onnx``, at
    ``onnx_path``, default ``<model_dir>/unet.onnx``).  ``threads``: intra-op
    threads (default: the runtime's).  The graph (or ONNX session) is built once;
    :meth:`flush` ends a stream and leaves the separator ready for another.
    """

    name = "spleeter"
    identity = False

    def __init__(self, model_dir=None, *, runtime: str = "tf", onnx_path=None, threads: Optional[int] = None):
        if runtime not in ("tf", "onnx"):
            raise ParameterError(f"runtime={runtime!r} must be 'tf' or 'onnx'")
        self.model_dir = find_model_dir(MODEL_NAME, model_dir)
        self.params = params = load_params(MODEL_NAME)
        self.rate = int(params["sample_rate"])
        self.runtime = runtime
        if runtime == "tf":
            self._masks = _TFMasks(checkpoint_prefix(self.model_dir), params, threads)
        else:
            path = Path(onnx_path) if onnx_path else self.model_dir / ONNX_NAME
            if not path.is_file():
                raise ModelError(f"Spleeter U-Net ONNX file {path} not found; export it with: "
                                 f"python -m training.spleeter_onnx {self.model_dir} {path}")
            self._masks = _OnnxMasks(path, params, threads)
        if list(self._masks.instruments) != ["vocals", "accompaniment"]:
            raise ModelError(f"{self.model_dir}: instruments {self._masks.instruments} are not 2stems'")
        # the ONNX graph may have been exported with other patches than Spleeter's T
        self._core = SpleeterStream(self._masks, params, segment_frames=getattr(self._masks, "T", None))
        self.latency_samples = int(np.ceil((self._core.max_delay + _resampler_lag(SAMPLE_RATE, self.rate, 1))
                                           * SAMPLE_RATE / self.rate)) + _resampler_lag(self.rate, SAMPLE_RATE, 2) + 1
        self._new_stream()

    # graph-once evidence for tests and benchmarks
    @property
    def graph(self):
        return getattr(self._masks, "graph", None)

    @property
    def session_runs(self) -> int:
        return self._masks.runs

    def _new_stream(self) -> None:
        import soxr

        self._up = soxr.ResampleStream(SAMPLE_RATE, self.rate, 1, dtype="float32", quality=RESAMPLE_QUALITY)
        self._down = soxr.ResampleStream(self.rate, SAMPLE_RATE, 2, dtype="float32", quality=RESAMPLE_QUALITY)
        self._n_in = 0
        self._n_out = 0

    def _stems(self, y: np.ndarray) -> dict[str, np.ndarray]:
        self._n_out += len(y)
        return {"speech": np.ascontiguousarray(y[:, 0]), "music": np.ascontiguousarray(y[:, 1])}

    def process(self, block: np.ndarray) -> dict[str, np.ndarray]:
        block = np.asarray(block, np.float32).reshape(-1)
        self._n_in += len(block)
        up = self._up.resample_chunk(block, last=False) if len(block) else np.zeros(0, np.float32)
        sep = self._core.push(up)
        if sep.shape[1] == 0:
            return {s: np.zeros(0, np.float32) for s in STEMS}
        return self._stems(self._down.resample_chunk(np.ascontiguousarray(sep.T), last=False))

    def flush(self) -> dict[str, np.ndarray]:
        """The rest of the stream: total output length equals total input length."""
        up = self._up.resample_chunk(np.zeros(0, np.float32), last=True)
        sep = self._core.push(up) if len(up) else np.zeros((2, 0), np.float32)
        sep = np.concatenate([sep, self._core.finish()], axis=1)
        y = self._down.resample_chunk(np.ascontiguousarray(sep.T), last=True)
        need = self._n_in - self._n_out
        if len(y) > need:
            y = y[:need]
        elif len(y) < need:  # soxr rounding: at most a sample or two
            y = np.concatenate([y, np.zeros((need - len(y), 2), np.float32)])
        out = self._stems(y)
        self._new_stream()
        return out

    def close(self) -> None:
        self._masks.close()


# --------------------------------------------------------------------------- Spleeter's own API

class SpleeterOwn:
    """Spleeter's own ``spleeter.separator.Separator`` with its graph built once.

    Its ``separate`` goes through an Estimator that rebuilds the graph per call;
    this uses the same object's own graph-once pieces (``_get_features``,
    ``_get_builder().outputs``: STFT, U-Nets, masks and inverse STFT all in
    TensorFlow; ``_get_session``: restores the checkpoint), so the second call
    onwards costs what Spleeter's separation itself costs.  ``__call__(waveform)``:
    [n, 2] (or mono) at 44.1 kHz -> {"vocals": [n, 2], "accompaniment": [n, 2]}.
    """

    def __init__(self, model_dir=None):
        d = find_model_dir(MODEL_NAME, model_dir)
        _import_tf()
        from spleeter.separator import Separator as _Spleeter

        self._sep = _Spleeter(f"spleeter:{MODEL_NAME}", multiprocess=False)
        # an absolute folder with its .probe: Spleeter's ModelProvider uses it as is, never downloads
        self._sep._params["model_dir"] = str(d)
        self.graph = self._sep._tf_graph
        with self.graph.as_default():
            self._features = self._sep._get_features()
            outputs = dict(self._sep._get_builder().outputs)
            outputs.pop("audio_id", None)
            self._outputs = outputs
            self.session = self._sep._get_session()
        self.graph.finalize()

    def __call__(self, waveform: np.ndarray) -> dict[str, np.ndarray]:
        from spleeter.audio.convertor import to_stereo

        waveform = np.asarray(waveform, np.float32)
        if waveform.ndim == 1:
            waveform = waveform[:, None]
        if waveform.shape[-1] != 2:
            waveform = to_stereo(waveform)
        feed = self._sep._get_input_provider().get_feed_dict(self._features, waveform, "")
        return self.session.run(self._outputs, feed)


_OWN: dict[str, SpleeterOwn] = {}


def spleeter_own_separate(waveform: np.ndarray, model_dir=None) -> dict[str, np.ndarray]:
    """Spleeter's own 2stems separation of ``waveform`` [n, 2] at 44.1 kHz, with its
    graph built on the first call for ``model_dir`` and reused afterwards."""
    key = str(find_model_dir(MODEL_NAME, model_dir))
    if key not in _OWN:
        _OWN[key] = SpleeterOwn(key)
    return _OWN[key](waveform)


def spleeter_estimator_separate(waveform: np.ndarray, model_dir=None) -> dict[str, np.ndarray]:
    """Spleeter's public ``Separator.separate`` (an Estimator; graph rebuilt on every call).

    Slow on purpose: it is the reference that proves a checkpoint loads the way
    Spleeter itself loads it (an Estimator that finds no checkpoint would silently
    initialise random weights, and its output would differ).
    """
    d = find_model_dir(MODEL_NAME, model_dir)
    _import_tf()
    from spleeter.separator import Separator as _Spleeter

    sep = _Spleeter(f"spleeter:{MODEL_NAME}", multiprocess=False)
    sep._params["model_dir"] = str(d)
    return sep.separate(np.asarray(waveform, np.float32))
