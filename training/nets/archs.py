"""Keras builders of the seeds' architectures, with emotrack's output heads.

One builder per seed architecture; :func:`build` picks one by name.  Every model
ends in the heads the streamer expects (``engines.cards.OUTPUTS``):

* ``quadrant``: softmax over Q1..Q4
* ``va``: tanh, (valence, arousal) in [-1, 1]
* ``activity``: sigmoid, how much of the window holds the target source
* ``emotion`` (only with ``n_emotions``): softmax over the 8 RAVDESS labels

Inputs, by name (:data:`INPUTS`):

* ``features`` [N, T, 64, 3]: :func:`streamer.features.extract` (log-mel dB,
  delta, delta-delta of an R128-normalised window), as the shipped model.
* ``waveform`` [N, samples]: the R128-normalised 16 kHz window (SincNet).
* ``handcrafted`` [N, D]: :func:`streamer.descriptors.features` of the window (ensemble, dnn).

Standardisation constants (mean/std computed on the training windows) live in
non-trainable weights of a :class:`Standardise` layer at the start of each
model, so they travel with checkpoints and become constants in the ONNX graph.

The MFCC models (seed 002) take ``features`` too and compute the MFCCs inside
the graph: a constant MatMul with :func:`streamer.features.dct_matrix` on
channel 0 (the log-mel dB), i.e. exactly :func:`streamer.features.mfcc_from_logmel`.
So their ONNX files have the shipped models' input contract and run in the
streamer unchanged.

Widths are parameters (``params`` dicts, see each builder's defaults, which are
the seeds' values where the seed gives them) so tests can build tiny versions.
TensorFlow is imported inside the functions only.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from streamer.dsp import SAMPLE_RATE

#: input names each architecture takes, in order
INPUTS = {
    "cnn": ("features",),
    "dcnn": ("features",),
    "adcrnn": ("features",),
    "cnn_mfcc": ("features",),
    "lstm_mfcc": ("features",),
    "ensemble": ("handcrafted", "features"),
    "dnn": ("handcrafted",),
    "sincnet": ("waveform",),
}

#: each builder's parameters and their defaults (the seeds' values where given)
DEFAULTS: dict[str, dict] = {
    # the shipped speech and music models' small CNN (training/recipes/speech.toml, music.toml):
    # Conv3x3 (no bias) + BatchNorm + ReLU blocks, the first with stride 2, 2x2 max-pooling after
    # each but the last, global average + max pooling, one Dense ReLU layer, dropout.
    "cnn": {"channels": [16, 24, 32, 48], "dense": 64, "dropout": 0.3},
    # seed 000 section 4.4.1 (DCNN): Conv2D 128 (k3, valid, no dilation) -> MaxPool (4,2)
    # stride (4,2) -> dilated Conv2D 64 (k3, rate 2, same) with a skip connection ->
    # flatten -> Dense -> dropout 0.3; l1(0.001) kernels, constant(0.1) biases, relu.
    # The number of dilated layers and the dense width are in its figure 4.1, which is
    # not in the text: 3 dilated layers; dense 128 reproduces its "roughly 39m
    # trainable parameters" (flatten 249x19x64 of 15 s / 40 mels x 128 units).
    "dcnn": {"conv_filters": 128, "pool": [4, 2], "dilated_filters": 64, "n_dilated": 3,
             "dilation": 2, "dense": 128, "dropout": 0.3, "l1": 0.001, "bias_init": 0.1,
             "head": "flatten"},
    # seed 000 section 4.4.2 (ADCRNN): the DCNN block with l1(0.01), reshape time-major,
    # Dense 256 (the seed forgot its relu: "relu was intended"; relu here), BiLSTM 256,
    # two dilated LSTM 256 with rates 1 and 2, attention (eq. 4.1-4.2), Dense 64 relu,
    # dropout 0.3.
    "adcrnn": {"conv_filters": 128, "pool": [4, 2], "dilated_filters": 64, "n_dilated": 3,
               "dilation": 2, "proj": 256, "proj_activation": "relu", "bilstm": 256,
               "dilated_lstm": 256, "rates": [1, 2], "dense": 64, "dropout": 0.3,
               "l1": 0.01, "bias_init": 0.1},
    # seed 002 section 4.2.1: 2 conv layers, then Dense 128, 128, 64 (filter counts and
    # kernel sizes are in its figure 4.5, not in the text: 32/64, 3x3, 2x2 pooling);
    # 13 MFCCs (section 4.1.1) of 15 s windows; its frames were 46 ms (hop 1024 at
    # 22.05 kHz): time_pool 5 averages our 10 ms frames to 50 ms.
    "cnn_mfcc": {"n_mfcc": 13, "time_pool": 5, "conv_filters": [32, 64], "kernel": 3,
                 "dense": [128, 128, 64], "dropout": 0.0},
    # seed 002 section 4.2.2: LSTM 512 ("the trade-off was found in 512 neurons"), then
    # the same Dense 128, 128, 64.
    "lstm_mfcc": {"n_mfcc": 13, "time_pool": 5, "lstm": 512, "dense": [128, 128, 64],
                  "dropout": 0.0},
    # seed 003 section 3.2.1 "Hybrid": a DNN on handcrafted features (the seed: Panda et
    # al.'s 1714 or top-100 sets; here training.data.handcrafted.features of the window) + a
    # CNN on the mel spectrogram (after Choi et al.), fused late.  fusion = "feature":
    # branch embeddings concatenated, then a small DNN (the seed's "fuses the information
    # before being post-processed by a smaller DNN"); "average": each branch has its own
    # heads and their outputs are averaged.
    "ensemble": {"cnn_filters": [32, 64, 128, 128], "cnn_dense": 64, "dnn": [256, 128],
                 "fusion_dense": 64, "fusion": "feature", "dropout": 0.3},
    # seed 003's handcrafted-feature DNN alone (the ensemble's first branch; seed 001's MLP on
    # handcrafted features is its one-layer case): standardised descriptors -> Dense stack.
    "dnn": {"dense": [256, 128], "dropout": 0.3, "input_dropout": 0.1},
    # seed 004 -> SincNet (Ravanelli & Bengio 2018): 80 sinc band-pass filters of 251
    # taps (min low cut-off and band 50 Hz, mel-spaced initialisation), max-pool 3,
    # layer norm, leaky relu 0.2; 2 x Conv1D 60 k5; 3 x Dense 2048 + batch norm + leaky
    # relu; posteriors averaged over chunks.  Seed 004 used 200 ms chunks and found
    # 500 ms better ("an increase of 4 percent points in F-score for English").
    "sincnet": {"chunk_s": 0.5, "sinc_filters": 80, "sinc_len": 251, "min_low_hz": 50.0,
                "min_band_hz": 50.0, "conv_filters": [60, 60], "conv_len": 5, "pool": 3,
                "dense": [2048, 2048, 2048], "dropout": 0.0},
}


def resolve_params(arch: str, params: Optional[dict]) -> dict:
    """``DEFAULTS[arch]`` updated with ``params``; unknown keys are an error."""
    if arch not in DEFAULTS:
        raise ValueError(f"unknown architecture {arch!r}: choose one of {sorted(DEFAULTS)}")
    params = dict(params or {})
    unknown = sorted(set(params) - set(DEFAULTS[arch]))
    if unknown:
        raise ValueError(f"unknown parameters {unknown} for architecture {arch!r} "
                         f"(known: {sorted(DEFAULTS[arch])})")
    return {**DEFAULTS[arch], **params}


_LAYERS: dict = {}


def _standardising_layers(tf, layers) -> dict:
    """Standardise, MFCC, LayerNorm: per-feature scaling inside the graph."""

    class Standardise(layers.Layer):
        """``(x - mean) / std`` with the constants in non-trainable weights (last axis)."""

        def __init__(self, mean, std, **kw):
            super().__init__(**kw)
            self._init = (np.asarray(mean, np.float32).reshape(-1), np.asarray(std, np.float32).reshape(-1))

        def build(self, shape):
            mean, std = self._init
            self.mean = self.add_weight("mean", shape=mean.shape, trainable=False,
                                        initializer=tf.constant_initializer(mean))
            self.inv_std = self.add_weight("inv_std", shape=std.shape, trainable=False,
                                           initializer=tf.constant_initializer(1.0 / np.maximum(std, 1e-6)))

        def call(self, x):
            return (x - self.mean) * self.inv_std

    class MFCC(layers.Layer):
        """Channel 0 of ``features`` (log-mel dB) times the DCT-II basis -> [N, T, n_mfcc]."""

        def __init__(self, n_mels: int, n_mfcc: int, **kw):
            super().__init__(**kw)
            from streamer.features import dct_matrix

            self.dct = tf.constant(dct_matrix(n_mels, n_mfcc))

        def call(self, x):
            return tf.linalg.matmul(x[..., 0], self.dct)

    class LayerNorm(layers.Layer):
        """SincNet's layer norm: statistics over time and channels of each example, a gain
        and bias per channel (Keras' multi-axis layer normalisation fails in predict on TF 2.12)."""

        def build(self, shape):
            c = int(shape[-1])
            self.gamma = self.add_weight("gamma", shape=(c,), initializer="ones")
            self.beta = self.add_weight("beta", shape=(c,), initializer="zeros")

        def call(self, x):
            mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
            var = tf.reduce_mean(tf.square(x - mean), axis=[1, 2], keepdims=True)
            return (x - mean) * tf.math.rsqrt(var + 1e-6) * self.gamma + self.beta

    return {"Standardise": Standardise, "MFCC": MFCC, "LayerNorm": LayerNorm}


def _sequence_layers(tf, layers) -> dict:
    """DilatedLSTM and AttentionPool (seed 000's ADCRNN)."""

    class DilatedLSTM(layers.Layer):
        """LSTM whose step t takes the state of step t - rate (Chang et al. 2017, DilatedRNN).

        Keras has no dilated LSTM (seed 000 wrote a custom one).  A dilation of ``rate``
        is the same as running one ordinary LSTM over each of the ``rate`` interleaved
        sub-sequences (steps i, i + rate, i + 2 rate, ...), which is how DilatedRNN's
        reference code computes it: pad T to a multiple of ``rate``, reshape [N, T, D]
        -> [N, T/rate, rate, D], move ``rate`` into the batch -> [N*rate, T/rate, D],
        run the LSTM (weights shared by the sub-sequences), and undo the reshape.  The
        graph holds only Pad/Reshape/Transpose around a standard LSTM, so tf2onnx
        exports it as an ONNX LSTM.  rate 1 is a plain LSTM.
        """

        def __init__(self, units: int, rate: int, **kw):
            super().__init__(**kw)
            self.units, self.rate = int(units), int(rate)
            self.lstm = layers.LSTM(self.units, return_sequences=True, name="lstm")

        def call(self, x):
            r = self.rate
            if r == 1:
                return self.lstm(x)
            t, d = int(x.shape[1]), int(x.shape[2])
            pad = (-t) % r
            if pad:
                x = tf.pad(x, [[0, 0], [0, pad], [0, 0]])
            n = (t + pad) // r
            x = tf.reshape(x, [-1, n, r, d])
            x = tf.transpose(x, [0, 2, 1, 3])
            h = self.lstm(tf.reshape(x, [-1, n, d]))
            h = tf.transpose(tf.reshape(h, [-1, r, n, self.units]), [0, 2, 1, 3])
            return tf.reshape(h, [-1, n * r, self.units])[:, :t]

    class AttentionPool(layers.Layer):
        """Seed 000 eq. 4.1-4.2 (Chen et al. 2018): alpha_t = softmax_t(W h_t), c = sum alpha_t h_t."""

        def build(self, shape):
            self.w = self.add_weight("w", shape=(int(shape[-1]), 1), initializer="glorot_uniform")

        def call(self, h):
            alpha = tf.nn.softmax(tf.linalg.matmul(h, self.w), axis=1)
            return tf.reduce_sum(alpha * h, axis=1)

    return {"DilatedLSTM": DilatedLSTM, "AttentionPool": AttentionPool}


def _waveform_layers(tf, layers) -> dict:
    """SincConv, Chunks and ChunkMean (SincNet on raw waveform)."""

    class SincConv(layers.Layer):
        """SincNet's first layer: learnable band-pass filters (cut-offs f1 < f2 in Hz),
        ``2 f2 sinc(2 pi f2 n) - 2 f1 sinc(2 pi f1 n)`` times a Hamming window, applied by
        conv1d.  Built from Sin/Mul/Div/Add on a constant time grid (n = 0 handled by a
        constant mask), so tf2onnx exports it (it folds the filters to a constant)."""

        def __init__(self, filters: int, length: int, sample_rate: int = SAMPLE_RATE,
                     min_low_hz: float = 50.0, min_band_hz: float = 50.0, **kw):
            super().__init__(**kw)
            if length % 2 == 0:
                length += 1
            self.filters, self.length, self.sr = int(filters), int(length), float(sample_rate)
            self.min_low_hz, self.min_band_hz = float(min_low_hz), float(min_band_hz)

        def build(self, shape):
            to_mel = lambda hz: 2595 * np.log10(1 + hz / 700.0)
            to_hz = lambda mel: 700 * (10 ** (mel / 2595) - 1)
            hz = to_hz(np.linspace(to_mel(30.0), to_mel(self.sr / 2 - (self.min_low_hz + self.min_band_hz)),
                                   self.filters + 1))
            self.low_hz = self.add_weight("low_hz", shape=(self.filters,),
                                          initializer=tf.constant_initializer(hz[:-1].astype(np.float32)))
            self.band_hz = self.add_weight("band_hz", shape=(self.filters,),
                                           initializer=tf.constant_initializer(np.diff(hz).astype(np.float32)))
            half = (self.length - 1) // 2
            n = np.arange(-half, half + 1, dtype=np.float64)
            window = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(self.length) / (self.length - 1))
            self.t = tf.constant((2 * np.pi * np.where(n == 0, 1.0, n) / self.sr).astype(np.float32)[:, None])
            self.centre = tf.constant((n == 0).astype(np.float32)[:, None])
            self.window = tf.constant(window.astype(np.float32)[:, None])

        def kernels(self):
            low = self.min_low_hz + tf.abs(self.low_hz)
            high = tf.clip_by_value(low + self.min_band_hz + tf.abs(self.band_hz), self.min_low_hz, self.sr / 2)
            band = high - low
            side = (tf.sin(self.t * high) - tf.sin(self.t * low)) / (self.t / 2)       # [L, F]
            bp = side * (1.0 - self.centre) + 2.0 * band * self.centre
            bp = bp * self.window / (2.0 * band)
            return tf.reshape(bp, [self.length, 1, self.filters])

        def call(self, x):
            return tf.nn.conv1d(x, self.kernels(), stride=1, padding="VALID")

    class Chunks(layers.Layer):
        """[N, samples] -> [N * k, chunk, 1]: k non-overlapping chunks (the rest dropped)."""

        def __init__(self, chunk: int, k: int, **kw):
            super().__init__(**kw)
            self.chunk, self.k = int(chunk), int(k)

        def call(self, x):
            return tf.reshape(x[:, :self.chunk * self.k], [-1, self.chunk, 1])

    class ChunkMean(layers.Layer):
        """[N * k, D] -> [N, D]: the mean over each window's k chunks (SincNet's
        sentence-level average of frame posteriors)."""

        def __init__(self, k: int, **kw):
            super().__init__(**kw)
            self.k = int(k)

        def call(self, x):
            return tf.reduce_mean(tf.reshape(x, [-1, self.k, int(x.shape[-1])]), axis=1)

    return {"SincConv": SincConv, "Chunks": Chunks, "ChunkMean": ChunkMean}


def custom_layers() -> dict:
    """The custom Keras layers (classes made on first use, so importing this module
    never imports TensorFlow)."""
    if _LAYERS:
        return _LAYERS
    import tensorflow as tf
    from tensorflow.keras import layers

    for group in (_standardising_layers, _sequence_layers, _waveform_layers):
        _LAYERS.update(group(tf, layers))
    return _LAYERS


def _heads(x, n_emotions: int = 0, suffix: str = "") -> dict:
    from tensorflow.keras import layers

    out = {"quadrant": layers.Dense(4, activation="softmax", name="quadrant" + suffix)(x),
           "va": layers.Dense(2, activation="tanh", name="va" + suffix)(x),
           "activity": layers.Dense(1, activation="sigmoid", name="activity" + suffix)(x)}
    if n_emotions:
        out["emotion"] = layers.Dense(n_emotions, activation="softmax", name="emotion" + suffix)(x)
    return out


def _dcnn_block(x, p: dict, prefix: str = ""):
    """Seed 000's DCNN block: Conv2D (valid) -> MaxPool -> dilated Conv2Ds with a skip."""
    import tensorflow as tf
    from tensorflow.keras import layers, regularizers

    reg = regularizers.l1(p["l1"]) if p["l1"] else None
    kw = dict(kernel_regularizer=reg, bias_initializer=tf.keras.initializers.Constant(p["bias_init"]),
              activation="relu")
    x = layers.Conv2D(p["conv_filters"], 3, padding="valid", name=prefix + "conv", **kw)(x)
    x = layers.MaxPooling2D(tuple(p["pool"]), strides=tuple(p["pool"]), padding="valid", name=prefix + "pool")(x)
    first = None
    for i in range(p["n_dilated"]):
        x = layers.Conv2D(p["dilated_filters"], 3, padding="same", dilation_rate=p["dilation"],
                          name=f"{prefix}dconv{i}", **kw)(x)
        first = x if first is None else first
    if p["n_dilated"] > 1:
        x = layers.Add(name=prefix + "skip")([first, x])
    return x


def build_cnn(shapes: dict, norm: dict, p: dict, n_emotions: int = 0):
    """The shipped models' small CNN on ``features`` (standardisation in the graph)."""
    import tensorflow as tf
    from tensorflow.keras import layers

    L = custom_layers()
    inp = tf.keras.Input(shapes["features"], name="features")
    x = L["Standardise"](*norm["features"], name="standardise")(inp)
    for i, ch in enumerate(p["channels"]):
        x = layers.Conv2D(ch, 3, strides=2 if i == 0 else 1, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        if i < len(p["channels"]) - 1:
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Concatenate(name="pool_avg_max")([layers.GlobalAveragePooling2D()(x), layers.GlobalMaxPooling2D()(x)])
    x = layers.Dense(p["dense"], activation="relu", name="dense")(x)
    x = layers.Dropout(p["dropout"])(x)
    return tf.keras.Model(inp, _heads(x, n_emotions), name="cnn")


def build_dcnn(shapes: dict, norm: dict, p: dict, n_emotions: int = 0):
    """Seed 000 section 4.4.1 DCNN on ``features``."""
    import tensorflow as tf
    from tensorflow.keras import layers, regularizers

    L = custom_layers()
    inp = tf.keras.Input(shapes["features"], name="features")
    x = L["Standardise"](*norm["features"], name="standardise")(inp)
    x = _dcnn_block(x, p)
    x = layers.Flatten(name="flatten")(x) if p["head"] == "flatten" else layers.Concatenate(name="avg_max")(
        [layers.GlobalAveragePooling2D()(x), layers.GlobalMaxPooling2D()(x)])
    reg = regularizers.l1(p["l1"]) if p["l1"] else None
    x = layers.Dense(p["dense"], activation="relu", kernel_regularizer=reg,
                     bias_initializer=tf.keras.initializers.Constant(p["bias_init"]), name="dense")(x)
    x = layers.Dropout(p["dropout"])(x)
    return tf.keras.Model(inp, _heads(x, n_emotions), name="dcnn")


def build_adcrnn(shapes: dict, norm: dict, p: dict, n_emotions: int = 0):
    """Seed 000 section 4.4.2 ADCRNN on ``features``."""
    import tensorflow as tf
    from tensorflow.keras import layers, regularizers

    L = custom_layers()
    reg = regularizers.l1(p["l1"]) if p["l1"] else None
    bias = tf.keras.initializers.Constant(p["bias_init"])
    inp = tf.keras.Input(shapes["features"], name="features")
    x = L["Standardise"](*norm["features"], name="standardise")(inp)
    x = _dcnn_block(x, p)
    _, t, f, c = x.shape
    x = layers.Reshape((t, f * c), name="time_major")(x)  # features are time-first already
    x = layers.Dense(p["proj"], activation=p["proj_activation"], kernel_regularizer=reg,
                     bias_initializer=bias, name="proj")(x)
    x = layers.Bidirectional(layers.LSTM(p["bilstm"], return_sequences=True), name="bilstm")(x)
    for r in p["rates"]:
        x = L["DilatedLSTM"](p["dilated_lstm"], r, name=f"dilated_lstm_r{r}")(x)
    x = L["AttentionPool"](name="attention")(x)
    x = layers.Dense(p["dense"], activation="relu", kernel_regularizer=reg, bias_initializer=bias,
                     name="dense")(x)
    x = layers.Dropout(p["dropout"])(x)
    return tf.keras.Model(inp, _heads(x, n_emotions), name="adcrnn")


def _mfcc_front(inp, norm: dict, p: dict):
    from tensorflow.keras import layers

    L = custom_layers()
    x = L["MFCC"](int(inp.shape[2]), p["n_mfcc"], name="mfcc")(inp)
    x = L["Standardise"](*norm["mfcc"], name="standardise")(x)
    if p["time_pool"] > 1:
        x = layers.AveragePooling1D(p["time_pool"], name="time_pool")(x)
    return x


def _dense_stack(x, units, dropout, prefix="dense"):
    from tensorflow.keras import layers

    for i, u in enumerate(units):
        x = layers.Dense(u, activation="relu", name=f"{prefix}{i}")(x)
        if dropout:
            x = layers.Dropout(dropout)(x)
    return x


def build_cnn_mfcc(shapes: dict, norm: dict, p: dict, n_emotions: int = 0):
    """Seed 002 section 4.2.1 CNN on 13 MFCCs (computed in the graph from ``features``)."""
    import tensorflow as tf
    from tensorflow.keras import layers

    inp = tf.keras.Input(shapes["features"], name="features")
    x = layers.Reshape((-1, p["n_mfcc"], 1), name="as_image")(_mfcc_front(inp, norm, p))
    for i, ch in enumerate(p["conv_filters"]):
        x = layers.Conv2D(ch, p["kernel"], padding="same", activation="relu", name=f"conv{i}")(x)
        x = layers.MaxPooling2D((2, 2) if x.shape[2] >= 2 else (2, 1), name=f"pool{i}")(x)
    x = _dense_stack(layers.Flatten()(x), p["dense"], p["dropout"])
    return tf.keras.Model(inp, _heads(x, n_emotions), name="cnn_mfcc")


def build_lstm_mfcc(shapes: dict, norm: dict, p: dict, n_emotions: int = 0):
    """Seed 002 section 4.2.2 LSTM on 13 MFCCs (computed in the graph from ``features``)."""
    import tensorflow as tf
    from tensorflow.keras import layers

    inp = tf.keras.Input(shapes["features"], name="features")
    x = layers.LSTM(p["lstm"], name="lstm")(_mfcc_front(inp, norm, p))
    x = _dense_stack(x, p["dense"], p["dropout"])
    return tf.keras.Model(inp, _heads(x, n_emotions), name="lstm_mfcc")


def build_ensemble(shapes: dict, norm: dict, p: dict, n_emotions: int = 0):
    """Seed 003 section 3.2.1 "Hybrid": handcrafted-feature DNN + log-mel CNN, fused late."""
    import tensorflow as tf
    from tensorflow.keras import layers

    L = custom_layers()
    hin = tf.keras.Input(shapes["handcrafted"], name="handcrafted")
    fin = tf.keras.Input(shapes["features"], name="features")
    h = L["Standardise"](*norm["handcrafted"], name="standardise_hc")(hin)
    for i, u in enumerate(p["dnn"]):
        h = layers.Dense(u, activation="relu", name=f"dnn{i}")(h)
        h = layers.Dropout(p["dropout"])(h)
    c = L["Standardise"](*norm["features"], name="standardise")(fin)
    for i, ch in enumerate(p["cnn_filters"]):
        c = layers.Conv2D(ch, 3, padding="same", use_bias=False, name=f"cnn_conv{i}")(c)
        c = layers.BatchNormalization(name=f"cnn_bn{i}")(c)
        c = layers.ReLU()(c)
        if i < len(p["cnn_filters"]) - 1:
            c = layers.MaxPooling2D(2, name=f"cnn_pool{i}")(c)
    c = layers.Concatenate(name="cnn_avg_max")([layers.GlobalAveragePooling2D()(c), layers.GlobalMaxPooling2D()(c)])
    c = layers.Dense(p["cnn_dense"], activation="relu", name="cnn_dense")(c)
    c = layers.Dropout(p["dropout"])(c)
    if p["fusion"] == "feature":
        x = layers.Concatenate(name="fusion")([h, c])
        x = layers.Dense(p["fusion_dense"], activation="relu", name="fusion_dense")(x)
        out = _heads(x, n_emotions)
    elif p["fusion"] == "average":
        hd, cd = _heads(h, n_emotions, "_dnn"), _heads(c, n_emotions, "_cnn")
        out = {k: layers.Average(name=k)([hd[k], cd[k]]) for k in hd}
    else:
        raise ValueError(f"ensemble fusion={p['fusion']!r}: use 'feature' or 'average'")
    return tf.keras.Model([hin, fin], out, name="ensemble")


def build_dnn(shapes: dict, norm: dict, p: dict, n_emotions: int = 0):
    """Seed 003's DNN on handcrafted descriptors (:mod:`streamer.descriptors`) of the window."""
    import tensorflow as tf
    from tensorflow.keras import layers

    inp = tf.keras.Input(shapes["handcrafted"], name="handcrafted")
    x = custom_layers()["Standardise"](*norm["handcrafted"], name="standardise_hc")(inp)
    if p["input_dropout"]:
        x = layers.Dropout(p["input_dropout"])(x)
    x = _dense_stack(x, p["dense"], p["dropout"])
    return tf.keras.Model(inp, _heads(x, n_emotions), name="dnn")


def build_sincnet(shapes: dict, norm: dict, p: dict, n_emotions: int = 0, sample_rate: int = SAMPLE_RATE):
    """Seed 004's SincNet (Ravanelli & Bengio 2018) on ``waveform`` chunks, posteriors averaged."""
    import tensorflow as tf
    from tensorflow.keras import layers

    L = custom_layers()
    n = int(shapes["waveform"][0])
    chunk = int(round(p["chunk_s"] * sample_rate))
    k = n // chunk
    if k < 1:
        raise ValueError(f"sincnet chunk_s={p['chunk_s']} is longer than the {n / sample_rate:g} s window")
    inp = tf.keras.Input((n,), name="waveform")
    x = L["Chunks"](chunk, k, name="chunks")(inp)
    x = L["LayerNorm"](name="ln_in")(x)
    x = L["SincConv"](p["sinc_filters"], p["sinc_len"], sample_rate, p["min_low_hz"], p["min_band_hz"],
                      name="sinc")(x)
    x = layers.Lambda(tf.abs, name="abs")(x)  # SincNet takes |sinc conv| before pooling
    x = layers.MaxPooling1D(p["pool"], name="sinc_pool")(x)
    x = L["LayerNorm"](name="sinc_ln")(x)
    x = layers.LeakyReLU(0.2)(x)
    for i, ch in enumerate(p["conv_filters"]):
        x = layers.Conv1D(ch, p["conv_len"], name=f"conv{i}")(x)
        x = layers.MaxPooling1D(p["pool"], name=f"pool{i}")(x)
        x = L["LayerNorm"](name=f"ln{i}")(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Flatten()(x)
    for i, u in enumerate(p["dense"]):
        x = layers.Dense(u, name=f"dense{i}")(x)
        x = layers.BatchNormalization(momentum=0.95, name=f"bn{i}")(x)
        x = layers.LeakyReLU(0.2)(x)
        if p["dropout"]:
            x = layers.Dropout(p["dropout"])(x)
    per_chunk = _heads(x, n_emotions, "_chunk")
    out = {name: L["ChunkMean"](k, name=name)(v) for name, v in per_chunk.items()}
    return tf.keras.Model(inp, out, name="sincnet")


BUILDERS = {"cnn": build_cnn, "dcnn": build_dcnn, "adcrnn": build_adcrnn, "cnn_mfcc": build_cnn_mfcc,
            "lstm_mfcc": build_lstm_mfcc, "ensemble": build_ensemble, "sincnet": build_sincnet,
            "dnn": build_dnn}


def build(arch: str, shapes: dict, norm: dict, params: Optional[dict] = None, n_emotions: int = 0,
          seed: int = 1):
    """Keras model ``arch`` for input ``shapes`` ({name: shape without N}) and
    standardisation ``norm`` ({"features"|"mfcc"|"handcrafted": (mean, std)})."""
    import tensorflow as tf

    p = resolve_params(arch, params)
    tf.keras.utils.set_random_seed(seed)
    return BUILDERS[arch](shapes, norm, p, n_emotions)


def describe(arch: str, params: dict, model) -> str:
    """One line: the architecture, its parameters and its size."""
    p = resolve_params(arch, params)
    return f"{arch} ({', '.join(f'{k}={v}' for k, v in p.items())}); {model.count_params()} parameters"
